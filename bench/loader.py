"""The training loader at 448 px (shards -> decode -> resize -> task format -> collate) in samples/s for one
worker, against a bare decode+resize loop over the same images, measured in the same run."""

from __future__ import annotations

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
from pipeline.schema import StageConfig

SIZE, BATCH, BATCHES, PAIRS = 448, 8, 40, 240


def run() -> dict:
    cfg = load_config(StageConfig, CONFIG_ROOT / "stage2.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        shards = write_shards(world_samples(PAIRS, 0), Path(tmp), per_shard=40)
        transform = image_transform(cfg.model.vision, SIZE)
        tokenizer = AutoTokenizer.from_pretrained(cfg.model.tokenizer)
        formatter = Formatter(tokenizer, cfg.model.adapter.num_queries, cfg.data.max_length)
        cfg.data.shards, cfg.data.image_size, cfg.data.num_workers = shards, SIZE, 1
        it = iter(build_loader(cfg.data, formatter, transform, BATCH, seed=0, rank=0, world_size=1))
        next(it)  # worker start-up and the first shards
        start = time.perf_counter()
        for _ in range(BATCHES):
            next(it)
        loader_rate = BATCHES * BATCH / (time.perf_counter() - start)

        images = [raw["jpg"] for raw in read_shards(expand_urls(shards))]
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as in a dataloader worker
        start = time.perf_counter()
        for data in images:
            transform(Image.open(io.BytesIO(data)).convert("RGB"))
        bare_rate = len(images) / (time.perf_counter() - start)
        torch.set_num_threads(threads)
    return {
        "image_size": SIZE,
        "loader_samples_per_s_per_worker": round(loader_rate, 1),
        "bare_decode_resize_samples_per_s": round(bare_rate, 1),
        "ratio_to_bare": round(loader_rate / bare_rate, 3),
        "batch": BATCH,
        "tasks": "stage 2 mix",
    }
