"""DeepSpeed (ZeRO-2 and ZeRO-3): the one module that imports ``deepspeed``.

Works under the ``deepspeed`` launcher (one node or many), under ``torchrun`` and as a plain single process.
Without CUDA it runs on DeepSpeed's CPU accelerator over gloo.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.backends.base import Backend, StepResult
from pipeline.config import CONFIG_ROOT, ConfigError, flatten
from pipeline.distributed import Dist, free_port
from pipeline.schema import StageConfig

log = logging.getLogger(__name__)
MIN_REDUCE_BUCKET = 2**24  # elements
LAUNCHER_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE")


def _deepspeed():
    """The library, imported on first use: it picks its accelerator once, so the CPU one is named first
    where there is no CUDA."""
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed

    return deepspeed


class DeepSpeedBackend(Backend):
    @classmethod
    def init_distributed(cls) -> Dist:
        """Join the launcher's process group, or, started alone (``python launch/stageN.py``, a test), make a
        group of one on a free local port without touching the environment, so that it can be made again."""
        deepspeed = _deepspeed()
        accelerator = deepspeed.accelerator.get_accelerator()
        backend = accelerator.communication_backend_name()
        if "MASTER_ADDR" not in os.environ and not torch.distributed.is_initialized():  # no launcher
            os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")  # DeepSpeed reads these
            torch.distributed.init_process_group(
                backend, init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1
            )
        deepspeed.init_distributed(dist_backend=backend)  # adopts an existing group
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if accelerator.device_name() == "cuda":
            accelerator.set_device(local_rank)
            device = torch.device("cuda", local_rank)
        else:
            device = torch.device("cpu")
            _unlink_shm_buffer()
        dist = torch.distributed
        return Dist(dist.get_rank(), dist.get_world_size(), local_rank, device)

    @classmethod
    def launcher_command(cls, target: str, args: list[str], ranks: int, module: bool = False
                         ) -> tuple[list[str], dict[str, str]]:  # fmt: skip
        """``deepspeed --num_gpus N [--module] target args``, on a free port; the environment without this
        process's own rank variables (it may hold a group of its own), on the CPU accelerator without CUDA."""
        env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
        env.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")
        command = [sys.executable, "-m", "deepspeed.launcher.runner",  # what the `deepspeed` command runs
                   "--num_gpus", str(ranks), "--master_port", str(free_port()),
                   *(["--module"] if module else []), target, *args]  # fmt: skip
        return command, env

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, cfg: StageConfig,
                 dist: Dist, dtype: str, hidden_size: int):  # fmt: skip
        config = deepspeed_config(cfg, dist.world_size, hidden_size, dtype)
        self.engine, *_ = _deepspeed().initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config
        )
        self.zero_stage = self.engine.zero_optimization_stage()

    @property
    def model(self) -> nn.Module:
        return self.engine.module

    @property
    def description(self) -> str:
        return f"ZeRO-{self.zero_stage}"

    @property
    def partitions_parameters(self) -> bool:
        return self.zero_stage == 3

    def forward(self, batch: dict):
        return self.engine(**batch)

    def backward(self, loss: torch.Tensor) -> None:
        boundary = self.engine.is_gradient_accumulation_boundary()
        self.engine.backward(loss)
        if not boundary:
            self.engine.step()  # DeepSpeed counts micro-steps; no update before the boundary

    def step(self) -> StepResult:
        lrs = {g["name"]: g["lr"] for g in self.engine.optimizer.param_groups}  # before the schedule moves
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        return StepResult(float(norm) if norm is not None else None, lrs)

    def save(self, folder: Path) -> None:
        self.engine.save_checkpoint(str(folder.parent), tag=folder.name, save_latest=False)

    def load(self, folder: Path) -> None:
        try:
            path, _ = self.engine.load_checkpoint(
                str(folder.parent), tag=folder.name, load_optimizer_states=True, load_lr_scheduler_states=True
            )
        except RuntimeError as e:  # shape or key mismatches
            raise ValueError(f"{folder}: checkpoint does not fit the model: {e}") from None
        if path is None:
            raise ValueError(f"{folder}: DeepSpeed could not load this checkpoint")

    def _gathered(self):
        """A context in which ZeRO-3's partitioned parameters are whole on every rank (no-op otherwise)."""
        if self.zero_stage != 3:
            return contextlib.nullcontext()
        return _deepspeed().zero.GatheredParameters(list(self.model.parameters()), modifier_rank=None)

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        with self._gathered():
            if torch.distributed.get_rank() != 0:
                return None
            return {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    @contextlib.contextmanager
    def generation(self) -> Iterator[bool]:
        yield self.zero_stage == 3  # each forward gathers the partitions: the ranks decode in step

    def state_bytes(self) -> dict[str, int]:
        """Each storage counted once: what ZeRO partitions over ranks (ZeRO-3 keeps only a partition of each
        parameter; master weights and moments are partitioned from ZeRO-1 on)."""
        seen: set[int] = set()

        def total(tensors) -> int:
            size = 0
            for tensor in tensors:
                storage = tensor.untyped_storage()
                if storage.nbytes() and storage.data_ptr() not in seen:
                    seen.add(storage.data_ptr())
                    size += storage.nbytes()
            return size

        params = total(getattr(p, "ds_tensor", p) for p in self.model.parameters())
        zero = self.engine.optimizer
        inner = getattr(zero, "optimizer", zero)  # the torch optimizer under ZeRO's wrapper
        masters = (  # fp32 partitions: ZeRO-3 hands them to the torch optimizer only during its step
            getattr(zero, "fp32_partitioned_groups_flat", None)
            or getattr(zero, "single_partition_of_fp32_groups", None)
            or [p for group in inner.param_groups for p in group["params"]]
        )
        moments = [v for s in inner.state.values() for v in s.values() if torch.is_tensor(v)]  # after a step
        return {"param_bytes": params, "optimizer_bytes": total([*masters, *moments])}


def _unlink_shm_buffer() -> None:
    """DeepSpeed's CPU all-reduce maps one 64 MB file per rank from /dev/shm and never removes it, not even
    on a clean exit: a machine that runs many jobs fills its memory with them. Once every rank has mapped
    every file (the barrier), the names are not needed any more; without them the memory is freed when the
    last process exits, however it exits (kill -9 included)."""
    torch.distributed.barrier()
    name = "_".join(
        ["deepspeed_allreduce_buffer", str(os.getuid()), os.environ.get("MASTER_ADDR", ""),
         os.environ.get("MASTER_PORT", ""), str(torch.distributed.get_rank())]
    )  # fmt: skip
    (Path("/dev/shm") / name).unlink(missing_ok=True)


def deepspeed_config(cfg: StageConfig, world_size: int, hidden_size: int, dtype: str) -> dict[str, Any]:
    """The user's DeepSpeed JSON with every ``"auto"`` filled from ``train.*`` (as HF's integration does)."""
    path = Path(cfg.deepspeed.config)
    if not path.is_absolute() and not path.is_file():
        path = CONFIG_ROOT.parent / path
    try:
        ds = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"key 'deepspeed.config': cannot read {cfg.deepspeed.config}: {e}") from None
    for key in ("optimizer", "scheduler"):
        if key in ds:
            raise ConfigError(
                f"{path}: remove '{key}'; the optimizer and schedule come from train.optimizer.*"
            )
    t = cfg.train
    zero = ds.setdefault("zero_optimization", {})
    if cfg.deepspeed.zero_stage is not None:
        zero["stage"] = cfg.deepspeed.zero_stage
    auto = {
        "train_batch_size": t.global_batch_size,
        "train_micro_batch_size_per_gpu": t.micro_batch_size,
        "gradient_accumulation_steps": t.accumulation(world_size),
        "gradient_clipping": t.optimizer.grad_clip,
        "bf16.enabled": dtype == "bf16",
        "fp16.enabled": dtype == "fp16",
        # HF's hidden^2, but never below 16M elements: a tiny model's many small buckets cost more
        # (Python and a collective per bucket) than they overlap
        "zero_optimization.reduce_bucket_size": max(hidden_size * hidden_size, MIN_REDUCE_BUCKET),
        "zero_optimization.stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
        "zero_optimization.stage3_param_persistence_threshold": 10 * hidden_size,
    }
    for dotted, value in auto.items():
        *parents, leaf = dotted.split(".")
        node = ds
        for parent in parents:
            node = node.setdefault(parent, {})
        if node.get(leaf, "auto") == "auto":
            node[leaf] = value
    left = [k for k, v in flatten(ds).items() if v == "auto"]
    if left:
        raise ConfigError(f"{path}: no value for 'auto' at {left}")
    return ds
