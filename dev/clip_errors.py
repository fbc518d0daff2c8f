"""dev/LOG.md: where a synthetic CLIP scorer goes wrong: precision/recall at 5% prevalence and on a balanced
set, English vs Chinese FPR at mismatch recall 0.95, lowest-scoring clean pairs, highest-scoring mismatches.

    PYTHONPATH=. python dev/clip_errors.py SCORER_DIR [--top N] [--split train]

SCORER_DIR is a folder written by ``python -m data_prep.clip_train``. ``--split train`` scores the first 600
of the scorer's own training pairs instead of the held-out split (to tell overfitting from undertraining).
"""

import argparse
import json

import numpy as np
import open_clip

from data_prep.clip_train import _pairs, best_threshold, pair_scores
from data_prep.synthetic.world import NoiseRates, WorldConfig, plan_sample
from pipeline.config import register_open_clip_configs

p = argparse.ArgumentParser()
p.add_argument("scorer_dir")
p.add_argument("--top", type=int, default=5)
p.add_argument("--split", choices=("heldout", "train"), default="heldout")
args = p.parse_args()
register_open_clip_configs()
info = json.load(open(f"{args.scorer_dir}/scorer.json"))
size, train = info["image_size"], info["train"]
model = open_clip.create_model(
    info["arch"], pretrained=f"{args.scorer_dir}/{info['weights']}", force_image_size=size
).eval()
tok = open_clip.get_tokenizer(info["arch"])
n, seed = 600, (99 if args.split == "heldout" else train["world_seed"])
zh_rate = WorldConfig.zh_rate if args.split == "heldout" else train.get("zh_rate", WorldConfig.zh_rate)


def world(mismatch: float) -> WorldConfig:
    noise = NoiseRates(mismatch, *[0.0] * 7)
    return WorldConfig(num_samples=n, seed=seed, split=args.split, zh_rate=zh_rate, noise=noise)


good = pair_scores(model, tok, _pairs(n, seed, args.split, size, 0.0, zh_rate))
bad = pair_scores(model, tok, _pairs(n, seed, args.split, size, 1.0, zh_rate))
print("at 5% prevalence:", best_threshold(good, bad, 0.05))
print("balanced:", best_threshold(good, bad, 0.5))
clean_plans = [plan_sample(world(0.0), i) for i in range(n)]
bad_plans = [plan_sample(world(1.0), i) for i in range(n)]
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
