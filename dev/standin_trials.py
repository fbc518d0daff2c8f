"""dev/LOG.md (issue 30): what the tiny ViT learns of shapes from per-patch labels, by stem and loss, within
the synthetic scorer's budget. Trains the tower and a linear head on its patch tokens (no text tower) on the
scorer's training pairs (``patch_labels``) and prints, every 50 steps, the held-out accuracy of the shape and
the colour of the patches an object covers (chance: 1/7 and 1/10) and of object-or-background on every patch.

    PYTHONPATH=. python dev/standin_trials.py --stem conv --channels 16 32 --grid-layers 2 --steps 600

--loss objects: the scorer's ``dense_loss`` (object or background on every patch, shape and colour on the
patches objects cover); all: one cross-entropy on every patch with background a shape and a colour of its own.
--stem-only: the head reads the stem's token grid, without the ViT's blocks.
--joint (with --loss objects): also a head on the joint (shape, colour) class of each object patch (63
classes), so that a token holds the pair itself and an average of tokens still says which pairs are there.
--save OUT.safetensors: the trained tower as a whole CLIP checkpoint (text tower untrained) that
`model.vision.pretrained` loads, to try in the place of the prep's scorer (dev/vqa_phase.py --tower).
"""

import argparse
import math
import time

import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from data_prep.clip_train import dense_loss, normalise, training_pairs
from data_prep.synthetic.scene import COLOURS, SHAPES
from pipeline.config import TINY_TOWER, register_open_clip_configs
from pipeline.model.stem import install_stem

S, C = len(SHAPES), len(COLOURS)


def data(count: int, seed: int, size: int, grid: int):
    rows = training_pairs(count, seed, size, 0.0, grid)
    images = torch.stack([torch.from_numpy(r[0]).permute(2, 0, 1) for r in rows])
    return images, torch.stack([torch.from_numpy(r[4]) for r in rows])


def all_patches_loss(logits, labels):
    """[B, grid^2, (S + 1) + (C + 1)]: background is shape 0 and colour 0."""
    return (
        F.cross_entropy(logits[..., : S + 1].flatten(0, 1), labels[:, 0].flatten())
        + F.cross_entropy(logits[..., S + 1 :].flatten(0, 1), labels[:, 1].flatten())
    ) / 2


def predictions(logits, loss: str):
    """(shape among shapes, colour among colours, object or not), each [B, grid^2], labels' numbering."""
    if loss == "all":
        shape, colour = logits[..., 1 : S + 1], logits[..., S + 2 :]
        return shape.argmax(-1) + 1, colour.argmax(-1) + 1, logits[..., : S + 1].argmax(-1) > 0
    return logits[..., :S].argmax(-1) + 1, logits[..., S : S + C].argmax(-1) + 1, logits[..., -1] > 0


@torch.no_grad()
def accuracy(tokens_of, head, images, labels, loss: str) -> dict[str, float]:
    shape_hits = colour_hits = objects = obj_hits = patches = 0
    for i in range(0, len(images), 128):
        shape, colour, seen = predictions(head(tokens_of(normalise(images[i : i + 128]))), loss)
        target = labels[i : i + 128].flatten(2).transpose(1, 2)
        on = target[..., 0] > 0
        shape_hits += int((shape == target[..., 0])[on].sum())
        colour_hits += int((colour == target[..., 1])[on].sum())
        obj_hits += int((seen == on).sum())
        objects += int(on.sum())
        patches += on.numel()
    return {"shape": shape_hits / objects, "colour": colour_hits / objects, "object": obj_hits / patches}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stem", default="conv", choices=("patch", "conv"))
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--grid-layers", type=int, default=2)
    parser.add_argument("--loss", default="objects", choices=("objects", "all"))
    parser.add_argument("--stem-only", action="store_true")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--pairs", type=int, default=4000)
    parser.add_argument("--joint", action="store_true")
    parser.add_argument("--save", metavar="OUT.safetensors")
    args = parser.parse_args()
    torch.set_num_threads(2)
    register_open_clip_configs()
    torch.manual_seed(0)
    clip = open_clip.create_model(TINY_TOWER, force_image_size=args.size)
    visual = install_stem(clip.visual, args.stem, args.channels, args.grid_layers)
    proj, visual.output_tokens, visual.proj = visual.proj, True, None
    if args.stem_only:
        modules = [visual.conv1]

        def tokens_of(pixels):
            return visual.conv1(pixels).flatten(2).transpose(1, 2)
    else:
        modules = [visual]

        def tokens_of(pixels):
            return visual(pixels)[1]

    grid = visual.grid_size[0]
    images, labels = data(args.pairs, 12345, args.size, grid)
    test_images, test_labels = data(500, 777, args.size, grid)
    width = visual.transformer.width
    head = torch.nn.Linear(width, S + C + 1 if args.loss == "objects" else S + C + 2)
    joint = torch.nn.Linear(width, S * C) if args.joint else None
    params = [p for m in [*modules, head, *([joint] if joint else [])] for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.1)
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        for group in opt.param_groups:
            group["lr"] = args.lr * min(1, step / 20) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        idx = torch.randint(len(images), (args.batch,), generator=gen)
        tokens = tokens_of(normalise(images[idx]))
        logits = head(tokens)
        loss = (
            dense_loss(logits, labels[idx], S)
            if args.loss == "objects"
            else all_patches_loss(logits, labels[idx])
        )
        if joint:
            target = labels[idx].flatten(2).transpose(1, 2)
            on = target[..., 0] > 0
            loss = loss + F.cross_entropy(
                joint(tokens[on]), (target[..., 0][on] - 1) * C + target[..., 1][on] - 1
            )
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step % 50 == 0 or step == args.steps:
            visual.eval()
            acc = accuracy(tokens_of, head, test_images, test_labels, args.loss)
            visual.train()
            seconds = (time.perf_counter() - start) / step
            print(f"{vars(args)} step {step} loss {loss.item():.3f} {seconds:.2f} s/step "
                  + " ".join(f"{k} {v:.3f}" for k, v in acc.items()), flush=True)  # fmt: skip
    if args.save:
        visual.proj = proj  # back, so that the checkpoint loads into open_clip's CLIP as it was built
        save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, args.save)
        print("saved", args.save)


if __name__ == "__main__":
    main()
