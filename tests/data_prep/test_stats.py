import numpy as np
import pytest

from data_prep.chain import CATCHES, REASONS
from data_prep.clip_train import best_threshold
from data_prep.sample import ReadError, Sample
from data_prep.stats import HISTOGRAMS, PartStats, balance, funnel, merge, quality


def _part(part: int, noise: dict, dropped: dict, kept: int, errors: dict | None = None) -> dict:
    s = PartStats(part, noise=noise, dropped=dropped, kept=kept, errors=errors or {})
    s.input = kept + sum(dropped.values()) + sum((errors or {}).values())
    return s.to_dict()


def test_quality_is_precision_and_recall_of_the_filter_meant_for_each_noise():
    a = _part(0, {"small": {"too_small": 8, "kept": 2}, "clean": {"kept": 80, "too_small": 2}},
              {"too_small": 10}, kept=82)  # fmt: skip
    b = _part(1, {"mismatch": {"clip_score": 9, "language": 1}, "clean": {"clip_score": 1, "kept": 9}},
              {"clip_score": 10, "language": 1}, kept=9, errors={"http_404": 3})  # fmt: skip
    merged = merge([a, b])
    q = quality(merged, CATCHES)
    assert q["small"]["recall"] == 0.8 and q["small"]["precision"] == 0.8  # 8 of 10 small, 8 of 10 drops
    assert q["mismatch"]["recall"] == 0.9 and q["mismatch"]["precision"] == 0.9
    assert "language" in q and q["language"]["recall"] is None and q["language"]["precision"] == 0.0
    assert balance(merged) == 0 and merged["input"] == 92 + 23
    rows = funnel(merged, {name: REASONS[name] for name in ("size", "language", "clip")})
    assert [r["left"] for r in rows] == [112, 102, 101, 91] and merged["kept"] == 91


def test_balance_sees_a_lost_sample():
    s = _part(0, {}, {"too_small": 1}, kept=3)
    s["input"] += 1
    assert balance(s) == 1


def test_part_stats_count_each_item_once_under_its_label():
    s = PartStats(3)
    labelled = Sample("k1", "a.jpg", b"", "c", {}, noise="small")
    unlabelled = Sample("k2", "b.jpg", b"", "c", {})
    s.input = 4
    s.drop(labelled, "too_small")
    s.keep(unlabelled)
    s.keep(labelled)
    for _ in range(7):
        s.error(ReadError("x", "http_404", "x: 404"))
    assert s.dropped == {"too_small": 1} and s.kept == 2 and s.errors == {"http_404": 7}
    assert s.noise == {"small": {"too_small": 1, "kept": 1}}
    assert len(s.error_examples) == 5 and s.balance() == -6


def test_histogram_bins_clip_out_of_range_values_to_the_ends():
    s = PartStats(0)
    for v in (-5.0, 0.0, 0.999, 7.0):
        s.hist("clip_score", v)
    counts = np.asarray(s.histograms["clip_score"])
    assert counts[0] == 1 and counts[-1] == 2 and counts[HISTOGRAMS["clip_score"].index(0.0)] == 1


def test_best_threshold_reports_precision_at_the_given_prevalence():
    rng = np.random.default_rng(0)
    clean, bad = rng.normal(0.6, 0.05, 2000), rng.normal(0.3, 0.05, 2000)
    result = best_threshold(clean, bad, prevalence=0.05)
    assert 0.35 < result["threshold"] < 0.5
    assert result["precision"] > 0.9 and result["recall"] > 0.9
    overlapping = best_threshold(clean, rng.normal(0.55, 0.05, 2000), prevalence=0.05)
    assert overlapping["f1"] < 0.5  # balanced-set numbers would look far better
    # the threshold balances precision and recall (F1's best would trade recall for precision near 1)
    close = best_threshold(clean, rng.normal(0.4, 0.05, 2000), prevalence=0.05)
    assert abs(close["precision"] - close["recall"]) < 0.02 and close["recall"] > 0.88


@pytest.mark.parametrize("name", sorted(HISTOGRAMS))
def test_each_value_lands_in_the_bin_whose_edges_hold_it(name):
    """The plots draw counts between edges(); index() must put every value between the right two."""
    bins = HISTOGRAMS[name]
    edges = bins.edges()
    values = np.random.default_rng(0).uniform(bins.lo, bins.hi, 5000)
    values = np.concatenate([values, edges[:-1], edges[:-1] + 1e-9 * (bins.hi - bins.lo)])
    for v in values:
        i = bins.index(float(v))
        assert edges[i] - 1e-9 <= v < edges[i + 1], (v, i)
    assert len(edges) == bins.count + 1
