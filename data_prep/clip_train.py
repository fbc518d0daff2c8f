"""The synthetic preset's CLIP scorer: a tiny open_clip model trained on clean synthetic pairs, cached.

    python -m data_prep.clip_train [--out DIR] [key=value ...]       e.g. steps=700 hard_negatives=true
    python -m data_prep.clip_train --errors SCORER_DIR [--top 5] [--clean 600] [--mismatched 600]

Trained with open_clip's model, tokenizer and ``ClipLoss`` in a short loop over in-memory tensors (dev/LOG.md
says why not ``open_clip_train.main``: on this data it learned slower). Batches are drawn from all pairs:
batches of one background colour (``grouped``) hide the background from the loss, and mismatches with another
background then score like clean pairs (dev/LOG.md). Half the training captions are Chinese, which needs about
3 times the tokens of English. The threshold is calibrated on held-out pairs at the world's mismatch rate, each
image written, fitted and scored as a prep run does it, and stored with the weights.
Everything is seeded and the step count is fixed, so the same settings give the same scorer.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from functools import partial
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from data_prep.config import ClipFilter
from data_prep.synthetic.world import WorldConfig

log = logging.getLogger("data_prep")
CACHE = Path(os.environ.get("QWENVL_CACHE", Path(__file__).resolve().parents[1] / ".cache")) / "clip"
VERSION = "clip-scorer-v4"  # bump when training changes
THREADS = 2  # torch threads while training and calibrating: the float sums, so the scorer, do not follow the machine


@dataclass
class ScorerConfig:
    """How the synthetic scorer is trained (its architecture and step count come from the prep's
    ``filters.clip``; the rest are this trainer's settings)."""

    arch: str = ClipFilter.arch
    steps: int = ClipFilter.train_steps
    pairs: int = 15000
    zh_rate: float = 0.5  # Chinese share of the training pairs (the held-out split keeps the world's)
    image_size: int = 112
    grouped: float = 0.0  # share of batches drawn from one background colour (the rest from all pairs)
    hard_negatives: bool = False  # per image, its caption with shapes or colours swapped (dev/LOG.md)
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup: int = 20
    world_seed: int = 12345  # training scenes; the prep's world uses seed 0 by default
    # the tower as the VLM's stand-in for a pretrained one (the demo's ViT starts from this scorer): a conv stem
    # in place of the patchify (pipeline.model.stem), and ``dense`` > 0 adds a per-patch loss, each patch token
    # classifying the shape and the colour of the object over the patch (or background), weighted by it
    stem: str = "patch"
    stem_channels: tuple[int, ...] = (16, 32)
    stem_grid_layers: int = 2
    dense: float = 0.0
    dense_box: float = 0.0  # weight of the per-patch box regression inside the dense loss (``dense_loss``)
    # calibration pairs: precision >= 0.95 at 5% mismatches needs a clean FPR under about 0.25%, which 600 clean
    # pairs (1 pair = 0.17%) cannot measure (dev/LOG.md)
    heldout_clean: int = 4000
    heldout_mismatched: int = 1000
    prevalence: float = 0.05  # the mismatch rate the threshold is tuned for (the world's default)

    def name(self) -> str:
        settings = asdict(self)
        if self.stem == "patch" and self.dense == 0:  # trains as before these options: keeps its cached copy
            for key in ("stem", "stem_channels", "stem_grid_layers", "dense"):
                settings.pop(key)
        if self.dense_box == 0:  # likewise for scorers trained before the box regression
            settings.pop("dense_box")
        digest = hashlib.sha256(json.dumps([VERSION, settings], sort_keys=True).encode()).hexdigest()
        return f"{self.arch}-{self.steps}steps-{digest[:10]}"


def ensure_scorer(clip: ClipFilter) -> Path:
    """The cached scorer folder for these settings, trained first if missing."""
    cfg = ScorerConfig(
        arch=clip.arch, steps=clip.train_steps, stem=clip.stem, dense=clip.dense, dense_box=clip.dense_box
    )
    out = CACHE / cfg.name()
    if (out / "scorer.json").is_file():
        return out
    log.info("training the synthetic CLIP scorer (%d steps, cached in %s)", cfg.steps, out)
    return train(cfg, out)


def _pair(args: tuple[int, int, int, float, int]) -> tuple[np.ndarray, str, str, str, np.ndarray]:
    """A clean training pair: the rendered image at the scorer's size, its caption, background, swapped
    caption, and its patches' labels on a ``grid`` x ``grid`` grid (``patch_labels``)."""
    from data_prep.synthetic.render import render
    from data_prep.synthetic.world import plan_sample

    index, seed, size, zh_rate, grid = args
    plan = plan_sample(noise_world(index + 1, 0.0, seed, "train", zh_rate), index)
    image = np.asarray(render(plan.scene).resize((size, size), 3))
    caption, swapped = plan.caption, swapped_caption(plan, random.Random(index))
    return image, caption, plan.scene.background, swapped, patch_labels(plan.scene, grid)


def patch_labels(scene, grid: int) -> np.ndarray:
    """[6, grid, grid] int64: for each patch of the image squashed to a square, the shape and the colour of
    the topmost object whose box holds the patch's centre (an object smaller than that gets the patch of its
    own centre), as 1 + its index in ``SHAPES``/``COLOURS``, then that object's box as Qwen-VL writes it
    (x1, y1, x2, y2 in [0, 1000)); all 0 where only background is. The dense objective's targets: what each
    object is, and where the whole of it is, on every patch it covers."""
    from data_prep.synthetic.scene import COLOURS, SHAPES, normalise_box

    shapes, colours = list(SHAPES), list(COLOURS)
    labels = np.zeros((6, grid, grid), dtype=np.int64)
    centres = (np.arange(grid) + 0.5) / grid
    xs, ys = centres * scene.width, centres * scene.height
    for obj in scene.objects:  # drawn in order: a later object covers an earlier one
        x1, y1, x2, y2 = obj.box
        inside = ((ys >= y1) & (ys < y2))[:, None] & ((xs >= x1) & (xs < x2))[None, :]
        if not inside.any():
            cx, cy = obj.centre
            inside[
                min(int(cy / scene.height * grid), grid - 1), min(int(cx / scene.width * grid), grid - 1)
            ] = True
        labels[0][inside] = shapes.index(obj.shape) + 1
        labels[1][inside] = colours.index(obj.colour) + 1
        labels[2:, inside] = np.array(normalise_box(obj.box, scene.width, scene.height))[:, None]
    return labels


def swapped_caption(plan, rng: random.Random, kind: str | None = None) -> str:
    """The caption of the same scene with every object's shape (or every colour) replaced: it differs from
    the true caption only in what binds colours to shapes, which in-batch negatives rarely test.
    ``kind``: "shape" or "colour"; None draws one of them."""
    from data_prep.synthetic import text as T
    from data_prep.synthetic.scene import COLOURS, LOW_CONTRAST, SHAPES

    scene = plan.scene
    swap_shape = rng.random() < 0.5 if kind is None else kind == "shape"
    objects = []
    for o in scene.objects:
        if swap_shape:
            o = dataclasses.replace(o, shape=rng.choice([s for s in SHAPES if s != o.shape]))
        else:
            colours = [c for c in COLOURS if c != o.colour and (c, scene.background) not in LOW_CONTRAST]
            o = dataclasses.replace(o, colour=rng.choice(colours))
        objects.append(o)
    other = dataclasses.replace(scene, objects=objects)
    caption = T.caption_zh if plan.lang == "zh" else T.caption_en
    return caption(other, rng)


def training_pairs(count: int, seed: int, size: int, zh_rate: float, grid: int) -> list:
    """``count`` clean training pairs of world ``seed`` (``_pair`` each), made in 2 processes."""
    return parallel(_pair, [(i, seed, size, zh_rate, grid) for i in range(count)])


def parallel(fn, items: list) -> list:
    """``fn`` over ``items`` in 2 processes. The pool is closed and joined, not terminated: a SIGTERM makes
    the signal handlers that Ray leaves in forked workers print a crash report into the prep's log."""
    pool = Pool(min(2, os.cpu_count() or 1))
    try:
        return pool.map(fn, items, chunksize=64)
    finally:
        pool.close()
        pool.join()


def train(cfg: ScorerConfig, out: Path) -> Path:
    import torch

    from pipeline.config import register_open_clip_configs

    register_open_clip_configs()
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        return _train(cfg, out)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: ScorerConfig, out: Path) -> Path:
    import open_clip
    import torch
    import torch.nn.functional as F
    from safetensors.torch import save_file

    from data_prep.clip_score import encode_text
    from data_prep.synthetic.scene import COLOURS, SHAPES
    from pipeline.model.stem import install_stem

    start = time.perf_counter()
    torch.manual_seed(0)
    model = open_clip.create_model(cfg.arch, force_image_size=cfg.image_size)
    install_stem(model.visual, cfg.stem, list(cfg.stem_channels), cfg.stem_grid_layers)
    grid = model.visual.grid_size[0]
    rows = training_pairs(cfg.pairs, cfg.world_seed, cfg.image_size, cfg.zh_rate, grid)
    images = torch.from_numpy(np.stack([r[0] for r in rows])).permute(0, 3, 1, 2).contiguous()
    labels = torch.from_numpy(np.stack([r[4] for r in rows]))  # [N, 6, grid, grid]
    tokenizer = open_clip.get_tokenizer(cfg.arch)
    texts = tokenizer([r[1] for r in rows])
    swapped = tokenizer([r[3] for r in rows])
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(r[2], []).append(i)
    rng = random.Random(0)
    # the dense head reads the patch tokens the VLM's resampler reads (after ln_post, before the projection)
    head = torch.nn.Linear(
        model.visual.transformer.width, len(SHAPES) + len(COLOURS) + 1 + (4 if cfg.dense_box > 0 else 0)
    )
    model.visual.output_tokens = cfg.dense > 0
    params = [*model.named_parameters(), *(("dense_head." + n, p) for n, p in head.named_parameters())]
    decay = [p for n, p in params if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in params if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6,
    )  # fmt: skip
    loss_fn = open_clip.ClipLoss()
    model.train()
    data_seconds = time.perf_counter() - start
    for step in range(cfg.steps):
        for group in opt.param_groups:  # linear warm-up, cosine decay
            group["lr"] = (
                cfg.lr * min(1, (step + 1) / cfg.warmup) * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
            )
        pool = groups[rng.choice(sorted(groups))] if rng.random() < cfg.grouped else range(len(rows))
        idx = rng.sample(pool, min(cfg.batch_size, len(pool)))
        pixels = normalise(images[idx])
        dense = torch.zeros(())
        if cfg.dense > 0:
            pooled, tokens = model.visual(pixels)
            image_features = F.normalize(pooled, dim=-1)
            dense = cfg.dense * dense_loss(head(tokens), labels[idx], len(SHAPES), cfg.dense_box)
        else:
            image_features = model.encode_image(pixels, normalize=True)
        if cfg.hard_negatives:  # image -> text over the batch's captions and their swapped versions
            text_features = encode_text(model, torch.cat([texts[idx], swapped[idx]]))
            logits = model.logit_scale.exp() * image_features @ text_features.T
            labels = torch.arange(len(idx))
            loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits[:, : len(idx)].T, labels)) / 2
        else:
            loss = loss_fn(image_features, encode_text(model, texts[idx]), model.logit_scale.exp())
        (loss + dense).backward()
        opt.step()
        opt.zero_grad()
        if step % 20 == 0 or step == cfg.steps - 1:
            log.info(
                "clip scorer step %d/%d loss %.3f dense %.3f", step + 1, cfg.steps, loss.item(), dense.item()
            )
    model.visual.output_tokens = False
    train_seconds = time.perf_counter() - start - data_seconds
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    calibration = calibrate(out, cfg)
    info = {
        "arch": cfg.arch,
        "weights": "model.safetensors",
        "image_size": cfg.image_size,
        "stem": cfg.stem,
        "stem_channels": list(cfg.stem_channels),
        "stem_grid_layers": cfg.stem_grid_layers,
        "threshold": calibration.pop("threshold"),
        "calibration": calibration,
        "train": {
            **asdict(cfg),
            "data_seconds": round(data_seconds, 1),
            "train_seconds": round(train_seconds, 1),
        },
    }
    tmp = out / "scorer.json.tmp"
    tmp.write_text(json.dumps(info, indent=2))
    tmp.replace(out / "scorer.json")  # written last: a folder with scorer.json is complete
    log.info("clip scorer ready in %.0f s: %s", time.perf_counter() - start, json.dumps(info["calibration"]))
    return out


