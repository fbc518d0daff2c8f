import os
import socket

import pytest
import torch

import pipeline.distributed
from pipeline.distributed import Dist, share_cpu_threads

CPU = Dist(rank=1, world_size=4, local_rank=1, device=torch.device("cpu"))


@pytest.fixture
def machine(monkeypatch):
    """A machine of ``cores`` with the given host names for the ranks; torch's thread count restored after."""
    before = torch.get_num_threads()

    def make(cores: int, hosts: list[str], omp: str | None = None) -> None:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
        monkeypatch.setattr(pipeline.distributed, "gather_objects", lambda obj: hosts)
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        if omp:
            monkeypatch.setenv("OMP_NUM_THREADS", omp)

    yield make
    torch.set_num_threads(before)


def test_each_cpu_rank_gets_its_share_of_the_cores(machine):
    here = socket.gethostname()
    machine(6, [here, "other", here, "other"])  # 2 of the 4 ranks on this machine
    torch.set_num_threads(6)
    share_cpu_threads(CPU)
    assert torch.get_num_threads() == 3
    machine(2, [here] * 4)  # more ranks than cores: one thread each, never none
    share_cpu_threads(CPU)
    assert torch.get_num_threads() == 1


def test_a_users_thread_count_and_gpus_are_left_alone(machine):
    here = socket.gethostname()
    torch.set_num_threads(2)
    machine(8, [here], omp="2")  # its share would be all 8 cores
    share_cpu_threads(CPU)
    assert torch.get_num_threads() == 2
    machine(8, [here])
    share_cpu_threads(Dist(0, 1, 0, torch.device("cuda", 0)))
    assert torch.get_num_threads() == 2
