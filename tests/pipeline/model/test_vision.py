"""The vision tower's convolutional stem (model.vision.stem=conv) on open_clip's ViT."""

import open_clip
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.config import ConfigError, register_open_clip_configs
from pipeline.metrics.flops import FlopModel
from pipeline.model.stem import ConvStem
from pipeline.model.vision import build_vision_tower
from pipeline.schema import VisionConfig


def test_a_conv_stem_gives_the_patchify_s_token_grid():
    patch = build_vision_tower(VisionConfig(), 112)
    conv = build_vision_tower(VisionConfig(stem="conv", stem_channels=[8, 16], stem_grid_layers=0), 112)
    assert isinstance(conv.conv1, ConvStem) and not isinstance(patch.conv1, ConvStem)
    images = torch.randn(2, 3, 112, 112)
    pooled, tokens = conv(images)
    assert tokens.shape == patch(images)[1].shape == (2, 64, 128)  # 8 x 8 patches of 14 px, width 128
    # a token sees its patch and, through the 3x3 convolutions, a few pixels of its neighbours: changing the
    # first patch changes the tokens of the top-left 2 x 2 patches only
    changed = images.clone()
    changed[:, :, :14, :14] += 1.0
    diff = (conv.conv1(changed) - conv.conv1(images)).abs().sum(dim=(0, 1))
    assert diff[0, 0] > 0 and diff[2:].sum() == 0 and diff[:, 2:].sum() == 0
    # each 3x3 convolution over the token grid lets a token see one patch further
    mixed = ConvStem(128, 14, [8, 16], grid_layers=2)
    diff = (mixed(changed) - mixed(images)).abs().sum(dim=(0, 1))
    assert diff[3, 3] > 0 and diff[4:].sum() == 0 and diff[:, 4:].sum() == 0


def test_the_stem_s_flops_are_counted_at_its_own_resolution():
    stem = ConvStem(128, 14, [8, 16], grid_layers=2)
    with FlopCounterMode(display=False) as counter:
        stem(torch.randn(1, 3, 112, 112))
    assert stem.forward_flops((112, 112)) == counter.get_total_flops()


def test_the_flop_model_counts_the_stem_once_per_image(tiny_model):
    import copy

    model = copy.deepcopy(tiny_model)
    patch = FlopModel.of(model, ["vision"])
    model.vision.conv1 = ConvStem(128, 14, [8, 16])
    conv = FlopModel.of(model, ["vision"])
    assert patch.stem_flops == 0 and conv.stem_flops == model.vision.conv1.forward_flops((56, 56))
    assert conv.vit_params == patch.vit_params - 3 * 14 * 14 * 128  # the patchify's matrix left the count
    lengths = torch.tensor([10])
    grown = conv.batch(1, lengths) - patch.batch(1, lengths)
    # the patchify was counted per token (class token too), the stem once per image; 3x: the tower learns
    assert grown == 3 * (conv.stem_flops - 2 * 3 * 14 * 14 * 128 * patch.patches)


def test_a_conv_stem_loads_a_checkpoint_of_its_own_kind_and_refuses_a_patchify_one(tmp_path):
    register_open_clip_configs()
    cfg = VisionConfig(stem="conv", stem_channels=[8, 16], stem_grid_layers=1)
    clip = open_clip.create_model(cfg.arch, force_image_size=112)
    clip.visual.conv1 = ConvStem(128, 14, [8, 16], grid_layers=1)
    torch.nn.init.constant_(clip.visual.conv1[0].weight, 0.5)
    torch.save(clip.state_dict(), tmp_path / "conv.pt")
    torch.save(open_clip.create_model(cfg.arch, force_image_size=112).state_dict(), tmp_path / "patch.pt")
    loaded = build_vision_tower(VisionConfig(**{**vars(cfg), "pretrained": str(tmp_path / "conv.pt")}), 112)
    assert torch.all(loaded.conv1[0].weight == 0.5)
    with pytest.raises(ConfigError, match="model.vision.pretrained.*stem=conv"):
        build_vision_tower(VisionConfig(**{**vars(cfg), "pretrained": str(tmp_path / "patch.pt")}), 112)


def test_bad_stems_are_refused():
    with pytest.raises(ConfigError, match="model.vision.stem"):
        VisionConfig(stem="resnet")
    with pytest.raises(ConfigError, match="model.vision.stem_channels"):
        VisionConfig(stem="conv", stem_channels=[])
    with pytest.raises(ValueError, match="patch size 15 is odd"):
        ConvStem(8, 15, [4])
