"""Raw sources -> parts of samples, behind one small interface, and the prep config they make up.

A *part* is a unit of work: a JSON-serialisable spec of a slice of the input, read on any Ray worker, that
becomes one output shard. A source is a module with a ``Config`` dataclass (its own keys: a section of the
prep config named like the source, e.g. ``laion.input``) and three functions, each given the shared settings
and its section:

    check(cfg, src) -> None                               what plan needs (input paths, columns), checked quickly,
                                                          before anything is downloaded or generated: ConfigError
    plan(cfg, src) -> list[dict]                          materialise what it needs locally (the synthetic world,
                                                          downloads) and split it into part specs {"part": i, ...}
    read(cfg, src, spec) -> Iterator[Sample | ReadError]  the part's input items in a fixed order, each exactly once

The registry imports the sources, never the reverse (they see only ``data_prep.config.PrepSettings``).
Adding a source: a module here with its ``Config`` and those functions, its name in ``SOURCES`` and its
section in ``PrepConfig``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from data_prep.config import PrepSettings
from data_prep.sample import ReadError, Sample
from data_prep.sources import coco, folder, grit, laion, llava, qwenvl, refcoco, synthetic, vqa, wds
from pipeline.config import ConfigError


class Source(Protocol):
    def check(self, cfg: PrepSettings, src: Any) -> None: ...

    def plan(self, cfg: PrepSettings, src: Any) -> list[dict]: ...

    def read(self, cfg: PrepSettings, src: Any, spec: dict) -> Iterator[Sample | ReadError]: ...


SOURCES: dict[str, Source] = {"synthetic": synthetic, "folder": folder, "wds": wds, "laion": laion,
                              "llava": llava, "coco": coco, "vqa": vqa, "refcoco": refcoco, "grit": grit,
                              "qwenvl": qwenvl}  # fmt: skip


@dataclass
class PrepConfig(PrepSettings):
    """A data-prep run (configs/data/<preset>.yaml): the shared settings, the source's name and, per source,
    its own section (only the named source's is read)."""

    source: str = "synthetic"  # one of SOURCES: the section of that name is read
    synthetic: synthetic.Config = field(default_factory=synthetic.Config)
    folder: folder.Config = field(default_factory=folder.Config)
    wds: wds.Config = field(default_factory=wds.Config)
    laion: laion.Config = field(default_factory=laion.Config)
    llava: llava.Config = field(default_factory=llava.Config)
    coco: coco.Config = field(default_factory=coco.Config)
    vqa: vqa.Config = field(default_factory=vqa.Config)
    refcoco: refcoco.Config = field(default_factory=refcoco.Config)
    grit: grit.Config = field(default_factory=grit.Config)
    qwenvl: qwenvl.Config = field(default_factory=qwenvl.Config)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.source not in SOURCES:
            raise ConfigError(f"key 'source': {self.source!r} is not one of {tuple(SOURCES)}")

    @property
    def source_config(self) -> Any:
        """The named source's own section."""
        return getattr(self, self.source)


def check_source(cfg: PrepConfig) -> None:
    SOURCES[cfg.source].check(cfg, cfg.source_config)


def plan_parts(cfg: PrepConfig) -> list[dict]:
    return SOURCES[cfg.source].plan(cfg, cfg.source_config)


def read_part(cfg: PrepConfig, spec: dict) -> Iterator[Sample | ReadError]:
    return SOURCES[cfg.source].read(cfg, cfg.source_config, spec)
