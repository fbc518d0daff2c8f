"""wds: existing webdataset shards (``wds.input``: brace-expanded URLs), read through the shard format."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from data_prep.config import PrepSettings
from data_prep.sample import ReadError, Sample, labelled, sample_key, text_only
from pipeline.data.shard_format import Skip, expand_urls, parse, read_shard


@dataclass
class Config:
    input: str = ""  # brace-expanded URLs or paths; '::' joins several sets


def check(cfg: PrepSettings, src: Config) -> None:
    expand_urls(src.input, key="wds.input")


def plan(cfg: PrepSettings, src: Config) -> list[dict]:
    return [{"part": i, "url": url} for i, url in enumerate(expand_urls(src.input, key="wds.input"))]


def read(cfg: PrepSettings, src: Config, spec: dict) -> Iterator[Sample | ReadError]:
    url, position = spec["url"], 0
    try:
        for raw in read_shard(url):
            key = sample_key(spec["part"], position)
            position += 1
            source_id = f"{url}#{raw['__key__']}"
            try:
                sample = parse(raw)
            except Skip as e:  # a repeated member, unreadable metadata: this sample only
                yield ReadError(source_id, e.reason, str(e))
                continue
            if sample.image is None:
                yield text_only(sample.meta, source_id, key)
                continue
            caption = sample.caption if sample.caption is not None else sample.meta.get("caption")
            if caption is None:
                yield ReadError(
                    source_id, "missing_caption", f"{source_id}: no .txt and no 'caption' in .json"
                )
                continue
            yield labelled(key, source_id, sample.image, caption, sample.meta)
    except Exception as e:  # a truncated or corrupt tar: what follows cannot be read, nor counted
        yield ReadError(url, "shard_error", f"{url}: {e} (the rest of this shard is not read)")
