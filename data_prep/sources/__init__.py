"""Raw sources -> parts of samples, behind one small interface.

A *part* is a unit of work: a JSON-serialisable spec of a slice of the input, read on any Ray worker, that
becomes one output shard. A source is a module with three functions:

    check(cfg) -> None                               what plan needs (input paths, columns), checked quickly,
                                                     before anything is downloaded or generated: ConfigError
    plan(cfg) -> list[dict]                          materialise what it needs locally (the synthetic world,
                                                     downloads) and split it into part specs {"part": i, ...}
    read(cfg, spec) -> Iterator[Sample | ReadError]  the part's input items in a fixed order, each exactly once

Adding a source: a module here with those functions, and its name in ``SOURCES``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

from data_prep.sample import ReadError, Sample
from data_prep.sources import folder, laion, llava, synthetic, wds

if TYPE_CHECKING:
    from data_prep.config import PrepConfig


class Source(Protocol):
    def check(self, cfg: PrepConfig) -> None: ...

    def plan(self, cfg: PrepConfig) -> list[dict]: ...

    def read(self, cfg: PrepConfig, spec: dict) -> Iterator[Sample | ReadError]: ...


SOURCES: dict[str, Source] = {"synthetic": synthetic, "folder": folder, "wds": wds, "laion": laion,
                              "llava": llava}  # fmt: skip


def plan_parts(cfg: PrepConfig) -> list[dict]:
    return SOURCES[cfg.source].plan(cfg)


def read_part(cfg: PrepConfig, spec: dict) -> Iterator[Sample | ReadError]:
    return SOURCES[cfg.source].read(cfg, spec)
