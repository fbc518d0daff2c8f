import os

import pytest
import torch

from pipeline.distributed import Dist, cpu_share, share_cpu_threads


@pytest.fixture
def threads():
    """torch's thread count, restored after the test."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _machine(monkeypatch, cores: int, local: str | None, omp: str | None = None) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    for name in ("LOCAL_WORLD_SIZE", "LOCAL_SIZE", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    if local:
        monkeypatch.setenv("LOCAL_SIZE", local)  # DeepSpeed's launcher's name for it
    if omp:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)


CPU = Dist(rank=1, world_size=4, local_rank=1, device=torch.device("cpu"))


def test_each_cpu_rank_gets_its_share_of_the_cores(monkeypatch, threads):
    _machine(monkeypatch, cores=6, local="2")  # 2 of the 4 ranks on this machine
    torch.set_num_threads(6)
    share_cpu_threads(CPU)
    assert torch.get_num_threads() == 3 == cpu_share(CPU)
    _machine(monkeypatch, cores=2, local=None)  # no launcher count: every rank is here
    assert cpu_share(CPU) == 1  # never 0, with more ranks than cores


def test_a_users_thread_count_and_gpus_are_left_alone(monkeypatch, threads):
    torch.set_num_threads(2)
    _machine(monkeypatch, cores=8, local="4", omp="2")
    share_cpu_threads(CPU)
    _machine(monkeypatch, cores=8, local="4")
    share_cpu_threads(Dist(0, 4, 0, torch.device("cuda", 0)))
    assert torch.get_num_threads() == 2
