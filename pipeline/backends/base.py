"""The interface every training backend implements (see ``pipeline.backends``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pipeline.distributed import Dist
from pipeline.schema import StageConfig


@dataclass(frozen=True)
class StepResult:
    """What an optimizer step reports: the clipped-before global gradient norm (None where the backend does
    not compute one) and the LR each parameter group used in this update (the schedule moves on after it)."""

    grad_norm: float | None
    lrs: dict[str, float]  # parameter group name -> LR


class Backend(ABC):
    """A model with its optimizer and LR schedule, trained over the ranks of the process group."""

    @classmethod
    @abstractmethod
    def init_distributed(cls) -> Dist:
        """Join the launcher's process group, or make a group of one when started alone."""

    @classmethod
    @abstractmethod
    def launcher_command(cls, target: str, args: list[str], ranks: int, module: bool = False
                         ) -> tuple[list[str], dict[str, str]]:  # fmt: skip
        """The command line (and environment) that starts ``target`` (a script, or a module with ``module``)
        on ``ranks`` local processes, as a user would type it."""

    @abstractmethod
    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, cfg: StageConfig,
                 dist: Dist, dtype: str, hidden_size: int):  # fmt: skip
        """Wrap ``model``; ``dtype`` is the precision it trains in, ``hidden_size`` the model's width (for
        communication bucket sizes)."""

    @property
    @abstractmethod
    def model(self) -> nn.Module:
        """The plain model (its parameters may be sharded)."""

    @property
    @abstractmethod
    def description(self) -> str:
        """A few words for the log, e.g. "ZeRO-2"."""

    @property
    def partitions_parameters(self) -> bool:
        """Whether a rank holds only a shard of each parameter outside that module's forward (ZeRO-3)."""
        return False

    @abstractmethod
    def forward(self, batch: dict):
        """The model's output on a micro-batch already on the device."""

    @abstractmethod
    def backward(self, loss: torch.Tensor) -> None:
        """Gradients of one micro-batch, accumulated until :meth:`step`."""

    @abstractmethod
    def step(self) -> StepResult:
        """The optimizer step (clipping, update, schedule), after every micro-batch's backward."""

    @abstractmethod
    def save(self, folder: Path) -> None:
        """Every rank writes its model, optimizer and schedule state into ``folder`` (made if missing)."""

    @abstractmethod
    def load(self, folder: Path) -> None:
        """Restore what :meth:`save` wrote; ``ValueError`` naming ``folder`` when it does not fit."""

    @abstractmethod
    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """Every rank calls it; the whole model's weights on CPU on rank 0, None elsewhere."""

    @abstractmethod
    def generation(self) -> AbstractContextManager[bool]:
        """A context for generating with :attr:`model`; it yields ``synced``: every rank must then run the
        same number of decoding steps (sharded parameters are gathered in each forward)."""

    @abstractmethod
    def state_bytes(self) -> dict[str, int]:
        """This rank's bytes of parameters (``param_bytes``) and optimizer state (``optimizer_bytes``)."""
