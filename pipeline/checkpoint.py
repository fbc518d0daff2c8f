"""Checkpoints that a crash cannot harm, and resume that continues exactly.

Layout under ``{run.output_dir}/{run.name}/{stage}/checkpoints/``::

    step-00001000/        the backend's model, optimizer and LR schedule state (DeepSpeed: sharded),
                          rank-00000.json ...  every rank's loader position and RNG states,
                          trainer.json         step, world size, wandb run id (written last: the folder is complete)
    latest                the name of the newest complete checkpoint

A checkpoint is written as ``step-N.tmp`` and renamed when every rank has finished; ``latest`` is replaced
after that, atomically. A crash at any point leaves the previous complete checkpoint as ``latest``. Per-rank
state is JSON, one file per rank, because a backend's own client state may be written by rank 0 alone.
This module is the folder protocol only; what goes into the folder is the backend's (``pipeline.backends``).
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.backends import Backend
from pipeline.distributed import barrier

log = logging.getLogger(__name__)
LATEST = "latest"
TRAINER = "trainer.json"


def step_name(step: int) -> str:
    return f"step-{step:08d}"


def is_complete(folder: Path) -> bool:
    return folder.is_dir() and (folder / TRAINER).is_file() and not folder.name.endswith(".tmp")


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    found = [p for p in root.glob("step-*") if is_complete(p)]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def latest(root: Path) -> Path | None:
    """The checkpoint ``latest`` names; if that is gone or incomplete, the newest complete one."""
    pointer = root / LATEST
    if pointer.is_file():
        folder = root / pointer.read_text().strip()
        if is_complete(folder):
            return folder
        log.warning("%s names %s, which is not a complete checkpoint; using the newest complete one",
                    pointer, folder.name)  # fmt: skip
    found = complete_checkpoints(root)
    return found[-1] if found else None


def rng_state() -> dict[str, Any]:
    version, state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    out = {
        "python": [version, list(state), gauss],
        "numpy": [name, keys.tolist(), pos, has_gauss, cached],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state().tolist()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    version, values, gauss = state["python"]
    random.setstate((version, tuple(values), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(torch.tensor(state["cuda"], dtype=torch.uint8))


def _write_text(path: Path, text: str) -> None:
    """Atomically: a reader sees the old file or the new one, never half of one."""
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(text)
    tmp.replace(path)


def _write_json(path: Path, data: Any) -> None:
    _write_text(path, json.dumps(data))


def save(
    backend: Backend, root: Path, step: int, rank_state: dict, trainer_state: dict, keep_last: int
) -> Path:
    """Every rank calls this. Returns the complete checkpoint's folder."""
    rank = torch.distributed.get_rank()
    final = root / step_name(step)
    tmp = root / f"{step_name(step)}.tmp"
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        for partial in root.glob("*.tmp"):  # left by a crash mid-save
            shutil.rmtree(partial, ignore_errors=True)
    barrier()
    backend.save(tmp)
    _write_json(tmp / f"rank-{rank:05d}.json", rank_state)
    barrier()
    if rank == 0:
        _write_json(tmp / TRAINER, {**trainer_state, "step": step})
        if final.exists():  # a checkpoint of this step from before a crash, never named latest
            shutil.rmtree(final)
        tmp.rename(final)
        _write_text(root / LATEST, final.name)
        for old in complete_checkpoints(root)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def load(backend: Backend, folder: Path) -> tuple[dict, dict]:
    """Restore model, optimizer and LR schedule into ``backend``; returns (trainer state, this rank's state)."""
    if not is_complete(folder):
        raise ValueError(f"{folder}: not a complete checkpoint (no {TRAINER}); name a step-N folder")
    trainer = json.loads((folder / TRAINER).read_text())
    world = torch.distributed.get_world_size()
    if trainer["world_size"] != world:
        raise ValueError(
            f"{folder}: saved by {trainer['world_size']} ranks, resumed with {world}; the data position "
            "is per rank, so resume with the same number of ranks (or set train.resume=never and "
            "train.init_from to a final/ export)"
        )
    backend.load(folder)
    rank = torch.distributed.get_rank()
    return trainer, json.loads((folder / f"rank-{rank:05d}.json").read_text())
