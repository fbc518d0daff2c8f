"""llava: a LLaVA-format JSON list (``llava.input``) with an image folder (``llava.image_root``); each entry's
conversations become ChatML messages, its image path is resolved inside the folder only."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from data_prep.config import PrepSettings
from data_prep.sample import ReadError, Sample, sample_key, text_only
from data_prep.sources.annotations import index_parts
from pipeline.config import ConfigError


@dataclass
class Config:
    input: str = ""  # the JSON list
    image_root: str = ""  # the folder the JSON's image paths are relative to


def check(cfg: PrepSettings, src: Config) -> None:
    if not src.image_root:
        raise ConfigError("key 'llava.image_root': required (the folder of the JSON's images)")
    _entries(str(Path(src.input).resolve()))
    if not Path(src.image_root).is_dir():
        raise ConfigError(f"key 'llava.image_root': folder {src.image_root} not found")


def plan(cfg: PrepSettings, src: Config) -> list[dict]:
    return index_parts(len(_entries(str(Path(src.input).resolve()))), cfg.samples_per_shard)


def read(cfg: PrepSettings, src: Config, spec: dict) -> Iterator[Sample | ReadError]:
    entries = _entries(str(Path(src.input).resolve()))
    root = Path(src.image_root)
    for position, index in enumerate(range(spec["start"], spec["end"])):
        entry, key = entries[index], sample_key(spec["part"], position)
        where = f"{src.input}[{index}]"
        source_id = str(entry["id"]) if isinstance(entry, dict) and entry.get("id") is not None else where
        try:
            messages = llava_messages(entry["conversations"])
        except (KeyError, TypeError, ValueError) as e:
            yield ReadError(source_id, "bad_metadata", f"{where}: {e}")
            continue
        if not entry.get("image"):
            yield text_only({"messages": messages}, source_id, key)
            continue
        path = root / entry["image"]
        if not _inside(path, root):
            yield ReadError(
                source_id, "bad_metadata", f"{where}: image path {entry['image']!r} leaves {root}"
            )
            continue
        try:
            image = path.read_bytes()
        except OSError as e:
            yield ReadError(source_id, "missing_file", f"{where}: {e}")
            continue
        caption = next((m["content"] for m in messages if m["role"] == "assistant"), "")
        caption = caption if isinstance(caption, str) else ""
        yield Sample(key, source_id, image, caption, {"tasks": {"dialogue": messages}})


@lru_cache(maxsize=2)
def _entries(path: str) -> list:
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"key 'llava.input': cannot read LLaVA JSON {path}: {e}") from None
    if not isinstance(entries, list):
        raise ConfigError(f"key 'llava.input': {path} must hold a JSON list of samples")
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


def _inside(path: Path, root: Path) -> bool:
    """Paths from a JSON file are not trusted: no absolute paths, no '..' out of the image folder."""
    return os.path.commonpath([path.resolve(), root.resolve()]) == str(root.resolve())
