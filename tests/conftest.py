import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from data_prep.synthetic.shards import world_samples, write_shards

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll ``predicate`` (a file appearing, say) until it holds or ``timeout`` seconds pass."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture(scope="session")
def tokenizer_dir() -> Path:
    """The offline tokenizer (cached under .cache/; built once even with parallel workers)."""
    from data_prep.synthetic.corpus import corpus
    from pipeline.tokenizer import ensure_tokenizer

    path, _ = ensure_tokenizer(REPO / ".cache" / "tokenizer", list(corpus()))
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

    from pipeline.config import register_open_clip_configs

    register_open_clip_configs()
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-ViT-14")
    path = tmp_path_factory.mktemp("clip") / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="session")
def tiny_model(tokenizer):
    """The tiny QwenVL at 56 px (4x4 patches) with 16 queries."""
    import copy

    import torch

    from pipeline.config import CONFIG_ROOT, load_config
    from pipeline.model.qwenvl import QwenVL
    from pipeline.schema import ModelConfig

    torch.manual_seed(0)
    cfg = load_config(ModelConfig, CONFIG_ROOT / "model" / "tiny.yaml", ["adapter.num_queries=16"])
    return QwenVL.from_config(cfg, 56, copy.deepcopy(tokenizer))


@pytest.fixture(scope="session")
def tiny_batch(tokenizer):
    """Three captions and a text-only sample of equal-ish length, formatted for ``tiny_model``."""
    import random

    import torch

    from pipeline.data.formats import Formatter, Record
    from pipeline.data.loader import collate

    fmt = Formatter(tokenizer, 16, 512)
    examples = [fmt(Record(f"i{i}", {"lang": "en"}, f"A red circle number {i} on a beige background.", True),
                    "caption", random.Random(i)) for i in range(3)]  # fmt: skip
    examples.append(fmt(Record("t", {"text": "A square has four equal sides and four corners."}, None, False),
                        "text", random.Random(0)))  # fmt: skip
    torch.manual_seed(1)
    return collate(examples, [torch.randn(3, 56, 56) for _ in range(3)], tokenizer.pad_token_id, 56)


@pytest.fixture
def image_server():
    """tests/image_server.py in its own process on a free port; every answer but /slow/ comes at once."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.image_server"], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        port = proc.stdout.readline().strip()
        assert port.isdigit(), f"the image server did not start (exit code {proc.poll()})"
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