def dense_loss(logits, labels, shapes: int, box: float = 0.0):
    """The per-patch loss on the patch tokens' outputs ([B, grid^2, shapes + colours + 1 (+ 4 with ``box``)])
    against ``patch_labels`` ([B, 6, grid, grid]): object or background on every patch (logit
    ``shapes + colours``), and the shape and the colour of the object on the patches one covers. Background
    patches outnumber object patches about 10 to 1, so that a loss over every patch learns where objects are,
    and their colours, but hardly their shapes (dev/LOG.md). ``box`` > 0 weighs an L1 regression of the
    object's box (as fractions of the image) from each of its patches: the token then carries where its object
    is in its own features, which is what the VLM's resampler passes on (its values carry no position)."""
    import torch.nn.functional as F

    from data_prep.synthetic.scene import COLOURS

    target = labels.flatten(2).transpose(1, 2)  # [B, grid^2, 6]
    on = target[..., 0] > 0
    classes = shapes + len(COLOURS) + 1
    loss = F.binary_cross_entropy_with_logits(logits[..., classes - 1], on.float())
    if on.any():
        picked = logits[on]
        loss = loss + F.cross_entropy(picked[:, :shapes], target[..., 0][on] - 1)
        loss = loss + F.cross_entropy(picked[:, shapes : classes - 1], target[..., 1][on] - 1)
        if box > 0:
            loss = loss + box * F.l1_loss(picked[:, classes:].sigmoid(), target[..., 2:][on].float() / 1000)
    return loss


