"""Model FLOPs per batch for MFU (PaLM's accounting, ViT and resampler counted).

Forward FLOPs of a transformer per token: 2 x (matrix parameters) + 4 x layers x width x sequence length
(attention scores and weighted values; the causal half is counted whole, as PaLM does). The backward pass
costs 2x the forward when the weights learn, 1x when only the input gradient is needed (a frozen tower that
a trainable part upstream sends gradients through), and nothing when no gradient flows (a frozen tower with
nothing trainable before it). So each tower counts 3x, 2x or 1x its forward.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from pipeline.distributed import param_numel
from pipeline.schema import MODULE_GROUPS

log = logging.getLogger(__name__)

# Dense bf16 tensor-core peaks (TFLOP/s) by device name; a name not listed needs logging.peak_tflops.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "H800": 989.0, "A100": 312.0, "A800": 312.0, "L40S": 362.0,
               "L40": 181.0, "A10": 125.0, "RTX 4090": 165.0, "RTX 3090": 71.0, "V100": 125.0}  # fmt: skip


def matrix_params(module: nn.Module) -> int:
    """Parameters that take part in matmuls (no norms, biases or position tables)."""
    return sum(
        param_numel(p)
        for name, p in module.named_parameters()
        if p.dim() >= 2 and "positional_embedding" not in name and "embed_tokens" not in name
    )


def _tied_head(llm: nn.Module) -> int:
    """A head tied to the input embedding is one parameter but still a matmul per token."""
    head, embed = llm.get_output_embeddings(), llm.get_input_embeddings()
    return param_numel(head.weight) if head is not None and head.weight is embed.weight else 0


@dataclass
class FlopModel:
    vit_params: int
    vit_layers: int
    vit_width: int
    patches: int  # tokens per image in the ViT (grid + class token)
    stem_flops: int  # forward FLOPs per image of a convolutional stem (0: a patchify, counted per patch)
    adapter_flops: int  # forward FLOPs of the resampler per image
    llm_params: int
    llm_layers: int
    llm_width: int
    multipliers: dict[str, int]  # group -> 3 (learns), 2 (input gradient only) or 1 (forward only)

    @classmethod
    def of(cls, model: nn.Module, trainable: list[str]) -> FlopModel:
        vision, adapter, llm = model.vision, model.adapter, model.llm
        grid = math.prod(vision.grid_size)
        patches = grid + (1 if getattr(vision, "class_embedding", None) is not None else 0)
        width = vision.transformer.width
        dim, queries = adapter.query.shape[1], adapter.query.shape[0]
        stem = getattr(vision.conv1, "forward_flops", None)  # a ConvStem runs at more positions than patches
        kv_dim = adapter.kv_proj.in_features if isinstance(adapter.kv_proj, nn.Linear) else dim
        # kv projection, q/k/v/out projections, scores and values, output projection
        adapter_flops = 2 * (
            grid * kv_dim * dim * (kv_dim != dim) + grid * 2 * dim * dim + queries * 2 * dim * dim
            + queries * dim * dim
        ) + 4 * queries * grid * dim  # fmt: skip
        multipliers, upstream = {}, False
        for group in MODULE_GROUPS:
            learns = group in trainable
            multipliers[group] = 3 if learns else (2 if upstream else 1)
            upstream = upstream or learns
        config = llm.config
        return cls(
            vit_params=matrix_params(vision) - (matrix_params(vision.conv1) if stem else 0),
            vit_layers=vision.transformer.layers,
            vit_width=width,
            patches=patches,
            stem_flops=stem(tuple(vision.image_size)) if stem else 0,
            adapter_flops=adapter_flops,
            llm_params=matrix_params(llm) + _tied_head(llm),
            llm_layers=config.num_hidden_layers,
            llm_width=config.hidden_size,
            multipliers=multipliers,
        )

    def batch(self, images: int, lengths: torch.Tensor) -> float:
        """Training FLOPs of a micro-batch with ``images`` encoded images and these sequence lengths."""
        vit = images * (
            self.stem_flops
            + self.patches * (2 * self.vit_params + 4 * self.vit_layers * self.vit_width * self.patches)
        )
        adapter = images * self.adapter_flops
        tokens = float(lengths.sum())
        llm = 2 * self.llm_params * tokens + 4 * self.llm_layers * self.llm_width * float((lengths**2).sum())
        m = self.multipliers
        return m["vision"] * vit + m["adapter"] * adapter + m["llm"] * llm


def device_peak_flops(device: torch.device, configured_tflops: float | None) -> float | None:
    """Peak FLOP/s of one device: the config's, the table's, or on CPU the fp32 matmul rate measured on
    torch's threads. None for a GPU the table does not know."""
    if configured_tflops:
        return configured_tflops * 1e12
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in PEAK_TFLOPS.items():
            if key in name:
                return tflops * 1e12
        log.warning("no peak FLOP/s known for %r: MFU is not logged; set logging.peak_tflops", name)
        return None
    return measured_matmul_flops()


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` inside, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def measured_matmul_flops(n: int = 512, repeats: int = 32) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(4):  # warm-up: the thread pool and the kernels' first calls
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start)
