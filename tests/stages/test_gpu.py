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


def _loss_and_grads(model, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    out = model(**{k: v.cuda() if torch.is_tensor(v) else v for k, v in batch.items()})
    out.loss.backward()
    return out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("lever", ["liger", "compile"])
def test_each_speed_lever_gives_the_plain_models_loss_and_gradients(tiny_model, tokenizer, lever):
    """fp32 on the GPU, so that a difference is the lever's and not bf16's."""
    import copy

    from pipeline.model.kernels import apply_liger, compile_blocks, liger_token_loss
    from tests.pipeline.model.test_qwenvl import batch

    model = copy.deepcopy(tiny_model).cuda().train()
    b = batch(tokenizer)
    plain_loss, plain = _loss_and_grads(model, b)
    if lever == "liger":
        apply_liger(model.llm, ["rms_norm", "swiglu", "rope"])
        model.token_loss = liger_token_loss()
    else:
        compile_blocks({"vision": model.vision, "llm": model.llm})
    loss, grads = _loss_and_grads(model, b)
    assert torch.allclose(loss, plain_loss, rtol=1e-5), (loss, plain_loss)
    assert grads.keys() == plain.keys()
    for name, grad in plain.items():
        scale = grad.abs().max().clamp(min=1e-8)
        assert (grads[name] - grad).abs().max() / scale <= 1e-3, name


def test_a_bf16_stage_trains_with_every_lever_on(tmp_path, world_shards):
    cfg = stage_cfg("stage2", tmp_path, world_shards, "train.init_from=null", "train.precision=bf16",
                    "train.kernels=[fused_cross_entropy,rms_norm,swiglu,rope]", "train.compile=[vision,llm]",
                    "data.packing=true")  # fmt: skip
    t = trainer(cfg)
    assert t.levers == ["fused_cross_entropy", "rms_norm", "swiglu", "rope", "compile_vision", "compile_llm"]
    t.train()
    rows = read_metrics(tmp_path / "default" / "stage2" / "metrics.jsonl")
    assert all(math.isfinite(r["loss"]) for r in rows)
