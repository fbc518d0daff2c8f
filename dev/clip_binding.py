"""dev/LOG.md: does a CLIP scorer tell an image's caption from the same caption with its shapes (or colours) swapped?

    PYTHONPATH=. python dev/clip_binding.py SCORER_DIR [SCORER_DIR ...] [--pairs 400]

On clean held-out pairs (world seed 99, the calibration's), each scored as a prep run scores it: the share of
images whose true caption scores above the caption with every object's shape replaced, and above the one with
every colour replaced (chance 0.5), with the mean score gap. In-batch negatives rarely differ only there.
"""

import argparse
import random

import numpy as np

from data_prep.clip_score import ClipScorer
from data_prep.clip_train import noise_world, scored_pairs, swapped_caption
from data_prep.config import ClipFilter
from data_prep.synthetic.world import plan_sample
from pipeline.config import register_open_clip_configs


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("scorers", nargs="+")
    p.add_argument("--pairs", type=int, default=400)
    args = p.parse_args()
    register_open_clip_configs()
    world = noise_world(args.pairs, 0.0)
    images, captions = scored_pairs(world)
    plans = [plan_sample(world, i) for i in range(args.pairs)]
    swapped = {
        k: [swapped_caption(pl, random.Random(i), k) for i, pl in enumerate(plans)]
        for k in ("shape", "colour")
    }
    for folder in args.scorers:
        scorer = ClipScorer(ClipFilter(threshold=0.0, device="cpu"), folder)
        true = scorer.score(images, captions)
        cells = []
        for kind, texts in swapped.items():
            other = scorer.score(images, texts)
            cells.append(
                f"{kind} swapped: wins {np.mean(true > other):.3f}, gap {np.mean(true - other):+.3f}"
            )
        print(f"{folder}: {len(true)} pairs; " + "; ".join(cells))


if __name__ == "__main__":
    main()
