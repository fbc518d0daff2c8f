"""synthetic: the embedded world, generated once into ``output_dir/raw`` as a folder source (images with
caption and metadata sidecars, the noise labels among them)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

from data_prep.config import PrepConfig
from data_prep.sample import ReadError, Sample
from data_prep.sources.folder import folder_parts, read_folder
from pipeline.config import ConfigError

log = logging.getLogger("data_prep")


def check(cfg: PrepConfig) -> None:
    if cfg.split not in ("train", "heldout"):
        raise ConfigError(f"key 'split': {cfg.split!r} is not one of ('train', 'heldout')")
    world = _raw(cfg) / "world.json"
    if world.is_file():
        done = json.loads(world.read_text())["config"]
        made = (done["num_samples"], done["seed"], done.get("split", "train"))
        if made != (cfg.num_samples, cfg.seed, cfg.split):
            raise ConfigError(
                f"key 'output_dir': {world}: a world with num_samples={made[0]} seed={made[1]} split={made[2]} "
                "is there; use another output_dir or delete it"
            )


def plan(cfg: PrepConfig) -> list[dict]:
    from data_prep.synthetic import WorldConfig, generate
    from data_prep.synthetic.world import split_noise

    check(cfg)
    out = _raw(cfg)
    if (out / "world.json").is_file():
        log.info("synthetic world already at %s (%d pairs, seed %d)", out, cfg.num_samples, cfg.seed)
    else:
        noise = split_noise(cfg.split)
        generate(WorldConfig(num_samples=cfg.num_samples, seed=cfg.seed, split=cfg.split, noise=noise), out)
        # the contact sheet is for people, not an input sample
        (Path(cfg.output_dir) / "plots").mkdir(parents=True, exist_ok=True)
        (out / "preview.png").replace(Path(cfg.output_dir) / "plots" / "world_preview.png")
    return folder_parts(out, cfg.samples_per_shard)


def read(cfg: PrepConfig, spec: dict) -> Iterator[Sample | ReadError]:
    return read_folder(_raw(cfg), spec)


def _raw(cfg: PrepConfig) -> Path:
    return Path(cfg.output_dir) / "raw"
