"""A training step of the tiny QwenVL on CPU (ViT at 224 px -> resampler -> LLM over a formatted caption
batch), as seconds per step and as a share of the machine's own fp32 matmul throughput, measured in the
same run."""

from __future__ import annotations

import random
import time

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoTokenizer

from pipeline.config import CONFIG_ROOT, load_config
from pipeline.data.formats import Formatter, Record
from pipeline.data.loader import collate
from pipeline.metrics.flops import measured_matmul_flops
from pipeline.model.qwenvl import QwenVL
from pipeline.schema import ModelConfig

BATCH, REPEATS, SIZE = 2, 10, 224
CAPTION = (
    "A large red circle and a small blue square on a plain beige background. The word STOP is written on it."
)


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
    model = QwenVL.from_config(cfg, SIZE, tokenizer)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    fmt = Formatter(tokenizer, cfg.adapter.num_queries, 512)
    examples = [
        fmt(Record(str(i), {"lang": "en"}, CAPTION, True), "caption", random.Random(i)) for i in range(BATCH)
    ]
    batch = collate(
        examples, [torch.randn(3, SIZE, SIZE) for _ in range(BATCH)], tokenizer.pad_token_id, SIZE
    )

    def step() -> None:
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        step()
    step_flops = counter.get_total_flops()
    step_s = _timed(step, REPEATS)

    matmul_flops_per_s = measured_matmul_flops(1024, 20)  # the same peak the stages' CPU MFU uses
    return {
        "step_s": round(step_s, 4),
        "step_gflops": round(step_flops / 1e9, 2),
        "matmul_gflops_per_s": round(matmul_flops_per_s / 1e9, 1),
        "share_of_matmul_peak": round(step_flops / step_s / matmul_flops_per_s, 3),
        "batch": BATCH,
        "tokens_per_sample": len(examples[0].input_ids),
        "threads": torch.get_num_threads(),
    }
