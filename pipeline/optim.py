"""What learns and how fast: freezing by module group, AdamW parameter groups, the LR schedule.

Parameter groups follow the recipe: weight decay on weight matrices only (no decay on norms, biases,
position embeddings and the resampler's queries), and ViT layer-wise LR decay (block ``i`` of ``L`` gets
``decay ** (L - i)`` of the LR; the patch embedding ``decay ** (L + 1)``; the final norm the full LR), on top
of each module group's ``lr_scale`` (as LLaVA's projector LR or InternVL's ViT LR set one tower apart).
Frozen parameters are in no group, so the optimizer keeps no state for them.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from pipeline.schema import MODULE_GROUPS, OptimizerConfig

log = logging.getLogger(__name__)
NO_DECAY_NAMES = ("positional_embedding", "class_embedding", "pos_embed", "adapter.query")
_VIT_BLOCK = re.compile(r"^vision\.transformer\.resblocks\.(\d+)\.")
_VIT_STEM = ("vision.conv1.", "vision.class_embedding", "vision.positional_embedding", "vision.ln_pre.")


@dataclass
class GroupReport:
    name: str
    trainable: bool
    params: int


def freeze(model: nn.Module, trainable: list[str]) -> list[GroupReport]:
    """Set ``requires_grad`` per module group (``vision``, ``adapter``, ``llm``) and log each one."""
    reports = []
    for name in MODULE_GROUPS:
        module = getattr(model, name)
        learn = name in trainable
        module.requires_grad_(learn)
        count = sum(p.numel() for p in module.parameters())
        reports.append(GroupReport(name, learn, count))
        log.info("%-8s %-9s %12s parameters", name, "trainable" if learn else "frozen", f"{count:,}")
    return reports


def vit_layer(name: str, num_blocks: int) -> int:
    """0 for the patch embedding and everything before the blocks, i + 1 for block i, L + 1 after."""
    block = _VIT_BLOCK.match(name)
    if block:
        return int(block.group(1)) + 1
    return 0 if name.startswith(_VIT_STEM) else num_blocks + 1


def decays(name: str, param: nn.Parameter) -> bool:
    return param.ndim >= 2 and not any(key in name for key in NO_DECAY_NAMES)


def param_groups(model: nn.Module, cfg: OptimizerConfig) -> list[dict]:
    """AdamW groups of the trainable parameters; each carries ``name`` and ``lr_scale``."""
    num_blocks = len(model.vision.transformer.resblocks)
    groups: dict[str, dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        module = name.split(".", 1)[0]
        scale = cfg.lr_scale.get(module, 1.0)
        key = module
        if module == "vision" and cfg.vit_layer_decay < 1.0:
            layer = vit_layer(name, num_blocks)
            scale *= cfg.vit_layer_decay ** (num_blocks + 1 - layer)
            key = f"vision.layer{layer:02d}"
        decay = decays(name, param)
        key += "" if decay else ".no_decay"
        group = groups.setdefault(
            key,
            {
                "name": key,
                "params": [],
                "lr_scale": scale,
                "weight_decay": cfg.weight_decay if decay else 0.0,
            },
        )
        group["params"].append(param)
    for group in groups.values():
        group["lr"] = cfg.lr * group["lr_scale"]
    return list(groups.values())


def lr_at(step: int, cfg: OptimizerConfig, max_steps: int) -> float:
    """The peak-group LR of optimizer step ``step`` (counted from 1): linear warmup, then cosine to min_lr."""
    if step <= cfg.warmup_steps:
        return cfg.lr * step / max(cfg.warmup_steps, 1)
    if cfg.schedule == "constant":
        return cfg.lr
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, max_steps - cfg.warmup_steps))
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def lr_factor(cfg: OptimizerConfig, max_steps: int) -> Callable[[int], float]:
    """For ``LambdaLR``: its counter is the number of steps taken, so the next step is counter + 1."""
    return lambda taken: lr_at(taken + 1, cfg, max_steps) / cfg.lr
