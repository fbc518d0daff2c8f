"""folder: images with same-stem ``.txt`` captions (and optional ``.json`` metadata, quality labels included),
plus an optional ``text.jsonl`` of text-only samples."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from data_prep.config import PrepSettings
from data_prep.sample import ReadError, Sample, labelled, sample_key, text_only
from pipeline.config import ConfigError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


@dataclass
class Config:
    input: str = ""  # the folder, searched recursively


def check(cfg: PrepSettings, src: Config) -> None:
    if not src.input or not Path(src.input).is_dir():
        raise ConfigError(f"key 'folder.input': folder {src.input!r} not found")


def plan(cfg: PrepSettings, src: Config) -> list[dict]:
    return folder_parts(Path(src.input), cfg.samples_per_shard)


def read(cfg: PrepSettings, src: Config, spec: dict) -> Iterator[Sample | ReadError]:
    return read_folder(Path(src.input), spec)


def folder_parts(root: Path, per: int) -> list[dict]:
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


def read_folder(root: Path, spec: dict) -> Iterator[Sample | ReadError]:
    position = 0
    for rel in spec["files"]:
        path = root / rel
        key = sample_key(spec["part"], position)
        position += 1
        caption_file, meta_file = path.with_suffix(".txt"), path.with_suffix(".json")
        try:
            image = path.read_bytes()
        except OSError as e:
            yield ReadError(rel, "read_error", f"{path}: {e}")
            continue
        if not caption_file.is_file():
            yield ReadError(rel, "missing_caption", f"{path}: no {caption_file.name} next to it")
            continue
        try:
            caption = caption_file.read_text(encoding="utf-8")
            meta = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.is_file() else {}
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            yield ReadError(rel, "bad_metadata", f"{path}: {e}")
            continue
        yield labelled(key, rel, image, caption, meta)
    start, end = spec["text"]
    if end > start:
        with open(root / "text.jsonl", encoding="utf-8") as f:
            for line_no, line in enumerate(f):
                if start <= line_no < end:
                    yield _text_line(line, f"text.jsonl:{line_no + 1}", sample_key(spec["part"], position))
                    position += 1


def _text_line(line: str, source_id: str, key: str) -> Sample | ReadError:
    try:
        meta = json.loads(line)
    except json.JSONDecodeError as e:
        return ReadError(source_id, "bad_metadata", f"{source_id}: {e}")
    return text_only(meta, source_id, key)
