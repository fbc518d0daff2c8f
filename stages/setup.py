"""What a stage sets up before its first step, apart from the trainer's own objects: logging per rank, the
seeds, the weights ``train.init_from`` names and the checkpoint ``train.resume`` names."""

from __future__ import annotations

import logging
import random
import sys
from pathlib import Path

import numpy as np
import torch

from pipeline import checkpoint
from pipeline.config import ConfigError
from pipeline.model.kernels import apply_liger, compile_blocks, liger_token_loss
from pipeline.model.qwenvl import QwenVL, load_weights
from pipeline.schema import StageConfig, TrainConfig

log = logging.getLogger("stages")


def stage_dir(cfg: StageConfig) -> Path:
    return Path(cfg.run.output_dir) / cfg.run.name / cfg.run.stage


def setup_logging(rank: int) -> None:
    """Our own loggers at INFO on rank 0 (WARNING elsewhere); libraries' INFO chatter stays off."""
    logging.basicConfig(
        level=logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    for name in ("stages", "pipeline"):
        logging.getLogger(name).setLevel(logging.INFO if rank == 0 else logging.WARNING)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def use_speed_levers(model: QwenVL, t: TrainConfig, device: torch.device) -> list[str]:
    """Switch on ``train.kernels`` and ``train.compile`` where CUDA is (Triton kernels and Inductor's GPU code
    are what they are for); elsewhere say they are ignored. Returns the levers switched on."""
    levers = [*t.kernels, *(f"compile_{tower}" for tower in t.compile)]
    if not levers:
        return []
    if device.type != "cuda":
        log.warning("no CUDA device: train.kernels=%s and train.compile=%s are ignored", t.kernels, t.compile)
        return []
    liger = [k for k in t.kernels if k != "fused_cross_entropy"]
    try:
        if liger:
            apply_liger(model.llm, liger)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if "fused_cross_entropy" in t.kernels:
        model.token_loss = liger_token_loss()
    if t.compile:
        blocks = compile_blocks({tower: getattr(model, tower) for tower in t.compile})
        log.info("torch.compile: %d blocks of %s, compiled on their first call", blocks, t.compile)
    log.info("speed levers on: %s", levers)
    return levers


def load_init(model: QwenVL, path: str) -> None:
    """The weights of ``train.init_from`` (a final/ folder or a safetensors file), resized to this stage's
    resolution."""
    if not Path(path).exists():
        raise ConfigError(
            f"key 'train.init_from': {path} does not exist; run the previous stage first (same run.name), "
            "or set train.init_from=null to start from fresh weights"
        )
    try:
        load_weights(model, path)
    except ValueError as e:
        raise ConfigError(f"key 'train.init_from': {e}") from None
    log.info("initialised from %s", path)


def resume_point(mode: str, checkpoints: Path) -> Path | None:
    """The checkpoint ``train.resume`` names: none (never), the latest under ``checkpoints`` (auto), or a folder."""
    if mode == "never":
        return None
    if mode == "auto":
        return checkpoint.latest(checkpoints)
    folder = Path(mode)
    if not checkpoint.is_complete(folder):
        raise ConfigError(f"key 'train.resume': {mode} is not a complete checkpoint (a step-N folder)")
    return folder
