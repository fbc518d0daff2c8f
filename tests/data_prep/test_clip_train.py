import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from data_prep.clip_score import ClipScorer
from data_prep.clip_train import (
    ScorerConfig,
    best_threshold,
    error_analysis,
    main,
    noise_world,
    scored_pairs,
    train,
)
from data_prep.config import ClipFilter, Filters, PrepSettings
from pipeline.config import ConfigError
from pipeline.data.shard_format import open_image


def test_training_is_reproducible_and_gives_a_loadable_scorer_calibrated_on_what_prep_scores(
    tmp_path, capsys
):
    cfg = ScorerConfig(steps=3, pairs=96, batch_size=32, heldout_clean=40, heldout_mismatched=20, warmup=1)
    first, second = train(cfg, tmp_path / "a"), train(cfg, tmp_path / "b")
    a, b = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    info = json.loads((first / "scorer.json").read_text())
    assert info["image_size"] == 112 and info["train"]["steps"] == 3
    scorer = ClipScorer(ClipFilter(arch=cfg.arch, pretrained="synthetic"), first)
    assert scorer.threshold == info["threshold"]
    assert scorer.model.visual.image_size == (112, 112)
    # the stored calibration is what the prep's scorer gives on held-out pairs written and fitted as prep
    # writes and fits them (a calibration on other pixels moves the threshold)
    bad_images, bad_captions = scored_pairs(noise_world(20, 1.0))
    assert max(max(open_image(b).size) for b in bad_images) <= PrepSettings.max_side
    clean = scorer.score(*scored_pairs(noise_world(40, 0.0)))
    expected = best_threshold(clean, scorer.score(bad_images, bad_captions), cfg.prevalence)
    assert info["threshold"] == expected.pop("threshold") and info["calibration"] == expected

    errors = error_analysis(first, clean=30, mismatched=20, top=2)
    assert errors["stored_threshold"]["threshold"] == info["threshold"]
    assert (
        0 <= errors["stored_threshold"]["clean_fpr"] <= 1 and 0 <= errors["stored_threshold"]["recall"] <= 1
    )
    lowest = [row["score"] for row in errors["lowest_clean"]]
    assert len(lowest) == 2 and lowest == sorted(lowest) and lowest[0] <= errors["mean_score"]["clean_en"]
    worst = errors["highest_mismatched"][0]
    assert worst["true"] != worst["given"] and worst["score"] >= errors["mean_score"]["mismatched"]
    assert errors["mismatches_naming_the_background"]["of_english"] <= 20
    capsys.readouterr()
    assert main(["--errors", str(first), "--clean", "10", "--mismatched", "10", "--top", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["clean"] == 10
    assert main(["stepz=3"]) == 2 and "stepz" in capsys.readouterr().err  # settings go through load_config


def test_patch_labels_give_each_patch_the_object_over_it():
    from data_prep.clip_train import patch_labels
    from data_prep.synthetic.scene import COLOURS, SHAPES, Obj, Scene

    # 200 x 100 px squashed to a 4 x 4 grid: patch centres at x = 25, 75, 125, 175 and y = 12.5, 37.5, ...
    left = Obj("circle", "red", "large", (0, 0, 100, 100))
    over = Obj("star", "blue", "small", (50, 25, 100, 50))  # drawn later: on top of the circle
    labels = patch_labels(Scene(200, 100, "beige", "plain", [left, over]), 4)
    circle, star = list(SHAPES).index("circle") + 1, list(SHAPES).index("star") + 1
    red, blue = list(COLOURS).index("red") + 1, list(COLOURS).index("blue") + 1
    assert labels.shape == (6, 4, 4) and (labels[:, :, 2:] == 0).all()  # the right half is background
    assert labels[0, 1, 1] == star and labels[1, 1, 1] == blue
    assert (labels[0, :, :2].sum() == 7 * circle + star) and labels[1, 0, 0] == red
    # every patch an object covers holds that object's whole box, in Qwen-VL's 0-1000 coordinates
    assert labels[2:, 1, 1].tolist() == [250, 250, 500, 500] and labels[2:, 3, 0].tolist() == [0, 0, 500, 999]
    # an object between patch centres still marks the patch of its own centre
    tiny = Obj("star", "blue", "small", (140, 60, 146, 66))
    labels = patch_labels(Scene(200, 100, "beige", "plain", [tiny]), 4)
    assert labels[0].sum() == star and labels[0, 2, 2] == star


def test_the_dense_loss_regresses_boxes_on_object_patches_only():
    from data_prep.clip_train import dense_loss
    from data_prep.synthetic.scene import COLOURS, SHAPES

    labels = torch.zeros(1, 6, 2, 2, dtype=torch.long)
    labels[0, :, 0, 0] = torch.tensor([1, 1, 100, 200, 300, 400])  # one object patch; the rest background
    classes = len(SHAPES) + len(COLOURS) + 1
    logits = torch.zeros(1, 4, classes + 4, requires_grad=True)
    plain = dense_loss(logits, labels, len(SHAPES))
    with_box = dense_loss(logits, labels, len(SHAPES), box=2.0)
    # sigmoid(0) = 0.5 against (0.1, 0.2, 0.3, 0.4): a mean L1 of 0.25, weighed by 2
    assert with_box.item() == pytest.approx(plain.item() + 0.5)
    with_box.backward()
    assert logits.grad[0, 0, classes:].abs().min() > 0 and (logits.grad[0, 1:, classes:] == 0).all()


def test_a_conv_stem_scorer_with_the_dense_loss_trains_loads_and_feeds_the_vlm_tower(tmp_path):
    from pipeline.model.stem import ConvStem
    from pipeline.model.vision import build_vision_tower
    from pipeline.schema import VisionConfig

    cfg = ScorerConfig(steps=3, pairs=64, batch_size=16, heldout_clean=20, heldout_mismatched=10, warmup=1,
                       stem="conv", stem_channels=(4, 8), dense=1.0, dense_box=2.0)  # fmt: skip
    out = train(cfg, tmp_path / "s")
    info = json.loads((out / "scorer.json").read_text())
    assert info["stem"] == "conv" and info["stem_channels"] == [4, 8] and info["stem_grid_layers"] == 2
    weights = load_file(out / "model.safetensors")
    assert "visual.conv1.0.weight" in weights and not any(k.startswith("dense_head") for k in weights)
    scorer = ClipScorer(ClipFilter(arch=cfg.arch, pretrained="synthetic"), out)
    assert isinstance(scorer.model.visual.conv1, ConvStem)
    assert torch.equal(scorer.model.visual.conv1[0].weight, weights["visual.conv1.0.weight"])
    tower = build_vision_tower(VisionConfig(cfg.arch, str(out / info["weights"]), "conv", [4, 8], 2), 224)
    assert torch.equal(tower.conv1[-1].weight, weights[f"visual.conv1.{len(tower.conv1) - 1}.weight"])
    assert cfg.name() != ScorerConfig(steps=3, pairs=64, batch_size=16, heldout_clean=20, heldout_mismatched=10,
                                      warmup=1).name()  # fmt: skip
    assert cfg.name() != dataclasses.replace(cfg, dense_box=0.0).name()


def test_a_box_regression_without_the_dense_loss_is_a_config_error():
    for clip in ({"dense_box": 1.0}, {"dense": -1.0}, {"dense": 1.0, "dense_box": -1.0}):
        with pytest.raises(ConfigError, match="filters.clip.dense_box"):
            PrepSettings(filters=Filters(clip=ClipFilter(**clip)))
    PrepSettings(filters=Filters(clip=ClipFilter(dense=1.0, dense_box=5.0)))
