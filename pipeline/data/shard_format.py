"""The shard format: the one contract between ``data_prep`` (which writes shards) and ``pipeline`` (which
reads them). Both sides import this module and nothing else of each other.

A shard is a webdataset tar; a sample is the members sharing a key (the file name up to its first dot):

- ``<key>.jpg`` (or ``.jpeg``, ``.png``, ``.webp``): the image, absent for text-only samples;
- ``<key>.txt``: the cleaned caption (UTF-8);
- ``<key>.json``: metadata, an object: ``lang``, ``tasks`` (ground truth per task: ``vqa``, ``ref``,
  ``grounded_caption``, ``ocr``, ``dialogue``), optionally ``captions`` (every reference caption, one drawn
  per epoch) and, for text-only samples, ``text`` or ``messages``. Boxes and quads are integers in
  [0, 1000) of the image as shown.

Images are read as a viewer shows them (``viewable_rgb``): EXIF orientation applied, 16-bit and other
modes scaled to 8 bits, transparency composited on white. Prep writes such pixels; the loader applies the
same to shards written elsewhere.
"""

from __future__ import annotations

import glob
import io
import json
import tarfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
from braceexpand import braceexpand
from PIL import ExifTags, Image, ImageOps

from pipeline.config import ConfigError

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
ORIENTATION = ExifTags.Base.Orientation
BACKGROUND = (255, 255, 255)  # under transparent pixels, as a page shows them


