"""List what a stage's data mixture expects and what of it is missing, without training.

    python -m launch.mixture --config configs/stage2.yaml mixture=qwenvl-stage2 [--count] [key=value ...]

One row per source: its weight, its share of the samples drawn, its tasks, the shards found and the files
or patterns that match nothing. ``--count`` reads the member names of local shards to count samples, and
then says how many epochs of each source the stage's ``train.max_steps`` x ``train.global_batch_size``
samples go through. Exit status 1 when any source lacks shards, 2 on a config error.
"""

from __future__ import annotations

import argparse
import sys

from pipeline.config import ConfigError, load_config
from pipeline.data.mixture import SourceReport, check_mixture
from pipeline.schema import StageConfig


def table(reports: list[SourceReport], samples_drawn: int) -> str:
    lines = ["| source | weight | share | tasks | shards | samples | epochs | missing |", "|" + "---|" * 8]
    for r in reports:
        epochs = f"{samples_drawn * r.share / r.samples:.2f}" if r.samples else "-"
        missing = ", ".join(r.missing[:3]) + (f" (+{len(r.missing) - 3})" if len(r.missing) > 3 else "")
        samples = "-" if r.samples is None else f"{r.samples:,}"
        lines.append(f"| {r.name} | {r.weight:g} | {r.share:.1%} | {', '.join(r.tasks)} | {r.shards} | "
                     f"{samples} | {epochs} | {missing or '-'} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m launch.mixture", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="stage config, e.g. configs/stage2.yaml")
    p.add_argument(
        "--count", action="store_true", help="count the samples of local shards (reads tar headers)"
    )
    p.add_argument("overrides", nargs="*", help="dotted overrides and groups, e.g. mixture=qwenvl-stage2")
    args = p.parse_args(argv)
    try:
        cfg = load_config(StageConfig, args.config, args.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    reports = check_mixture(cfg.data, args.count)
    print(table(reports, cfg.train.max_steps * cfg.train.global_batch_size))
    lacking = [r.name for r in reports if r.missing or not r.shards]
    if lacking:
        print(f"\n{len(lacking)} of {len(reports)} sources lack shards: {', '.join(lacking)} "
              "(prepare them with `make prep DATA=<preset>`, or point their shards elsewhere)", file=sys.stderr)  # fmt: skip
        return 1
    print(f"\nall {len(reports)} sources have their shards")
    return 0


if __name__ == "__main__":
    sys.exit(main())
