"""qwenvl: Qwen-VL's own fine-tuning JSON (``qwenvl.input``): a list of ``{"id", "conversations": [{"from":
"user" | "assistant", "value"}]}``, the image given inline as ``Picture 1: <img>path</img>\\n``.

Each entry becomes a ChatML dialogue whose tokens and masks equal what Qwen-VL's ``finetune.py``
``preprocess`` makes of it: the image framed as Qwen-VL frames it, ``<ref>``/``<box>`` kept as written (each
box checked to lie on the 0-1000 grid). Image paths are resolved inside ``qwenvl.image_root`` only; a URL
is counted as ``remote_image`` (download it first: this importer never fetches). One image per dialogue, as
the loader takes it; more are counted as ``multiple_images``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from data_prep.config import PrepSettings
from data_prep.sample import ReadError, Sample, sample_key, text_only
from data_prep.sources.annotations import GRID, BadRecord, image_file, index_parts, read_json, require_dir
from pipeline.config import ConfigError

ROLES = {"user": "user", "assistant": "assistant", "human": "user", "gpt": "assistant"}
IMAGE = re.compile(r"(?:Picture \d+: ?)?<img>(.*?)</img>\n?", re.S)  # the frame goes with the image part
BOX = re.compile(r"<box>\((-?\d+),(-?\d+)\),\((-?\d+),(-?\d+)\)</box>")


@dataclass
class Config:
    input: str = ""  # the JSON list
    image_root: str = ""  # the folder the <img> paths are relative to


def check(cfg: PrepSettings, src: Config) -> None:
    require_dir(src.image_root, "qwenvl.image_root")
    entries(src)


def plan(cfg: PrepSettings, src: Config) -> list[dict]:
    return index_parts(len(entries(src)), cfg.samples_per_shard)


def read(cfg: PrepSettings, src: Config, spec: dict) -> Iterator[Sample | ReadError]:
    data = entries(src)
    for position, index in enumerate(range(spec["start"], spec["end"])):
        entry, key = data[index], sample_key(spec["part"], position)
        where = f"{src.input}[{index}]"
        if isinstance(entry, dict) and entry.get("id") is not None:
            where = f"{src.input} {entry['id']}"
        try:
            messages, paths = dialogue(entry)
            if not paths:
                yield text_only({"messages": messages}, where, key)
                continue
            if len(paths) > 1:
                raise BadRecord("multiple_images", f"{len(paths)} images; one per dialogue is read")
            if re.match(r"^[a-z][a-z0-9+.-]*://", paths[0], re.I):
                raise BadRecord(
                    "remote_image", f"image {paths[0]!r} is a URL: download it under qwenvl.image_root"
                )
            image = image_file(src.image_root, paths[0])
        except BadRecord as e:
            yield ReadError(where, e.kind, f"{where}: {e}")
            continue
        yield Sample(key, where, image, None, {"tasks": {"dialogue": messages}})


def dialogue(entry: object) -> tuple[list[dict], list[str]]:
    """An entry -> (our messages, the image paths in order); BadRecord when it is malformed."""
    turns = entry.get("conversations") if isinstance(entry, dict) else None
    if not isinstance(turns, list) or not turns:
        raise BadRecord("bad_metadata", "no 'conversations' list")
    messages, paths = [], []
    for turn in turns:
        role, value = (turn.get("from"), turn.get("value")) if isinstance(turn, dict) else (None, None)
        if not isinstance(role, str) or role not in ROLES or not isinstance(value, str):
            raise BadRecord("bad_metadata", f"turn {turn!r:.80} has no known 'from' or no string 'value'")
        for box in BOX.finditer(value):
            if not all(0 <= int(v) < GRID for v in box.groups()):
                raise BadRecord("bad_box", f"{box.group(0)} is not on the 0-{GRID} grid")
        parts, last = [], 0
        for match in IMAGE.finditer(value):
            parts += [{"type": "text", "text": value[last : match.start()]}] if match.start() > last else []
            parts.append({"type": "image"})
            paths.append(match.group(1).strip())
            last = match.end()
        if not parts:
            messages.append({"role": ROLES[role], "content": value})
            continue
        parts += [{"type": "text", "text": value[last:]}] if last < len(value) else []
        messages.append({"role": ROLES[role], "content": parts})
    return messages, paths


def entries(src: Config) -> list:
    data = read_json(src.input, "qwenvl.input")
    if not isinstance(data, list):
        raise ConfigError(f"key 'qwenvl.input': {src.input} must hold a JSON list of dialogues")
    return data
