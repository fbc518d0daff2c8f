"""The one module that knows DeepSpeed: process group set-up, the DeepSpeed config, the engine, and the
collectives the trainer needs (ZeRO-3 parameter gathering for export included).

Works under the ``deepspeed`` launcher (one node or many), under ``torchrun`` and as a plain single process.
Without CUDA it runs on DeepSpeed's CPU accelerator over gloo.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.config import CONFIG_ROOT, ConfigError
from pipeline.schema import StageConfig

if not torch.cuda.is_available():  # before deepspeed is imported: it picks its accelerator once
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
import deepspeed  # noqa: E402
from deepspeed.accelerator import get_accelerator  # noqa: E402

log = logging.getLogger(__name__)
MIN_REDUCE_BUCKET = 2**24  # elements


@dataclass(frozen=True)
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """Join the launcher's process group, or, started alone (``python launch/stageN.py``, a test), make a
    group of one on a free local port without touching the environment, so that it can be made again."""
    accelerator = get_accelerator()
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


def free_port() -> int:
    """A local TCP port nobody listens on now (for a group of one, or a launcher's --master_port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def precision(cfg: StageConfig, device: torch.device) -> str:
    """The configured precision, or fp32 where there is no CUDA (CPU bf16 is slow and not the recipe's)."""
    return cfg.train.precision if device.type == "cuda" else "fp32"


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
    left = [k for k, v in _flatten(ds).items() if v == "auto"]
    if left:
        raise ConfigError(f"{path}: no value for 'auto' at {left}")
    return ds


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def build_engine(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, ds_config: dict):
    engine, *_ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config
    )
    return engine


def zero_stage(engine) -> int:
    return engine.zero_optimization_stage()


def gathered(engine):
    """A context in which ZeRO-3's partitioned parameters are whole on every rank (no-op otherwise)."""
    if zero_stage(engine) != 3:
        return contextlib.nullcontext()
    return deepspeed.zero.GatheredParameters(list(engine.module.parameters()), modifier_rank=None)


def full_state_dict(engine) -> dict[str, torch.Tensor] | None:
    """The whole model's weights on CPU, on rank 0 (None elsewhere), gathered under ZeRO-3."""
    with gathered(engine):
        if torch.distributed.get_rank() != 0:
            return None
        return {k: v.detach().to("cpu", copy=True) for k, v in engine.module.state_dict().items()}


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
    """The full size of a parameter, also when ZeRO-3 has partitioned it away."""
    return getattr(param, "ds_numel", param.numel())


def state_bytes(engine) -> dict[str, int]:
    """This rank's bytes of parameters and of optimizer state (master weights and moments), each storage
    counted once: what ZeRO partitions over ranks (ZeRO-3 keeps only a partition of each parameter)."""
    seen: set[int] = set()

    def total(tensors) -> int:
        size = 0
        for tensor in tensors:
            storage = tensor.untyped_storage()
            if storage.nbytes() and storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                size += storage.nbytes()
        return size

    params = total(getattr(p, "ds_tensor", p) for p in engine.module.parameters())
    zero = engine.optimizer
    inner = getattr(zero, "optimizer", zero)  # the torch optimizer under ZeRO's wrapper
    masters = (  # fp32 partitions: ZeRO-3 hands them to the torch optimizer only during its step
        getattr(zero, "fp32_partitioned_groups_flat", None)
        or getattr(zero, "single_partition_of_fp32_groups", None)
        or [p for group in inner.param_groups for p in group["params"]]
    )
    moments = [v for s in inner.state.values() for v in s.values() if torch.is_tensor(v)]  # after a step
    return {"param_bytes": params, "optimizer_bytes": total([*masters, *moments])}
