"""Packing against length grouping on the stage-2 mix of the synthetic world, in one run, at the stage-2 file's
2,048 tokens per row and at the demo's 512: the padded share of the LLM tokens plain, grouped
(``data.group_by_length``) and packed (``data.packing``), and the supervised tokens per second of the tiny
model's training step (forward, backward, AdamW) over the same number of micro-batches from the grouped and the
packed loader.

``packing_padding_share`` (goal <= 0.01) is the 2,048-token one; ``packing_tokens_ratio`` (goal >= 1.15) the
512-token one: on CPU, attention over a packed row computes the whole masked square, so 2,048-token rows pay
for the packing what a GPU's variable-length kernel does not (both lengths are reported).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

from data_prep.synthetic.shards import world_samples, write_shards
from pipeline.config import CONFIG_ROOT, load_config
from pipeline.data.formats import Formatter
from pipeline.data.loader import build_loader
from pipeline.model.qwenvl import QwenVL
from pipeline.model.vision import image_transform
from pipeline.schema import StageConfig
from pipeline.tokens import IGNORE

SIZE, MICRO, WINDOW, BATCHES, STEPS = 112, 4, 8, 48, 6
LENGTHS = (2048, 512)


def run() -> dict:
    result: dict = {"image_size": SIZE, "micro_batch": MICRO, "window": WINDOW}
    with tempfile.TemporaryDirectory() as tmp:
        shards = write_shards(world_samples(400, 40), Path(tmp), per_shard=50)
        for length in LENGTHS:
            modes = {"plain": (1, False), "grouped": (WINDOW, False), "packed": (WINDOW, True)}
            batches = {
                name: _batches(shards, length, group, packing) for name, (group, packing) in modes.items()
            }
            result |= {f"{name}_padding_share_{length}": round(_padding(b), 4) for name, b in batches.items()}
            rates = {name: _tokens_per_s(batches[name][:STEPS]) for name in ("grouped", "packed")}
            result |= {f"{name}_supervised_tokens_per_s_{length}": round(r, 1) for name, r in rates.items()}
            result[f"packing_tokens_ratio_{length}"] = round(rates["packed"] / rates["grouped"], 3)
            result[f"samples_per_packed_micro_batch_{length}"] = round(
                sum(len(b["keys"]) for b in batches["packed"]) / BATCHES, 1
            )
    result["packing_padding_share"] = result["packed_padding_share_2048"]
    result["packing_tokens_ratio"] = result["packing_tokens_ratio_512"]
    return result


def _batches(shards: str, length: int, group: int, packing: bool) -> list[dict]:
    cfg = load_config(StageConfig, CONFIG_ROOT / "stage2.yaml", [f"data.shards={shards}", "data.num_workers=0",
                      f"data.image_size={SIZE}", f"data.max_length={length}", f"data.group_by_length={group}",
                      f"data.packing={str(packing).lower()}"])  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(cfg.model.tokenizer)
    formatter = Formatter(tokenizer, cfg.model.adapter.num_queries, length)
    loader = build_loader(cfg.data, formatter, image_transform(cfg.model.vision, SIZE), MICRO, 0, 0, 1)
    it = iter(loader)
    return [next(it) for _ in range(BATCHES)]


def _padding(batches: list[dict]) -> float:
    return sum(int((b["attention_mask"] == 0).sum()) for b in batches) / sum(
        b["attention_mask"].numel() for b in batches
    )


def _tokens_per_s(batches: list[dict]) -> float:
    torch.manual_seed(0)
    cfg = load_config(StageConfig, CONFIG_ROOT / "stage2.yaml")
    tokenizer = AutoTokenizer.from_pretrained(cfg.model.tokenizer)
    model = QwenVL.from_config(cfg.model, SIZE, tokenizer).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step(batch: dict) -> None:
        model(**{k: v for k, v in batch.items() if torch.is_tensor(v)}).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step(batches[0])  # warm-up
    start = time.perf_counter()
    for batch in batches:
        step(batch)
    seconds = time.perf_counter() - start
    return sum(int((b["labels"] != IGNORE).sum()) for b in batches) / seconds