def normalise(images):
    """uint8 NCHW images -> the float pixels open_clip's towers expect."""
    import open_clip
    import torch

    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


def noise_world(count: int, mismatch: float, seed: int = 99, split: str = "heldout",
                zh_rate: float = WorldConfig.zh_rate) -> WorldConfig:  # fmt: skip
    """A world of ``count`` pairs whose only noise is mismatched captions, at rate ``mismatch``."""
    from data_prep.synthetic.world import NoiseRates

    noise = NoiseRates(mismatch, *[0.0] * 7)
    return WorldConfig(num_samples=count, seed=seed, split=split, zh_rate=zh_rate, noise=noise)


def _scored_pair(world: WorldConfig, index: int) -> tuple[bytes, str]:
    """A pair as a prep run scores it: the world's JPEG, decoded and fitted by the prep's own code."""
    from data_prep.config import PrepSettings
    from data_prep.filters import decode
    from data_prep.reencode import fit
    from data_prep.synthetic.render import encode_jpeg, render
    from data_prep.synthetic.world import plan_sample

    plan = plan_sample(world, index)
    data = encode_jpeg(render(plan.scene), world.jpeg_quality)
    image, info = decode(data, PrepSettings.max_side)
    return fit(data, image, info, PrepSettings.max_side, PrepSettings.jpeg_quality)[0], plan.caption