class Skip(Exception):
    """A sample that cannot be used; ``reason`` is the counter it is reported under."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


# -- URLs -----------------------------------------------------------------------------------------------------
def expand_urls(spec: str, key: str = "data.shards") -> list[str]:
    """``a/{000..009}.tar::b/*.tar`` -> the shard URLs: braces expanded, then local globs matched (sorted);
    local files must exist (``key`` names the config key in the error)."""
    urls, missing = [], []
    for part in spec.split("::"):
        found, absent = match_urls(part)
        urls, missing = urls + found, missing + absent
    if missing:
        raise ConfigError(
            f"key '{key}': {len(missing)} shard files or patterns not found, first {missing[0]!r} "
            "(run `make prep` to write them)"
        )
    if not urls:
        raise ConfigError(f"key '{key}': no shard URLs in {spec!r}")
    return urls


def match_urls(pattern: str) -> tuple[list[str], list[str]]:
    """One shard set (no ``::``) -> (its URLs, the local files or globs of it that match nothing)."""
    found, missing = [], []
    for url in braceexpand(pattern.strip()) if pattern.strip() else ():
        if not is_local(url):
            found.append(url)
        elif glob.has_magic(url):
            matched = sorted(glob.glob(url))
            found += matched
            missing += [] if matched else [url]
        else:
            (found if Path(url).is_file() else missing).append(url)
    return found, missing


def count_samples(url: str) -> int:
    """The samples (distinct keys) in a local shard, from its member names alone."""
    from webdataset.tariterators import base_plus_ext

    with tarfile.open(url) as tar:
        return len({base_plus_ext(name)[0] for name in tar.getnames()} - {None})


def is_local(url: str) -> bool:
    return not url.startswith("pipe:") and urlparse(url).scheme in ("", "file")


# -- reading --------------------------------------------------------------------------------------------------
def read_shard(url: str) -> Iterator[dict]:
    """The raw samples of one shard in file order (webdataset dicts: ``__key__``, ``__url__``, one entry
    per extension). A sample with a member name repeated comes with ``__error__`` and the shard goes on;
    a tar that cannot be read raises."""
    from webdataset.gopen import gopen
    from webdataset.tariterators import base_plus_ext, tar_file_iterator

    with gopen(url, "rb") as stream:
        current: dict | None = None
        for member in tar_file_iterator(stream):
            key, ext = base_plus_ext(member["fname"])
            if key is None:  # a name without an extension: not part of any sample
                continue
            ext = ext.lower()
            if current is None or key != current["__key__"]:
                if current is not None:
                    yield current
                current = {"__key__": key, "__url__": url}
            if ext in current:
                current["__error__"] = f"member {member['fname']!r} appears more than once"
            current[ext] = member["data"]
        if current is not None:
            yield current


def read_shards(urls: Iterable[str]) -> Iterator[dict]:
    for url in urls:
        yield from read_shard(url)


@dataclass
class ShardSample:
    key: str
    url: str
    meta: dict
    caption: str | None
    image: bytes | None
    ext: str | None  # the image's extension


def parse(raw: dict) -> ShardSample:
    """A raw sample -> its fields; raises Skip("bad_member" | "bad_metadata", ...)."""
    key, url = raw["__key__"], raw.get("__url__")
    where = f"sample {key} in {url}"
    if "__error__" in raw:
        raise Skip("bad_member", f"{where}: {raw['__error__']}")
    try:
        meta = json.loads(raw["json"]) if "json" in raw else {}
        caption = raw["txt"].decode("utf-8") if "txt" in raw else None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise Skip("bad_metadata", f"{where}: {e}") from None
    if not isinstance(meta, dict):
        raise Skip("bad_metadata", f"{where}: .json is not an object")
    if not isinstance(meta.get("tasks") or {}, dict):
        raise Skip("bad_metadata", f"{where}: .json 'tasks' is not an object")
    ext = next((e for e in IMAGE_EXTENSIONS if e in raw), None)
    return ShardSample(key, url, meta, caption, raw[ext] if ext else None, ext)


def box_text(box: Sequence[int]) -> str:
    """A box as Qwen-VL writes it between ``<box>`` and ``</box>`` (grounded captions hold it verbatim)."""
    x1, y1, x2, y2 = box
    return f"({x1},{y1}),({x2},{y2})"


# -- writing --------------------------------------------------------------------------------------------------
def sample_record(key: str, meta: dict, caption: str | None = None, image: bytes | None = None,
                  ext: str | None = None) -> dict:  # fmt: skip
    """One sample as the members a shard holds (what ``write_shard`` takes)."""
    if "." in key:
        raise ValueError(f"sample key {key!r}: no dots (webdataset splits a member name at its first dot)")
    record = {"__key__": key, "json": json.dumps(meta, ensure_ascii=False).encode("utf-8")}
    if image is not None:
        if ext not in IMAGE_EXTENSIONS:
            raise ValueError(f"sample {key}: image extension {ext!r} is not one of {IMAGE_EXTENSIONS}")
        record[ext] = image
    if caption is not None:
        record["txt"] = caption.encode("utf-8")
    return record


def write_shard(path: Path, records: Iterable[dict]) -> int:
    """Write ``records`` (from ``sample_record``) as one shard at ``path``; returns how many."""
    import webdataset as wds

    count = 0
    # a whole-second mtime: webdataset's default float one costs every member a pax header (CPU and ~12% of
    # the file on small samples)
    with wds.TarWriter(str(path), mtime=int(time.time())) as writer:
        for record in records:
            writer.write(record)
            count += 1
    return count


# -- images ---------------------------------------------------------------------------------------------------
def orientation(image: Image.Image) -> int:
    """The EXIF orientation (1 = upright; 5-8 swap width and height)."""
    try:
        return int(image.getexif().get(ORIENTATION, 1))
    except (ValueError, TypeError, SyntaxError):  # an unparsable EXIF block: shown as stored
        return 1


def needs_conversion(image: Image.Image) -> bool:
    """Whether a viewer would show something other than the stored 8-bit RGB/gray pixels."""
    return orientation(image) != 1 or image.mode not in ("RGB", "L")


def viewable_rgb(image: Image.Image) -> Image.Image:
    """The 8-bit RGB image a viewer shows: EXIF orientation applied, 16-bit and float modes scaled to
    8 bits (not clipped), transparency composited on white."""
    if orientation(image) != 1:
        image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or pixels.max(initial=0) > 255 else 255.0
        image = Image.fromarray(np.clip(pixels * (255.0 / top), 0, 255).round().astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    ):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (*BACKGROUND, 255)), rgba)
    return image if image.mode == "RGB" else image.convert("RGB")


def open_image(data: bytes) -> Image.Image:
    """Decode ``data`` fully to the image a viewer shows; raises on bytes that are not an image."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return viewable_rgb(image)
