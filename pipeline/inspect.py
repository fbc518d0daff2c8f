"""Show how one shard sample is formatted and masked, before you train on it.

    python -m launch.inspect_sample --config configs/stage2.yaml --index 3 [--task vqa] [--json] [key=value ...]

Sample ``--index`` counts from the first sample of the first shard of ``data.shards`` (or of the source
``--source`` names in ``data.sources``, the first by default), in file order. The task is drawn with the
source's task weights as the loader would in its first epoch, unless ``--task`` picks one. Text output wraps supervised tokens in [[ ]] (green on a terminal); ``--tokens`` lists every
token; ``--json`` prints ``tokens``, ``input_ids`` and ``labels`` (-100 where masked).
"""

from __future__ import annotations

import itertools
import re

from pipeline.config import ConfigError
from pipeline.data.formats import Example, Formatter, available_tasks, choose_task, task_rng
from pipeline.data.loader import read_record
from pipeline.data.mixture import shards_key, source_seeds
from pipeline.data.shard_format import Skip, expand_urls, read_shards
from pipeline.schema import StageConfig
from pipeline.tokens import IGNORE, IMAGE_PAD, prepare_tokenizer

_PADS = re.compile(f"(?:{re.escape(IMAGE_PAD)})+")


def inspect_sample(
    cfg: StageConfig, index: int, task: str | None = None, source: str | None = None
) -> tuple[Example, object]:
    """Format sample ``index`` of one source's shards; returns the example and the tokenizer."""
    from transformers import AutoTokenizer

    sources = cfg.data.mixture()
    names = [s.name for s in sources]
    if source is not None and source not in names:
        raise ConfigError(f"--source {source!r}: data.sources has {names}")
    i = names.index(source) if source else 0
    key = shards_key(cfg.data, names[i])
    samples = read_shards(expand_urls(sources[i].shards, key=key))
    raw = next(itertools.islice(samples, index, None), None)
    if raw is None:
        raise IndexError(f"--index {index}: {key} ({sources[i].shards}) has fewer samples")
    tokenizer = AutoTokenizer.from_pretrained(cfg.model.tokenizer)
    prepare_tokenizer(tokenizer)
    record, _ = read_record(raw)
    rng = task_rng(
        source_seeds(cfg.run.seed, names)[i], 0, record.key
    )  # the loader's draw in its first epoch
    if task is None:
        task = choose_task(record, cfg.data.source_tasks(sources[i]), rng)
    elif task not in available_tasks(record):
        raise Skip(
            "no_task", f"sample {record.key} has no {task} ground truth; it has {available_tasks(record)}"
        )
    formatter = Formatter(tokenizer, cfg.model.adapter.num_queries, cfg.data.max_length)
    return formatter(record, task, rng), tokenizer


def token_strings(tokenizer, ids: list[int]) -> list[str]:
    return [tokenizer.decode([i]) for i in ids]


def marked_text(tokenizer, ids: list[int], labels: list[int], start: str = "[[", end: str = "]]") -> str:
    """The decoded text with supervised runs wrapped in start/end; runs of image pads shortened to ``xN``."""
    out = []
    for supervised, run in itertools.groupby(zip(ids, labels, strict=True), key=lambda p: p[1] != IGNORE):
        text = _shorten_pads(tokenizer.decode([i for i, _ in run]))
        out.append(f"{start}{text}{end}" if supervised else text)
    return "".join(out)


def _shorten_pads(text: str) -> str:
    return _PADS.sub(lambda m: f"{IMAGE_PAD}x{len(m.group(0)) // len(IMAGE_PAD)}", text)


def as_json(example: Example, tokenizer) -> dict:
    return {
        "key": example.key,
        "task": example.task,
        "has_image": example.has_image,
        "truncated": example.truncated,
        "num_tokens": len(example.input_ids),
        "num_supervised": sum(label != IGNORE for label in example.labels),
        "tokens": token_strings(tokenizer, example.input_ids),
        "input_ids": example.input_ids,
        "labels": example.labels,
    }
