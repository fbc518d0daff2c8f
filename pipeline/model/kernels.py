"""The GPU speed levers of the model (``train.kernels``, ``train.compile``): Liger's fused Triton kernels in
the LLM and ``torch.compile`` per transformer block. Both change how a step computes, never what: each has a
test that its losses and gradients equal the plain model's (tests/stages/test_gpu.py on CUDA)."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import nn

from pipeline.tokens import IGNORE

# (hidden [N, width], head weight [vocab, width], head bias or None, targets [N]) -> per-token loss [N]
TokenLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor], torch.Tensor]


def liger_token_loss() -> TokenLoss:
    """Liger's fused linear cross-entropy: the LM head and the loss in chunks, so the [tokens, vocab] logits
    (4.6 GB in fp32 for 8 x 1,024 tokens of Qwen's 151,936-token vocabulary) never exist at once."""
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    fused = LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE, reduction="none")

    def token_loss(hidden, weight, bias, targets):
        return fused(weight, hidden, targets, bias)

    return token_loss


def apply_liger(llm: nn.Module, kernels: list[str]) -> None:
    """Swap the LLM's RMSNorm, SwiGLU MLP and RoPE for Liger's (those of ``kernels``), in place."""
    from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN

    model_type = llm.config.model_type
    if model_type not in MODEL_TYPE_TO_APPLY_LIGER_FN:
        raise ValueError(
            f"train.kernels: Liger has no kernels for LLMs of type {model_type!r} "
            f"(it has: {', '.join(sorted(MODEL_TYPE_TO_APPLY_LIGER_FN))}); use train.kernels=[]"
        )
    apply = MODEL_TYPE_TO_APPLY_LIGER_FN[model_type]
    wanted = {"rms_norm": "rms_norm" in kernels, "swiglu": "swiglu" in kernels, "rope": "rope" in kernels,
              "cross_entropy": False, "fused_linear_cross_entropy": False}  # fmt: skip
    accepted = inspect.signature(apply).parameters
    missing = [k for k in ("rms_norm", "swiglu", "rope") if wanted[k] and k not in accepted]
    if missing:
        raise ValueError(f"train.kernels: Liger has no {missing} kernel for {model_type!r} LLMs")
    apply(model=llm, **{k: v for k, v in wanted.items() if k in accepted})


def transformer_blocks(tower: nn.Module) -> nn.ModuleList:
    """The repeated blocks of an open_clip ViT or a Hugging Face decoder."""
    if hasattr(tower, "transformer"):  # open_clip VisionTransformer
        return tower.transformer.resblocks
    return tower.get_decoder().layers


def compile_blocks(towers: dict[str, nn.Module], **options) -> int:
    """``torch.compile`` each transformer block of each tower on its own: small graphs that compile once and
    are reused by every layer, while the loss, the image scatter and DeepSpeed's hooks stay eager. Returns
    the number of blocks compiled."""
    compiled = 0
    for tower in towers.values():
        for block in transformer_blocks(tower):
            block.compile(**options)
            compiled += 1
    return compiled
