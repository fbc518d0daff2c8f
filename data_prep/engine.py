"""The prep job on Ray Data: parts -> filters -> CLIP score (batched actors) -> shards + per-part stats.

    plan parts (generate / download)  ->  dedup pass (digests of every part; first occurrence wins)
    -> Ray Data over the parts not yet done:
         filter_part   text clean, decode, size, aspect, language, dedup, resize   (tasks, one per CPU)
         ClipStage     CLIP score in batches, one model per actor                     (actors, GPU if any)
         write_part    shuffled webdataset shard + stats, each written to .tmp and renamed
    -> summary.json (the invariant checked), plots/

A part's stats file is written last, after its shard, so a part with a stats file is finished: a rerun
after a crash (even kill -9) skips it and redoes only unfinished parts, which are deterministic.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import random
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from data_prep import filters as F
from data_prep.config import FILTER_ORDER, PrepConfig
from data_prep.sources import plan_parts, read_part
from data_prep.stats import (
    InvariantError,
    add_error,
    add_hist,
    balance,
    count_outcome,
    drop,
    funnel,
    merge,
    new_stats,
    quality,
)
from pipeline.data.shard_format import needs_conversion, sample_record, viewable_rgb, write_shard

log = logging.getLogger("data_prep")
ROOT = Path(__file__).resolve().parents[1]


# -- per sample ----------------------------------------------------------------------------------------------
def sample_text(sample: dict) -> str:
    """What the text filters and CLIP read: the caption, or a text-only sample's text."""
    if sample["image"] is not None:
        return sample["caption"] or ""
    meta = sample["meta"]
    if meta.get("text"):
        return meta["text"]
    return "\n".join(_message_text(m) for m in meta.get("messages", []))


def _message_text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content or [] if isinstance(p, dict))


def dedup_digest(cfg: PrepConfig, sample: dict) -> bytes:
    text = sample_text(sample)
    if sample["image"] is not None and cfg.filters.text.enabled:
        text = F.clean_text(text)
    return bytes.fromhex(F.dedup_key(sample["image"] or b"", text))[:16]


# -- dedup pass ----------------------------------------------------------------------------------------------
def digest_part(batch: dict, cfg: PrepConfig) -> dict:
    out = []
    for spec in batch["spec"]:
        spec = json.loads(spec)
        digests = [(s["key"], dedup_digest(cfg, s)) for s in read_part(cfg, spec) if "error" not in s]
        out.append(pickle.dumps(digests))
    return {"spec": batch["spec"], "digests": _objects(out)}


def find_duplicates(cfg: PrepConfig, parts: list[dict]) -> dict[int, list[str]]:
    """Keys of samples that repeat an earlier one (earlier = lower part, then position)."""
    import ray.data

    ds = ray.data.from_items([{"spec": json.dumps(p)} for p in parts], override_num_blocks=len(parts))
    rows = ds.map_batches(digest_part, batch_size=1, fn_kwargs={"cfg": cfg}).take_all()
    by_part = {json.loads(r["spec"])["part"]: pickle.loads(r["digests"]) for r in rows}
    seen: set[bytes] = set()
    duplicates: dict[int, list[str]] = {p["part"]: [] for p in parts}
    for part in sorted(by_part):
        for key, digest in by_part[part]:
            if digest in seen:
                duplicates[part].append(key)
            seen.add(digest)
    return duplicates


# -- filter stage --------------------------------------------------------------------------------------------
def filter_part(batch: dict, cfg: PrepConfig) -> dict:
    specs, kept, stats = [], [], []
    for spec, dups in zip(batch["spec"], batch["duplicates"], strict=True):
        start = time.perf_counter()
        spec = json.loads(spec)
        s = new_stats(spec["part"])
        s["worker"] = f"{socket.gethostname()}:{os.getpid()}"
        survivors = list(_filter_samples(cfg, spec, set(json.loads(dups)), s))
        s["seconds"]["filter"] = time.perf_counter() - start
        specs.append(json.dumps(spec))
        kept.append(survivors)
        stats.append(s)
    return {"spec": np.array(specs), "payload": _pack(kept, stats)}


