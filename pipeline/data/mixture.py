"""Raw samples of a mixture of sources for one (rank, worker) slot, in a restorable order.

Each source is its own endless ``ShardStream`` over its shards, so a small source repeats (its passes are
counted) while a large one streams. Draw ``n`` of a slot picks a source by weight with its own seeded RNG
(seed, slot, n): the position of the whole mixture is each stream's position plus the number of draws.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass

from pipeline.data.shard_format import count_samples, expand_urls, is_local, match_urls
from pipeline.data.shards import ShardStream
from pipeline.schema import DataConfig


def shards_key(cfg: DataConfig, name: str) -> str:
    """The config key of a source's shards, which its problems are reported under."""
    return f"data.sources.{name}.shards" if cfg.sources else "data.shards"


def source_urls(cfg: DataConfig) -> list[list[str]]:
    """Every source's shard URLs; a pattern that matches nothing is an error naming the source's key."""
    return [expand_urls(s.shards, key=shards_key(cfg, s.name)) for s in cfg.mixture()]


def source_seeds(seed: int, names: list[str]) -> list[int | str]:
    """Each source's seed of its shard order and task draws. One source keeps the run's seed (the order
    data.shards always gave); several get one each, so that sources with equal sample keys differ."""
    return [seed] if len(names) == 1 else [f"{seed}:{name}" for name in names]


class Mixture:
    def __init__(self, cfg: DataConfig, urls: list[list[str]], seed: int, slot: int, slots: int):
        """``urls``: each source's shards (``source_urls``)."""
        self.sources = cfg.mixture()
        self.names = [s.name for s in self.sources]
        self.cum_weights = list(itertools.accumulate(s.weight for s in self.sources))
        self.seed, self.slot, self.draws = seed, slot, 0
        self.seeds = source_seeds(seed, self.names)
        self.streams = [
            ShardStream(source, source_seed, slot, slots, cfg.open_shards, name=shards_key(cfg, name))
            for name, source, source_seed in zip(self.names, urls, self.seeds, strict=True)
        ]  # fmt: skip
        self._samples: list[Iterator[dict]] | None = None

    def state_dict(self) -> dict:
        return {"streams": {n: s.state_dict() for n, s in zip(self.names, self.streams, strict=True)},
                "draws": self.draws}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        """A source missing from ``state`` (added to the mixture since) starts from its beginning."""
        self.draws = state["draws"]
        for name, stream in zip(self.names, self.streams, strict=True):
            if name in state["streams"]:
                stream.load_state_dict(state["streams"][name])

    def draw(self) -> int:
        """The source of the next sample."""
        self.draws += 1
        if len(self.streams) == 1:
            return 0
        rng = random.Random(f"source:{self.seed}:{self.slot}:{self.draws - 1}")
        return rng.choices(range(len(self.streams)), cum_weights=self.cum_weights)[0]

    def next_sample(self, source: int) -> dict:
        """The next raw sample of one source (streams open lazily, after any restore)."""
        if self._samples is None:
            self._samples = [iter(stream) for stream in self.streams]
        return next(self._samples[source])


@dataclass
class SourceReport:
    """What one source of a mixture expects and what of it is on disk (``launch.mixture``)."""

    name: str
    weight: float
    share: float  # of the samples drawn
    tasks: list[str]
    shards: int  # shard files (or remote URLs) found
    missing: list[str]  # local files and globs that match nothing
    samples: int | None  # in its local shards, when counted


def check_mixture(cfg: DataConfig, count: bool = False) -> list[SourceReport]:
    """Every source's expected shards against what exists, without reading a sample (``count`` reads the
    member names of local shards to count samples)."""
    total = sum(s.weight for s in cfg.mixture())
    reports = []
    for source in cfg.mixture():
        found, missing = [], []
        for part in source.shards.split("::"):
            urls, absent = match_urls(part)
            found, missing = found + urls, missing + absent
        samples = (
            sum(count_samples(u) for u in found) if count and found and all(map(is_local, found)) else None
        )
        reports.append(SourceReport(source.name, source.weight, source.weight / total,
                                    sorted(cfg.source_tasks(source)), len(found), missing, samples))  # fmt: skip
    return reports
