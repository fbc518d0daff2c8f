"""The command line shared by launch/stage{1,2,3}.py: a stage config, dotted overrides, one line per error."""

from __future__ import annotations

import argparse
import sys

from pipeline.config import CONFIG_ROOT, ConfigError, load_config
from pipeline.schema import StageConfig


def main(stage: str, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"launch/{stage}.py", description=f"Train {stage}.")
    parser.add_argument("--config", default=str(CONFIG_ROOT / f"{stage}.yaml"), help="stage YAML file")
    parser.add_argument(
        "--local_rank", type=int, default=None, help=argparse.SUPPRESS
    )  # the deepspeed launcher's
    parser.add_argument("overrides", nargs="*", help="key=value, e.g. train.max_steps=50 model=small")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(StageConfig, args.config, args.overrides)
        from stages.train import run  # torch, deepspeed: only once the config is good

        run(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
