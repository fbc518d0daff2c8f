import os
from pathlib import Path

import pytest

from tests.shards import world_samples, write_shards

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


@pytest.fixture(scope="session")
def tokenizer_dir() -> Path:
    """The offline tokenizer (cached under .cache/; built once even with parallel workers)."""
    from data_prep.tokenizer import ensure_tokenizer

    path, _ = ensure_tokenizer(REPO / ".cache" / "tokenizer")
    return path


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="session")
def world_shards(tmp_path_factory) -> str:
    """200 image-text pairs and 20 text-only samples of the synthetic world in 9 shards (the last short)."""
    return write_shards(world_samples(200, 20), tmp_path_factory.mktemp("shards"), per_shard=25)


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    """A randomly initialised tiny-ViT-14 open_clip checkpoint (safetensors): scores without meaning."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from pipeline.config import CONFIG_ROOT

    open_clip.add_model_config(CONFIG_ROOT / "model" / "open_clip")
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-ViT-14")
    path = tmp_path_factory.mktemp("clip") / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path
