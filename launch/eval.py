"""Score a final/ export on held-out shards, each score next to its image-blind twin (``pipeline.eval``).

python -m launch.eval --checkpoint runs/default/stage2/final --shards 'data/heldout/shards/{000000..000001}.tar'
python -m launch.eval ... --question-types     # VQA accuracy per question type too, blind beside it
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.data.shard_format import expand_urls
from pipeline.eval import METRICS, evaluate_export


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m launch.eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a final/ export (QwenVL.from_pretrained)")
    p.add_argument("--shards", required=True, help="held-out shards, brace-expanded")
    p.add_argument("--tasks", default=",".join(METRICS), help=f"comma-separated, of {','.join(METRICS)}")
    p.add_argument("--limit", type=int, default=200, help="items per task")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--question-types", action="store_true",
                   help="also VQA accuracy per question type (vqa_by_question_type), with the blind twin")  # fmt: skip
    p.add_argument("--out", help="eval.json path (default: <checkpoint>/eval.json)")
    args = p.parse_args(argv)
    tasks = tuple(t for t in args.tasks.split(",") if t)
    if unknown := set(tasks) - set(METRICS):
        p.error(f"--tasks: unknown {sorted(unknown)}; known: {', '.join(METRICS)}")
    out = Path(args.out) if args.out else Path(args.checkpoint) / "eval.json"
    result = evaluate_export(args.checkpoint, expand_urls(args.shards, key="--shards"), tasks, args.limit,
                             args.batch_size, args.max_new_tokens, out=out, question_types=args.question_types)  # fmt: skip
    print(json.dumps({k: v for k, v in result.items() if k not in ("examples", "vqa_by_question_type")}))
    if args.question_types:
        print(f"{'question type':<16} {'n':>5} {'vqa_acc':>8} {'blind':>8}")
        for kind, row in result.get("vqa_by_question_type", {}).items():
            print(f"{kind:<16} {row['samples']:>5} {row['vqa_acc']:>8.3f} {row['blind']:>8.3f}")
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
