"""Training speed of the three stages through the real stage code (DeepSpeed ZeRO-2 on one device, the real
loader on the real shard format, bf16 on a GPU), and the gain of each speed lever against it switched off.

On CUDA it trains ``configs/model/bench-1b.yaml`` (random weights) at the paper's resolutions; without CUDA
the tiny default at half those sizes in fp32, which checks the bench itself, not a GPU's speed. Per stage:
``mfu`` and ``data_wait_share`` (the metrics the stages log, means over the timed steps), ``step_s``, peak
memory, and a split of the step: forward + backward of the ViT, the resampler and the LLM each timed alone on
the stage's own batch (a tower that is frozen gets no backward), the rest (``optimizer_and_rest_s``: the
DeepSpeed step, its reductions, the metrics) as what the step takes beyond them. Then stage 2 once per entry
of ``VARIANTS``, with ``step_s_over_default`` (above 1: the default is faster).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from data_prep.synthetic.shards import world_samples, write_shards
from pipeline.backends import backend_class
from pipeline.config import CONFIG_ROOT, load_config
from pipeline.schema import StageConfig
from stages.train import Trainer

CUDA = torch.cuda.is_available()
PRESET, MICRO, STEPS, WARMUP = ("bench-1b", 16, 16, 4) if CUDA else ("tiny", 4, 5, 2)
SIZES = (
    {"stage1": 224, "stage2": 448, "stage3": 448} if CUDA else {"stage1": 112, "stage2": 224, "stage3": 224}
)
# every lever that is off by default (each is measured before it becomes one)
LEVERS = [
    "train.kernels=[fused_cross_entropy,rms_norm,swiglu,rope]",
    "train.compile=[vision,llm]",
    "data.packing=true",
]
# stage 2 again with one setting changed: each lever alone, the levers that are on by default switched off,
# and activation checkpointing: for its memory against its time
VARIANTS = [
    "train.kernels=[fused_cross_entropy]",
    "train.kernels=[rms_norm,swiglu,rope]",
    "train.compile=[vision,llm]",
    "data.packing=true",
    "data.pixels=float32",
    "data.group_by_length=1",
    "train.activation_checkpointing=[vision,llm]",
]
REPEATS = 3  # timings of each component, the median kept
BUDGET_S = float(os.environ.get("BENCH_GPU_BUDGET_S", 420))
PARTIAL = Path("runs/bench/gpu.json")


def run() -> dict:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        shards = write_shards(world_samples(40 * MICRO, 0), Path(tmp) / "shards", per_shard=4 * MICRO)
        result: dict = {
            "device": torch.cuda.get_device_name() if CUDA else "cpu (fp32: checks the bench, not a GPU)",
            "preset": PRESET,
            "micro_batch": MICRO,
            "timed_steps": STEPS - WARMUP,
            "budget_s": BUDGET_S,
            "stage2_variants": {},
            "skipped": [],
        }
        # (key, stage, overrides, split the step into its parts); the most wanted first
        plan = [("stage2", "stage2", (), True), ("stage2_levers", "stage2", tuple(LEVERS), False)]
        plan += [(v, "stage2", (v,), False) for v in VARIANTS[:4]]
        for stage in ("stage1", "stage3"):
            plan += [(stage, stage, (), True), (f"{stage}_levers", stage, tuple(LEVERS), False)]
        plan += [(v, "stage2", (v,), False) for v in VARIANTS[4:]]
        took: list[float] = []
        for key, stage, overrides, split in plan:
            left = BUDGET_S - (time.perf_counter() - start)
            # compiling costs more than the rest: allow twice the slowest run so far
            if took and left < (2 if any("compile" in o for o in overrides) else 1.2) * max(took):
                result["skipped"].append(key)
                continue
            began = time.perf_counter()
            measured = _measure(stage, shards, Path(tmp), *overrides, split=split)
            measured["wall_s"] = round(time.perf_counter() - began, 1)
            took.append(measured["wall_s"])
            _record(result, key, measured)
            PARTIAL.parent.mkdir(parents=True, exist_ok=True)
            PARTIAL.write_text(json.dumps(result, indent=2))
    return result


def _record(result: dict, key: str, measured: dict) -> None:
    if key in VARIANTS or key.endswith("_levers"):
        base = result.get(key.removesuffix("_levers") if key.endswith("_levers") else "stage2")
        if base:
            measured["step_s_over_default"] = round(measured["step_s"] / base["step_s"], 3)
            measured["tokens_per_s_over_default"] = round(measured["tokens_per_s"] / base["tokens_per_s"], 3)
    if key in VARIANTS:
        result["stage2_variants"][key] = measured
        return
    result[key] = measured
    result[f"mfu_{key}"] = measured["mfu"]
    if key == "stage2":
        result["data_wait_share"] = measured["data_wait_share"]


def _config(stage: str, shards: str, out: Path, *overrides: str) -> StageConfig:
    return load_config(StageConfig, CONFIG_ROOT / f"{stage}.yaml", [
        f"model={PRESET}", "scale=paper", f"data.shards={shards}", f"data.image_size={SIZES[stage]}",
        f"train.micro_batch_size={MICRO}", f"train.global_batch_size={MICRO}", f"train.max_steps={STEPS}",
        "train.init_from=null", "train.resume=never", f"run.output_dir={out}", f"run.name=gpu-{len(overrides)}",
        "logging.wandb=disabled", "logging.sample_every=0", "eval.shards=null", *overrides,
    ])  # fmt: skip


def _measure(stage: str, shards: str, out: Path, *overrides: str, split: bool = True) -> dict:
    trainer = Trainer(_config(stage, shards, out, *overrides), backend_class().init_distributed())
    batches = iter(trainer.loader)
    rows = [trainer.train_step(batches)[0] for _ in range(STEPS)][WARMUP:]
    step_s = statistics.median(r["step_s"] for r in rows)
    measured = {
        "step_s": round(step_s, 4),
        "mfu": round(statistics.mean(r.get("mfu", 0.0) for r in rows), 4),
        "data_wait_share": round(statistics.mean(r["data_wait_share"] for r in rows), 4),
        "padding_share": round(statistics.mean(r["padding_share"] for r in rows), 4),
        "tokens_per_s": round(statistics.mean(r["tokens_per_s"] for r in rows), 1),
        "peak_memory_gb": round(max(r["memory_gb"] for r in rows), 2),
        "image_size": trainer.cfg.data.image_size,
        "trainable": trainer.cfg.train.trainable,
    }
    if split:
        parts = _split(trainer, next(batches))
        measured["split_s"] = {
            **parts,
            "optimizer_and_rest_s": round(max(step_s - sum(parts.values()), 0.0), 4),
        }
    trainer.logger.close()
    del trainer
    if CUDA:
        torch.cuda.empty_cache()
    return measured


def _split(trainer: Trainer, batch: dict) -> dict[str, float]:
    """Forward + backward of each part alone on ``batch``, as the step runs it (its dtype, its freezing)."""
    model, device = trainer.backend.model, trainer.dist.device
    inputs = trainer.to_device(batch)
    vision_trains = any(p.requires_grad for p in model.vision.parameters())
    pixels = model.vision_input(inputs["pixel_values"])
    with torch.no_grad():
        patches = model.vision(pixels)[1]
        embeds = model.embed(inputs["input_ids"], inputs["pixel_values"], inputs["has_image"])

    def vision():
        out = model.vision(pixels)[1]
        if vision_trains:
            out.backward(torch.ones_like(out))

    def adapter():
        out = model.adapter(patches.detach().requires_grad_(vision_trains))
        out.backward(torch.ones_like(out))

    def llm():
        logits = model.llm(inputs_embeds=embeds.detach().requires_grad_(True), attention_mask=inputs["attention_mask"],
                           use_cache=False).logits  # fmt: skip
        logits.float().logsumexp(-1).mean().backward()

    parts = {"vit_s": vision, "resampler_s": adapter, "llm_s": llm}
    timed = {name: round(_timed(fn, device), 4) for name, fn in parts.items()}
    model.zero_grad(set_to_none=True)
    return timed


def _timed(fn, device: torch.device) -> float:
    fn()  # warm-up
    seconds = []
    for _ in range(REPEATS):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)
