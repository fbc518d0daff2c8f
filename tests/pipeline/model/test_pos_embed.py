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


def test_sincos_follows_qwen_vl_formula():
    """Qwen-VL's get_2d_sincos_pos_embed: meshgrid(w, h), so the first half of the channels encodes the
    column; each half is sin then cos of position * 10000^(-k / (dim / 4))."""
    dim, side = 16, 5
    omega = 10000.0 ** (-torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    emb = sincos_2d(dim, side)
    for row in range(side):
        for col in range(side):
            x, y = col * omega, row * omega
            expected = torch.cat([x.sin(), x.cos(), y.sin(), y.cos()]).float()
            assert torch.allclose(emb[row * side + col], expected, atol=1e-6), (row, col)


def test_resampler_follows_qwen_vl_conventions():
    torch.manual_seed(0)
    r = Resampler(num_queries=64, kv_dim=512, dim=256, num_heads=4)
    assert all(m.eps == 1e-6 for m in r.modules() if isinstance(m, torch.nn.LayerNorm))
    for weight in (r.kv_proj.weight, r.attn.out_proj.weight, r.query):
        assert abs(weight.std().item() - 0.02) < 0.002, weight.shape
    assert not r.attn.out_proj.bias.any() and not r.attn.in_proj_bias.any()


def test_keys_carry_their_grid_position():
    """Attention alone cannot tell patches apart by place; the keys' position embedding must."""
    torch.manual_seed(0)
    r = Resampler(num_queries=16, kv_dim=24, dim=32, num_heads=2)
    patches = torch.randn(1, 64, 24)
    shuffled = patches[:, torch.randperm(64)]
    with torch.no_grad():
        assert not torch.allclose(r(patches), r(shuffled), atol=1e-4)
        r.key_pos_embed = lambda n: torch.zeros(n, 32)  # what the output would be without it
        assert torch.allclose(r(patches), r(shuffled), atol=1e-5)