def _filter_samples(cfg: PrepConfig, spec: dict, duplicates: set[str], s: dict) -> Iterator[dict]:
    f = cfg.filters
    for item in read_part(cfg, spec):
        s["input"] += 1
        if "error" in item:
            add_error(s, item)
            continue
        sample = item
        has_image = sample["image"] is not None
        text = sample_text(sample)
        # 1. text cleaning (captions only: pure text and dialogues are not web captions)
        if has_image and f.text.enabled:
            cleaned = F.clean_text(text)
            _count_cleaning(s, sample, text, cleaned)
            text = cleaned
            if reason := F.text_reason(text, f.text.min_chars, f.text.max_chars):
                drop(s, sample, reason)
                continue
        sample["caption"] = text if has_image else None
        # 2-4. decode, size, aspect
        if has_image:
            try:
                image, info = F.decode(sample["image"], cfg.max_side)
            except Exception as e:  # PIL raises many kinds; each means the bytes are not a usable image
                if f.decode.enabled:
                    drop(s, sample, "decode_error")
                else:
                    add_error(s, {"error": "undecodable", "detail": f"{sample['source_id']}: {e}"})
                continue
            add_hist(s, "log2_aspect", float(np.log2(info.width / info.height)))
            add_hist(s, "short_side", min(info.width, info.height))
            add_hist(s, "long_side", max(info.width, info.height))
            if f.size.enabled and (reason := F.size_reason(info, f.size.min_side)):
                drop(s, sample, reason)
                continue
            if f.aspect.enabled and (reason := F.aspect_reason(info, f.aspect.max_ratio)):
                drop(s, sample, reason)
                continue
        # 5. language: the character set, then language ID
        lang = sample["meta"].get("lang")
        if f.language.enabled:
            if f.language.charset and (reason := F.charset_reason(text)):
                drop(s, sample, reason)
                continue
            reason, lang = F.language_reason(text, f.language.keep, f.language.min_confidence)
            s["languages"][lang] = s["languages"].get(lang, 0) + 1
            if reason:
                drop(s, sample, reason)
                continue
        # 6. exact dedup, decided over the whole input by the dedup pass
        if f.dedup.enabled and sample["key"] in duplicates:
            drop(s, sample, "duplicate")
            continue
        sample["lang"] = lang
        if has_image:
            sample["original_size"] = [info.width, info.height]
            sample["image"], sample["ext"] = _fit(
                sample["image"], image, info, cfg.max_side, cfg.jpeg_quality
            )
        yield sample


def _count_cleaning(s: dict, sample: dict, raw: str, cleaned: str) -> None:
    label, clean = sample["meta"].get("noise"), sample["meta"].get("clean_caption")
    if label is None or clean is None:
        return
    counts = s["cleaning"].setdefault(label, {"total": 0, "changed": 0, "recovered": 0})
    counts["total"] += 1
    counts["changed"] += int(bool(cleaned) and cleaned != raw.strip())
    counts["recovered"] += int(cleaned == clean)


_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}


def _fit(
    data: bytes, image: Image.Image, info: F.ImageInfo, max_side: int, quality: int
) -> tuple[bytes, str]:
    """Keep the bytes when they already show upright 8-bit pixels that fit, as jpg/png/webp; otherwise
    write the image a viewer shows (``viewable_rgb``), resized so the longer side <= max_side: PNG stays
    PNG, the rest becomes JPEG. ``image`` may be decoded at a reduced scale already (``F.decode``)."""
    ext = _FORMATS.get(info.format)
    fits = max(info.width, info.height) <= max_side
    if fits and ext is not None and not needs_conversion(image):
        return data, ext
    scale = min(1.0, max_side / max(info.width, info.height))
    size = (max(1, round(info.width * scale)), max(1, round(info.height * scale)))
    rgb = viewable_rgb(image)
    if rgb.size != size:  # area averaging, as img2dataset's INTER_AREA: 2.3x faster than bicubic (dev/LOG.md)
        rgb = rgb.resize(size, Image.Resampling.BOX)
    buffer = io.BytesIO()
    if info.format == "PNG":
        rgb.save(buffer, format="PNG")
        return buffer.getvalue(), "png"
    rgb.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue(), "jpg"


# -- CLIP stage ----------------------------------------------------------------------------------------------
class ClipStage:
    """A Ray Data actor: loads the scorer once, then scores every part it is given in batches."""

    def __init__(self, cfg: PrepConfig, scorer_dir: str | None, threads: int) -> None:
        import torch

        from data_prep.clip_score import ClipScorer

        torch.set_num_threads(threads)
        self.scorer = ClipScorer(cfg.filters.clip, scorer_dir)

    def __call__(self, batch: dict) -> dict:
        payloads = []
        for payload in batch["payload"]:
            samples, s = pickle.loads(payload)
            start = time.perf_counter()
            images = [x for x in samples if x["image"] is not None]
            scores = self.scorer.score([x["image"] for x in images], [x["caption"] for x in images])
            threshold = self.scorer.threshold
            for x, score in zip(images, scores, strict=True):
                x["clip_score"] = round(float(score), 4)
                add_hist(s, "clip_score", float(score))
                if x["clip_score"] < threshold:
                    drop(s, x, "clip_score")
            samples = [x for x in samples if x["image"] is None or x["clip_score"] >= threshold]
            s["seconds"]["clip"] = time.perf_counter() - start
            s["clip_scored"] = len(images)
            s["clip_threshold"] = threshold
            payloads.append((samples, s))
        return {"spec": batch["spec"], "payload": _pack(*zip(*payloads, strict=True))}


