"""The filter chain: Qwen-VL's cleaning rules (``data_prep.filters``) as filter objects in the recipe's
order. The order, each filter's drop reasons, the funnel and the quality report all derive from ``CHAIN``.

Each filter reads its settings from ``filters.<name>`` and returns a drop reason or None. All but the last
run per sample in the filter tasks (``filter_part``); the CLIP filter scores in batches on its own actors
(``data_prep.score``).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from data_prep import filters as F
from data_prep.batches import pack
from data_prep.config import PrepSettings
from data_prep.reencode import fit
from data_prep.sample import ReadError, Sample
from data_prep.sources import PrepConfig, read_part
from data_prep.stats import PartStats


@dataclass
class Item:
    """A sample on its way through the chain, with what the filters learn about it."""

    sample: Sample
    text: str
    image: Image.Image | None = None
    info: F.ImageInfo | None = None


class Undecodable(Exception):
    """An image that cannot be decoded while the decode filter is off: an error, not a drop."""


class Filter:
    name: ClassVar[str]  # its settings: filters.<name>
    reasons: ClassVar[tuple[str, ...]]  # the drop reasons it gives
    catches: ClassVar[dict[str, tuple[str, ...]]] = {}  # noise label -> the reasons meant to catch it
    images_only: ClassVar[bool] = False
    batched: ClassVar[bool] = False  # applied to whole parts by data_prep.score, not per sample here

    def __init__(self, cfg: PrepSettings, duplicates: frozenset[str] = frozenset()) -> None:
        self.prep = cfg
        self.cfg: Any = getattr(cfg.filters, self.name)

    @property
    def runs(self) -> bool:
        return self.cfg.enabled

    def check(self, item: Item, stats: PartStats) -> str | None:
        raise NotImplementedError


class Text(Filter):
    """Captions only: pure text, dialogues and annotated tasks are not web captions."""

    name, reasons = "text", ("text_empty", "text_too_short", "text_too_long")
    catches = {"empty": ("text_empty", "text_too_short")}
    images_only = True

    def check(self, item: Item, stats: PartStats) -> str | None:
        if item.sample.caption is None:  # a dataset of other tasks (questions, boxes): nothing to clean
            return None
        cleaned = F.clean_text(item.text)
        stats.cleaned(item.sample, item.text, cleaned)
        item.text = cleaned
        return F.text_reason(cleaned, self.cfg.min_chars, self.cfg.max_chars)


class Decode(Filter):
    name, reasons, catches, images_only = "decode", ("decode_error",), {"corrupt": ("decode_error",)}, True

    @property
    def runs(self) -> bool:
        return True  # the filters after it need the size; off, a failure is an error instead of a drop

    def check(self, item: Item, stats: PartStats) -> str | None:
        try:
            item.image, item.info = F.decode(item.sample.image, self.prep.max_side)
        except Exception as e:  # PIL raises many kinds; each means the bytes are not a usable image
            if self.cfg.enabled:
                return "decode_error"
            raise Undecodable(f"{item.sample.source_id}: {e}") from None
        info = item.info
        stats.hist("log2_aspect", float(np.log2(info.width / info.height)))
        stats.hist("short_side", min(info.width, info.height))
        stats.hist("long_side", max(info.width, info.height))
        return None


class Size(Filter):
    name, reasons, catches, images_only = "size", ("too_small",), {"small": ("too_small",)}, True

    def check(self, item: Item, stats: PartStats) -> str | None:
        return F.size_reason(item.info, self.cfg.min_side)


class Aspect(Filter):
    name, reasons, catches, images_only = "aspect", ("aspect_ratio",), {"aspect": ("aspect_ratio",)}, True

    def check(self, item: Item, stats: PartStats) -> str | None:
        return F.aspect_reason(item.info, self.cfg.max_ratio)


class Language(Filter):
    """The character set (Qwen-VL's rule), then language ID."""

    name, reasons = "language", ("charset", "language")
    catches = {"language": reasons}

    def check(self, item: Item, stats: PartStats) -> str | None:
        if self.cfg.charset and (reason := F.charset_reason(item.text)):
            return reason
        reason, item.sample.lang = F.language_reason(item.text, self.cfg.keep, self.cfg.min_confidence)
        stats.languages[item.sample.lang] = stats.languages.get(item.sample.lang, 0) + 1
        return reason


class Dedup(Filter):
    """Exact duplicates, decided over the whole input by the dedup pass (data_prep.dedup)."""

    name, reasons, catches = "dedup", ("duplicate",), {"duplicate": ("duplicate",)}

    def __init__(self, cfg: PrepSettings, duplicates: frozenset[str] = frozenset()) -> None:
        super().__init__(cfg)
        self.duplicates = duplicates

    def check(self, item: Item, stats: PartStats) -> str | None:
        return "duplicate" if item.sample.key in self.duplicates else None


class Clip(Filter):
    """Scored in batches on its own actors (data_prep.score)."""

    name, reasons, catches = "clip", ("clip_score",), {"mismatch": ("clip_score",)}
    images_only = batched = True


CHAIN: tuple[type[Filter], ...] = (Text, Decode, Size, Aspect, Language, Dedup, Clip)
REASONS = {f.name: f.reasons for f in CHAIN}
CATCHES = {label: reasons for f in CHAIN for label, reasons in f.catches.items()}


def build_chain(cfg: PrepSettings, duplicates: frozenset[str] = frozenset()) -> list[Filter]:
    """The per-sample filters that run under ``cfg``, in order (the CLIP filter is applied by data_prep.score)."""
    chain = [f(cfg, duplicates) for f in CHAIN if not f.batched]
    return [f for f in chain if f.runs]


def enabled_steps(cfg: PrepSettings) -> dict[str, tuple[str, ...]]:
    """The funnel's steps: the enabled filters in chain order, with their reasons."""
    return {f.name: f.reasons for f in CHAIN if getattr(cfg.filters, f.name).enabled}


# -- the filter tasks ------------------------------------------------------------------------------------------
def filter_part(batch: dict, cfg: PrepConfig) -> dict:
    """Ray Data task: each part's samples through the per-sample filters, then fitted for writing."""
    specs, kept, stats = [], [], []
    for spec, dups in zip(batch["spec"], batch["duplicates"], strict=True):
        start = time.thread_time()
        spec = json.loads(spec)
        s = PartStats(spec["part"], worker=f"{socket.gethostname()}:{os.getpid()}")
        chain = build_chain(cfg, frozenset(json.loads(dups)))
        survivors = list(run_chain(cfg, read_part(cfg, spec), chain, s))
        s.seconds["filter"] = time.thread_time() - start
        specs.append(json.dumps(spec))
        kept.append(survivors)
        stats.append(s)
    return {"spec": np.array(specs), "payload": pack(kept, stats)}


def run_chain(cfg: PrepSettings, items: Iterator[Sample | ReadError], chain: list[Filter],
              stats: PartStats) -> Iterator[Sample]:  # fmt: skip
    for sample in items:
        stats.input += 1
        if isinstance(sample, ReadError):
            stats.error(sample)
            continue
        item = Item(sample, sample.text)
        sample.lang = sample.meta.get("lang")
        try:
            reason = _first_reason(chain, item, stats)
        except Undecodable as e:
            stats.error(ReadError(sample.source_id, "undecodable", str(e)))
            continue
        if reason:
            stats.drop(sample, reason)
            continue
        if sample.image is not None:
            sample.caption = item.text if sample.caption is not None else None
            sample.original_size = (item.info.width, item.info.height)
            sample.image, sample.ext = fit(
                sample.image, item.image, item.info, cfg.max_side, cfg.jpeg_quality
            )
        yield sample


def _first_reason(chain: list[Filter], item: Item, stats: PartStats) -> str | None:
    for f in chain:
        if (item.sample.image is not None or not f.images_only) and (reason := f.check(item, stats)):
            return reason
    return None
