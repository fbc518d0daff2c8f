import open_clip
import pytest
import torch
from safetensors.torch import save_file

from pipeline.config import CONFIG_ROOT, ConfigError, load_config, register_open_clip_configs
from pipeline.model.language import build_llm
from pipeline.model.vision import build_vision_tower
from pipeline.schema import LLMConfig, ModelConfig, VisionConfig


def preset(name: str) -> ModelConfig:
    return load_config(ModelConfig, CONFIG_ROOT / "model" / f"{name}.yaml")


@pytest.mark.parametrize(("size", "patches"), [(224, 256), (448, 1024)])
def test_tiny_vision_tower_gives_patch_tokens(size, patches):
    tower = build_vision_tower(preset("tiny").vision, size)
    pooled, tokens = tower(torch.randn(2, 3, size, size))
    assert tokens.shape == (2, patches, 128) and pooled.shape == (2, 128)
    assert tower.conv1.kernel_size == (14, 14)


def test_tiny_llm_trains_with_the_tokenizer_vocabulary(tokenizer):
    torch.manual_seed(0)
    llm = build_llm(preset("tiny").llm, vocab_size=len(tokenizer))
    assert llm.config.model_type == "qwen2" and llm.config.num_hidden_layers == 2
    assert llm.config.vocab_size >= len(tokenizer) and llm.config.vocab_size % 64 == 0
    ids = torch.tensor([tokenizer("A large red circle on a plain beige background.")["input_ids"]] * 2)
    opt = torch.optim.AdamW(llm.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        loss = llm(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5  # a real training step: it memorises the sentence


def test_llm_loads_from_a_local_folder(tmp_path, tokenizer):
    llm = build_llm(preset("tiny").llm, vocab_size=len(tokenizer))
    llm.save_pretrained(tmp_path)
    loaded = build_llm(LLMConfig(name_or_path=str(tmp_path)))
    ids = torch.tensor([[1, 2, 3, 4]])
    torch.testing.assert_close(llm(input_ids=ids).logits, loaded(input_ids=ids).logits)
    assert list(tmp_path.glob("*.safetensors"))


def test_vision_tower_loads_a_local_safetensors_checkpoint(tmp_path):
    register_open_clip_configs()
    clip = open_clip.create_model("tiny-ViT-14")
    path = tmp_path / "clip.safetensors"
    save_file(clip.state_dict(), path)
    tower = build_vision_tower(VisionConfig(arch="tiny-ViT-14", pretrained=str(path)), 224)
    torch.testing.assert_close(tower.conv1.weight, clip.visual.conv1.weight)
    # loaded at 448: the 16x16 position grid is interpolated to 32x32
    tower = build_vision_tower(VisionConfig(arch="tiny-ViT-14", pretrained=str(path)), 448)
    assert tower.positional_embedding.shape == (1 + 32 * 32, 128)


def test_paper_preset_has_the_paper_sizes():
    cfg = preset("qwenvl-paper")
    with torch.device("meta"):
        llm = build_llm(cfg.llm)
        tower = build_vision_tower(VisionConfig(arch=cfg.vision.arch), 448, device="meta")
    llm_params = sum(p.numel() for p in llm.parameters())
    vit_params = sum(p.numel() for p in tower.parameters())
    assert abs(llm_params / 1e9 - 7.7) < 0.1  # Qwen-7B: 7.7B
    assert abs(vit_params / 1e9 - 1.9) < 0.1  # ViT-bigG/14: 1.9B
    assert cfg.adapter.num_queries == 256


def test_real_presets_fail_clearly_without_weights(tmp_path):
    with pytest.raises(ConfigError, match="model.llm.name_or_path.*Qwen2.5-0.5B"):
        build_llm(preset("small").llm)
    with pytest.raises(ConfigError, match="model.vision.pretrained.*not found"):
        build_vision_tower(
            VisionConfig(arch="ViT-L-14", pretrained=str(tmp_path / "missing.safetensors")), 224
        )
    with pytest.raises(ConfigError, match="model.vision.arch"):
        build_vision_tower(VisionConfig(arch="ViT-Imaginary"), 224)
    with pytest.raises(ConfigError, match="model.llm.arch"):
        build_llm(LLMConfig(arch={"model_type": "no-such-model"}), vocab_size=100)
