"""Where the trainer's step time over a bare loop goes: the bare loop, the training backend alone (DeepSpeed:
forward and backward per micro-batch, one optimizer step) and the trainer's whole ``train_step``, in turn on the same micro-batches,
one compute thread, the loader inline. Extra arguments are stage-1 config overrides, e.g.
``deepspeed.zero_stage=0``.

    PYTHONPATH=. python dev/engine_overhead.py deepspeed.zero_stage=1
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from itertools import cycle, islice
from pathlib import Path

import torch

from bench.train import WARMUP, bare_loop, stage_config
from data_prep.synthetic.shards import world_samples, write_shards
from pipeline.backends import backend_class
from stages.train import Trainer

ROUNDS = 16


def main(overrides: list[str]) -> None:
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp())
    shards = write_shards(world_samples(400, 40), tmp / "shards", per_shard=40)
    cfg = stage_config("stage1", shards, tmp, "train.max_steps=1000", "train.checkpoint_every=1000",
                       "data.num_workers=0", "logging.wandb=disabled", *overrides)  # fmt: skip
    trainer = Trainer(cfg, backend_class().init_distributed())
    batches = list(islice(iter(trainer.loader), trainer.accumulation))
    tensors = [{k: v for k, v in b.items() if torch.is_tensor(v)} for b in batches]
    bare, backend, replay = bare_loop(cfg), trainer.backend, cycle(batches)

    def backend_step() -> None:
        for batch in batches:
            backend.backward(backend.forward(batch).loss)
        backend.step()

    steps = {
        "bare": lambda: bare(tensors),
        "backend": backend_step,
        "trainer": lambda: trainer.train_step(replay),
    }
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(ROUNDS):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            seconds[name].append(time.perf_counter() - start)
    median = {name: statistics.median(s[WARMUP:]) for name, s in seconds.items()}
    print(f"{backend.description}, s/step: " + ", ".join(f"{k} {v:.4f}" for k, v in median.items()))
    print(
        f"backend / bare {median['backend'] / median['bare']:.3f}, trainer / bare {median['trainer'] / median['bare']:.3f}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
