import random

import pytest
import torch

from data_prep.clip_score import ClipScorer, encode_text
from data_prep.config import ClipFilter
from data_prep.synthetic import text as T
from data_prep.synthetic.scene import sample_scene
from pipeline.config import ConfigError


@pytest.fixture(scope="module")
def scorer(tiny_clip) -> ClipScorer:
    return ClipScorer(ClipFilter(arch="tiny-ViT-14", pretrained=str(tiny_clip), threshold=0.2))


def test_text_features_skip_padding_exactly(scorer):
    rng = random.Random(0)
    captions = [(T.caption_zh if i % 3 == 0 else T.caption_en)(sample_scene(rng), rng) for i in range(24)]
    tokens = scorer.tokenizer(captions)
    lengths = (tokens != 0).sum(1)
    assert lengths.min() < 64 < lengths.max()  # both sub-batches are used
    with torch.no_grad():
        full = scorer.model.encode_text(tokens, normalize=True)
        trimmed = encode_text(scorer.model, tokens)
    torch.testing.assert_close(trimmed, full, atol=1e-5, rtol=1e-4)


def test_unloadable_weights_name_the_key(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not weights")
    with pytest.raises(ConfigError, match="filters.clip.pretrained"):
        ClipScorer(ClipFilter(arch="tiny-ViT-14", pretrained=str(bad), threshold=0.2))
