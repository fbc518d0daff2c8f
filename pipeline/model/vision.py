"""The vision tower: any open_clip architecture, returning patch tokens."""

from __future__ import annotations

from pathlib import Path

import open_clip
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torch import nn

from pipeline.config import ConfigError, register_open_clip_configs
from pipeline.schema import VisionConfig


def build_vision_tower(cfg: VisionConfig, image_size: int, device: str | torch.device = "cpu") -> nn.Module:
    """open_clip's image tower at ``image_size``; ``forward`` returns (pooled, patch tokens [B, grid^2, width]).

    Pretrained weights come from an open_clip tag or a local checkpoint file; a checkpoint made at another
    resolution has its position embedding interpolated by open_clip on load.
    """
    register_open_clip_configs()
    if cfg.arch not in open_clip.list_models():
        raise ConfigError(f"key 'model.vision.arch': unknown open_clip architecture {cfg.arch!r}")
    if cfg.pretrained and Path(cfg.pretrained).suffix and not Path(cfg.pretrained).is_file():
        raise ConfigError(f"key 'model.vision.pretrained': checkpoint file not found: {cfg.pretrained}")
    try:
        clip = open_clip.create_model(
            cfg.arch, pretrained=cfg.pretrained, force_image_size=image_size, device=device
        )
    except RuntimeError as e:  # open_clip says "Pretrained weights (...) not found for model ..."
        raise ConfigError(
            f"key 'model.vision.pretrained': cannot load {cfg.pretrained!r} for {cfg.arch}: {e}"
        ) from None
    visual = clip.visual
    visual.output_tokens = True
    visual.proj = None  # CLIP's pooled-embedding head: the resampler reads the patch tokens, never the pool
    return visual


def image_transform(cfg: VisionConfig, image_size: int):
    """PIL image -> normalised tensor at ``image_size`` x ``image_size``, with the tower's mean and std.

    Qwen-VL squashes every image to the square (no crop) with bicubic resampling; the mean and std are the
    pretrained tag's (OpenAI's CLIP values otherwise).
    """
    register_open_clip_configs()
    model_cfg = open_clip.get_model_config(cfg.arch) or {}
    stats = dict(model_cfg.get("preprocess_cfg", {}))
    if cfg.pretrained and not Path(cfg.pretrained).suffix:
        stats.update(open_clip.pretrained.get_pretrained_cfg(cfg.arch, cfg.pretrained))
    return open_clip.image_transform(
        image_size,
        is_train=False,
        mean=stats.get("mean", OPENAI_DATASET_MEAN),
        std=stats.get("std", OPENAI_DATASET_STD),
        resize_mode="squash",
        interpolation="bicubic",
    )
