import math

import pytest
import torch

from pipeline.model.pos_embed import resize_grid, sincos_2d
from pipeline.model.qwenvl import resize_vit_pos_embed
from pipeline.model.resampler import Resampler


def field(side: int) -> torch.Tensor:
    """A smooth known function sampled at the cell centres of a side x side grid, 2 channels."""
    c = (torch.arange(side, dtype=torch.float64) + 0.5) / side
    y, x = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([torch.sin(2 * math.pi * x) * torch.cos(math.pi * y), x * y], dim=-1).reshape(-1, 2)


def test_resize_is_the_identity_at_the_same_grid():
    pos = torch.randn(256, 8)
    assert torch.equal(resize_grid(pos, 256), pos)


def test_16_to_32_keeps_a_smooth_field():
    resized = resize_grid(field(16).float(), 32 * 32).double()
    error = (resized - field(32)).abs().reshape(32, 32, 2)
    nearest = field(16).reshape(16, 16, 2).repeat_interleave(2, 0).repeat_interleave(2, 1)
    nearest_error = (nearest - field(32).reshape(32, 32, 2)).abs()
    assert error[2:-2, 2:-2].max() < 0.03 < 0.08 < nearest_error[2:-2, 2:-2].max()  # follows the function
    assert error.max() < 0.08  # border cells extrapolate half a cell beyond the source grid
    back = resize_grid(resized.float(), 256).double()
    assert (back - field(16)).abs().reshape(16, 16, 2)[1:-1, 1:-1].max() < 0.01


def test_vit_class_token_row_is_kept():
    pos = torch.randn(1 + 16 * 16, 8)
    out = resize_vit_pos_embed(pos, 1 + 32 * 32)
    assert out.shape == (1025, 8) and torch.equal(out[0], pos[0])
    assert torch.equal(out[1:], resize_grid(pos[1:], 1024))
    assert torch.equal(resize_vit_pos_embed(pos, 257), pos)
    with pytest.raises(ValueError, match="square"):
        resize_grid(pos[1:], 1000)


def test_sincos_distinguishes_every_cell_and_is_smooth():
    emb = sincos_2d(64, 8)
    assert emb.shape == (64, 64)
    dist = torch.cdist(emb, emb)
    assert (dist + torch.eye(64) * 1e3).min() > 0.1  # every cell has its own code
    assert dist[0, 1] < dist[0, 7]  # neighbours are closer than far cells


@pytest.mark.parametrize("patches", [256, 1024])  # 224 px and 448 px with patch 14
def test_resampler_output_length_is_fixed_and_keys_use_the_resized_query_grid(patches):
    torch.manual_seed(0)
    r = Resampler(num_queries=64, kv_dim=48, dim=32, num_heads=2)
    out = r(torch.randn(3, patches, 48))
    assert out.shape == (3, 64, 32)
    assert torch.equal(r.key_pos_embed(patches), resize_grid(sincos_2d(32, 8), patches))
    assert torch.equal(r.key_pos_embed(64), r.pos_embed)
