"""synthetic: the embedded world, generated once into ``output_dir/raw`` as a folder source (images with
caption and metadata sidecars, the noise labels among them). Its seed is the prep's ``seed``."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from data_prep.config import PrepSettings
from data_prep.sample import ReadError, Sample
from data_prep.sources.folder import folder_parts, read_folder
from pipeline.config import ConfigError

log = logging.getLogger("data_prep")


@dataclass
class Config:
    num_samples: int = 5000  # raw image-text pairs to generate (plus 10% text-only samples)
    split: str = "train"  # train | heldout (sample seeds disjoint from train's, no noise)
    # objects per image: 1..max_objects (1: images of one object, the first data of a grounding curriculum)
    max_objects: int = 4


def check(cfg: PrepSettings, src: Config) -> None:
    if src.split not in ("train", "heldout"):
        raise ConfigError(f"key 'synthetic.split': {src.split!r} is not one of ('train', 'heldout')")
    if src.num_samples <= 0:
        raise ConfigError("key 'synthetic.num_samples': must be > 0")
    if src.max_objects < 1:
        raise ConfigError("key 'synthetic.max_objects': must be >= 1")
    world = _raw(cfg) / "world.json"
    if world.is_file():
        done = json.loads(world.read_text())["config"]
        made = (done["num_samples"], done["seed"], done.get("split", "train"), done.get("max_objects", 4))
        if made != (src.num_samples, cfg.seed, src.split, src.max_objects):
            raise ConfigError(
                f"key 'output_dir': {world}: a world with num_samples={made[0]} seed={made[1]} split={made[2]} "
                f"max_objects={made[3]} is there; use another output_dir or delete it"
            )


def plan(cfg: PrepSettings, src: Config) -> list[dict]:
    from data_prep.synthetic import WorldConfig, generate
    from data_prep.synthetic.world import split_noise

    check(cfg, src)
    out = _raw(cfg)
    if (out / "world.json").is_file():
        log.info("synthetic world already at %s (%d pairs, seed %d)", out, src.num_samples, cfg.seed)
    else:
        noise = split_noise(src.split)
        world_cfg = WorldConfig(num_samples=src.num_samples, seed=cfg.seed, split=src.split,
                                max_objects=src.max_objects, noise=noise)  # fmt: skip
        generate(world_cfg, out)
        # the contact sheet is for people, not an input sample
        (Path(cfg.output_dir) / "plots").mkdir(parents=True, exist_ok=True)
        (out / "preview.png").replace(Path(cfg.output_dir) / "plots" / "world_preview.png")
    return folder_parts(out, cfg.samples_per_shard)


def read(cfg: PrepSettings, src: Config, spec: dict) -> Iterator[Sample | ReadError]:
    return read_folder(_raw(cfg), spec)


def _raw(cfg: PrepSettings) -> Path:
    return Path(cfg.output_dir) / "raw"
