"""A training step of the tiny preset on CPU (vision tower at 224 px + LLM over an image-sized sequence),
as seconds per step and as a share of the machine's own fp32 matmul throughput, measured in the same run."""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoTokenizer

from pipeline.config import CONFIG_ROOT, load_config
from pipeline.model.language import build_llm
from pipeline.model.vision import build_vision_tower
from pipeline.schema import ModelConfig

BATCH, TEXT_TOKENS, REPEATS = 2, 64, 10


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def run() -> dict:
    torch.manual_seed(0)
    cfg = load_config(ModelConfig, CONFIG_ROOT / "model" / "tiny.yaml")
    tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer)
    vision = build_vision_tower(cfg.vision, 224)
    llm = build_llm(cfg.llm, vocab_size=len(tokenizer))
    params = list(vision.parameters()) + list(llm.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4)
    images = torch.randn(BATCH, 3, 224, 224)
    ids = torch.randint(0, len(tokenizer), (BATCH, cfg.adapter.num_queries + 2 + TEXT_TOKENS))

    def step() -> None:
        _, tokens = vision(images)
        loss = llm(input_ids=ids, labels=ids).loss + tokens.float().pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        step()
    step_flops = counter.get_total_flops()
    step_s = _timed(step, REPEATS)

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    matmul_s = _timed(lambda: a @ b, 20)
    matmul_flops_per_s = 2 * 1024**3 / matmul_s
    return {
        "step_s": round(step_s, 4),
        "step_gflops": round(step_flops / 1e9, 2),
        "matmul_gflops_per_s": round(matmul_flops_per_s / 1e9, 1),
        "share_of_matmul_peak": round(step_flops / step_s / matmul_flops_per_s, 3),
        "batch": BATCH,
        "threads": torch.get_num_threads(),
    }
