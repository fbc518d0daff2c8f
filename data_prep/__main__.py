"""`make prep DATA=<preset> ARGS="key=value ..."` -> python -m data_prep --config configs/data/<preset>.yaml"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from data_prep.sources import PrepConfig
from pipeline.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m data_prep", description="Clean raw image-text data into webdataset shards."
    )
    p.add_argument("--config", required=True, help="preset YAML, e.g. configs/data/synthetic.yaml")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. filters.clip.threshold=0.25")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        cfg = load_config(PrepConfig, args.config, args.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from data_prep.job import run
    from data_prep.stats import InvariantError

    try:
        summary = run(cfg)
    except ConfigError as e:  # anything else is a bug and keeps its traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    except InvariantError as e:
        print(f"error: samples lost: {e}", file=sys.stderr)
        return 1
    print(report(summary))
    return 0


def report(summary: dict) -> str:
    lines = [
        f"{summary['input']} in -> {summary['kept']} kept ({summary['kept_rate']:.1%}); "
        f"invariant holds: input == kept + dropped + errors",
        "dropped: " + json.dumps(summary["dropped"]),
        "errors: " + json.dumps(summary["errors"]),
    ]
    for label, q in summary["quality"].items():
        lines.append(
            f"quality {label:>9}: precision {q['precision']} recall {q['recall']} ({q['samples']} samples)"
        )
    lines.append(f"shards: {summary['shard_pattern']}  (samples/s this run: {summary['samples_per_s']})")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
