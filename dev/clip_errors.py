"""dev/LOG.md: where a synthetic CLIP scorer goes wrong: precision/recall at 5% prevalence and on a balanced
set, English vs Chinese FPR at mismatch recall 0.95, lowest-scoring clean pairs, highest-scoring mismatches.

    PYTHONPATH=. python dev/clip_errors.py SCORER_DIR [--top N] [--split train] [--clean N] [--mismatched N]

SCORER_DIR is a folder written by ``python -m data_prep.clip_train``. ``--split train`` scores the first pairs
of the scorer's own training pairs instead of the held-out split (to tell overfitting from undertraining).
Pairs are scored as a prep run scores them (`data_prep.clip_train.scored_pairs`).
"""

import argparse
import json

import numpy as np

from data_prep.clip_score import ClipScorer
from data_prep.clip_train import best_threshold, noise_world, scored_pairs
from data_prep.config import ClipFilter
from data_prep.synthetic.world import WorldConfig, plan_sample

p = argparse.ArgumentParser()
p.add_argument("scorer_dir")
p.add_argument("--top", type=int, default=5)
p.add_argument("--split", choices=("heldout", "train"), default="heldout")
p.add_argument("--clean", type=int, default=600, help="clean pairs")
p.add_argument("--mismatched", type=int, default=600, help="mismatched pairs")
args = p.parse_args()
info = json.load(open(f"{args.scorer_dir}/scorer.json"))
train = info["train"]
scorer = ClipScorer(ClipFilter(arch=info["arch"], threshold=0.0, device="cpu"), args.scorer_dir)
seed = 99 if args.split == "heldout" else train["world_seed"]
zh_rate = WorldConfig.zh_rate if args.split == "heldout" else train.get("zh_rate", WorldConfig.zh_rate)


def world(mismatch: float) -> WorldConfig:
    return noise_world(args.mismatched if mismatch else args.clean, mismatch, seed, args.split, zh_rate)


good = scorer.score(*scored_pairs(world(0.0)))
bad = scorer.score(*scored_pairs(world(1.0)))
t, p5 = info["threshold"], 0.05
fpr, recall = (good < t).mean(), (bad < t).mean()
print(f"at the stored threshold {t}: clean FPR {fpr:.4f} recall {recall:.4f} "
      f"precision at 5% {recall * p5 / max(recall * p5 + fpr * (1 - p5), 1e-12):.4f}")  # fmt: skip
print("at 5% prevalence:", best_threshold(good, bad, 0.05))
print("balanced:", best_threshold(good, bad, 0.5))
clean_plans = [plan_sample(world(0.0), i) for i in range(args.clean)]
bad_plans = [plan_sample(world(1.0), i) for i in range(args.mismatched)]
zh = np.array([q.lang == "zh" for q in clean_plans])
print(f"clean mean en {good[~zh].mean():.3f} zh {good[zh].mean():.3f}; bad mean {bad.mean():.3f}")
t = np.quantile(bad, 0.95)
print("t95", t, "FPR en", (good[~zh] < t).mean(), "FPR zh", (good[zh] < t).mean())
for i in np.argsort(good)[: args.top]:
    print(f"LOW CLEAN {good[i]:.3f}", clean_plans[i].caption[:150])
for i in np.argsort(-bad)[: args.top]:
    q = bad_plans[i]
    print(f"HIGH BAD {bad[i]:.3f}", "| true:", q.clean_caption[:100], "| given:", q.caption[:100])
# mismatches whose caption names the image's background (English captions only)
en_bad = np.array([q.lang == "en" for q in bad_plans])
same = en_bad & np.array([f" {q.scene.background} background" in q.caption for q in bad_plans])
print(
    f"English mismatches naming the image's background: {same.sum()} of {en_bad.sum()}; share above t95: "
    f"{(bad[same] >= t).mean():.2f}, of the others: {(bad[en_bad & ~same] >= t).mean():.2f}"
)
