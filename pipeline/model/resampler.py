"""Qwen-VL's vision-language adapter: one cross-attention layer from N learnable queries to the ViT patches.

The queries and the keys both get a 2D sin-cos position embedding; the keys' is the queries' grid resized
to the ViT grid (bicubic), so the same adapter serves 224 px (16x16 patches) and 448 px (32x32). The output
length is N whatever the resolution, projected to the LLM width.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.model.pos_embed import grid_side, resize_grid, sincos_2d


class Resampler(nn.Module):
    def __init__(self, num_queries: int, kv_dim: int, dim: int, num_heads: int):
        super().__init__()
        side = grid_side(num_queries)  # Qwen-VL's query counts (64, 144, 256, 400) are square grids
        self.query = nn.Parameter(nn.init.trunc_normal_(torch.empty(num_queries, dim), std=0.02))
        self.register_buffer("pos_embed", sincos_2d(dim, side), persistent=False)
        self.kv_proj = nn.Linear(kv_dim, dim, bias=False) if kv_dim != dim else nn.Identity()
        self.ln_q = nn.LayerNorm(dim)
        self.ln_kv = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.ln_post = nn.LayerNorm(dim)
        self.proj = nn.Parameter(dim**-0.5 * torch.randn(dim, dim))

    def key_pos_embed(self, num_patches: int) -> torch.Tensor:
        return resize_grid(self.pos_embed, num_patches)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """[B, patches, kv_dim] -> [B, num_queries, dim]."""
        kv = self.ln_kv(self.kv_proj(patches))
        query = (self.ln_q(self.query) + self.pos_embed).expand(kv.shape[0], -1, -1)
        out, _ = self.attn(query, kv + self.key_pos_embed(kv.shape[1]), kv, need_weights=False)
        return self.ln_post(out) @ self.proj
