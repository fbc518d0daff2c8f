"""The stage trainer against bare PyTorch, measured in the same run.

- ``overhead_ratio``: seconds per optimizer step of stage 1 (the tiny default: DeepSpeed ZeRO-2, the real
  loader with its worker, per-step metrics to JSONL and wandb offline) over a bare loop of forward + backward
  per micro-batch and one ``torch.optim.AdamW`` step, on the same model, freezing and micro-batches. Both
  compute on the same ``compute_threads``: the cores less one per loader worker, which decodes on the core
  left to it, as a GPU host's loader does on cores the device's step does not use.
- ``overhead_ratio_shared_cores``: the same pair with every core computing, so the worker's decoding takes
  turns with the training threads (what a CPU-only laptop run pays; the bare loop decodes nothing).
- ``data_wait_share``: the share of the stage's step time spent waiting for the loader (the metric it logs).
- ``compute_overhead_ratio``: the same stage with the loader inline (no worker process), its data wait taken
  out of each step, over the bare loop: the trainer's own cost (DeepSpeed's hooks and step, metrics) apart
  from the data path's. ``data_s_per_step``: that data wait in seconds.
- ``zero3_mem_ratio``: per-rank parameter + optimizer bytes under ZeRO-3 (stage 2: everything learns) with
  2 ranks over 1 rank, each started by the ``deepspeed`` launcher.

Each bare loop replays the micro-batches of the trainer it is compared with.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from data_prep.synthetic.shards import world_samples, write_shards
from pipeline.backends import backend_class
from pipeline.config import CONFIG_ROOT, load_config
from pipeline.distributed import gather_objects, shutdown
from pipeline.metrics.flops import torch_threads
from pipeline.model.qwenvl import QwenVL
from pipeline.optim import freeze
from pipeline.schema import StageConfig
from pipeline.tokens import load_tokenizer
from stages.train import Trainer

STEPS, WARMUP = 14, 4  # optimizer steps of the stage run; the first WARMUP are not timed
REPO = Path(__file__).resolve().parent.parent
RUN = ["logging.wandb=offline", "logging.sample_every=0", "train.init_from=null"]


def stage_config(stage: str, shards: str, out: Path, *overrides: str) -> StageConfig:
    return load_config(StageConfig, CONFIG_ROOT / f"{stage}.yaml",
                       [f"data.shards={shards}", f"run.output_dir={out}", *RUN, *overrides])  # fmt: skip


def bare_loop(cfg: StageConfig) -> Callable[[list[dict]], None]:
    """A step of the same model and freezing over given micro-batches: plain forward + backward + AdamW."""
    torch.manual_seed(cfg.run.seed)
    model = QwenVL.from_config(cfg.model, cfg.data.image_size, load_tokenizer(cfg.model.tokenizer))
    freeze(model, cfg.train.trainable)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step(micro_batches: list[dict]) -> None:
        for batch in micro_batches:
            model(**batch).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def _timed_pair(cfg: StageConfig, interleaved: bool) -> tuple[float, float, float]:
    """(the trainer's seconds per step, its data-wait share, the bare loop's seconds per step), medians
    after WARMUP. The trainer runs the loop's own ``train_step`` (loader, DeepSpeed, metrics); the bare loop
    replays the micro-batches each of its steps used. Interleaved, a bare step follows every trainer step,
    so drift in the machine's speed hits both alike; not, when a loader worker shares the compute cores and
    would decode for the trainer during bare steps."""
    trainer = Trainer(cfg, backend_class().init_distributed())  # a process group of one, kept
    used: list[dict] = []

    def recorded():
        for batch in trainer.loader:
            used.append({k: v for k, v in batch.items() if torch.is_tensor(v)})
            yield batch

    batches, bare, n = recorded(), bare_loop(cfg), trainer.accumulation
    ours: list[float] = []
    theirs: list[float] = []
    rows: list[dict] = []

    def bare_step(i: int) -> None:
        start = time.perf_counter()
        bare(used[i * n : (i + 1) * n])
        theirs.append(time.perf_counter() - start)

    for i in range(STEPS):
        start = time.perf_counter()
        rows.append(trainer.train_step(batches)[0])
        ours.append(time.perf_counter() - start)
        if interleaved:
            bare_step(i)
    if not interleaved:
        for i in range(STEPS):
            bare_step(i)
    trainer.logger.close()
    rows = rows[WARMUP:]
    wait = sum(r["data_wait_share"] * r["step_s"] for r in rows) / sum(r["step_s"] for r in rows)
    return statistics.median(ours[WARMUP:]), wait, statistics.median(theirs[WARMUP:])


def _zero3_bytes(ranks: int, shards: str, out: Path) -> int:
    """The largest per-rank parameter + optimizer bytes of a ZeRO-3 stage-2 engine on ``ranks`` ranks."""
    result = out / f"bytes-{ranks}.json"
    cmd, env = backend_class().launcher_command(
        "bench.train", [str(result), shards, str(out / f"zero3-{ranks}")], ranks, module=True
    )
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return max(r["param_bytes"] + r["optimizer_bytes"] for r in json.loads(result.read_text()))


def _rank_main(result: str, shards: str, out: str) -> None:
    """One rank of _zero3_bytes: one step of stage 2 under ZeRO-3, then what this rank holds."""
    cfg = stage_config("stage2", shards, Path(out), "deepspeed.zero_stage=3", "logging.wandb=disabled",
                       "train.max_steps=1", "data.num_workers=0")  # fmt: skip
    dist = backend_class().init_distributed()
    trainer = Trainer(cfg, dist)
    trainer.train()  # one step: the optimizer's moments exist from then on
    held = gather_objects(trainer.backend.state_bytes())
    if dist.main:
        Path(result).write_text(json.dumps(held))
    shutdown()


def run() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        shards = write_shards(world_samples(400, 40), Path(tmp) / "shards", per_shard=40)

        def config(name: str, *overrides: str) -> StageConfig:
            steps = [f"train.max_steps={STEPS}", f"train.checkpoint_every={STEPS}", f"run.name={name}"]
            return stage_config("stage1", shards, Path(tmp), *steps, *overrides)

        cfg = config("bench")
        cores = torch.get_num_threads()
        compute = max(1, (os.cpu_count() or cores) - cfg.data.num_workers)
        with torch_threads(compute):  # the worker decodes on its own core: interleaving biases nothing
            ours, wait, bare = _timed_pair(cfg, interleaved=True)
            inline = config("bench-inline", "data.num_workers=0")
            inline_s, inline_wait, inline_bare = _timed_pair(inline, interleaved=True)
        shared, _, shared_bare = _timed_pair(config("bench-shared"), interleaved=False)
        one, two = _zero3_bytes(1, shards, Path(tmp)), _zero3_bytes(2, shards, Path(tmp))
    return {
        "overhead_ratio": round(ours / bare, 3),
        "step_s": round(ours, 3),
        "bare_step_s": round(bare, 3),
        "compute_threads": compute,
        "data_wait_share": round(wait, 4),
        "overhead_ratio_shared_cores": round(shared / shared_bare, 3),
        "shared_cores": cores,
        "compute_overhead_ratio": round(inline_s * (1 - inline_wait) / inline_bare, 3),
        "data_s_per_step": round(inline_s * inline_wait, 3),
        "zero3_mem_ratio": round(two / one, 3),
        "zero3_bytes_1_rank": one,
        "zero3_bytes_per_rank_2_ranks": two,
        "stage": "stage1, tiny default, ZeRO-2, 1 rank",
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (fp32)",
        "micro_batch": cfg.train.micro_batch_size,
        "accumulation": cfg.train.accumulation(1),
        "image_size": cfg.data.image_size,
    }


if __name__ == "__main__":  # a rank of _zero3_bytes, started by the deepspeed launcher
    _rank_main(*[a for a in sys.argv[1:] if not a.startswith("--local_rank")])
