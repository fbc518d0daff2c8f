"""Clean shards of the synthetic world written straight in the shard format, without prep's filters: the
fixtures of tests and benches (prep's own output goes through `make prep`)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from data_prep.synthetic.world import NoiseRates, WorldConfig, image_bytes, metadata, plan_sample, text_sample
from pipeline.data.shard_format import sample_record, write_shard


def world_samples(num_pairs: int, num_text: int, seed: int = 0) -> list[dict]:
    """Clean image-text pairs (all tasks' ground truth in .json) and text-only samples, shuffled."""
    cfg = WorldConfig(num_samples=num_pairs, seed=seed, word_rate=0.5, noise=NoiseRates(*[0.0] * 8))
    samples = []
    for index in range(num_pairs):
        plan = plan_sample(cfg, index)
        meta = metadata(cfg, plan)
        samples.append(sample_record(plan.key, meta, plan.clean_caption, image_bytes(cfg, plan), "jpg"))
    samples += [sample_record(t["key"], t) for t in (text_sample(cfg, i) for i in range(num_text))]
    random.Random(seed).shuffle(samples)
    return samples


def write_shards(samples: list[dict], out: Path, per_shard: int) -> str:
    """Write ``samples`` into ``out/000000.tar`` ... and return the brace pattern of the shards."""
    out.mkdir(parents=True, exist_ok=True)
    count = (len(samples) + per_shard - 1) // per_shard
    for shard in range(count):
        write_shard(out / f"{shard:06d}.tar", samples[shard * per_shard : (shard + 1) * per_shard])
    return str(out / f"{{000000..{count - 1:06d}}}.tar")


def one_task_shards(out: Path, num: int, task: str, per_shard: int, seed: int = 0) -> str:
    """Shards of ``num`` world images with one task's ground truth each, as real datasets come: ``caption``
    (LAION-like: the caption alone) or one of the metadata tasks (``ref``: RefCOCO-like, no caption)."""
    samples = []
    for sample in world_samples(num, 0, seed):
        meta = json.loads(sample["json"])
        tasks = meta.pop("tasks", {})
        if task != "caption":
            meta.pop("caption", None)
            sample.pop("txt", None)
            meta["tasks"] = {task: tasks[task]}
        sample["json"] = json.dumps(meta).encode()
        samples.append(sample)
    return write_shards(samples, out, per_shard)
