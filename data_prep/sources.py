"""Raw sources -> parts of samples.

A *part* is a unit of work: a JSON-serialisable spec of a slice of the input, read on any Ray worker, that
becomes one output shard. Reading a part yields, in a fixed order, samples

    {"key", "source_id", "image": bytes | None, "caption": str | None, "meta": dict}

or errors ``{"source_id", "error": kind, "detail"}`` for inputs that cannot become a sample (a failed
download, a missing caption file, unreadable metadata). Every input item yields exactly one of the two, so
``input == samples + errors`` per part.

Text-only samples (no image) carry ``meta["text"]`` or ``meta["messages"]``; their caption is that text.
A sample's ``meta`` is copied into the output ``.json``; ``noise`` and ``clean_caption`` in it (the synthetic
world's labels) are read for the quality report and not written.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from data_prep.config import PrepConfig
from pipeline.config import ConfigError
from pipeline.data.shard_format import Skip, expand_urls, parse, read_shard

log = logging.getLogger("data_prep")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def sample_key(part: int, position: int) -> str:
    return f"{part:06d}{position:06d}"  # no dots: webdataset splits a file name at its first dot


def error(source_id: str, kind: str, detail: str) -> dict:
    return {"source_id": source_id, "error": kind, "detail": detail}


# -- planning ----------------------------------------------------------------------------------------------
def plan_parts(cfg: PrepConfig) -> list[dict]:
    """Materialise what the source needs locally (the synthetic world, downloads) and split it into parts."""
    if cfg.source == "synthetic":
        return _folder_parts(_synthetic_raw(cfg), cfg.samples_per_shard)
    if cfg.source == "folder":
        return _folder_parts(Path(cfg.input), cfg.samples_per_shard)
    if cfg.source == "wds":
        return [{"part": i, "url": url} for i, url in enumerate(expand_urls(cfg.input, key="input"))]
    if cfg.source == "laion":
        from data_prep.download import download

        return [{"part": i, **shard} for i, shard in enumerate(download(cfg))]
    if cfg.source == "llava":
        entries = _llava_entries(str(Path(cfg.input).resolve()))
        n, per = len(entries), cfg.samples_per_shard
        return [{"part": i, "start": s, "end": min(n, s + per)} for i, s in enumerate(range(0, n, per))]
    raise AssertionError(cfg.source)


def read_part(cfg: PrepConfig, spec: dict) -> Iterator[dict]:
    if cfg.source in ("synthetic", "folder"):
        root = _synthetic_dir(cfg) if cfg.source == "synthetic" else Path(cfg.input)
        yield from _read_folder(root, spec)
    elif cfg.source == "wds":
        yield from _read_wds(spec["url"], spec["part"])
    elif cfg.source == "laion":
        from data_prep.download import read_download

        yield from read_download(spec)
    elif cfg.source == "llava":
        yield from _read_llava(cfg, spec)


# -- synthetic: the world written as a folder with sidecars ------------------------------------------------
def _synthetic_dir(cfg: PrepConfig) -> Path:
    return Path(cfg.output_dir) / "raw"


def _synthetic_raw(cfg: PrepConfig) -> Path:
    from data_prep.synthetic import WorldConfig, generate

    out = _synthetic_dir(cfg)
    world = out / "world.json"
    if world.is_file():
        done = json.loads(world.read_text())["config"]
        if (done["num_samples"], done["seed"]) == (cfg.num_samples, cfg.seed):
            log.info("synthetic world already at %s (%d pairs, seed %d)", out, cfg.num_samples, cfg.seed)
            return out
        raise ConfigError(
            f"key 'output_dir': {world}: a world with num_samples={done['num_samples']} seed={done['seed']} is there; "
            f"use another output_dir or delete it"
        )
    generate(WorldConfig(num_samples=cfg.num_samples, seed=cfg.seed), out)
    # the contact sheet is for people, not an input sample
    (Path(cfg.output_dir) / "plots").mkdir(parents=True, exist_ok=True)
    (out / "preview.png").replace(Path(cfg.output_dir) / "plots" / "world_preview.png")
    return out


# -- folder: images with same-stem .txt captions (and optional .json metadata), optional text.jsonl --------
def _folder_parts(root: Path, per: int) -> list[dict]:
    if not root.is_dir():
        raise ConfigError(f"key 'input': folder {root} not found")
    images = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    text_lines = _count_lines(root / "text.jsonl")
    num_parts = max(1, math.ceil(len(images) / per))
    text_per = math.ceil(text_lines / num_parts)
    return [
        {
            "part": i,
            "files": images[i * per : (i + 1) * per],
            "text": [min(text_lines, i * text_per), min(text_lines, (i + 1) * text_per)],
        }
        for i in range(num_parts)
    ]


def _count_lines(path: Path) -> int:
    if not path.is_file():
        return 0
    with open(path, encoding="utf-8") as f:
        return sum(1 for _ in f)


def _read_folder(root: Path, spec: dict) -> Iterator[dict]:
    position = 0
    for rel in spec["files"]:
        path = root / rel
        key = sample_key(spec["part"], position)
        position += 1
        caption_file, meta_file = path.with_suffix(".txt"), path.with_suffix(".json")
        try:
            image = path.read_bytes()
        except OSError as e:
            yield error(rel, "read_error", f"{path}: {e}")
            continue
        if not caption_file.is_file():
            yield error(rel, "missing_caption", f"{path}: no {caption_file.name} next to it")
            continue
        try:
            caption = caption_file.read_text(encoding="utf-8")
            meta = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.is_file() else {}
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            yield error(rel, "bad_metadata", f"{path}: {e}")
            continue
        yield {"key": key, "source_id": rel, "image": image, "caption": caption, "meta": _meta(meta)}
    start, end = spec["text"]
    if end > start:
        with open(root / "text.jsonl", encoding="utf-8") as f:
            for line_no, line in enumerate(f):
                if start <= line_no < end:
                    yield _text_sample(line, f"text.jsonl:{line_no + 1}", sample_key(spec["part"], position))
                    position += 1


def _text_sample(line: str, source_id: str, key: str) -> dict:
    try:
        meta = json.loads(line)
    except json.JSONDecodeError as e:
        return error(source_id, "bad_metadata", f"{source_id}: {e}")
    return _text_only(meta, source_id, key)


def _text_only(meta: dict, source_id: str, key: str) -> dict:
    if not isinstance(meta, dict) or not (meta.get("text") or meta.get("messages")):
        return error(source_id, "missing_image", f"{source_id}: no image and no 'text' or 'messages'")
    meta = {k: v for k, v in meta.items() if k in ("text", "messages", "lang", "noise")}
    return {"key": key, "source_id": source_id, "image": None, "caption": None, "meta": meta}


# The world's sidecar keeps its labels for the report; only what the loader reads is written out.
_KEEP_META = ("lang", "tasks", "noise", "clean_caption", "text", "messages")


def _meta(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k in _KEEP_META} if isinstance(meta, dict) else {}


# -- wds: existing webdataset shards -----------------------------------------------------------------------
def _read_wds(url: str, part: int) -> Iterator[dict]:
    position = 0
    try:
        for raw in read_shard(url):
            key = sample_key(part, position)
            position += 1
            source_id = f"{url}#{raw['__key__']}"
            try:
                sample = parse(raw)
            except Skip as e:  # a repeated member, unreadable metadata: this sample only
                yield error(source_id, e.reason, str(e))
                continue
            if sample.image is None:
                yield _text_only(sample.meta, source_id, key)
                continue
            caption = sample.caption if sample.caption is not None else sample.meta.get("caption")
            if caption is None:
                yield error(source_id, "missing_caption", f"{source_id}: no .txt and no 'caption' in .json")
                continue
            yield {"key": key, "source_id": source_id, "image": sample.image, "caption": caption,
                   "meta": _meta(sample.meta)}  # fmt: skip
    except Exception as e:  # a truncated or corrupt tar: what follows cannot be read, nor counted
        yield error(url, "shard_error", f"{url}: {e} (the rest of this shard is not read)")


# -- llava: LLaVA-format JSON + image folder ---------------------------------------------------------------
@lru_cache(maxsize=2)
def _llava_entries(path: str) -> list:
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"key 'input': cannot read LLaVA JSON {path}: {e}") from None
    if not isinstance(entries, list):
        raise ConfigError(f"key 'input': {path} must hold a JSON list of samples")
    return entries


def llava_messages(conversations: list) -> list[dict]:
    """LLaVA turns ({"from": human|gpt|system, "value"}) -> our messages; "<image>" becomes an image part."""
    roles = {"human": "user", "gpt": "assistant", "system": "system"}
    messages = []
    for turn in conversations:
        role, value = roles.get(turn.get("from")), turn.get("value")
        if role is None or not isinstance(value, str):
            raise ValueError(f"turn {turn!r} has no known 'from' or no string 'value'")
        if "<image>" in value:
            before, _, after = value.partition("<image>")
            parts = [{"type": "text", "text": t.strip("\n")} for t in (before,) if t.strip()]
            parts.append({"type": "image"})
            parts += [{"type": "text", "text": after.strip("\n")}] if after.strip() else []
            messages.append({"role": role, "content": parts})
        else:
            messages.append({"role": role, "content": value})
    return messages


def _read_llava(cfg: PrepConfig, spec: dict) -> Iterator[dict]:
    entries = _llava_entries(str(Path(cfg.input).resolve()))
    root = Path(cfg.image_root)
    for position, index in enumerate(range(spec["start"], spec["end"])):
        entry, key = entries[index], sample_key(spec["part"], position)
        source_id = f"{cfg.input}[{index}]"
        if isinstance(entry, dict) and entry.get("id") is not None:
            source_id = str(entry["id"])
        try:
            messages = llava_messages(entry["conversations"])
        except (KeyError, TypeError, ValueError) as e:
            yield error(source_id, "bad_metadata", f"{cfg.input}[{index}]: {e}")
            continue
        if not entry.get("image"):
            yield _text_only({"messages": messages}, source_id, key)
            continue
        path = root / entry["image"]
        if not _inside(path, root):
            yield error(
                source_id,
                "bad_metadata",
                f"{cfg.input}[{index}]: image path {entry['image']!r} leaves {root}",
            )
            continue
        try:
            image = path.read_bytes()
        except OSError as e:
            yield error(source_id, "missing_file", f"{cfg.input}[{index}]: {e}")
            continue
        caption = next((m["content"] for m in messages if m["role"] == "assistant"), "")
        caption = caption if isinstance(caption, str) else ""
        yield {"key": key, "source_id": source_id, "image": image, "caption": caption,
               "meta": {"tasks": {"dialogue": messages}}}  # fmt: skip


def _inside(path: Path, root: Path) -> bool:
    """Paths from a JSON file are not trusted: no absolute paths, no '..' out of the image folder."""
    return os.path.commonpath([path.resolve(), root.resolve()]) == str(root.resolve())
