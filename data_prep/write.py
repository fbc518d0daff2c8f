"""The last stage: a part's kept samples as one shuffled webdataset shard, then its stats; each written under
a temporary name and renamed, the stats last, so a part with a stats file is finished."""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import numpy as np

from data_prep.batches import unpack
from data_prep.config import PrepSettings
from data_prep.sample import Sample
from data_prep.stats import InvariantError
from pipeline.data.shard_format import sample_record, write_shard


def shard_record(sample: Sample) -> dict:
    """A kept sample in the shard format: the image, the caption, and the .json the loader reads."""
    out = {"source_id": sample.source_id, "lang": sample.lang}
    if sample.image is None:
        out.update({k: sample.meta[k] for k in ("text", "messages") if k in sample.meta})
        return sample_record(sample.key, out)
    out["original_width"], out["original_height"] = sample.original_size
    out["clip_score"] = sample.clip_score
    out["tasks"] = sample.meta.get("tasks") or {}
    if sample.meta.get("captions"):
        out["captions"] = sample.meta["captions"]
    return sample_record(sample.key, out, sample.caption, sample.image, sample.ext)


def write_part(batch: dict, cfg: PrepSettings) -> dict:
    """Ray Data task: each part's shard and stats file; returns one line of counts per part."""
    out = Path(cfg.output_dir)
    summaries = []
    for spec, payload in zip(batch["spec"], batch["payload"], strict=True):
        samples, s = unpack(payload)
        start = time.thread_time()
        part = json.loads(spec)["part"]
        # the loader reads a shard in file order, so the order is shuffled here (seeded: reruns agree)
        random.Random(f"{cfg.seed}:{part}").shuffle(samples)
        shard = out / "shards" / f"{part:06d}.tar"
        # a worker of a killed run can outlive its driver for a moment: temporary names never collide
        tmp = shard.with_suffix(f".tar.{os.getpid()}.tmp")
        write_shard(tmp, (shard_record(sample) for sample in samples))
        for sample in samples:
            s.keep(sample)
        os.replace(tmp, shard)
        s.seconds["write"] = time.thread_time() - start
        if s.balance():
            raise InvariantError(f"part {part}: input {s.input} != kept + dropped + errors ({s})")
        write_json(out / "stats" / f"{part:06d}.json", s.to_dict())
        summaries.append(json.dumps({"part": part, "input": s.input, "kept": s.kept}))
    return {"summary": np.array(summaries)}


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(f".json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False))
    os.replace(tmp, path)
