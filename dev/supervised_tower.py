"""dev/LOG.md (issue 30): a tower that knows shapes and colours, to try in the place of the prep's scorer.
The scorer's architecture (tiny-ViT-14, conv stem 16-32 + 2 grid convolutions, 112 px) trained on the
scorer's per-patch labels alone (`dense_loss`, as dev/standin_trials.py does), then saved whole, text tower
untrained, as a CLIP checkpoint that `model.vision.pretrained` loads (dev/vqa_phase.py --tower).

    PYTHONPATH=. python dev/supervised_tower.py OUT.safetensors [--steps 600] [--joint]

--joint adds a head on the joint (shape, colour) class of each object patch (63 classes), so a token's
features hold the pair itself: an average of tokens then still says which pairs the image holds.
"""

import argparse
import math
import time

import open_clip
import torch
from safetensors.torch import save_file

from data_prep.clip_train import dense_loss, normalise
from dev.standin_trials import C, S, accuracy, data
from pipeline.config import TINY_TOWER, register_open_clip_configs
from pipeline.model.stem import install_stem


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument(
        "--joint", action="store_true", help="also the joint (shape, colour) class of object patches"
    )
    args = p.parse_args()
    torch.set_num_threads(2)
    register_open_clip_configs()
    torch.manual_seed(0)
    clip = open_clip.create_model(TINY_TOWER, force_image_size=112)
    visual = install_stem(clip.visual, "conv", [16, 32], 2)
    proj, visual.output_tokens, visual.proj = visual.proj, True, None
    grid = visual.grid_size[0]
    images, labels = data(4000, 12345, 112, grid)
    test_images, test_labels = data(500, 777, 112, grid)
    head = torch.nn.Linear(visual.transformer.width, S + C + 1)
    joint = torch.nn.Linear(visual.transformer.width, S * C) if args.joint else None
    heads = [head, joint] if joint else [head]
    opt = torch.optim.AdamW(
        [p for m in [visual, *heads] for p in m.parameters()], lr=args.lr, weight_decay=0.1
    )
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        for group in opt.param_groups:
            group["lr"] = args.lr * min(1, step / 20) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        idx = torch.randint(len(images), (64,), generator=gen)
        tokens = visual(normalise(images[idx]))[1]
        loss = dense_loss(head(tokens), labels[idx], S)
        if joint:  # a class per (shape, colour) pair: the token must carry the pair, not two separate parts
            target = labels[idx].flatten(2).transpose(1, 2)
            on = target[..., 0] > 0
            pair = (target[..., 0][on] - 1) * C + target[..., 1][on] - 1
            loss = loss + torch.nn.functional.cross_entropy(joint(tokens[on]), pair)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step % 100 == 0 or step == args.steps:
            visual.eval()
            acc = accuracy(lambda x: visual(x)[1], head, test_images, test_labels, "objects")
            visual.train()
            print(f"step {step} loss {loss.item():.3f} {(time.perf_counter() - start) / step:.2f} s/step "
                  + " ".join(f"{k} {v:.3f}" for k, v in acc.items()), flush=True)  # fmt: skip
    visual.proj = proj  # back, so the checkpoint loads into open_clip's CLIP as saved
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, args.out)
    print("saved", args.out)


if __name__ == "__main__":
    main()
