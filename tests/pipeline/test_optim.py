import copy

import pytest

from pipeline.config import CONFIG_ROOT, ConfigError, load_config
from pipeline.model.qwenvl import QwenVL
from pipeline.optim import freeze, lr_at, param_groups
from pipeline.schema import ModelConfig, OptimizerConfig


@pytest.fixture(scope="module")
def model(tokenizer):
    cfg = load_config(ModelConfig, CONFIG_ROOT / "model" / "tiny.yaml", ["adapter.num_queries=16"])
    return QwenVL.from_config(cfg, 56, copy.deepcopy(tokenizer))


def test_frozen_groups_get_no_optimizer_group_and_are_reported(model):
    reports = freeze(model, ["vision", "adapter"])
    assert [(r.name, r.trainable) for r in reports] == [("vision", True), ("adapter", True), ("llm", False)]
    assert reports[2].params == sum(p.numel() for p in model.llm.parameters())
    groups = param_groups(model, OptimizerConfig())
    grouped = {id(p) for g in groups for p in g["params"]}
    assert grouped == {id(p) for p in model.parameters() if p.requires_grad}
    assert not grouped & {id(p) for p in model.llm.parameters()}


def test_no_decay_on_norms_biases_position_embeddings_and_queries(model):
    freeze(model, ["vision", "adapter", "llm"])
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {
        names[id(p)] for g in param_groups(model, OptimizerConfig()) if g["weight_decay"] for p in g["params"]
    }
    for name in ("adapter.query", "vision.positional_embedding", "vision.class_embedding", "vision.ln_pre.weight",
                 "adapter.ln_q.bias", "llm.model.norm.weight"):  # fmt: skip
        assert name not in decay
    assert "vision.transformer.resblocks.0.mlp.c_fc.weight" in decay and "adapter.proj" in decay
    assert "llm.model.layers.0.self_attn.q_proj.weight" in decay


def test_vit_layer_decay_scales_each_block(model):
    freeze(model, ["vision", "adapter"])
    groups = param_groups(model, OptimizerConfig(lr=1e-3, vit_layer_decay=0.5))
    scale = {
        n: g["lr_scale"]
        for g in groups
        for n, p in model.named_parameters()
        if any(p is q for q in g["params"])
    }
    blocks = len(model.vision.transformer.resblocks)  # 4
    assert scale["vision.conv1.weight"] == 0.5 ** (blocks + 1)
    assert scale["vision.transformer.resblocks.0.attn.in_proj_weight"] == 0.5**blocks
    assert scale[f"vision.transformer.resblocks.{blocks - 1}.attn.in_proj_weight"] == 0.5
    assert scale["vision.ln_post.weight"] == 1.0 and scale["adapter.query"] == 1.0
    assert all(g["lr"] == 1e-3 * g["lr_scale"] for g in groups)


def test_lr_scale_sets_a_group_apart_on_top_of_layer_decay(model):
    freeze(model, ["vision", "adapter", "llm"])
    cfg = OptimizerConfig(lr=1e-3, vit_layer_decay=0.5, lr_scale={"vision": 4.0, "adapter": 0.5})
    lrs = {g["name"]: g["lr"] for g in param_groups(model, cfg)}
    blocks = len(model.vision.transformer.resblocks)
    assert lrs[f"vision.layer{blocks + 1:02d}.no_decay"] == 4e-3 and lrs["vision.layer00"] == 4e-3 * 0.5 ** (
        blocks + 1
    )
    assert lrs["adapter"] == 5e-4 and lrs["llm"] == 1e-3


@pytest.mark.parametrize("scale", [{"vit": 2.0}, {"vision": 0.0}])
def test_a_bad_lr_scale_names_its_key(scale):
    with pytest.raises(ConfigError, match="train.optimizer.lr_scale"):
        OptimizerConfig(lr_scale=scale)


def test_warmup_then_cosine_to_min_lr():
    cfg = OptimizerConfig(lr=1e-3, min_lr=1e-5, warmup_steps=10)
    assert lr_at(1, cfg, 100) == pytest.approx(1e-4)
    assert lr_at(10, cfg, 100) == pytest.approx(1e-3)
    assert lr_at(55, cfg, 100) == pytest.approx((1e-3 + 1e-5) / 2)
    assert lr_at(100, cfg, 100) == pytest.approx(1e-5)
    after = [lr_at(s, cfg, 100) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(after, after[1:], strict=False))
    assert lr_at(50, OptimizerConfig(lr=1e-3, warmup_steps=10, schedule="constant"), 100) == 1e-3
