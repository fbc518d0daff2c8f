"""Counting: one ``PartStats`` per part (``stats/NNNNNN.json``) and the run's totals built from them.

Every input item ends as exactly one of: kept, dropped (under the reason of the filter that dropped it) or
error (under its kind). Histograms use fixed bins so that parts add up without keeping per-sample values.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

from data_prep.sample import ReadError, Sample


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
EXAMPLES = 5  # error lines kept per part


class InvariantError(RuntimeError):
    pass


@dataclass
class PartStats:
    part: int
    input: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> samples
    errors: dict[str, int] = field(default_factory=dict)  # kind -> input items
    error_examples: list[str] = field(default_factory=list)
    noise: dict[str, dict[str, int]] = field(default_factory=dict)  # label -> outcome (reason | kept) -> n
    cleaning: dict[str, dict[str, int]] = field(default_factory=dict)  # label -> total | changed | recovered
    histograms: dict[str, list[int]] = field(
        default_factory=lambda: {name: [0] * b.count for name, b in HISTOGRAMS.items()}
    )
    languages: dict[str, int] = field(default_factory=dict)
    # filter and write: CPU seconds of the task's thread (its wall time under Ray includes waiting for the
    # other tasks on a busy machine); clip: the actor's wall seconds, as its torch threads share them
    seconds: dict[str, float] = field(default_factory=lambda: {"filter": 0.0, "clip": 0.0, "write": 0.0})
    clip_scored: int = 0
    clip_threshold: float | None = None
    worker: str = ""

    def drop(self, sample: Sample, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        self.outcome(sample, reason)

    def keep(self, sample: Sample) -> None:
        self.kept += 1
        self.outcome(sample, "kept")

    def outcome(self, sample: Sample, outcome: str) -> None:
        """A labelled sample's fate (a drop reason or "kept") under its noise label."""
        if sample.noise is not None:
            by_label = self.noise.setdefault(sample.noise, {})
            by_label[outcome] = by_label.get(outcome, 0) + 1

    def error(self, item: ReadError) -> None:
        self.errors[item.kind] = self.errors.get(item.kind, 0) + 1
        if len(self.error_examples) < EXAMPLES:
            self.error_examples.append(f"{item.kind}: {item.detail}")

    def hist(self, name: str, value: float) -> None:
        self.histograms[name][HISTOGRAMS[name].index(value)] += 1

    def cleaned(self, sample: Sample, raw: str, cleaned: str) -> None:
        """How text cleaning did on a sample whose clean caption is known."""
        if sample.noise is None or sample.clean_caption is None:
            return
        counts = self.cleaning.setdefault(sample.noise, {"total": 0, "changed": 0, "recovered": 0})
        counts["total"] += 1
        counts["changed"] += int(bool(cleaned) and cleaned != raw.strip())
        counts["recovered"] += int(cleaned == sample.clean_caption)

    def balance(self) -> int:
        """input - kept - dropped - errors: zero when nothing was lost."""
        return balance(vars(self))

    def to_dict(self) -> dict:
        return asdict(self)


def balance(stats: dict) -> int:
    """input - kept - dropped - errors of a part's or the run's counts: zero when nothing was lost."""
    return stats["input"] - stats["kept"] - sum(stats["dropped"].values()) - sum(stats["errors"].values())


def merge(parts: list[dict]) -> dict:
    """The run's totals from the parts' stats (as written to ``stats/NNNNNN.json``)."""
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


def funnel(merged: dict, steps: dict[str, tuple[str, ...]]) -> list[dict]:
    """Samples left after each step (filter name -> its drop reasons, in chain order), starting from what
    could be read."""
    left = merged["input"] - sum(merged["errors"].values())
    rows = [{"step": "read", "left": left}]
    for name, reasons in steps.items():
        left -= sum(merged["dropped"].get(r, 0) for r in reasons)
        rows.append({"step": name, "left": left})
    return rows


def quality(merged: dict, catches: dict[str, tuple[str, ...]]) -> dict:
    """Per noise label: precision and recall of the filter meant to catch it (``catches``: label -> the drop
    reasons that catch it), for sources whose samples carry labels.

    recall = caught / samples with the label; precision = caught / all the filter dropped (or, for html,
    cleaned captions equal to the label's clean caption / captions cleaning changed and kept non-empty).
    """
    noise = merged["noise"]
    if not noise:
        return {}
    out = {}
    for label, reasons in catches.items():
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
