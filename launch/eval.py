"""Score a final/ export on held-out shards, each score next to its image-blind twin (``pipeline.eval``), or
score any model's predictions file against a benchmark's own files by its official rule (``score``).

python -m launch.eval --checkpoint runs/default/stage2/final --shards 'data/heldout/shards/{000000..000001}.tar'
python -m launch.eval ... --question-types     # VQA accuracy per question type too, blind beside it
python -m launch.eval --checkpoint runs/default/stage2/final --benchmark vqav2 --images coco/val2014 \
    --questions v2_OpenEnded_mscoco_val2014_questions.json --annotations v2_mscoco_val2014_annotations.json --limit 500
python -m launch.eval score --benchmark vqav2 --predictions P.json --questions Q.json --annotations A.json --out S.json
python -m launch.eval score --benchmark gqa --predictions P.json --questions testdev_balanced_questions.json --out S.json
python -m launch.eval score --benchmark refcoco --predictions P.json --refs 'refs(unc).p' --instances instances.json \
    --split testA --out S.json
python -m launch.eval score --benchmark flickr30k --predictions P.json --annotations dataset_flickr30k.json \
    --split test --out S.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.benchmarks.files import BenchFiles
from pipeline.benchmarks.run import RESULTS, run_benchmark
from pipeline.benchmarks.scoring import ScoringError
from pipeline.benchmarks.suites import SUITES
from pipeline.data.shard_format import expand_urls
from pipeline.data.tasks import METRICS
from pipeline.eval import evaluate_export
from pipeline.export import load_export


def score(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m launch.eval score",
                                description="Score a predictions file in a benchmark's official results format.")  # fmt: skip
    p.add_argument("--benchmark", required=True, choices=sorted(SUITES))
    p.add_argument("--predictions", required=True, help="the results file: VQA [{question_id, answer}], GQA "
                   "[{questionId, prediction}], referring [{sent_id, bbox}] in pixels, captions [{image_id, caption}]")  # fmt: skip
    p.add_argument(
        "--questions", help="VQA: the questions file (optional: the annotations' questions); GQA: required"
    )
    p.add_argument(
        "--annotations", help="VQA: annotations (or TextVQA's release file); captions: COCO-style or Karpathy"
    )
    p.add_argument("--refs", help="referring: REFER's refs(<split_by>).p, or the same list as .json")
    p.add_argument("--instances", help="referring: the release's instances.json")
    p.add_argument(
        "--split", help="referring: val, testA, testB, test; captions from a Karpathy file: test, val"
    )
    p.add_argument("--out", required=True, help="the scores JSON written")
    args = p.parse_args(argv)
    suite = SUITES[args.benchmark]  # what it needs to score, images aside, and its scorer
    files = BenchFiles(questions=args.questions, annotations=args.annotations, refs=args.refs,
                       instances=args.instances, split=args.split)  # fmt: skip
    if missing := [f"--{name}" for name in suite.needs if name != "images" and getattr(files, name) is None]:
        p.error(f"--benchmark {args.benchmark} needs {' '.join(missing)}")
    try:
        result = suite.score(Path(args.predictions), files)
    except ScoringError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result = {"benchmark": args.benchmark, **result}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["score"]:
        return score(argv[1:])
    p = argparse.ArgumentParser(prog="python -m launch.eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a final/ export (QwenVL.from_pretrained)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--shards", help="held-out shards, brace-expanded")
    source.add_argument("--benchmark", choices=sorted(SUITES), help="a benchmark, read from its own files")
    p.add_argument(
        "--tasks", default=",".join(METRICS), help=f"shards: comma-separated, of {','.join(METRICS)}"
    )
    p.add_argument(
        "--limit", type=int, help="shards: items per task (default 200); a benchmark: its first N items"
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=64, help="shards only (benchmarks use Qwen-VL's)")
    p.add_argument("--question-types", action="store_true",
                   help="also VQA accuracy per question type (vqa_by_question_type), with the blind twin")  # fmt: skip
    for name in ("images", "questions", "annotations", "refs", "instances", "split", "image-pattern"):
        p.add_argument(f"--{name}", help="a benchmark's own files (see pipeline/benchmarks/suites.py)")
    p.add_argument("--out", help="eval.json path (default: <checkpoint>/eval.json); a benchmark: its output "
                   "folder (default: <checkpoint>/benchmarks)")  # fmt: skip
    args = p.parse_args(argv)
    if args.benchmark:
        return benchmark(args)
    tasks = tuple(t for t in args.tasks.split(",") if t)
    if unknown := set(tasks) - set(METRICS):
        p.error(f"--tasks: unknown {sorted(unknown)}; known: {', '.join(METRICS)}")
    out = Path(args.out) if args.out else Path(args.checkpoint) / "eval.json"
    result = evaluate_export(args.checkpoint, expand_urls(args.shards, key="--shards"), tasks, args.limit or 200,
                             args.batch_size, args.max_new_tokens, out=out, question_types=args.question_types)  # fmt: skip
    print(json.dumps({k: v for k, v in result.items() if k not in ("examples", "vqa_by_question_type")}))
    if args.question_types:
        print(f"{'question type':<16} {'n':>5} {'vqa_acc':>8} {'blind':>8}")
        for kind, row in result.get("vqa_by_question_type", {}).items():
            print(f"{kind:<16} {row['samples']:>5} {row['vqa_acc']:>8.3f} {row['blind']:>8.3f}")
    print(f"written: {out}")
    return 0


def benchmark(args: argparse.Namespace) -> int:
    files = BenchFiles(args.images, args.questions, args.annotations, args.refs, args.instances, args.split,
                       args.image_pattern)  # fmt: skip
    out = Path(args.out) if args.out else Path(args.checkpoint) / "benchmarks"
    try:
        SUITES[args.benchmark].check(files)
        model, tokenizer, formatter, transform = load_export(args.checkpoint)
        result = run_benchmark(model, tokenizer, formatter, transform, args.benchmark, files, out, args.limit,
                               args.batch_size)  # fmt: skip
    except ScoringError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    print((out / RESULTS).read_text())
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
