"""What the importers of annotated datasets share (coco, vqa, refcoco, grit, qwenvl): their JSON files read
once per process, image paths that stay inside the image folder, and boxes turned into Qwen-VL's 0-1000
grid of the image as a viewer shows it.

Box rules: a box is checked against the image's stored size (the frame datasets annotate in; an annotation
file's width and height must match it), may overshoot it by ``SLACK`` pixels of rounding (then clamped),
must have a positive area, and is turned by the image's EXIF orientation into the shown frame, which is the
frame prep writes (``pipeline.data.shard_format.viewable_rgb``).
"""

from __future__ import annotations

import io
import json
import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from PIL import Image

from pipeline.config import ConfigError
from pipeline.data.shard_format import orientation

GRID = 1000  # Qwen-VL: box coordinates are integers in [0, 1000)
SLACK = 1.0  # pixels a box may overshoot the image by (annotation rounding) before it is refused

# EXIF orientation -> where a point (x, y) of the stored image, in [0, 1], is shown (PIL's exif_transpose)
_SHOWN = {
    1: lambda x, y: (x, y),
    2: lambda x, y: (1 - x, y),
    3: lambda x, y: (1 - x, 1 - y),
    4: lambda x, y: (x, 1 - y),
    5: lambda x, y: (y, x),
    6: lambda x, y: (1 - y, x),
    7: lambda x, y: (1 - y, 1 - x),
    8: lambda x, y: (y, 1 - x),
}


class BadRecord(Exception):
    """An annotation record that cannot become a sample; ``kind`` is the reason it is counted under."""

    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind = kind


def index_parts(count: int, per_part: int) -> list[dict]:
    """Part specs over ``count`` records in file order: ``{"part", "start", "end"}`` of ``per_part`` each."""
    return [{"part": i, "start": i * per_part, "end": min(count, (i + 1) * per_part)}
            for i in range(math.ceil(count / per_part))]  # fmt: skip


@lru_cache(maxsize=4)
def read_json(path: str, key: str) -> Any:
    """A dataset's JSON file (cached: every part of a prep run reads the same file)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"key '{key}': cannot read {path}: {e}") from None


def require_dir(path: str, key: str) -> None:
    if not path or not Path(path).is_dir():
        raise ConfigError(f"key '{key}': folder {path!r} not found")


def inside(path: Path, root: Path) -> bool:
    """Paths from annotation files are not trusted: no absolute paths, no '..' out of the image folder."""
    return os.path.commonpath([path.resolve(), root.resolve()]) == str(root.resolve())


def image_file(root: str, name: str) -> bytes:
    """The bytes of image ``name`` under ``root``; BadRecord when it leaves the folder or is missing."""
    base = Path(root)
    path = base / name
    if not inside(path, base):
        raise BadRecord("bad_path", f"image path {name!r} leaves {root}")
    try:
        return path.read_bytes()
    except OSError as e:
        raise BadRecord("missing_file", f"{path}: {e.strerror or e}") from None


def stored_frame(image: bytes) -> tuple[int, int, int]:
    """(width, height, EXIF orientation) of the image as stored, from its header alone."""
    try:
        with Image.open(io.BytesIO(image)) as im:
            return im.width, im.height, orientation(im)
    except Exception as e:  # PIL raises many kinds; each means the bytes are not an image
        raise BadRecord("decode_error", f"image header unreadable: {e}") from None


def check_size(frame: tuple[int, int, int], width: Any, height: Any) -> None:
    """The size an annotation file gives must be the stored image's (its boxes are in that frame)."""
    if (width, height) != frame[:2]:
        raise BadRecord("size_mismatch", f"annotated as {width}x{height}, the image is {frame[0]}x{frame[1]}")


def grid_box(box: Any, frame: tuple[int, int, int], xywh: bool = True, normalised: bool = False) -> list[int]:
    """A box in the stored image (pixels ``[x, y, w, h]`` or ``[x1, y1, x2, y2]``, or fractions with
    ``normalised``) -> ``[x1, y1, x2, y2]`` on the 0-1000 grid of the shown image."""
    width, height, turn = frame
    if not (isinstance(box, list | tuple) and len(box) == 4 and all(_number(v) for v in box)):
        raise BadRecord("bad_box", f"box {box!r:.60} is not four numbers")
    x1, y1, a, b = (float(v) for v in box)
    x2, y2 = (x1 + a, y1 + b) if xywh else (a, b)
    scale_x, scale_y = (1.0, 1.0) if normalised else (float(width), float(height))
    slack_x, slack_y = SLACK / width * scale_x, SLACK / height * scale_y
    if x1 < -slack_x or y1 < -slack_y or x2 > scale_x + slack_x or y2 > scale_y + slack_y:
        raise BadRecord("box_outside_image", f"box {list(box)} is outside the {width}x{height} image")
    if x2 <= x1 or y2 <= y1:
        raise BadRecord("degenerate_box", f"box {list(box)} has no area")
    corners = [
        _SHOWN[turn](min(max(x / scale_x, 0.0), 1.0), min(max(y / scale_y, 0.0), 1.0))
        for x, y in ((x1, y1), (x2, y2))
    ]
    xs, ys = sorted(c[0] for c in corners), sorted(c[1] for c in corners)
    return [_cell(xs[0]), _cell(ys[0]), _cell(xs[1]), _cell(ys[1])]


def _cell(fraction: float) -> int:
    return min(GRID - 1, int(math.floor(fraction * GRID)))


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
