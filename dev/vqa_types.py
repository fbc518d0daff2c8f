"""Held-out VQA accuracy per question type (count, colour, shape, position, existence) of an export, with
the image-blind twin beside it: which kinds of question the model answers from the image.

    PYTHONPATH=. python dev/vqa_types.py runs/demo/stage3/final [--limit 200]
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict

from pipeline.data.shard_format import expand_urls
from pipeline.eval import answers, eval_items
from pipeline.eval_metrics import exact_match_accuracy
from pipeline.generate import load_export

TYPES = [  # first match wins; the world's question templates (data_prep/synthetic/text.py)
    ("count", re.compile(r"How many")),
    ("colour", re.compile(r"What colou?r")),
    ("shape", re.compile(r"What shape")),
    ("existence", re.compile(r"Is there")),
]


def question_type(prompt: str) -> str:
    return next((name for name, pattern in TYPES if pattern.search(prompt)), "position")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--shards", default="data/heldout/shards/{000000..000000}.tar")
    p.add_argument("--limit", type=int, default=200)
    args = p.parse_args()
    model, tokenizer, formatter, transform = load_export(args.checkpoint)
    items = eval_items(expand_urls(args.shards), formatter, transform, ("vqa",), args.limit)
    seeing = answers(model, tokenizer, items, False, 16, 16)
    blind = answers(model, tokenizer, items, True, 16, 16)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        groups[question_type(tokenizer.decode(item.prompt))].append(i)
    print(f"{'type':<10} {'n':>4} {'seeing':>7} {'blind':>7}")
    for name, idx in sorted(groups.items()):
        truth = [items[i].truth for i in idx]
        see = exact_match_accuracy([seeing[i].strip() for i in idx], truth)
        bl = exact_match_accuracy([blind[i].strip() for i in idx], truth)
        print(f"{name:<10} {len(idx):>4} {see:>7.3f} {bl:>7.3f}")


if __name__ == "__main__":
    main()
