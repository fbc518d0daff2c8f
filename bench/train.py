"""The stage trainer against bare PyTorch, measured in the same run.

- ``overhead_ratio``: seconds per optimizer step of stage 1 (the tiny default: DeepSpeed ZeRO-2, the real
  loader with its worker, per-step metrics to JSONL and wandb offline) over a bare loop of forward + backward
  per micro-batch and one ``torch.optim.AdamW`` step, on the same model, freezing and micro-batches.
- ``data_wait_share``: the share of the stage's step time spent waiting for the loader (the metric it logs).
- ``compute_overhead_ratio``: the same stage with the loader inline (no worker process), its data wait taken
  out of each step, over the bare loop: the trainer's own cost (DeepSpeed's hooks and step, metrics) apart
  from the data path's. ``data_s_per_step``: that data wait in seconds.
- ``zero3_mem_ratio``: per-rank parameter + optimizer bytes under ZeRO-3 (stage 2: everything learns) with
  2 ranks over 1 rank, each started by the ``deepspeed`` launcher.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import cycle, islice, pairwise
from pathlib import Path

import torch

from data_prep.synthetic.shards import world_samples, write_shards
from pipeline import engine as ds
from pipeline.config import CONFIG_ROOT, load_config
from pipeline.metrics import read_metrics
from pipeline.model.qwenvl import QwenVL
from pipeline.optim import freeze
from pipeline.schema import StageConfig
from stages.train import Trainer, _tokenizer

STEPS, WARMUP = 14, 4  # optimizer steps of the stage run; the first WARMUP are not timed
REPO = Path(__file__).resolve().parent.parent
RUN = ["logging.wandb=offline", "logging.sample_every=0", "train.init_from=null", "run.name=bench"]


def stage_config(stage: str, shards: str, out: Path, *overrides: str) -> StageConfig:
    return load_config(StageConfig, CONFIG_ROOT / f"{stage}.yaml",
                       [f"data.shards={shards}", f"run.output_dir={out}", *RUN, *overrides])  # fmt: skip


def _trainer_step_s(cfg: StageConfig) -> tuple[float, float, list]:
    """The median seconds between the ends of consecutive steps after WARMUP (everything the loop does,
    logging included), the data-wait share of those steps, and micro-batches for the bare loop."""
    trainer = Trainer(cfg, ds.init_distributed())  # a process group of one (DeepSpeed keeps it)
    ends: list[float] = []
    log = trainer.logger.log
    trainer.logger.log = lambda row: (log(row), ends.append(time.perf_counter()))
    trainer.train()
    rows = read_metrics(trainer.out / "metrics.jsonl")[WARMUP:]
    wait = sum(r["data_wait_share"] * r["step_s"] for r in rows) / sum(r["step_s"] for r in rows)
    batches = list(islice(iter(trainer.loader), 2 * trainer.accumulation))
    return statistics.median(b - a for a, b in pairwise(ends[WARMUP - 1 :])), wait, batches


def _bare_step_s(cfg: StageConfig, batches: list, accumulation: int) -> float:
    """The median seconds of a step of the same model, freezing and micro-batches through plain forward +
    backward + AdamW."""
    torch.manual_seed(cfg.run.seed)
    model = QwenVL.from_config(cfg.model, cfg.data.image_size, _tokenizer(cfg.model.tokenizer))
    freeze(model, cfg.train.trainable)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    inputs = cycle([{k: v for k, v in b.items() if torch.is_tensor(v)} for b in batches])

    def step() -> None:
        for _ in range(accumulation):
            model(**next(inputs)).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    seconds = []
    for _ in range(STEPS):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds[WARMUP:])


def _zero3_bytes(ranks: int, shards: str, out: Path) -> int:
    """The largest per-rank parameter + optimizer bytes of a ZeRO-3 stage-2 engine on ``ranks`` ranks."""
    result = out / f"bytes-{ranks}.json"
    drop = {"RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.setdefault("DS_ACCELERATOR", "cpu" if not torch.cuda.is_available() else "cuda")
    cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(ranks), "--master_port",
           str(ds.free_port()), "--module", "bench.train", str(result), shards, str(out / f"zero3-{ranks}")]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return max(r["param_bytes"] + r["optimizer_bytes"] for r in json.loads(result.read_text()))


def _rank_main(result: str, shards: str, out: str) -> None:
    """One rank of _zero3_bytes: one step of stage 2 under ZeRO-3, then what this rank holds."""
    cfg = stage_config("stage2", shards, Path(out), "deepspeed.zero_stage=3", "logging.wandb=disabled",
                       "train.max_steps=1", "data.num_workers=0")  # fmt: skip
    dist = ds.init_distributed()
    trainer = Trainer(cfg, dist)
    trainer.train()  # one step: the optimizer's moments exist from then on
    held = ds.gather_objects(ds.state_bytes(trainer.engine))
    if dist.main:
        Path(result).write_text(json.dumps(held))
    ds.shutdown()


def run() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        shards = write_shards(world_samples(400, 40), Path(tmp) / "shards", per_shard=40)
        steps = [f"train.max_steps={STEPS}", f"train.checkpoint_every={STEPS}"]
        cfg = stage_config("stage1", shards, Path(tmp), *steps)
        accumulation = cfg.train.accumulation(1)
        ours, wait, batches = _trainer_step_s(cfg)
        bare = _bare_step_s(cfg, batches, accumulation)
        inline = stage_config(
            "stage1", shards, Path(tmp), *steps, "data.num_workers=0", "run.name=bench-inline"
        )
        inline_s, inline_wait, _ = _trainer_step_s(inline)
        one, two = _zero3_bytes(1, shards, Path(tmp)), _zero3_bytes(2, shards, Path(tmp))
    return {
        "overhead_ratio": round(ours / bare, 3),
        "step_s": round(ours, 3),
        "bare_step_s": round(bare, 3),
        "data_wait_share": round(wait, 4),
        "compute_overhead_ratio": round(inline_s * (1 - inline_wait) / bare, 3),
        "data_s_per_step": round(inline_s * inline_wait, 3),
        "zero3_mem_ratio": round(two / one, 3),
        "zero3_bytes_1_rank": one,
        "zero3_bytes_per_rank_2_ranks": two,
        "stage": "stage1, tiny default, ZeRO-2, 1 rank",
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (fp32)",
        "micro_batch": cfg.train.micro_batch_size,
        "accumulation": accumulation,
        "image_size": cfg.data.image_size,
    }


if __name__ == "__main__":  # a rank of _zero3_bytes, started by the deepspeed launcher
    _rank_main(*[a for a in sys.argv[1:] if not a.startswith("--local_rank")])