def scored_pairs(world: WorldConfig) -> tuple[list[bytes], list[str]]:
    """Every pair of ``world`` as image bytes and captions (``_scored_pair``)."""
    pairs = parallel(partial(_scored_pair, world), list(range(world.num_samples)))
    return [p[0] for p in pairs], [p[1] for p in pairs]


def calibrate(out: Path, cfg: ScorerConfig) -> dict:
    """Pick the threshold (``best_threshold``) on held-out clean and mismatched pairs at ``prevalence``, scored
    by the ``ClipScorer`` a prep run builds from the weights in ``out``."""
    from data_prep.clip_score import ClipScorer

    scorer = ClipScorer(
        ClipFilter(arch=cfg.arch, threshold=0.0, device="cpu"), out,
        info={"weights": "model.safetensors", "image_size": cfg.image_size, "stem": cfg.stem,
              "stem_channels": list(cfg.stem_channels), "stem_grid_layers": cfg.stem_grid_layers},
    )  # fmt: skip
    clean = scorer.score(*scored_pairs(noise_world(cfg.heldout_clean, 0.0)))
    bad = scorer.score(*scored_pairs(noise_world(cfg.heldout_mismatched, 1.0)))
    return best_threshold(clean, bad, cfg.prevalence)


def precision_at(recall: float, clean_fpr: float, prevalence: float) -> float:
    """Precision of the mismatch flag when ``prevalence`` of the pairs are mismatched."""
    return recall * prevalence / max(recall * prevalence + clean_fpr * (1 - prevalence), 1e-12)


