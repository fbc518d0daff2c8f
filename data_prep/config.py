"""Typed schema of a data-prep preset (configs/data/<preset>.yaml)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import ConfigError

SOURCES = ("synthetic",)


@dataclass
class PrepConfig:
    source: str = "synthetic"  # where raw pairs come from
    output_dir: str = "data/synthetic"  # raw/ (and, with the filters, shards/ stats/ plots/) go here
    num_samples: int = 5000  # synthetic source: raw image-text pairs to generate
    seed: int = 0  # synthetic source: world seed

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError(f"key 'source': {self.source!r} is not built yet; available: {SOURCES}")
        if self.num_samples <= 0:
            raise ConfigError("key 'num_samples': must be > 0")
