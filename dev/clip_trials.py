"""dev/LOG.md: tiny-CLIP scorer trials. Trains tiny-ViT-14 with open_clip's model and ClipLoss on clean
synthetic pairs for a time budget, then scores held-out clean and mismatched pairs.

    python dev/clip_trials.py train --seconds 240 --batch 128 --lr 2e-3 --grouped 1.0 --out /tmp/clip.pt
    python dev/clip_trials.py eval /tmp/clip.pt   # also takes an open_clip_train checkpoint
"""

import argparse
import dataclasses
import math
import os
import random
import time
from multiprocessing import Pool

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from data_prep.synthetic import text as T
from data_prep.synthetic.render import render
from data_prep.synthetic.scene import COLOURS, LOW_CONTRAST, SHAPES
from data_prep.synthetic.world import NoiseRates, WorldConfig, plan_sample
from pipeline.config import register_open_clip_configs

register_open_clip_configs()
ARCH, SIZE, PAIRS, HARD = "tiny-ViT-14", int(os.environ.get("CLIP_SIZE", 112)), 5000, 2


def _swap_objects(scene, rng: random.Random):
    """The same scene (background, sizes, places, words) with other (colour, shape) objects."""
    own = {(o.colour, o.shape) for o in scene.objects}
    colours = [c for c in COLOURS if (c, scene.background) not in LOW_CONTRAST]
    pool = [(c, s) for c in colours for s in SHAPES if (c, s) not in own]
    picks = rng.sample(pool, len(scene.objects))
    objects = [
        dataclasses.replace(o, colour=c, shape=s) for o, (c, s) in zip(scene.objects, picks, strict=True)
    ]
    return dataclasses.replace(scene, objects=objects)


def _train_pair(index: int):
    plan = plan_sample(WorldConfig(num_samples=PAIRS, seed=12345, noise=NoiseRates(*[0.0] * 8)), index)
    rng = random.Random(index)
    hard = [_swap_objects(plan.scene, rng) for _ in range(HARD)]
    caption = T.caption_zh if plan.lang == "zh" else T.caption_en
    negatives = [caption(s, rng) for s in hard]
    image = np.asarray(render(plan.scene).resize((SIZE, SIZE), 3))
    return image, plan.caption, plan.scene.background, negatives


def train(args) -> None:
    with Pool(2) as pool:
        rows = pool.map(_train_pair, range(PAIRS), chunksize=64)
    images = torch.from_numpy(np.stack([r[0] for r in rows])).permute(0, 3, 1, 2).contiguous()
    tokenizer = open_clip.get_tokenizer(ARCH)
    texts = tokenizer([r[1] for r in rows])
    hard = torch.stack([tokenizer(r[3]) for r in rows])  # PAIRS x HARD x context
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(r[2], []).append(i)
    torch.manual_seed(0)
    rng = random.Random(0)
    model = open_clip.create_model(ARCH, force_image_size=SIZE)
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98), eps=1e-6)  # fmt: skip
    loss_fn, start, step = open_clip.ClipLoss(), time.time(), 0
    while time.time() - start < args.seconds:
        done = (time.time() - start) / args.seconds
        for group in opt.param_groups:  # 20 warm-up steps, cosine over the time budget
            group["lr"] = args.lr * min(1, (step + 1) / 20) * 0.5 * (1 + math.cos(math.pi * done))
        if rng.random() < args.grouped:  # every sample of the batch on the same background colour
            idx = rng.sample(groups[rng.choice(list(groups))], args.batch)
        else:
            idx = rng.sample(range(PAIRS), args.batch)
        if args.hard:  # image -> text over the batch's captions plus each image's object-swapped captions
            image = model.encode_image((images[idx].float() / 255 - mean) / std, normalize=True)
            text = model.encode_text(
                torch.cat([texts[idx], hard[idx, : args.hard].flatten(0, 1)]), normalize=True
            )
            logits = model.logit_scale.exp() * image @ text.T
            labels = torch.arange(len(idx))
            loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits[:, : len(idx)].T, labels)) / 2
        else:
            out = model((images[idx].float() / 255 - mean) / std, texts[idx])
            loss = loss_fn(*out[:3])
        loss.backward()
        opt.step()
        opt.zero_grad()
        step += 1
    torch.save({"state_dict": model.state_dict()}, args.out)
    print(f"{step} steps in {time.time() - start:.0f} s -> {args.out}")


def _pairs(mismatch: float) -> list:
    noise = NoiseRates(mismatch, 0, 0, 0, 0, 0, 0, 0)
    cfg = WorldConfig(num_samples=600, seed=99, split="heldout", noise=noise)
    return [(render(p.scene), p.caption) for p in (plan_sample(cfg, i) for i in range(cfg.num_samples))]


def evaluate(args) -> None:
    model, _, preprocess = open_clip.create_model_and_transforms(
        ARCH, pretrained=args.checkpoint, force_image_size=SIZE, image_resize_mode="squash"
    )
    tokenizer = open_clip.get_tokenizer(ARCH)
    model.eval()

    def scores(pairs) -> np.ndarray:
        with torch.no_grad():
            image = model.encode_image(torch.stack([preprocess(i) for i, _ in pairs]), normalize=True)
            text = model.encode_text(tokenizer([c for _, c in pairs]), normalize=True)
        return (image * text).sum(-1).numpy()

    good, bad = scores(_pairs(0.0)), scores(_pairs(1.0))
    best = (0.0, 0.0, 0.0, 0.0)
    for t in np.unique(np.concatenate([good, bad])):  # a mismatch is flagged when its score is below t
        tp, fp, fn = (bad < t).sum(), (good < t).sum(), (bad >= t).sum()
        p, r = tp / max(tp + fp, 1), tp / (tp + fn)
        best = max(best, (2 * p * r / max(p + r, 1e-9), t, p, r))
    fpr = (good < np.quantile(bad, 0.95)).mean()
    print(f"balanced best F1: precision {best[2]:.2f} recall {best[3]:.2f} (threshold {best[1]:.3f}); "
          f"clean FPR at mismatch recall 0.95: {fpr:.0%}")  # fmt: skip


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--seconds", type=float, default=240)
    t.add_argument("--batch", type=int, default=128)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument(
        "--grouped", type=float, default=1.0, help="share of batches drawn from one background colour"
    )
    t.add_argument("--hard", type=int, default=0, help="object-swapped negative captions per image (<= 2)")
    t.add_argument("--out", required=True)
    e = sub.add_parser("eval")
    e.add_argument("checkpoint")
    args = p.parse_args()
    train(args) if args.command == "train" else evaluate(args)
