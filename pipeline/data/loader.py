"""The training loader: sources -> decode -> resize -> task format -> collate, restorable to the batch.

Each sample is drawn from one source of the mixture by weight (``pipeline.data.mixture``), then reads until
one of that source's samples is usable, so the configured shares hold whatever a source skips; its task is
drawn within the source. Each dataloader worker of each rank reads its own slot of every source's shards
(``pipeline.data.shards``) and builds
whole batches, so a batch is one worker's work and the loader's position is one small state per worker.
torchdata's ``StatefulDataLoader`` collects those states after every batch and hands them back to the
workers on restore, so a restored loader continues with exactly the batches an uninterrupted one would give.

The shard format: ``pipeline.data.shard_format``.
"""

from __future__ import annotations

import random
import warnings
from collections import Counter
from collections.abc import Callable, Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info
from torchdata.stateful_dataloader import StatefulDataLoader

from pipeline.data.formats import Example, Formatter, Record, choose_task, task_rng
from pipeline.data.mixture import Mixture, shards_key, source_urls
from pipeline.data.shard_format import Skip, open_image, parse
from pipeline.schema import DataConfig
from pipeline.tokens import IGNORE

# torchdata 0.11 calls a torch API that torch 2.14 deprecates; harmless, and not the user's to fix.
warnings.filterwarnings("ignore", message="'set_vital' is deprecated")


def read_record(raw: dict) -> tuple[Record, bytes | None]:
    """A raw shard sample -> (record, image bytes or None). Raises Skip on a bad member or metadata."""
    sample = parse(raw)
    return Record(sample.key, sample.meta, sample.caption, sample.image is not None), sample.image


def decode_image(data: bytes, key: str) -> Image.Image:
    try:
        return open_image(data)
    except Exception as e:  # PIL raises many kinds; every one means the same here
        raise Skip("decode_error", f"sample {key}: {e}") from None


