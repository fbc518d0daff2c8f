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


def one_task_samples(num: int, task: str, seed: int = 0) -> list[dict]:
    """``num`` world images with one task's ground truth each, as real datasets come: ``caption`` (LAION-like:
    the caption alone) or one of the metadata tasks (``ref``: RefCOCO-like, no caption). Images without the
    task (OCR: those without words) are passed over."""
    samples: list[dict] = []
    pool = num
    while len(samples) < num:
        samples = []
        for sample in world_samples(pool, 0, seed):
            meta = json.loads(sample["json"])
            key = META_KEYS.get(task, task)
            truth = meta.pop("tasks", {}).get(key)
            if not truth:
                continue
            if task != "caption":
                meta.pop("caption", None)
                sample.pop("txt", None)
                meta["tasks"] = {key: truth}
            sample["json"] = json.dumps(meta).encode()
            samples.append(sample)
        pool *= 2
    return samples[:num]


def same_question_samples(num: int, task: str, per_question: int = 4, seed: int = 0) -> list[dict]:
    """``num`` world images, one ``vqa`` question or ``ref`` expression each, in groups of ``per_question``
    that ask the same thing and differ in the answer (another answer; a box at IoU < 0.5 with the others), so
    that the text alone cannot tell them apart: a model answers them only from the image. ``chatml``: the VQA
    groups as one-turn dialogues (the image and the question from the user, the answer from the assistant)."""
    source = "vqa" if task == "chatml" else task
    text_key, answer_key = {"vqa": ("question", "answer"), "ref": ("expression", "box")}[source]
    groups: dict[str, list[tuple[dict, dict]]] = {}
    done: list[list[tuple[dict, dict]]] = []
    pool = 0
    while len(done) * per_question < num:
        pool += 4 * num
        groups, done = {}, []
        for sample in world_samples(pool, 0, seed):
            records = json.loads(sample["json"]).get("tasks", {}).get(source) or []
            for record in records:
                group = groups.setdefault(record[text_key], [])
                if len(group) < per_question and all(
                    _differ(source, record[answer_key], r[answer_key]) for _, r in group
                ):
                    group.append((sample, record))
                    if len(group) == per_question:
                        done.append(group)
                    break  # one record per image
            if len(done) * per_question >= num:
                break
    samples = []
    for sample, record in (pair for group in done for pair in group):
        meta = json.loads(sample["json"])
        meta.pop("caption", None)
        meta["tasks"] = {task: [record]} if task != "chatml" else {"dialogue": _one_turn(record)}
        sample.pop("txt", None)
        sample["json"] = json.dumps(meta).encode()
        samples.append(sample)
    random.Random(seed).shuffle(samples)
    return samples[:num]


def _one_turn(qa: dict) -> list[dict]:
    return [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": qa["question"]}]},
        {"role": "assistant", "content": qa["answer"].capitalize() + "."},
    ]


def _differ(task: str, a, b) -> bool:
    if task == "vqa":
        return a != b
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0, width) * max(0, height)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter < 0.5 * union


def one_task_shards(out: Path, num: int, task: str, per_shard: int, seed: int = 0) -> str:
    """``one_task_samples`` written as shards; returns their brace pattern."""
    return write_shards(one_task_samples(num, task, seed), out, per_shard)
