"""dev/LOG.md (issue 30): held-out VQA accuracy per question type and per number of objects in the image, for
one or more exports, with the image-blind twin. A one-object scene needs no lookup ("What colour is the
circle?" is the image's one colour); two or more do.

    PYTHONPATH=. python dev/vqa_by_objects.py EXPORT... [--shards 'data/heldout/shards/*.tar'] [--limit 300]

The object count is the number of the sample's referring expressions: the world writes one per object.
"""

import argparse

from pipeline.data.loader import read_record
from pipeline.data.shard_format import expand_urls, read_shards
from pipeline.eval import answers, by_question_type, eval_items
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
        for item in items:  # the question type, then the object count: by_question_type groups on it
            item.question_type = f"{item.question_type} {min(objects[item.key], 3)}"
        print(f"{export}: type, objects (3 = 3 or more): n, accuracy (blind)")
        for kind, row in by_question_type(items, seeing, blind).items():
            print(f"  {kind:11} {row['samples']:3}  {row['vqa_acc']:.2f} ({row['blind']:.2f})")


if __name__ == "__main__":
    main()
