"""PNG plots of a prep run, from summary.json: funnel, CLIP scores, aspect ratios, sizes, languages."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from data_prep.config import PrepSettings  # noqa: E402
from data_prep.stats import HISTOGRAMS  # noqa: E402


def write_plots(summary: dict, out: Path, cfg: PrepSettings) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = [_funnel(summary, out / "funnel.png")]
    hist = summary["histograms"]
    f = cfg.filters
    if sum(hist["clip_score"]):
        threshold = summary["clip"]["threshold"]
        lines = [(threshold, "threshold")] if isinstance(threshold, float) else []
        written.append(_histogram(hist, "clip_score", "CLIP score (cosine)", lines, out / "clip_score.png"))
    if sum(hist["log2_aspect"]):
        r = np.log2(f.aspect.max_ratio)
        lines = [(-r, "max ratio"), (r, "")] if f.aspect.enabled else []
        written.append(_histogram(hist, "log2_aspect", "log2(width / height)", lines, out / "aspect.png"))
    if sum(hist["short_side"]):
        lines = [(f.size.min_side, "min side")] if f.size.enabled else []
        written.append(
            _histogram(hist, "short_side", "shorter side (px)", lines, out / "size.png", also="long_side")
        )
    if summary["languages"]:
        written.append(_languages(summary["languages"], cfg.filters.language.keep, out / "languages.png"))
    return written


def _funnel(summary: dict, path: Path) -> Path:
    steps = [row["step"] for row in summary["funnel"]]
    left = [row["left"] for row in summary["funnel"]]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(steps) + 1.2))
    bars = ax.barh(steps[::-1], left[::-1], color="#4c72b0")
    for bar, value in zip(bars, left[::-1], strict=True):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {value:,} ({value / max(summary['input'], 1):.1%})",
                va="center", fontsize=8)  # fmt: skip
    errors = sum(summary["errors"].values())
    ax.set_title(
        f"left after each filter: {summary['input']:,} in, {errors:,} errors, {summary['kept']:,} kept"
    )
    ax.set_xlim(0, max(left + [1]) * 1.3)
    return _save(fig, path)


def _histogram(hist: dict, name: str, xlabel: str, lines: list, path: Path, also: str | None = None) -> Path:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for key in [name] + ([also] if also else []):
        counts, edges = np.asarray(hist[key]), HISTOGRAMS[key].edges()
        used = np.nonzero(counts)[0]
        lo, hi = used.min(), used.max() + 1
        ax.stairs(counts[lo:hi], edges[lo : hi + 1], fill=True, alpha=0.6, label=key.replace("_", " "))
    for x, label in lines:
        ax.axvline(x, color="#c44e52", linestyle="--", label=label or None)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("samples")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _languages(languages: dict, keep: list[str], path: Path) -> Path:
    names = list(languages)[:20]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(names, [languages[n] for n in names], color=["#55a868" if n in keep else "#c44e52" for n in names])
    ax.set_yscale("log")
    ax.set_title("detected language (green: kept)")
    ax.set_ylabel("samples")
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
