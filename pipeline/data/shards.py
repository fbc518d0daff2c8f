"""Raw samples from webdataset shards, in a deterministic, restorable order for one (rank, worker) slot.

Every epoch the shard list is shuffled with (seed, epoch); slot ``s`` of ``S`` (rank * workers + worker)
takes shards s, s+S, s+2S, ... wrapping around, so every slot gets the same number of shards per epoch and a
rank never waits on another with fewer. Epochs follow each other without end (the trainer counts steps).
Each slot keeps ``open_shards`` shards open and draws the next sample from one of them at random, which
mixes shards without a sample buffer; the position is then just (epoch, next shard, samples read from each
open shard), so a restore reopens those shards and skips what was read: exact, and bounded by a few shards.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterator

from pipeline.data.shard_format import read_shard

log = logging.getLogger(__name__)


def epoch_shards(urls: list[str], seed: int | str, epoch: int, slot: int, slots: int) -> list[str]:
    """The shards slot ``slot`` of ``slots`` reads in ``epoch``."""
    order = list(urls)
    random.Random(f"shards:{seed}:{epoch}").shuffle(order)
    per_slot = math.ceil(len(order) / slots)
    return [order[(slot + k * slots) % len(order)] for k in range(per_slot)]


class ShardStream:
    """Endless raw samples (webdataset dicts: ``__key__``, ``__url__``, one entry per file extension)."""

    def __init__(self, urls: list[str], seed: int | str, slot: int, slots: int, open_shards: int = 4,
                 name: str = "data.shards"):  # fmt: skip
        self.urls, self.seed, self.slot, self.slots, self.name = urls, seed, slot, slots, name
        self.open_shards = open_shards
        self.epoch, self.next = 0, 0  # the next shard to open: index ``next`` of epoch ``epoch``'s list
        self.open: list[list[int]] = []  # [epoch, index, samples read] per open shard
        self.drawn = 0  # samples drawn so far (seeds the choice of shard)
        self.passes = 0  # epochs begun: 1 + the latest epoch a sample came from (0 before the first)
        self.shard_errors = 0  # shards that failed to open or broke off (each logged with its URL)
        self._lists: dict[int, list[str]] = {}  # shard list per epoch, for the epochs of open shards

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "next": self.next,
            "open": [list(o) for o in self.open],
            "drawn": self.drawn,
            "passes": self.passes,
            "shard_errors": self.shard_errors,
        }

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.next, self.drawn = state["epoch"], state["next"], state["drawn"]
        self.shard_errors, self.passes = state["shard_errors"], state.get("passes", 0)
        self.open = [list(o) for o in state["open"]]

    def _url(self, epoch: int, index: int) -> str:
        if epoch not in self._lists:
            oldest = min([e for e, _, _ in self.open] + [epoch])
            self._lists = {e: v for e, v in self._lists.items() if e >= oldest}  # only epochs still open
            self._lists[epoch] = epoch_shards(self.urls, self.seed, epoch, self.slot, self.slots)
        return self._lists[epoch][index]

    def _reader(self, entry: list[int]) -> Iterator[dict]:
        samples = read_shard(self._url(entry[0], entry[1]))
        for _ in range(entry[2]):  # restoring: skip what was already read (tar parsing only, no decoding)
            next(samples)
        return samples

    def _open_next(self) -> list[int]:
        per_epoch = math.ceil(len(self.urls) / self.slots)
        if self.next >= per_epoch:
            self.epoch, self.next = self.epoch + 1, 0
        entry = [self.epoch, self.next, 0]
        self.next += 1
        return entry

    def __iter__(self) -> Iterator[dict]:
        readers = [self._reader(entry) for entry in self.open]
        empty_opens = 0
        while True:
            while len(self.open) < self.open_shards:
                self.open.append(self._open_next())
                readers.append(self._reader(self.open[-1]))
            pick = random.Random(f"draw:{self.seed}:{self.slot}:{self.drawn}").randrange(len(readers))
            try:
                sample = next(readers[pick])
            except StopIteration:
                sample = None
            except Exception as e:  # a broken or unreadable shard: counted, and the slot moves on
                self.shard_errors += 1
                log.warning("shard %s: %s (%d shard errors so far)", self._url(*self.open[pick][:2]), e,
                            self.shard_errors)  # fmt: skip
                sample = None
            if sample is None:
                empty_opens = 0 if self.open[pick][2] else empty_opens + 1
                if empty_opens > 2 * (len(self.urls) + self.open_shards):
                    raise RuntimeError(
                        f"{self.name}, slot {self.slot}: no shard gave a sample ({self.shard_errors} errors)"
                    )
                del self.open[pick], readers[pick]
                continue
            empty_opens = 0
            self.open[pick][2] += 1
            self.drawn += 1
            sample["__epoch__"] = self.open[pick][0]
            self.passes = max(self.passes, sample["__epoch__"] + 1)
            yield sample
