"""dev/LOG.md: do box position, shape and colour survive the resampler? Linear probes of an export's image features.

    PYTHONPATH=. python dev/probe_boxes.py [EXPORT_OR_SCORER_DIR] [TRAIN_SHARDS_DIR] [TEST_SHARDS_DIR]
    # defaults: runs/demo/stage3/final data/synthetic/shards data/heldout/shards

Images with one referring object: ridge regression from (a) the ViT's patch tokens, (b) the resampler's
outputs (what the LLM sees), each flattened, (c) the ViT's pooled embedding and patch mean (position-free),
to the object's box centre (R^2 on the held-out images) and to its shape and colour as one-hot targets
(held-out accuracy of the largest output; chance is about one over the classes), with the ridge strength
picked on a split of the training images. Also (d) the resampler outputs' mean over queries (position-free
unless the queries carry it).
"""

import glob
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

from pipeline.data.shard_format import open_image, parse, read_shards
from pipeline.model.qwenvl import QwenVL
from pipeline.model.vision import build_vision_tower, image_transform
from pipeline.schema import VisionConfig


def samples(folder: str, limit: int):
    for raw in read_shards(sorted(glob.glob(f"{folder}/*.tar"))):
        s = parse(raw)
        refs = (s.meta.get("tasks") or {}).get("ref") or []
        if s.image is not None and len(refs) == 1:
            x0, y0, x1, y1 = refs[0]["box"]
            # the grounded caption names every object whole ("<ref>A small red circle</ref>..."); a referring
            # expression may name the shape alone ("the circle": the only one in the image)
            ref = s.meta["tasks"]["grounded_caption"].split("<ref>")[1].split("</ref>")[0]
            *_, colour, shape = ref.split()
            yield (
                open_image(s.image),
                {"centre": ((x0 + x1) / 2000, (y0 + y1) / 2000), "shape": shape, "colour": colour},
            )
            limit -= 1
            if limit == 0:
                return


@torch.no_grad()
def features(model, transform, folder: str, limit: int) -> tuple[dict, list[dict]]:
    feats, targets = {"vit": [], "vit_pooled": [], "vit_mean": [], "resampler": [], "resampler_mean": []}, []
    batch, truths = [], []

    def flush():
        pixels = torch.stack(batch)
        pooled, patches = model.vision(pixels)
        out = model.adapter(patches)
        feats["vit"].append(patches.flatten(1).numpy())
        feats["vit_pooled"].append(pooled.flatten(1).numpy())
        feats["vit_mean"].append(patches.mean(1).numpy())
        feats["resampler"].append(out.flatten(1).numpy())
        feats["resampler_mean"].append(out.mean(1).numpy())
        targets.extend(truths)
        batch.clear()
        truths.clear()

    for image, truth in samples(folder, limit):
        batch.append(transform(image))
        truths.append(truth)
        if len(batch) == 64:
            flush()
    if batch:
        flush()
    return {k: np.concatenate(v) for k, v in feats.items()}, targets


def ridge(x_train, y_train, x_test, y_test, score) -> tuple[float, float]:
    """The held-out ``score(prediction, truth)`` of a ridge fit, its strength picked on a split of the train."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    y_mean = y_train.mean(0)
    cut = int(0.8 * len(x_train))

    def fit(x, y, alpha):  # dual form: n x n, cheap for wide features
        k = x @ x.T
        return x.T @ np.linalg.solve(k + alpha * np.eye(len(x)), y - y_mean)

    def held_out(w, x, y):
        return score(x @ w + y_mean, y)

    alphas = [10.0**k for k in range(-1, 6)]
    best = max(
        alphas, key=lambda a: held_out(fit(x_train[:cut], y_train[:cut], a), x_train[cut:], y_train[cut:])
    )
    return held_out(fit(x_train, y_train, best), x_test, y_test), best


def r2(pred, y) -> float:
    return 1 - ((pred - y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum()


def accuracy(pred, y) -> float:
    return float((pred.argmax(1) == y.argmax(1)).mean())


def target(truths: list[dict], name: str, classes: list[str]) -> np.ndarray:
    if name == "centre":
        return np.array([t[name] for t in truths])
    return np.eye(len(classes))[[classes.index(t[name]) for t in truths]]


def load(folder: str):
    """(model with .vision and .adapter, transform) from an export, or from a CLIP scorer folder (its ViT alone;
    the "resampler" rows then repeat the ViT's)."""
    if (Path(folder) / "scorer.json").is_file():
        info = json.loads((Path(folder) / "scorer.json").read_text())
        vision = VisionConfig(info["arch"], str(Path(folder) / info["weights"]), info.get("stem", "patch"),
                              info.get("stem_channels", [16, 32]), info.get("stem_grid_layers", 0))  # fmt: skip
        tower = build_vision_tower(vision, info["image_size"]).eval()
        return SimpleNamespace(vision=tower, adapter=lambda x: x), image_transform(vision, info["image_size"])
    model, _, cfg = QwenVL.from_pretrained(folder)
    return model.eval(), image_transform(cfg.model.vision, cfg.data.image_size)


def main(export="runs/demo/stage3/final", train="data/synthetic/shards", test="data/heldout/shards") -> None:
    torch.set_num_threads(2)
    model, transform = load(export)
    train_x, train_y = features(model, transform, train, 2000)
    test_x, test_y = features(model, transform, test, 1000)
    print(f"{len(train_y)} training images, {len(test_y)} held-out, one referring object each")
    for label in ("centre", "shape", "colour"):
        classes = sorted({t.get(label) for t in train_y + test_y}) if label != "centre" else []
        metric = "R^2" if label == "centre" else f"accuracy ({len(classes)} classes)"
        ys = target(train_y, label, classes), target(test_y, label, classes)
        for name in train_x:
            value, alpha = ridge(
                train_x[name], ys[0], test_x[name], ys[1], r2 if label == "centre" else accuracy
            )
            print(
                f"{label:7s} {name:15s} {train_x[name].shape[1]:6d} dims  held-out {metric} {value:.3f} (ridge {alpha:g})"
            )


if __name__ == "__main__":
    Image.MAX_IMAGE_PIXELS = None
    main(*sys.argv[1:])
