"""`make prep DATA=<preset> ARGS="key=value ..."` -> python -m data_prep --config configs/data/<preset>.yaml"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_prep.config import PrepConfig
from data_prep.synthetic import WorldConfig, generate
from pipeline.config import ConfigError, load_config, save_config


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_prep", description="Prepare raw image-text data.")
    p.add_argument("--config", required=True, help="preset YAML, e.g. configs/data/synthetic.yaml")
    p.add_argument("overrides", nargs="*", help="key=value overrides")
    args = p.parse_args(argv)
    try:
        cfg = load_config(PrepConfig, args.config, args.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(cfg.output_dir)
    save_config(cfg, out / "config.yaml")
    summary = generate(WorldConfig(num_samples=cfg.num_samples, seed=cfg.seed), out / "raw")
    print(
        f"raw synthetic world: {summary['num_pairs']} pairs, {summary['num_text']} text samples -> {out / 'raw'}"
    )
    print(
        "not built yet: cleaning, filtering and webdataset shard writing (the data-prep issue); no shards written"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
