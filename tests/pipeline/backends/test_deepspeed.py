import json

import pytest

from pipeline.backends.deepspeed import deepspeed_config
from pipeline.config import CONFIG_ROOT, ConfigError, load_config
from pipeline.schema import StageConfig


def stage(name: str, *overrides: str) -> StageConfig:
    return load_config(StageConfig, CONFIG_ROOT / f"{name}.yaml", list(overrides))


def test_auto_values_come_from_train():
    cfg = stage("stage1", "train.global_batch_size=32", "train.micro_batch_size=4", "deepspeed.zero_stage=3")
    ds = deepspeed_config(cfg, world_size=2, hidden_size=64, dtype="bf16")
    assert (
        ds["train_batch_size"],
        ds["train_micro_batch_size_per_gpu"],
        ds["gradient_accumulation_steps"],
    ) == (32, 4, 4)
    assert ds["gradient_clipping"] == 1.0 and ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["zero_optimization"]["reduce_bucket_size"] == 2**24  # the floor, not 64 * 64
    assert deepspeed_config(cfg, 2, 8192, "bf16")["zero_optimization"]["reduce_bucket_size"] == 8192**2
    assert "auto" not in json.dumps(ds)


def test_batch_that_does_not_split_over_the_ranks_names_the_key():
    with pytest.raises(ConfigError, match="train.global_batch_size.*3 ranks"):
        deepspeed_config(
            stage("stage1", "train.global_batch_size=16", "train.micro_batch_size=4"), 3, 64, "fp32"
        )


def test_an_optimizer_in_the_deepspeed_json_is_refused(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"optimizer": {"type": "Adam"}, "zero_optimization": {"stage": 2}}))
    with pytest.raises(ConfigError, match="train.optimizer"):
        deepspeed_config(stage("stage1", f"deepspeed.config={path}"), 1, 64, "fp32")
