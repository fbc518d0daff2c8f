"""dev/LOG.md (issue 30): held-out VQA accuracy per question type and per number of objects in the image, for
one or more exports, with the image-blind twin. A one-object scene needs no lookup ("What colour is the
circle?" is the image's one colour); two or more do.

    PYTHONPATH=. python dev/vqa_by_objects.py EXPORT... [--shards 'data/heldout/shards/*.tar'] [--limit 300]

The object count is the number of the sample's referring expressions: the world writes one per object.
"""

import argparse
from collections import defaultdict

from pipeline.data.loader import read_record
from pipeline.data.shard_format import expand_urls, read_shards
from pipeline.eval import answers, eval_items
from pipeline.eval_metrics import exact_match_accuracy
from pipeline.export import load_export


def object_counts(urls: list[str]) -> dict[str, int]:
    return {
        record.key: len(record.tasks.get("ref") or []) for record, _ in map(read_record, read_shards(urls))
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("exports", nargs="+")
    p.add_argument("--shards", default="data/heldout/shards/*.tar")
    p.add_argument("--limit", type=int, default=300)
    args = p.parse_args()
    urls = expand_urls(args.shards, "--shards")
    objects = object_counts(urls)
    for export in args.exports:
        model, tokenizer, formatter, transform = load_export(export, "cpu")
        items = eval_items(urls, formatter, transform, ("vqa",), args.limit)
        seeing = answers(model, tokenizer, items, False, 32, 8)
        blind = answers(model, tokenizer, items, True, 32, 8)
        groups = defaultdict(list)
        for i, item in enumerate(items):
            groups[(item.question_type, min(objects[item.key], 3))].append(i)
        print(f"{export}: type, objects (3 = 3 or more): n, accuracy (blind)")
        for (kind, n), idx in sorted(groups.items()):
            truths = [items[i].truth for i in idx]
            acc = exact_match_accuracy([seeing[i].strip() for i in idx], truths)
            acc_blind = exact_match_accuracy([blind[i].strip() for i in idx], truths)
            print(f"  {kind:9} {n}  {len(idx):3}  {acc:.2f} ({acc_blind:.2f})")


if __name__ == "__main__":
    main()