def best_threshold(clean: np.ndarray, bad: np.ndarray, prevalence: float) -> dict:
    """Scores below the threshold are flagged. The threshold maximises the smaller of precision and recall (the
    goal asks both of them, and F1's best sits at a precision near 1 with a lower recall), then F1. Precision
    is taken at ``prevalence`` (not on the balanced set): P = R*p / (R*p + FPR*(1-p))."""
    best = {"f1": -1.0, "min": -1.0}
    for t in np.unique(np.concatenate([clean, bad])):
        recall, fpr = float((bad < t).mean()), float((clean < t).mean())
        precision = precision_at(recall, fpr, prevalence)
        f1 = 2 * precision * recall / max(precision + recall, 1e-12)
        if (min(precision, recall), f1) > (best["min"], best["f1"]):
            best = {
                "min": min(precision, recall),
                "f1": f1,
                "threshold": float(t),
                "precision": precision,
                "recall": recall,
                "clean_fpr": fpr,
            }
    fpr95 = float((clean < np.quantile(bad, 0.95)).mean())
    best.pop("min")
    return {
        **{k: round(v, 4) for k, v in best.items()},
        "prevalence": prevalence,
        "clean_fpr_at_recall_0.95": round(fpr95, 4),
    }


def error_analysis(
    scorer_dir: str | Path, clean: int = 600, mismatched: int = 600, split: str = "heldout", top: int = 5
) -> dict:
    """Where a synthetic scorer goes wrong, on ``clean`` clean and ``mismatched`` mismatched pairs scored as a
    prep run scores them: precision/recall at its stored threshold and the best thresholds at 5% prevalence
    and balanced; English vs Chinese clean FPR at mismatch recall 0.95; the lowest-scoring clean pairs and
    the highest-scoring mismatches; how often a mismatch that names the image's background passes.
    ``split="train"`` scores the scorer's own training pairs (overfitting vs undertraining)."""
    from data_prep.clip_score import ClipScorer
    from data_prep.synthetic.world import plan_sample
    from pipeline.config import register_open_clip_configs

    register_open_clip_configs()
    info = json.loads((Path(scorer_dir) / "scorer.json").read_text())
    trained = info["train"]
    scorer = ClipScorer(ClipFilter(arch=info["arch"], threshold=0.0, device="cpu"), scorer_dir)
    seed = 99 if split == "heldout" else trained["world_seed"]
    zh_rate = WorldConfig.zh_rate if split == "heldout" else trained.get("zh_rate", WorldConfig.zh_rate)
    clean_world = noise_world(clean, 0.0, seed, split, zh_rate)
    bad_world = noise_world(mismatched, 1.0, seed, split, zh_rate)
    good, bad = scorer.score(*scored_pairs(clean_world)), scorer.score(*scored_pairs(bad_world))
    clean_plans = [plan_sample(clean_world, i) for i in range(clean)]
    bad_plans = [plan_sample(bad_world, i) for i in range(mismatched)]
    t = info["threshold"]
    fpr, recall = float((good < t).mean()), float((bad < t).mean())
    zh = np.array([q.lang == "zh" for q in clean_plans])
    t95 = float(np.quantile(bad, 0.95))
    en_bad = np.array([q.lang == "en" for q in bad_plans])
    names_bg = en_bad & np.array([f" {q.scene.background} background" in q.caption for q in bad_plans])
    return {
        "split": split, "clean": clean, "mismatched": mismatched,
        "stored_threshold": {"threshold": t, "clean_fpr": round(fpr, 4), "recall": round(recall, 4),
                             "precision_at_5pct": round(precision_at(recall, fpr, 0.05), 4)},
        "best_at_5pct": best_threshold(good, bad, 0.05),
        "best_balanced": best_threshold(good, bad, 0.5),
        "mean_score": {"clean_en": round(float(good[~zh].mean()), 4), "clean_zh": round(float(good[zh].mean()), 4),
                       "mismatched": round(float(bad.mean()), 4)},
        "clean_fpr_at_recall_0.95": {"threshold": round(t95, 4), "en": round(float((good[~zh] < t95).mean()), 4),
                                     "zh": round(float((good[zh] < t95).mean()), 4)},
        "lowest_clean": [{"score": round(float(good[i]), 4), "caption": clean_plans[i].caption}
                         for i in np.argsort(good)[:top]],
        "highest_mismatched": [{"score": round(float(bad[i]), 4), "true": bad_plans[i].clean_caption,
                                "given": bad_plans[i].caption} for i in np.argsort(-bad)[:top]],
        "mismatches_naming_the_background": {
            "count": int(names_bg.sum()), "of_english": int(en_bad.sum()),
            "share_above_t95": round(float((bad[names_bg] >= t95).mean()), 4) if names_bg.any() else None,
            "others_above_t95": round(float((bad[en_bad & ~names_bg] >= t95).mean()), 4)
            if (en_bad & ~names_bg).any() else None,
        },
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_prep.clip_train", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="folder (default: the cache folder for these settings)")
    p.add_argument("--errors", metavar="SCORER_DIR", help="no training: where this scorer goes wrong (JSON)")
    p.add_argument("--clean", type=int, default=600, help="--errors: clean pairs")
    p.add_argument("--mismatched", type=int, default=600, help="--errors: mismatched pairs")
    p.add_argument("--split", choices=("heldout", "train"), default="heldout",
                   help="--errors: held-out pairs, or the scorer's own training pairs")  # fmt: skip
    p.add_argument("--top", type=int, default=5, help="--errors: worst pairs listed of each kind")
    p.add_argument("overrides", nargs="*", help="ScorerConfig keys, e.g. steps=700 hard_negatives=true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.errors:
        result = error_analysis(args.errors, args.clean, args.mismatched, args.split, args.top)
        print(json.dumps(result, indent=1, ensure_ascii=False))
        return 0
    from pipeline.config import ConfigError, load_config

    try:
        cfg = load_config(ScorerConfig, None, args.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = train(cfg, Path(args.out) if args.out else CACHE / cfg.name())
    print(json.loads((out / "scorer.json").read_text())["calibration"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
