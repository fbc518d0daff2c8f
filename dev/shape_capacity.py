"""dev/LOG.md: can the demo's ViT learn shapes at all when told them? A supervised check of the architecture.

    PYTHONPATH=. python dev/shape_capacity.py [--size 112] [--steps 300] [--arch tiny-ViT-14]

Trains a fresh open_clip image tower plus a linear head to name the shapes present in clean training-world
images (7 outputs, binary cross-entropy), then reports held-out accuracy on images with one object (argmax;
chance 1/7). High accuracy says the CLIP objective, not the tower or the resolution, keeps shapes out of the
scorer; chance says the tower cannot see them at this size.
"""

import argparse
import time

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from data_prep.clip_train import noise_world, normalise, parallel
from data_prep.synthetic.render import render
from data_prep.synthetic.scene import SHAPES
from data_prep.synthetic.world import plan_sample
from pipeline.config import register_open_clip_configs

NAMES = sorted(SHAPES)


def _row(args):
    split, seed, index, size = args
    plan = plan_sample(noise_world(index + 1, 0.0, seed, split, 0.0), index)
    image = np.asarray(render(plan.scene).resize((size, size), 3))
    target = np.zeros(len(NAMES), np.float32)
    for o in plan.scene.objects:
        target[NAMES.index(o.shape)] = 1
    return image, target, len(plan.scene.objects)


def rows(split: str, seed: int, count: int, size: int):
    out = parallel(_row, [(split, seed, i, size) for i in range(count)])
    images = torch.from_numpy(np.stack([r[0] for r in out])).permute(0, 3, 1, 2).contiguous()
    return images, torch.from_numpy(np.stack([r[1] for r in out])), np.array([r[2] for r in out])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--arch", default="tiny-ViT-14")
    p.add_argument("--pairs", type=int, default=8000)
    args = p.parse_args()
    torch.set_num_threads(2)
    register_open_clip_configs()
    x, y, _ = rows("train", 12345, args.pairs, args.size)
    tx, ty, tn = rows("heldout", 99, 1500, args.size)
    torch.manual_seed(0)
    tower = open_clip.create_model(args.arch, force_image_size=args.size).visual
    head = torch.nn.Linear(tower.output_dim, len(NAMES))
    params = [*tower.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05)
    start = time.perf_counter()
    for step in range(args.steps):
        idx = torch.randint(len(x), (128,))
        loss = F.binary_cross_entropy_with_logits(head(tower(normalise(x[idx]))), y[idx])
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step + 1} loss {loss.item():.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
    tower.eval()
    with torch.no_grad():
        logits = torch.cat([head(tower(normalise(tx[i : i + 256]))) for i in range(0, len(tx), 256)])
    single = tn == 1
    accuracy = (logits[single].argmax(1) == ty[single].argmax(1)).float().mean().item()
    presence = ((logits > 0).float() == ty).float().mean().item()
    print(
        f"{args.arch} at {args.size} px, {args.steps} steps: one-object shape accuracy {accuracy:.3f} "
        f"({int(single.sum())} images, chance {1 / len(NAMES):.3f}); per-shape presence accuracy {presence:.3f}"
    )


if __name__ == "__main__":
    main()
