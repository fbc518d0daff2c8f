"""The training loader at 448 px (shards -> decode -> resize -> task format -> collate), measured in one run:

- samples/s of one worker sending 8-bit pixels (``data.pixels=uint8``, normalised later on the device)
  against the same worker sending normalised float32 pixels, and against a bare decode+resize loop over the
  same images;
- the share of padded LLM tokens of the stage 2 and stage 3 mixes without and with length grouping
  (``data.group_by_length``, the stage configs' window);
- the cost of a mixture: samples/s of the same samples read as 3 sources (``data.sources``, of 120, 80 and
  40 samples, weighted by size) against one (``mix_loader_ratio``, goal >= 0.95), each the best of
  ``MIX_REPEATS`` runs taken in turn.
"""

from __future__ import annotations

import dataclasses
import io
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoTokenizer

from data_prep.synthetic.shards import world_samples, write_shards
from pipeline.config import CONFIG_ROOT, load_config
from pipeline.data.formats import Formatter
from pipeline.data.loader import build_loader
from pipeline.data.shard_format import expand_urls, read_shards
from pipeline.model.vision import image_transform
from pipeline.schema import SourceConfig, StageConfig

SIZE, BATCH, BATCHES, PAIRS = 448, 8, 40, 240
PADDING_BATCHES = 64
MIX_SIZES, MIX_REPEATS = (120, 80, 40), 2


def run() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        shards = write_shards(world_samples(PAIRS, 0), Path(tmp), per_shard=40)
        cfg = _stage("stage2", shards)
        rates = {pixels: _rate(cfg, pixels) for pixels in ("uint8", "float32")}
        bare_rate = _bare_rate(cfg, shards)
        result = {
            "image_size": SIZE,
            "batch": BATCH,
            "tasks": "stage 2 mix",
            "loader_samples_per_s_per_worker_uint8": round(rates["uint8"], 1),
            "loader_samples_per_s_per_worker_float32": round(rates["float32"], 1),
            "uint8_over_float32": round(rates["uint8"] / rates["float32"], 3),
            "bare_decode_resize_samples_per_s": round(bare_rate, 1),
            "ratio_to_bare": round(rates["uint8"] / bare_rate, 3),
        }
        result.update(_mix_rates(cfg, world_samples(PAIRS, 0), Path(tmp) / "mix"))
        for stage in ("stage2", "stage3"):
            cfg = _stage(stage, shards)
            window = cfg.data.group_by_length
            result[f"{stage}_group_by_length"] = window
            for group, name in ((1, "off"), (window, "grouped")):
                cfg.data.group_by_length = group
                result[f"{stage}_padding_share_{name}"] = round(_padding_share(cfg), 4)
    return result


def _mix_rates(cfg: StageConfig, samples: list[dict], root: Path) -> dict:
    sources, start = [], 0
    for i, size in enumerate(MIX_SIZES):
        shards = write_shards(samples[start : start + size], root / f"set{i}", per_shard=40)
        sources.append(SourceConfig(f"set{i}", shards, float(size)))
        start += size
    one = dataclasses.replace(cfg.data, shards="::".join(s.shards for s in sources), sources=[])
    three = dataclasses.replace(cfg.data, shards=None, sources=sources)
    rates: dict[str, list[float]] = {"one": [], "three": []}
    for _ in range(MIX_REPEATS):  # in turn, so that a slow moment of the machine costs both alike
        for name, data in (("one", one), ("three", three)):
            rates[name].append(_rate(dataclasses.replace(cfg, data=data), "uint8"))
    best = {name: max(r) for name, r in rates.items()}
    return {"mix_sources": len(MIX_SIZES), "loader_samples_per_s_one_source": round(best["one"], 1),
            "loader_samples_per_s_three_sources": round(best["three"], 1),
            "mix_loader_ratio": round(best["three"] / best["one"], 3)}  # fmt: skip


def _stage(stage: str, shards: str) -> StageConfig:
    cfg = load_config(StageConfig, CONFIG_ROOT / f"{stage}.yaml", ["scale=paper"])
    cfg.data.shards, cfg.data.image_size, cfg.data.num_workers = shards, SIZE, 1
    return cfg


def _loader(cfg: StageConfig, pixels: str):
    tokenizer = AutoTokenizer.from_pretrained(cfg.model.tokenizer)
    formatter = Formatter(tokenizer, cfg.model.adapter.num_queries, cfg.data.max_length)
    transform = image_transform(cfg.model.vision, SIZE, pixels)
    return build_loader(cfg.data, formatter, transform, BATCH, seed=0, rank=0, world_size=1)


def _rate(cfg: StageConfig, pixels: str) -> float:
    it = iter(_loader(cfg, pixels))
    next(it)  # worker start-up and the first shards
    start = time.perf_counter()
    for _ in range(BATCHES):
        next(it)
    return BATCHES * BATCH / (time.perf_counter() - start)


def _bare_rate(cfg: StageConfig, shards: str) -> float:
    images = [raw["jpg"] for raw in read_shards(expand_urls(shards))]
    transform = image_transform(cfg.model.vision, SIZE, "uint8")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a dataloader worker
    start = time.perf_counter()
    for data in images:
        transform(Image.open(io.BytesIO(data)).convert("RGB"))
    rate = len(images) / (time.perf_counter() - start)
    torch.set_num_threads(threads)
    return rate


def _padding_share(cfg: StageConfig) -> float:
    it = iter(_loader(cfg, "uint8"))
    masks = [next(it)["attention_mask"] for _ in range(PADDING_BATCHES)]
    return sum(int((m == 0).sum()) for m in masks) / sum(m.numel() for m in masks)