# -- write stage ---------------------------------------------------------------------------------------------
def shard_sample(sample: dict) -> dict:
    meta = sample["meta"]
    out = {"source_id": sample["source_id"], "lang": sample.get("lang")}
    if sample["image"] is None:
        out.update({k: meta[k] for k in ("text", "messages") if k in meta})
        return sample_record(sample["key"], out)
    out["original_width"], out["original_height"] = sample["original_size"]
    out["clip_score"] = sample.get("clip_score")
    out["tasks"] = meta.get("tasks") or {}
    return sample_record(sample["key"], out, sample["caption"], sample["image"], sample["ext"])


def write_part(batch: dict, cfg: PrepConfig) -> dict:
    out = Path(cfg.output_dir)
    summaries = []
    for spec, payload in zip(batch["spec"], batch["payload"], strict=True):
        samples, s = pickle.loads(payload)
        start = time.perf_counter()
        part = json.loads(spec)["part"]
        # the loader reads a shard in file order, so the order is shuffled here (seeded: reruns agree)
        random.Random(f"{cfg.seed}:{part}").shuffle(samples)
        shard = out / "shards" / f"{part:06d}.tar"
        # a worker of a killed run can outlive its driver for a moment: temporary names never collide
        tmp = shard.with_suffix(f".tar.{os.getpid()}.tmp")
        write_shard(tmp, (shard_sample(sample) for sample in samples))
        for sample in samples:
            count_outcome(s, sample, "kept")
        os.replace(tmp, shard)
        s["kept"] = len(samples)
        s["seconds"]["write"] = time.perf_counter() - start
        if balance(s):
            raise InvariantError(f"part {part}: input {s['input']} != kept + dropped + errors ({s})")
        _write_json(out / "stats" / f"{part:06d}.json", s)
        summaries.append(json.dumps({"part": part, "input": s["input"], "kept": s["kept"]}))
    return {"summary": np.array(summaries)}


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(f".json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False))
    os.replace(tmp, path)


def _pack(samples: list, stats: list) -> np.ndarray:
    """A part's samples and stats as one bytes value: Ray Data would turn nested lists into arrays."""
    return _objects([pickle.dumps(pair, protocol=5) for pair in zip(samples, stats, strict=True)])


def _objects(items: list) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


# -- the job ---------------------------------------------------------------------------------------------------
def init_ray(cfg: PrepConfig) -> int:
    """Local Ray by default; a cluster with ``ray_address`` (or RAY_ADDRESS). Returns the CPUs to use."""
    import ray
    import ray.data

    address = cfg.ray_address or os.environ.get("RAY_ADDRESS") or None
    if not ray.is_initialized():
        if address:  # a cluster: ship this project to the workers, without data, runs and caches
            env = {"working_dir": str(ROOT), "excludes": ["data/", "runs/", ".venv/", ".cache/", ".git/"]}
            ray.init(address=address, runtime_env=env, logging_level=logging.WARNING)
        else:
            ray.init(
                num_cpus=cfg.workers or os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING
            )
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # ours is one bar over shards plus a periodic log line
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    return int(ray.cluster_resources().get("CPU", 1))


def run(cfg: PrepConfig) -> dict:
    start = time.perf_counter()
    out = Path(cfg.output_dir)
    for sub in ("shards", "stats", "plots"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    cpus = init_ray(cfg)
    parts = plan_parts(cfg)
    planned = time.perf_counter()
    scorer_dir = _scorer_dir(cfg)  # trains the synthetic scorer on first use
    scorer_ready = time.perf_counter()
    done = {p["part"] for p in parts if (out / "stats" / f"{p['part']:06d}.json").is_file()}
    todo = [p for p in parts if p["part"] not in done]
    log.info("%d parts: %d finished before, %d to do (%d CPUs)", len(parts), len(done), len(todo), cpus)
    duplicates = find_duplicates(cfg, parts) if (todo and cfg.filters.dedup.enabled) else {}
    deduped = time.perf_counter()
    processed = _process(cfg, todo, duplicates, scorer_dir, cpus) if todo else 0
    finished = time.perf_counter()
    for tmp in [*(out / "shards").glob("*.tmp"), *(out / "stats").glob("*.tmp")]:
        tmp.unlink()  # left by a run killed mid-write; its part was redone above
    summary = summarise(cfg, parts)
    summary["run"] = {
        "parts_total": len(parts),
        "parts_skipped": len(done),
        "parts_processed": len(todo),
        "samples_processed": processed,
        "samples_per_s": round(processed / max(finished - deduped, 1e-9), 1) if todo else None,
        "seconds": {
            "plan": round(planned - start, 2),
            "clip_scorer": round(scorer_ready - planned, 2),
            "dedup": round(deduped - scorer_ready, 2),
            "filter_clip_write": round(finished - deduped, 2),
            "total": round(time.perf_counter() - start, 2),
        },
    }
    summary["samples_per_s"] = summary["run"]["samples_per_s"]
    _write_json(out / "summary.json", summary)
    from data_prep.plots import write_plots

    write_plots(summary, out / "plots", cfg)
    return summary


def _process(cfg: PrepConfig, todo: list[dict], duplicates: dict, scorer_dir: str | None, cpus: int) -> int:
    import ray.data

    items = [{"spec": json.dumps(p), "duplicates": json.dumps(duplicates.get(p["part"], []))} for p in todo]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(filter_part, batch_size=1, fn_kwargs={"cfg": cfg})
    clip = cfg.filters.clip
    if clip.enabled:
        gpus = 1 if _has_gpus() and clip.device != "cpu" else 0
        threads = 1 if gpus else clip_threads(cpus, clip.workers)
        # the memory request also keeps Ray from fusing the filter tasks into the scoring actors
        ds = ds.map_batches(
            ClipStage, batch_size=1, compute=ray.data.ActorPoolStrategy(size=clip.workers),
            num_gpus=gpus, num_cpus=threads, memory=2**30,
            fn_constructor_kwargs={"cfg": cfg, "scorer_dir": scorer_dir, "threads": threads},
        )  # fmt: skip
    ds = ds.map_batches(write_part, batch_size=1, fn_kwargs={"cfg": cfg})
    processed = kept = 0
    start = last = time.perf_counter()
    with tqdm(total=len(todo), desc="prep", unit="shard") as bar:
        for row in ds.iter_rows():
            s = json.loads(row["summary"])
            processed, kept = processed + s["input"], kept + s["kept"]
            rate = processed / max(time.perf_counter() - start, 1e-9)
            bar.set_postfix(samples_per_s=f"{rate:.0f}", kept=f"{kept / max(processed, 1):.1%}")
            bar.update()
            if time.perf_counter() - last >= cfg.log_every:
                last = time.perf_counter()
                log.info("prep: %d/%d shards, %d samples, %.0f samples/s, kept %.1f%%",
                         bar.n, len(todo), processed, rate, 100 * kept / max(processed, 1))  # fmt: skip
    return processed


def clip_threads(cpus: int, workers: int) -> int:
    """Torch threads per scoring actor on CPUs: the actors share the machine with the filter tasks."""
    return max(1, cpus // (workers + 1))


def _has_gpus() -> bool:
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


def _scorer_dir(cfg: PrepConfig) -> str | None:
    clip = cfg.filters.clip
    if not clip.enabled or clip.pretrained != "synthetic":
        return None
    from data_prep.clip_train import ensure_scorer

    return str(ensure_scorer(clip))


def summarise(cfg: PrepConfig, parts: list[dict]) -> dict:
    out = Path(cfg.output_dir)
    stats = []
    for p in parts:
        path = out / "stats" / f"{p['part']:06d}.json"
        if not path.is_file():
            raise InvariantError(f"{path} missing after the run: part {p['part']} did not finish")
        stats.append(json.loads(path.read_text()))
    merged = merge(stats)
    lost = balance(merged)
    if lost:
        raise InvariantError(f"input {merged['input']} != kept + dropped + errors (off by {lost})")
    thresholds = {s.get("clip_threshold") for s in stats if s.get("clip_threshold") is not None}
    return {
        "source": cfg.source,
        "input": merged["input"],
        "kept": merged["kept"],
        "kept_rate": round(merged["kept"] / max(merged["input"], 1), 4),
        "dropped": merged["dropped"],
        "errors": merged["errors"],
        "invariant": "input == kept + sum(dropped) + sum(errors): holds",
        "funnel": funnel(merged, tuple(n for n in FILTER_ORDER if getattr(cfg.filters, n).enabled)),
        "quality": quality(merged),
        "languages": merged["languages"],
        "clip": {
            "threshold": thresholds.pop() if len(thresholds) == 1 else sorted(thresholds),
            "scored": merged["clip_scored"],
        },  # fmt: skip
        "shards": [str(out / "shards" / f"{p['part']:06d}.tar") for p in parts],
        "shard_pattern": str(out / "shards" / f"{{000000..{len(parts) - 1:06d}}}.tar"),
        "error_examples": [e for s in stats for e in s["error_examples"]][:20],
        "stage_seconds": merged["seconds"],
        "histograms": merged["histograms"],
        "noise_outcomes": merged["noise"],
        "config": asdict(cfg),
    }
