"""Position embeddings on square grids: 2D sin-cos, and bicubic resizing between grid sizes.

``resize_grid`` is Qwen-VL's ``get_abs_pos``: the resampler uses it every forward to fit its query-grid
embedding to the ViT's key grid, and checkpoint loading uses it to move a ViT trained at 224 px to 448 px.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def grid_side(n: int) -> int:
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"{n} positions do not form a square grid")
    return side


def sincos_2d(dim: int, side: int) -> torch.Tensor:
    """[side*side, dim], cells in row-major order: the first half of the channels encodes the column (x),
    the second the row (y), each as sines then cosines; Qwen-VL's ``get_2d_sincos_pos_embed`` order."""
    if dim % 4:
        raise ValueError(f"2D sin-cos embedding needs a width divisible by 4, got {dim}")
    freqs = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    coords = torch.arange(side, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.reshape(-1, 1) * freqs
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(cols), encode(rows)], dim=1).float()


def resize_grid(pos: torch.Tensor, n: int) -> torch.Tensor:
    """[m, C] on a square grid -> [n, C] on a square grid, bicubic (identity when m == n)."""
    if pos.shape[0] == n:
        return pos
    src, dst = grid_side(pos.shape[0]), grid_side(n)
    grid = pos.float().reshape(1, src, src, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(dst, dst), mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(n, -1).to(pos.dtype)
