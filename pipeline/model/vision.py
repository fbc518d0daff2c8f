"""The vision tower: any open_clip architecture, returning patch tokens."""

from __future__ import annotations

from pathlib import Path

import open_clip
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torch import nn
from torchvision import transforms

from pipeline.config import ConfigError, register_open_clip_configs
from pipeline.model.stem import install_stem
from pipeline.schema import PIXELS, VisionConfig


def build_vision_tower(cfg: VisionConfig, image_size: int, device: str | torch.device = "cpu") -> nn.Module:
    """open_clip's image tower at ``image_size``; ``forward`` returns (pooled, patch tokens [B, grid^2, width]).

    Pretrained weights come from an open_clip tag or a local checkpoint file; a checkpoint made at another
    resolution has its position embedding interpolated by open_clip on load. ``stem: conv`` puts a
    ``ConvStem`` (``pipeline.model.stem``) in the place of the patchify; its weights then come from a
    checkpoint of a tower with the same stem.
    """
    register_open_clip_configs()
    if cfg.arch not in open_clip.list_models():
        raise ConfigError(f"key 'model.vision.arch': unknown open_clip architecture {cfg.arch!r}")
    if cfg.pretrained and Path(cfg.pretrained).suffix and not Path(cfg.pretrained).is_file():
        raise ConfigError(f"key 'model.vision.pretrained': checkpoint file not found: {cfg.pretrained}")
    conv = cfg.stem == "conv"
    try:
        clip = open_clip.create_model(
            cfg.arch, pretrained=None if conv else cfg.pretrained, force_image_size=image_size, device=device
        )
        visual = install_stem(clip.visual, cfg.stem, cfg.stem_channels, cfg.stem_grid_layers)
        if conv and cfg.pretrained:
            open_clip.load_checkpoint(clip, cfg.pretrained)
    except RuntimeError as e:  # "Pretrained weights (...) not found", or a checkpoint of another stem
        raise ConfigError(
            f"key 'model.vision.pretrained': cannot load {cfg.pretrained!r} for {cfg.arch} "
            f"(model.vision.stem={cfg.stem}): {e}"
        ) from None
    except ValueError as e:  # a patch size the stem cannot make
        raise ConfigError(f"key 'model.vision.stem': {e}") from None
    visual.output_tokens = True
    visual.proj = None  # CLIP's pooled-embedding head: the resampler reads the patch tokens, never the pool
    return visual


def pixel_stats(cfg: VisionConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The tower's normalisation (mean, std): the pretrained tag's, else the architecture's, else OpenAI's."""
    register_open_clip_configs()
    stats = dict((open_clip.get_model_config(cfg.arch) or {}).get("preprocess_cfg", {}))
    if cfg.pretrained and not Path(cfg.pretrained).suffix:
        stats.update(open_clip.pretrained.get_pretrained_cfg(cfg.arch, cfg.pretrained))
    return tuple(stats.get("mean", OPENAI_DATASET_MEAN)), tuple(stats.get("std", OPENAI_DATASET_STD))


def image_transform(cfg: VisionConfig, image_size: int, pixels: str = "float32"):
    """PIL image -> tensor at ``image_size`` x ``image_size``, squashed to the square (no crop) with bicubic
    resampling as Qwen-VL does. ``float32``: normalised with the tower's mean and std; ``uint8``: the same
    resized pixels as 8 bits, for the model to normalise on its device (``normalize_pixels``), which copies
    a quarter of the bytes from the loader workers to the device.
    """
    if pixels not in PIXELS:
        raise ValueError(f"pixels must be one of {PIXELS}, not {pixels!r}")
    mean, std = pixel_stats(cfg)
    transform = open_clip.image_transform(
        image_size, is_train=False, mean=mean, std=std, resize_mode="squash", interpolation="bicubic"
    )
    if pixels == "uint8":
        # open_clip's resize and mode conversion, then 8-bit CHW in place of its ToTensor and Normalize
        steps = [t for t in transform.transforms
                 if not isinstance(t, transforms.Normalize) and "ToTensor" not in type(t).__name__]  # fmt: skip
        transform = transforms.Compose([*steps, transforms.PILToTensor()])
    return transform


def normalize_pixels(pixels: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """8-bit [B, 3, H, W] -> float32 normalised as ``image_transform(..., "float32")`` gives it."""
    mean_t = torch.tensor(mean, device=pixels.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=pixels.device).view(1, -1, 1, 1)
    return (pixels.float() / 255 - mean_t) / std_t
