"""What every rank shares, whatever the training backend: its place in the process group and the few
collectives the trainer needs. Plain ``torch.distributed``; the backends (``pipeline.backends``) make the group."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def ranks_here() -> int:
    """The ranks on this machine, by host name (a collective): launchers' local counts would say one for
    each of two nodes started on one machine."""
    names = gather_objects(socket.gethostname())
    return names.count(socket.gethostname())


def share_cpu_threads(dist: Dist) -> None:
    """On CPU, each rank's torch threads to its share of the cores (a collective). torch gives every process
    all of them, so N ranks run N times as many threads as cores, and their spin-waits slow the many small
    operations of generation 2.5x (dev/LOG.md). ``OMP_NUM_THREADS``, when set, is the user's choice and is
    kept."""
    if dist.device.type != "cpu" or "OMP_NUM_THREADS" in os.environ:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    here = ranks_here()
    torch.set_num_threads(max(1, cores // here))
    log.info("CPU: %d torch thread(s) for each of the %d rank(s) here", torch.get_num_threads(), here)


def free_port() -> int:
    """A local TCP port nobody listens on now (for a group of one, or a launcher's --master_port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    out: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def barrier() -> None:
    torch.distributed.barrier()


def shutdown() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def param_numel(param: nn.Parameter) -> int:
    """The full size of a parameter, also when ZeRO-3 has partitioned it away (``ds_numel``)."""
    return getattr(param, "ds_numel", param.numel())


def precision(configured: str, device: torch.device) -> str:
    """The configured precision, or fp32 where there is no CUDA (CPU bf16 is slow and not the recipe's)."""
    return configured if device.type == "cuda" else "fp32"
