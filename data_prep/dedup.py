"""The dedup pass, before filtering: a digest of every sample of every part (image bytes + cleaned text);
a sample whose digest occurred earlier (a lower part, then an earlier position) is a duplicate."""

from __future__ import annotations

import json
import pickle

from data_prep import filters as F
from data_prep.batches import objects
from data_prep.config import PrepSettings
from data_prep.sample import Sample
from data_prep.sources import PrepConfig, read_part


def digest(cfg: PrepSettings, sample: Sample) -> bytes:
    text = sample.text
    if sample.image is not None and cfg.filters.text.enabled:
        text = F.clean_text(text)
    return bytes.fromhex(F.dedup_key(sample.image or b"", text))[:16]


def digest_part(batch: dict, cfg: PrepConfig) -> dict:
    """Ray Data task: (key, digest) of each sample of each part, in order."""
    out = []
    for spec in batch["spec"]:
        samples = (s for s in read_part(cfg, json.loads(spec)) if isinstance(s, Sample))
        out.append(pickle.dumps([(s.key, digest(cfg, s)) for s in samples]))
    return {"spec": batch["spec"], "digests": objects(out)}


def find_duplicates(cfg: PrepConfig, parts: list[dict]) -> dict[int, list[str]]:
    """Keys of samples that repeat an earlier one, per part."""
    import ray.data

    ds = ray.data.from_items([{"spec": json.dumps(p)} for p in parts], override_num_blocks=len(parts))
    rows = ds.map_batches(digest_part, batch_size=1, fn_kwargs={"cfg": cfg}).take_all()
    by_part = {json.loads(r["spec"])["part"]: pickle.loads(r["digests"]) for r in rows}
    seen: set[bytes] = set()
    duplicates: dict[int, list[str]] = {p["part"]: [] for p in parts}
    for part in sorted(by_part):
        for key, d in by_part[part]:
            if d in seen:
                duplicates[part].append(key)
            seen.add(d)
    return duplicates
