"""The stage trainer on a CUDA device (bf16, ZeRO-2, 8-bit pixels normalised on the GPU); skipped on CPU."""

import math

import pytest
import torch

from pipeline.metrics import read_metrics
from pipeline.model.vision import normalize_pixels
from tests.stages.test_train import stage_cfg, trainer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_a_bf16_stage_trains_on_the_gpu_and_logs_its_speed(tmp_path, world_shards):
    cfg = stage_cfg("stage2", tmp_path, world_shards, "train.init_from=null", "train.precision=bf16",
                    "data.pixels=uint8", "data.group_by_length=2")  # fmt: skip
    t = trainer(cfg)
    assert t.backend.model.adapter.query.dtype == torch.bfloat16
    t.train()
    rows = read_metrics(tmp_path / "default" / "stage2" / "metrics.jsonl")
    assert all(math.isfinite(r["loss"]) for r in rows)
    assert all(0 < r["mfu"] < 1 and r["memory_gb"] > 0 for r in rows)


def test_8_bit_pixels_normalise_on_the_gpu_as_on_the_cpu():
    pixels = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    stats = ((0.48, 0.46, 0.41), (0.27, 0.26, 0.28))
    on_gpu = normalize_pixels(pixels.cuda(non_blocking=True), *stats).cpu()
    assert torch.allclose(on_gpu, normalize_pixels(pixels, *stats), atol=1e-6)
