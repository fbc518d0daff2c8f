"""Ray Data columns of Python objects: a part's samples and stats travel between stages as one bytes value,
since Ray Data would turn nested lists into arrays."""

from __future__ import annotations

import pickle

import numpy as np


def pack(samples: list, stats: list) -> np.ndarray:
    return objects([pickle.dumps(pair, protocol=5) for pair in zip(samples, stats, strict=True)])


def unpack(payload: bytes) -> tuple:
    return pickle.loads(payload)


def objects(items: list) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array
