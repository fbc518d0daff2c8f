"""Counting: one stats record per part (``stats/NNNNNN.json``) and the run summary built from them.

Every input item ends as exactly one of: kept, dropped (under the reason of the filter that dropped it) or
error (under its kind). Histograms use fixed bins so that parts add up without keeping per-sample values.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass

import numpy as np

# filter -> the drop reasons it gives, in the recipe's order (data_prep.config.FILTER_ORDER)
REASONS: dict[str, tuple[str, ...]] = {
    "text": ("text_empty", "text_too_short", "text_too_long"),
    "decode": ("decode_error",),
    "size": ("too_small",),
    "aspect": ("aspect_ratio",),
    "language": ("charset", "language"),
    "dedup": ("duplicate",),
    "clip": ("clip_score",),
}
# noise label of the synthetic world -> the drop reasons of the filter meant to catch it
NOISE_FILTERS: dict[str, tuple[str, ...]] = {
    "mismatch": REASONS["clip"],
    "aspect": REASONS["aspect"],
    "small": REASONS["size"],
    "language": REASONS["language"],
    "empty": ("text_empty", "text_too_short"),
    "duplicate": REASONS["dedup"],
    "corrupt": REASONS["decode"],
}


@dataclass(frozen=True)
class Bins:
    lo: float
    hi: float
    count: int

    def index(self, value: float) -> int:
        """The bin between the two edges() that hold ``value``; values outside [lo, hi) fall into the end
        bins. Searching the edges (not flooring a quotient) keeps a value on an edge in the bin it opens."""
        i = int(np.searchsorted(self.edges(), value, side="right")) - 1
        return min(self.count - 1, max(0, i))

    def edges(self) -> np.ndarray:
        return _edges(self.lo, self.hi, self.count)


@functools.cache
def _edges(lo: float, hi: float, count: int) -> np.ndarray:
    edges = np.linspace(lo, hi, count + 1)
    edges.flags.writeable = False
    return edges


HISTOGRAMS = {
    "clip_score": Bins(-1.0, 1.0, 200),
    "log2_aspect": Bins(-4.0, 4.0, 80),  # log2(width / height)
    "short_side": Bins(0, 1024, 64),
    "long_side": Bins(0, 2048, 64),
}


def new_stats(part: int) -> dict:
    return {
        "part": part,
        "input": 0,
        "kept": 0,
        "dropped": {},
        "errors": {},
        "error_examples": [],
        "noise": {},  # label -> outcome (drop reason or "kept") -> count, for sources with noise labels
        "cleaning": {},  # label -> changed / recovered / total, from sources with a clean_caption label
        "histograms": {name: [0] * b.count for name, b in HISTOGRAMS.items()},
        "languages": {},
        "seconds": {"filter": 0.0, "clip": 0.0, "write": 0.0},
        "clip_scored": 0,
    }


def add_hist(stats: dict, name: str, value: float) -> None:
    stats["histograms"][name][HISTOGRAMS[name].index(value)] += 1


def count_outcome(stats: dict, sample: dict, outcome: str) -> None:
    """Record a sample's fate (a drop reason or "kept") under its noise label, when it has one."""
    label = sample["meta"].get("noise")
    if label is not None:
        by_label = stats["noise"].setdefault(label, {})
        by_label[outcome] = by_label.get(outcome, 0) + 1


def drop(stats: dict, sample: dict, reason: str) -> None:
    stats["dropped"][reason] = stats["dropped"].get(reason, 0) + 1
    count_outcome(stats, sample, reason)


def add_error(stats: dict, item: dict) -> None:
    stats["errors"][item["error"]] = stats["errors"].get(item["error"], 0) + 1
    if len(stats["error_examples"]) < 5:
        stats["error_examples"].append(f"{item['error']}: {item['detail']}")


def balance(stats: dict) -> int:
    """input - kept - dropped - errors: zero when nothing was lost."""
    return stats["input"] - stats["kept"] - sum(stats["dropped"].values()) - sum(stats["errors"].values())


class InvariantError(RuntimeError):
    pass


def merge(parts: list[dict]) -> dict:
    total = {"input": 0, "kept": 0, "clip_scored": 0}
    dropped: Counter = Counter()
    errors: Counter = Counter()
    languages: Counter = Counter()
    noise: dict[str, Counter] = {}
    cleaning: dict[str, Counter] = {}
    seconds: Counter = Counter()
    hist = {name: np.zeros(b.count, dtype=np.int64) for name, b in HISTOGRAMS.items()}
    for s in parts:
        for key in total:
            total[key] += s[key]
        dropped.update(s["dropped"])
        errors.update(s["errors"])
        languages.update(s["languages"])
        seconds.update(s["seconds"])
        for label, outcomes in s["noise"].items():
            noise.setdefault(label, Counter()).update(outcomes)
        for label, counts in s["cleaning"].items():
            cleaning.setdefault(label, Counter()).update(counts)
        for name in hist:
            hist[name] += np.asarray(s["histograms"][name])
    return {
        **total,
        "dropped": dict(dropped.most_common()),
        "errors": dict(errors.most_common()),
        "languages": dict(languages.most_common()),
        "noise": {k: dict(v) for k, v in sorted(noise.items())},
        "cleaning": {k: dict(v) for k, v in sorted(cleaning.items())},
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "histograms": {k: v.tolist() for k, v in hist.items()},
    }


def funnel(merged: dict, order: tuple[str, ...]) -> list[dict]:
    """Samples left after each filter, starting from what could be read."""
    left = merged["input"] - sum(merged["errors"].values())
    rows = [{"step": "read", "left": left}]
    for name in order:
        left -= sum(merged["dropped"].get(r, 0) for r in REASONS[name])
        rows.append({"step": name, "left": left})
    return rows


def quality(merged: dict) -> dict:
    """Per noise label: precision and recall of the filter meant to catch it (labelled sources only).

    recall = caught / samples with the label; precision = caught / all the filter dropped (or, for html,
    cleaned captions equal to the label's clean caption / captions cleaning changed and kept non-empty).
    """
    noise = merged["noise"]
    if not noise:
        return {}
    out = {}
    for label, reasons in NOISE_FILTERS.items():
        total = sum(noise.get(label, {}).values())
        caught = sum(noise.get(label, {}).get(r, 0) for r in reasons)
        flagged = sum(n for outcomes in noise.values() for r, n in outcomes.items() if r in reasons)
        if total or flagged:
            out[label] = _pr(caught, flagged, total, reasons)
    html = merged["cleaning"].get("html")
    if html:
        changed = sum(c.get("changed", 0) for c in merged["cleaning"].values())
        out["html"] = _pr(html.get("recovered", 0), changed, html.get("total", 0), ("text cleaning",))
    return out


def _pr(caught: int, flagged: int, total: int, by: tuple[str, ...]) -> dict:
    return {
        "filter": list(by),
        "samples": total,
        "caught": caught,
        "flagged": flagged,
        "precision": round(caught / flagged, 4) if flagged else None,
        "recall": round(caught / total, 4) if total else None,
    }
