"""laion: a LAION-style parquet (``laion.input``: URL and caption columns) downloaded with img2dataset.

img2dataset writes ``raw/{shard:05d}.tar`` (the images as downloaded: no re-encoding, so the decode filter sees
exactly what the server sent) with ``{shard:05d}.parquet`` holding every input row and its download status.
Its incremental mode skips shards already downloaded, so a rerun after a crash resumes the download too.
Each downloaded shard is one part; every failed row becomes an error named by its cause.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from data_prep.config import PrepSettings
from data_prep.sample import ReadError, Sample, sample_key
from pipeline.config import ConfigError
from pipeline.data.shard_format import read_shard

log = logging.getLogger("data_prep")


@dataclass
class Download:
    """img2dataset's settings."""

    url_col: str = "URL"
    caption_col: str = "TEXT"
    extra_columns: list[str] = field(default_factory=list)  # more input columns kept with each sample
    timeout: float = 10.0  # seconds per request
    retries: int = 0
    processes: int = 2
    threads: int = 16


@dataclass
class Config:
    input: str = ""  # a parquet file or a folder of them
    download: Download = field(default_factory=Download)


def check(cfg: PrepSettings, src: Config) -> None:
    input_rows(src)


def input_rows(src: Config, section: str = "laion") -> int:
    path = Path(src.input)
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    if not src.input or not files or not all(f.is_file() for f in files):
        raise ConfigError(f"key '{section}.input': no parquet file at {src.input!r}")
    d = src.download
    columns = [("url_col", d.url_col), ("caption_col", d.caption_col)] + [
        ("extra_columns", c) for c in d.extra_columns
    ]
    for f in files:
        names = pq.read_schema(f).names
        for key, column in columns:
            if column not in names:
                raise ConfigError(
                    f"{f}: no column {column!r} (key '{section}.download.{key}'); columns: {names}"
                )
    return sum(pq.read_metadata(f).num_rows for f in files)


def plan(cfg: PrepSettings, src: Config, section: str = "laion") -> list[dict]:
    """Download (or resume downloading) into ``output_dir/raw``; one part per img2dataset shard."""
    import img2dataset

    rows = input_rows(src, section)
    raw = Path(cfg.output_dir) / "raw"
    d = src.download
    img2dataset.download(
        url_list=str(src.input),
        input_format="parquet",
        url_col=d.url_col,
        caption_col=d.caption_col,
        output_folder=str(raw),
        output_format="webdataset",
        number_sample_per_shard=cfg.samples_per_shard,
        processes_count=d.processes,
        thread_count=d.threads,
        timeout=d.timeout,
        retries=d.retries,
        disable_all_reencoding=True,
        distributor="ray",
        incremental_mode="incremental",
        enable_wandb=False,
        save_additional_columns=d.extra_columns or None,
    )
    specs = []
    for shard in range(math.ceil(rows / cfg.samples_per_shard)):
        tar, meta = raw / f"{shard:05d}.tar", raw / f"{shard:05d}.parquet"
        expected = min(cfg.samples_per_shard, rows - shard * cfg.samples_per_shard)
        if tar.is_file() and meta.is_file():
            specs.append({"part": shard, "tar": str(tar), "parquet": str(meta)})
        else:  # img2dataset gave up on the whole shard: its rows are counted, not lost
            log.warning("img2dataset shard %05d is missing: %d input rows counted as errors", shard, expected)
            specs.append({"part": shard, "missing": expected})
    return specs


def error_kind(message: str | None) -> str:
    """img2dataset's error message -> a short, countable kind."""
    text = (message or "").lower()
    if match := re.search(r"http error (\d{3})", text):
        return f"http_{match.group(1)}"
    if "timed out" in text or "timeout" in text:
        return "timeout"
    if "connection" in text or "refused" in text or "reset" in text:
        return "connection_error"
    return "download_error"


def read(cfg: PrepSettings, src: Config, spec: dict) -> Iterator[Sample | ReadError]:
    for item in downloaded(spec):
        if isinstance(item, ReadError):
            yield item
        else:
            position, row, image = item
            yield Sample(sample_key(spec["part"], position), row["url"], image, row["caption"] or "", {})


def downloaded(spec: dict, extra_columns: list[str] = ()) -> Iterator[tuple[int, dict, bytes] | ReadError]:
    """Each input row of one img2dataset shard: (its position, its parquet row, the image bytes), or the
    error it became."""
    if "missing" in spec:
        for i in range(spec["missing"]):
            where = f"shard {spec['part']:05d} row {i}"
            yield ReadError(where, "download_shard_failed", f"{where}: img2dataset failed the shard")
        return
    columns = ["key", "url", "caption", "status", "error_message", *extra_columns]
    table = pq.read_table(spec["parquet"], columns=columns)
    members = {raw["__key__"]: raw for raw in read_shard(spec["tar"])}
    for position, row in enumerate(table.to_pylist()):
        raw = members.get(row["key"], {})
        if row["status"] != "success":
            yield ReadError(
                row["url"], error_kind(row["error_message"]), f"{row['url']}: {row['error_message']}"
            )
        elif "__error__" in raw:
            yield ReadError(row["url"], "bad_member", f"{row['url']}: {raw['__error__']} in {spec['tar']}")
        elif raw.get("jpg") is None:
            yield ReadError(row["url"], "download_error", f"{row['url']}: not in {spec['tar']}")
        else:
            yield position, row, raw["jpg"]