def collate(examples: list[Example], images: list[torch.Tensor], pad_id: int, image_size: int) -> dict:
    """Right padding: every sequence starts at position 0, so pads only ever follow the text. ``images``
    holds the real images only, in row order; text-only rows have none (the model knows by ``has_image``)."""
    length = max(len(e.input_ids) for e in examples)
    batch = len(examples)
    input_ids = torch.full((batch, length), pad_id, dtype=torch.long)
    labels = torch.full((batch, length), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((batch, length), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        input_ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        attention_mask[row, :n] = 1
    return {
        "input_ids": input_ids,
        "labels": labels,
        "attention_mask": attention_mask,
        "pixel_values": torch.stack(images) if images else torch.zeros(0, 3, image_size, image_size),
        "has_image": torch.tensor([e.has_image for e in examples]),
        "tasks": [e.task for e in examples],
        "sources": [e.source for e in examples],
        "keys": [e.key for e in examples],
    }


def collate_packed(examples: list[Example], rows: list[list[int]], images: list[torch.Tensor], pad_id: int,
                   image_size: int) -> dict:  # fmt: skip
    """Packed rows: each row holds several samples one after another, their position ids restarting at 0 and
    each sample's first label masked (position t predicts label t+1: nothing is learnt across a boundary).
    ``sample_index`` gives each token's sample (-1 on padding); ``has_image`` counts each row's images;
    ``images`` are the real images in row order, then sample order; per-sample lists follow that order."""
    order = [i for row in rows for i in row]
    length = max(sum(len(examples[i].input_ids) for i in row) for row in rows)
    batch = len(rows)
    input_ids = torch.full((batch, length), pad_id, dtype=torch.long)
    labels = torch.full((batch, length), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((batch, length), dtype=torch.long)
    position_ids = torch.zeros((batch, length), dtype=torch.long)
    sample_index = torch.full((batch, length), -1, dtype=torch.long)
    flat = 0
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            e, n = examples[i], len(examples[i].input_ids)
            input_ids[r, at : at + n] = torch.tensor(e.input_ids)
            labels[r, at + 1 : at + n] = torch.tensor(e.labels[1:])
            attention_mask[r, at : at + n] = 1
            position_ids[r, at : at + n] = torch.arange(n)
            sample_index[r, at : at + n] = flat
            at, flat = at + n, flat + 1
        position_ids[r, at:] = torch.arange(length - at)  # the padding: a block of its own
    return {
        "input_ids": input_ids,
        "labels": labels,
        "attention_mask": attention_mask,
        "position_ids": position_ids,
        "sample_index": sample_index,
        "pixel_values": torch.stack(images) if images else torch.zeros(0, 3, image_size, image_size),
        "has_image": torch.tensor([sum(examples[i].has_image for i in row) for row in rows]),
        "sample_has_image": [examples[i].has_image for i in order],
        "tasks": [examples[i].task for i in order],
        "sources": [examples[i].source for i in order],
        "keys": [examples[i].key for i in order],
    }


def batch_samples(batch: dict, count: int) -> list[dict]:
    """The first ``count`` samples of a batch, packed or not, each on its own: its unpadded ``input_ids`` and
    ``labels`` (a packed sample's first label is masked), ``pixels`` (its image, or none), ``has_image``,
    ``key`` and ``task``."""
    packed = "sample_index" in batch
    flags = batch["sample_has_image"] if packed else [bool(v) for v in batch["has_image"]]
    out, image = [], 0
    for k in range(min(count, len(batch["keys"]))):
        if packed:
            where = (batch["sample_index"] == k).nonzero()
            row, cols = int(where[0, 0]), where[:, 1]
        else:
            row, cols = k, batch["attention_mask"][k].nonzero().flatten()
        pixels = batch["pixel_values"][image : image + 1] if flags[k] else batch["pixel_values"][:0]
        image += int(flags[k])
        out.append({"input_ids": batch["input_ids"][row, cols], "labels": batch["labels"][row, cols], "pixels": pixels,
                    "has_image": flags[k], "key": batch["keys"][k], "task": batch["tasks"][k]})  # fmt: skip
    return out


# per task: samples, truncated, dialogue turns dropped; per reason: skipped; per source: samples, skipped,
# epochs begun (the latest over slots, where the others add up)
STATS = ("tasks", "skipped", "truncated", "dropped_turns", "sources", "source_skipped", "epochs")
LATEST = ("epochs",)


def merge_stats(stats: list[dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    """Several slots' (or ranks') loader counts as one."""
    total: dict[str, Counter] = {name: Counter() for name in STATS}
    for counts in stats:
        for name, values in counts.items():
            if name in LATEST:
                total[name] |= Counter(values)  # the larger of each
            else:
                total[name].update(values)
    return {name: dict(sorted(c.items())) for name, c in total.items()}


PICKLED = (
    "input_ids",
    "labels",
    "attention_mask",
    "has_image",
    "position_ids",
    "sample_index",
)  # small tensors


class TaskBatches(IterableDataset):
    """Batches of one rank; each worker reads its own slot of the shards.

    A worker reads a window of ``data.group_by_length`` batches' worth of samples at a time (1 = off). With
    grouping, the window is sorted by token length and cut into batches, which are yielded in a seeded random
    order: rows of one batch have similar lengths, so less of it is padding. The position is the window's
    start plus the batches already yielded from it, so a restore reads the window again and skips those.
    """

    def __init__(
        self,
        cfg: DataConfig,
        formatter: Formatter,
        transform: Callable,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.urls = source_urls(cfg)  # here: a pattern matching nothing fails before the model is built
        self.sources = cfg.mixture()
        self.task_weights = [cfg.source_tasks(s) for s in self.sources]
        self.cfg, self.formatter, self.transform = cfg, formatter, transform
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self._restored: dict | None = None
        self._position: dict | None = None  # the current window's start, and how far into it
        self.stats: dict[str, Counter] = {}

    def state_dict(self) -> dict:
        return self._position or {"mixture": None}

    def load_state_dict(self, state: dict) -> None:
        if state.get("stream"):  # a checkpoint from before mixtures: one source's stream
            state = {**state, "mixture": {"streams": {self.sources[0].name: state["stream"]}, "draws": 0}}
        self._restored = state

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        slot = self.rank * workers + worker
        mixture = Mixture(self.cfg, self.urls, self.seed, slot, self.world_size * workers)
        restored = self._restored if self._restored and self._restored.get("mixture") else None
        if restored:
            mixture.load_state_dict(restored["mixture"])
        self.stats = {name: Counter(restored["stats"].get(name, {}) if restored else {}) for name in STATS}
        window, skip = (restored["window"], restored["emitted"]) if restored else (0, 0)
        start, carried = self._snapshot(mixture), None
        while True:
            rows, packs, end, carried = self._read_window(mixture, carried)
            chunks = self._chunks(rows, packs, slot, window)
            for emitted, chunk in enumerate(chunks, start=1):
                if emitted <= skip:
                    continue
                batch = self._collate(rows, chunk)
                if errors := sum(stream.shard_errors for stream in mixture.streams):
                    self.stats["skipped"]["shard_error"] = errors
                counts = {k: dict(v) for k, v in self.stats.items()}
                batch["stats"] = {"slot": slot, **counts}
                # from a worker, small tensors travel pickled: a shared-memory one costs a socket round trip
                if info:
                    batch.update({k: batch[k].numpy() for k in PICKLED if k in batch})
                # the position: this window's start and the batches given, or, after its last, the next window's
                done = emitted == len(chunks)
                self._position = {
                    **(end if done else start),
                    "window": window + done,
                    "emitted": 0 if done else emitted,
                }
                yield batch
            start, window, skip = end, window + 1, 0

    def _snapshot(self, mixture: Mixture) -> dict:
        return {"mixture": mixture.state_dict(), "stats": {k: dict(v) for k, v in self.stats.items()}}

    def _read_window(self, mixture: Mixture, carried: tuple | None) -> tuple[list, list, dict, tuple | None]:
        """A window's samples, its packed rows (sample indices; none without packing), the position after it and
        a sample carried into the next window.

        Without packing: ``batch_size`` x ``group_by_length`` samples. With packing, samples go first fit into
        that many rows of ``max_length`` tokens, until one fits none: it opens the next window (``carried``),
        and the position after this window is the one before it was read, so a restore reads it again."""
        if not self.cfg.packing:
            rows = [self._read(mixture) for _ in range(self.batch_size * self.cfg.group_by_length)]
            return rows, [], self._snapshot(mixture), None
        limit, capacity = self.batch_size * self.cfg.group_by_length, self.cfg.max_length
        rows: list = []
        packs: list[list[int]] = []
        room: list[int] = []
        item = carried
        while True:
            before = self._snapshot(mixture)
            item = item or self._read(mixture)
            length = len(item[0].input_ids)
            row = next((r for r, free in enumerate(room) if free >= length), None)
            if row is None:
                if len(packs) == limit:
                    return rows, packs, before, item
                packs.append([])
                room.append(capacity)
                row = len(room) - 1
            packs[row].append(len(rows))
            room[row] -= length
            rows.append(item)
            item = None

    def _read(self, mixture: Mixture) -> tuple[Example, torch.Tensor | None]:
        """The next usable sample of the mixture, counted."""
        source = mixture.draw()
        example, image = self._usable(mixture, source)
        self.stats["tasks"][example.task] += 1
        self.stats["sources"][example.source] += 1
        self.stats["epochs"][example.source] = mixture.streams[source].passes
        if example.truncated:
            self.stats["truncated"][example.task] += 1
        if example.dropped_turns:
            self.stats["dropped_turns"][example.task] += example.dropped_turns
        return example, image

    def _usable(self, mixture: Mixture, source: int) -> tuple[Example, torch.Tensor | None]:
        """The next usable sample of one source; each one skipped on the way is counted by reason."""
        name, streak = self.sources[source].name, Counter()
        while True:
            raw = mixture.next_sample(source)
            try:
                return self._prepare(raw, source, mixture.seeds[source])
            except Skip as skip:
                self.stats["skipped"][skip.reason] += 1
                self.stats["source_skipped"][name] += 1
                streak[skip.reason] += 1
            if streak.total() >= self.cfg.max_skips_in_a_row:
                raise RuntimeError(
                    f"{shards_key(self.cfg, name)}: the last {streak.total()} samples of source {name!r} were all "
                    f"unusable for its tasks {sorted(self.task_weights[source])} (by reason: {dict(streak)}); "
                    "check its shards and tasks (data.max_skips_in_a_row sets the limit)"
                )

    def _collate(self, rows: list, chunk: list) -> dict:
        pad, size = self.formatter.ids.pad, self.cfg.image_size
        if not self.cfg.packing:
            return collate(
                [rows[i][0] for i in chunk], [rows[i][1] for i in chunk if rows[i][1] is not None], pad, size
            )
        samples = [i for row in chunk for i in row]
        index = {i: n for n, i in enumerate(samples)}
        images = [rows[i][1] for i in samples if rows[i][1] is not None]
        return collate_packed(
            [rows[i][0] for i in samples], [[index[i] for i in row] for row in chunk], images, pad, size
        )

    def _chunks(self, rows: list, packs: list[list[int]], slot: int, window: int) -> list[list]:
        """Each batch of a window: its sample indices, in reading order or grouped by length; with packing,
        its packed rows (``batch_size`` rows of up to ``data.max_length`` tokens, each a list of samples)."""
        if self.cfg.packing:
            packed = list(packs)
            random.Random(f"packing:{self.seed}:{slot}:{window}").shuffle(packed)
            return [packed[i : i + self.batch_size] for i in range(0, len(packed), self.batch_size)]
        order = list(range(len(rows)))
        if self.cfg.group_by_length > 1:
            order.sort(key=lambda i: len(rows[i][0].input_ids))
        chunks = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.cfg.group_by_length > 1:  # long and short batches interleave, not one long run of each
            random.Random(f"lengths:{self.seed}:{slot}:{window}").shuffle(chunks)
        return chunks

    def _prepare(self, raw: dict, source: int, seed: int | str) -> tuple[Example, torch.Tensor | None]:
        record, image = read_record(raw)
        rng = task_rng(seed, raw["__epoch__"], record.key)
        task = choose_task(record, self.task_weights[source], rng)
        example = self.formatter(record, task, rng, self.cfg.images)  # bad ground truth: a Skip; else a bug
        example.source = self.sources[source].name
        if not example.has_image:
            return example, None
        return example, self.transform(decode_image(image, record.key))


class Loader:
    """Endless batches for one rank, with a position that ``state_dict``/``load_state_dict`` save exactly."""

    def __init__(self, dataset: TaskBatches, num_workers: int):
        self.dataset = dataset
        self._loader = StatefulDataLoader(
            dataset,
            batch_size=None,  # the dataset batches
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            prefetch_factor=2 if num_workers > 0 else None,
            pin_memory=torch.cuda.is_available(),
            collate_fn=_as_sent,  # not default_convert, which would turn the arrays back into tensors
        )
        self._stats: dict[int, dict] = {}  # latest cumulative stats per slot

    def __iter__(self) -> Iterator[dict]:
        for batch in self._loader:
            stats = batch.pop("stats")
            self._stats[stats.pop("slot")] = stats
            yield {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in batch.items()}

    def stats(self) -> dict[str, dict[str, int]]:
        """Over all workers: samples per task and per source, skipped samples per reason and per source,
        epochs begun per source, truncated samples per task and dialogue turns dropped per task (a leading
        assistant turn, as Qwen-VL's ``preprocess`` drops it)."""
        return merge_stats(list(self._stats.values()))

    def state_dict(self) -> dict:
        return {"loader": self._loader.state_dict(), "stats": self._stats}

    def load_state_dict(self, state: dict) -> None:
        self._loader.load_state_dict(state["loader"])
        self._stats = {int(k): v for k, v in state["stats"].items()}


def _as_sent(batch: dict) -> dict:
    return batch


def build_loader(
    cfg: DataConfig,
    formatter: Formatter,
    transform: Callable,
    batch_size: int,
    seed: int,
    rank: int | None = None,
    world_size: int | None = None,
) -> Loader:
    """The loader of one rank; rank and world size come from torch.distributed unless given."""
    if rank is None or world_size is None:
        dist = torch.distributed
        on = dist.is_available() and dist.is_initialized()
        rank, world_size = (dist.get_rank(), dist.get_world_size()) if on else (0, 1)
    dataset = TaskBatches(cfg, formatter, transform, batch_size, seed, rank, world_size)
    return Loader(dataset, cfg.num_workers)
