import json

import torch
from safetensors.torch import load_file

from data_prep.clip_score import ClipScorer
from data_prep.clip_train import TrainConfig, train
from data_prep.config import ClipFilter


def test_training_is_reproducible_and_gives_a_loadable_scorer(tmp_path):
    cfg = TrainConfig(steps=3, pairs=96, batch_size=32, heldout=32, warmup=1)
    first, second = train(cfg, tmp_path / "a"), train(cfg, tmp_path / "b")
    a, b = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    info = json.loads((first / "scorer.json").read_text())
    assert info["image_size"] == 112 and info["train"]["steps"] == 3
    scorer = ClipScorer(ClipFilter(arch=cfg.arch, pretrained="synthetic"), first)
    assert scorer.threshold == info["threshold"]
    assert scorer.model.visual.image_size == (112, 112)
