"""Raw sources -> parts of samples, behind one small interface.

A *part* is a unit of work: a JSON-serialisable spec of a slice of the input, read on any Ray worker, that
becomes one output shard. A source is a module with three functions:

    check(cfg) -> None                               what plan needs (input paths, columns), checked quickly,
                                                     before anything is downloaded or generated: ConfigError
    plan(cfg) -> list[dict]                          materialise what it needs locally (the synthetic world,
                                                     downloads) and split it into part specs {"part": i, ...}
    read(cfg, spec) -> Iterator[Sample | ReadError]  the part's input items in a fixed order, each exactly once

Each source checks its own keys of the prep config (``check``); the registry imports the sources, never the
reverse. Adding a source: a module here with those functions, and its name in ``SOURCES``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from data_prep.config import PrepConfig
from data_prep.sample import ReadError, Sample
from data_prep.sources import folder, laion, llava, synthetic, wds
from pipeline.config import ConfigError


class Source(Protocol):
    def check(self, cfg: PrepConfig) -> None: ...

    def plan(self, cfg: PrepConfig) -> list[dict]: ...

    def read(self, cfg: PrepConfig, spec: dict) -> Iterator[Sample | ReadError]: ...


SOURCES: dict[str, Source] = {"synthetic": synthetic, "folder": folder, "wds": wds, "laion": laion,
                              "llava": llava}  # fmt: skip


def source_of(cfg: PrepConfig) -> Source:
    if cfg.source not in SOURCES:
        raise ConfigError(f"key 'source': {cfg.source!r} is not one of {tuple(SOURCES)}")
    return SOURCES[cfg.source]


def plan_parts(cfg: PrepConfig) -> list[dict]:
    return source_of(cfg).plan(cfg)


def read_part(cfg: PrepConfig, spec: dict) -> Iterator[Sample | ReadError]:
    return source_of(cfg).read(cfg, spec)
