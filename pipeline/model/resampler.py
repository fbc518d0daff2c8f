"""Qwen-VL's vision-language adapter: one cross-attention layer from N learnable queries to the ViT patches.

The queries and the keys both get a 2D sin-cos position embedding; the keys' is the queries' grid resized
to the ViT grid (bicubic), so the same adapter serves 224 px (16x16 patches) and 448 px (32x32). The output
length is N whatever the resolution, projected to the LLM width.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.model.pos_embed import grid_side, resize_grid, sincos_2d

LN_EPS = 1e-6


class Resampler(nn.Module):
    """Qwen-VL's conventions: LayerNorm eps 1e-6; linear layers (``kv_proj``, the attention's output
    projection) trunc-normal with std 0.02 and zero bias; the attention's input projection as PyTorch
    initialises it."""

    def __init__(self, num_queries: int, kv_dim: int, dim: int, num_heads: int):
        super().__init__()
        side = grid_side(num_queries)  # Qwen-VL's query counts (64, 144, 256, 400) are square grids
        self.query = nn.Parameter(torch.empty(num_queries, dim))
        self.register_buffer("pos_embed", sincos_2d(dim, side), persistent=False)
        self.kv_proj = nn.Linear(kv_dim, dim, bias=False) if kv_dim != dim else nn.Identity()
        self.ln_q = nn.LayerNorm(dim, eps=LN_EPS)
        self.ln_kv = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.ln_post = nn.LayerNorm(dim, eps=LN_EPS)
        self.proj = nn.Parameter(dim**-0.5 * torch.randn(dim, dim))
        nn.init.trunc_normal_(self.query, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def key_pos_embed(self, num_patches: int) -> torch.Tensor:
        return resize_grid(self.pos_embed, num_patches)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """[B, patches, kv_dim] -> [B, num_queries, dim]."""
        kv = self.ln_kv(self.kv_proj(patches))
        query = (self.ln_q(self.query) + self.pos_embed).expand(kv.shape[0], -1, -1)
        out, _ = self.attn(query, kv + self.key_pos_embed(kv.shape[1]), kv, need_weights=False)
        return self.ln_post(out) @ self.proj
