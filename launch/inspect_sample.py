"""Show how one shard sample is formatted and masked, before you train on it (``pipeline.inspect``).

    python -m launch.inspect_sample --config configs/stage2.yaml --index 3 [--task vqa] [--json] [key=value ...]

Sample ``--index`` counts from the first sample of the first shard of ``data.shards`` (or of the source
``--source`` names in ``data.sources``, the first by default), in file order. The task is drawn with the
source's task weights as the loader would in its first epoch, unless ``--task`` picks one. Text output wraps supervised tokens in [[ ]] (green on a terminal); ``--tokens`` lists every
token; ``--json`` prints ``tokens``, ``input_ids`` and ``labels`` (-100 where masked).
"""

from __future__ import annotations

import argparse
import json
import sys

from pipeline.config import ConfigError, load_config
from pipeline.data.shard_format import Skip
from pipeline.inspect import as_json, inspect_sample, marked_text
from pipeline.schema import StageConfig
from pipeline.tokens import IGNORE

GREEN, RESET = "\033[32m", "\033[0m"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m launch.inspect_sample", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="stage config, e.g. configs/stage2.yaml")
    p.add_argument("--index", type=int, default=0, help="sample number in shard order (default 0)")
    p.add_argument("--task", help="format as this task instead of drawing one")
    p.add_argument("--source", help="the source of data.sources to read (default: the first)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--tokens", action="store_true", help="also list every token with its id and label")
    p.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. data.shards=...")
    args = p.parse_args(argv)
    try:
        cfg = load_config(StageConfig, args.config, args.overrides)
        example, tokenizer = inspect_sample(cfg, args.index, args.task, args.source)
    except (ConfigError, IndexError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Skip as e:
        print(f"sample {args.index} is skipped by the loader: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(as_json(example, tokenizer), ensure_ascii=False))
        return 0
    info = as_json(example, tokenizer)
    print(f"sample {args.index}  key {example.key}  task {example.task}  tokens {info['num_tokens']}  "
          f"supervised {info['num_supervised']}{'  (truncated)' if example.truncated else ''}")  # fmt: skip
    color = sys.stdout.isatty()
    print(
        marked_text(
            tokenizer, example.input_ids, example.labels, *((GREEN, RESET) if color else ("[[", "]]"))
        )
    )
    if args.tokens:
        for n, (token, i, label) in enumerate(
            zip(info["tokens"], example.input_ids, example.labels, strict=True)
        ):
            print(f"{n:5d} {i:7d} {'learn' if label != IGNORE else 'mask ':5s} {token!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
