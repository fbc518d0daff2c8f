"""grit: GRIT-style parquet (Kosmos-2's GRIT-20M): ``url``, ``caption``, ``noun_chunks`` and ``ref_exps``,
each a list of ``[start, end, x1, y1, x2, y2, score]`` (a character span of the caption and its box as
fractions of the image, so the boxes hold at any size the server sends). Images are downloaded with img2dataset
as the laion source does (``grit.download``), and every row becomes one sample with three tasks:

- ``caption``: the caption (the text and CLIP filters apply to it, as to LAION's);
- ``grounded_caption``: the caption with ``<ref>span</ref><box>(x1,y1),(x2,y2)</box>`` at every noun chunk;
- ``ref``: each referring expression with its box.

Boxes go onto the 0-1000 grid of the image as shown; a box outside the image, or of no area, costs the row
(counted under its reason).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from data_prep.config import PrepSettings
from data_prep.sample import ReadError, Sample, sample_key
from data_prep.sources import laion
from data_prep.sources.annotations import BadRecord, grid_box, stored_frame
from pipeline.data.shard_format import box_text

COLUMNS = ["noun_chunks", "ref_exps"]  # kept by img2dataset (which reserves width and height for its own)


def _download() -> laion.Download:
    return laion.Download(url_col="url", caption_col="caption", extra_columns=list(COLUMNS))


@dataclass
class Config:
    input: str = ""  # a parquet file or a folder of them
    download: laion.Download = field(default_factory=_download)


def check(cfg: PrepSettings, src: Config) -> None:
    laion.input_rows(src, "grit")  # type: ignore[arg-type]  # the same fields


def plan(cfg: PrepSettings, src: Config) -> list[dict]:
    return laion.plan(cfg, src, "grit")  # type: ignore[arg-type]


def read(cfg: PrepSettings, src: Config, spec: dict) -> Iterator[Sample | ReadError]:
    for item in laion.downloaded(spec, COLUMNS):
        if isinstance(item, ReadError):
            yield item
            continue
        position, row, image = item
        try:
            tasks = grounded_tasks(row, image)
        except BadRecord as e:
            yield ReadError(row["url"], e.kind, f"{row['url']}: {e}")
            continue
        yield Sample(
            sample_key(spec["part"], position), row["url"], image, row["caption"] or "", {"tasks": tasks}
        )


def grounded_tasks(row: dict, image: bytes) -> dict:
    """A GRIT row's grounded caption and referring expressions, boxes on the grid of ``image``."""
    caption = row.get("caption") or ""
    frame = stored_frame(image)
    chunks = [_span(caption, c, frame) for c in row.get("noun_chunks") or []]
    refs = [_span(caption, r, frame) for r in row.get("ref_exps") or []]
    tasks: dict[str, Any] = {}
    if chunks:
        tasks["grounded_caption"] = _marked(caption, chunks)
    if refs:
        tasks["ref"] = [{"expression": caption[start:end].strip(), "box": box} for start, end, box in refs]
    return tasks


def _span(caption: str, entry: Any, frame: tuple[int, int, int]) -> tuple[int, int, list[int]]:
    if not isinstance(entry, list | tuple) or len(entry) < 6:
        raise BadRecord("bad_metadata", f"span {entry!r:.60} is not [start, end, x1, y1, x2, y2, ...]")
    start, end = entry[0], entry[1]
    if not (
        isinstance(start, int | float) and isinstance(end, int | float) and 0 <= start < end <= len(caption)
    ):
        raise BadRecord(
            "bad_metadata", f"span {start}-{end} is outside the caption of {len(caption)} characters"
        )
    return int(start), int(end), grid_box(list(entry[2:6]), frame, xywh=False, normalised=True)


def _marked(caption: str, chunks: list[tuple[int, int, list[int]]]) -> str:
    """The caption with each noun chunk's boxes after it; a chunk overlapping an earlier one is left out,
    and one span with several boxes gets them all, as Qwen-VL writes it."""
    out, at = [], 0
    for start, end, _ in sorted(chunks, key=lambda c: (c[0], c[1])):
        if start < at:
            continue
        boxes = "".join(f"<box>{box_text(b)}</box>" for s, e, b in chunks if (s, e) == (start, end))
        out += [caption[at:start], f"<ref>{caption[start:end]}</ref>{boxes}"]
        at = end
    return "".join(out + [caption[at:]])
