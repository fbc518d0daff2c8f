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


META_KEYS = {
    "caption": "caption_en",
    "chatml": "dialogue",
}  # the task's ground truth in a world sample's tasks


def one_task_samples(num: int, task: str, seed: int = 0, one_each: bool = False) -> list[dict]:
    """``num`` world images with one task's ground truth each, as real datasets come: ``caption`` (LAION-like:
    the caption alone) or one of the metadata tasks (``ref``: RefCOCO-like, no caption). Images without the
    task (OCR: those without words) are passed over. ``one_each``: one record of a list, drawn with ``seed``
    (one question or expression per sample, as VQAv2's and RefCOCO's importers write them)."""
    samples: list[dict] = []
    batch, rng = num, random.Random(seed)
    while len(samples) < num:
        samples = []
        for sample in world_samples(batch, 0, seed):
            meta = json.loads(sample["json"])
            truth = meta.pop("tasks", {}).get(META_KEYS.get(task, task))
            if not truth:
                continue
            if task != "caption":
                meta.pop("caption", None)
                sample.pop("txt", None)
                meta["tasks"] = {
                    META_KEYS.get(task, task): [rng.choice(truth)]
                    if one_each and isinstance(truth, list)
                    else truth
                }
            sample["json"] = json.dumps(meta).encode()
            samples.append(sample)
        batch *= 2
    return samples[:num]


def one_task_shards(
    out: Path, num: int, task: str, per_shard: int, seed: int = 0, one_each: bool = False
) -> str:
    """``one_task_samples`` written as shards; returns their brace pattern."""
    return write_shards(one_task_samples(num, task, seed, one_each), out, per_shard)
