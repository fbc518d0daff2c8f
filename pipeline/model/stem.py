"""A convolutional stem for open_clip's ViT: the one class that both the prep's synthetic CLIP scorer and the
VLM's vision tower build (the demo's tower starts from the scorer), so it depends on torch alone."""

from __future__ import annotations

from torch import nn

STEMS = ("patch", "conv")


def install_stem(visual: nn.Module, stem: str, channels: list[int], grid_layers: int = 0) -> nn.Module:
    """Put a ``ConvStem`` in the place of open_clip ViT ``visual``'s patchify (``conv1``) for ``stem: conv``;
    ``patch`` keeps the patchify. Returns ``visual``."""
    if stem not in STEMS:
        raise ValueError(f"stem {stem!r} is not one of {STEMS}")
    if stem == "conv":
        device = visual.conv1.weight.device
        width = visual.transformer.width
        visual.conv1 = ConvStem(width, visual.patch_size[0], channels, grid_layers).to(device)
    return visual


class ConvStem(nn.Sequential):
    """Early convolutions in the place of a ViT's patchify ("Early Convolutions Help Transformers See Better",
    Xiao et al. 2021): 3x3 convolutions with GELU, the first with stride 2, then one convolution of half the
    patch size that folds the rest into the ViT's width, then ``grid_layers`` 3x3 convolutions over the token
    grid (each token then sees its neighbours' patches: a whole small object). The same [B, width, grid, grid]
    as the patchify, so the position embedding, the blocks and the resolution change stay open_clip's."""

    def __init__(self, width: int, patch_size: int, channels: list[int], grid_layers: int = 0):
        if patch_size % 2:
            raise ValueError(f"a conv stem halves the image first: patch size {patch_size} is odd")
        layers: list[nn.Module] = []
        before = 3
        for i, after in enumerate(channels):
            layers += [nn.Conv2d(before, after, 3, stride=2 if i == 0 else 1, padding=1), nn.GELU()]
            before = after
        layers.append(nn.Conv2d(before, width, patch_size // 2, stride=patch_size // 2))
        for _ in range(grid_layers):
            layers += [nn.GELU(), nn.Conv2d(width, width, 3, padding=1)]
        super().__init__(*layers)

    def forward_flops(self, image_size: tuple[int, int]) -> int:
        """Forward FLOPs per image (2 per multiply-add): each convolution at its output positions."""
        flops, (height, width) = 0, image_size
        for layer in self:
            if isinstance(layer, nn.Conv2d):
                height = (height + 2 * layer.padding[0] - layer.kernel_size[0]) // layer.stride[0] + 1
                width = (width + 2 * layer.padding[1] - layer.kernel_size[1]) // layer.stride[1] + 1
                flops += 2 * layer.weight.numel() * height * width
        return flops
