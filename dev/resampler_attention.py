"""dev/LOG.md (issue 30): where do the resampler's queries look? Its cross-attention on held-out images.

    PYTHONPATH=. python dev/resampler_attention.py EXPORT [EXPORT ...] [--shards 'data/heldout/shards/*.tar'] [--llm]

For each export (a stage's final/), on 64 held-out images, per head:
- perplexity: exp of the attention's entropy, averaged over queries and images; the number of patches a
  query reads (all patches: uniform, a global average);
- distance: from each query's own spot on its grid to the centroid of the patches it reads, in image widths
  (about 0.38 for uniform attention on an 8 x 8 query grid, near 0 when each query reads its own region);
- image dependence: the std of a weight over images over its mean (0: the same pattern on every image).
A query that averages many patches, or every query reading the same object, mixes the objects of an image:
their colours and shapes reach the LLM unbound.

--llm: the other end of the image path, where the LLM's answer position reads the image tokens on each VQA
question (`answer_attention`). A model that answers from a global average reads them near-uniformly (1 =
one token, 64 = all alike); one that looks an object up reads a few.
"""

import argparse
import glob
import math
from collections import defaultdict

import torch

from pipeline.eval import eval_items
from pipeline.export import load_export


def grid(side: int) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    return torch.stack([(y.flatten() + 0.5) / side, (x.flatten() + 0.5) / side], -1)


@torch.no_grad()
def attention(export: str, shards: str, count: int = 64) -> torch.Tensor:
    """[images, heads, queries, patches] of the resampler's own forward on ``count`` held-out images: its
    cross-attention is asked for its weights per head, which the model itself never needs."""
    model, _, formatter, transform = load_export(export, "cpu")
    items = eval_items(sorted(glob.glob(shards)), formatter, transform, ("caption",), count)
    weights = []

    def ask(_, args, kwargs):
        return args, {**kwargs, "need_weights": True, "average_attn_weights": False}

    model.adapter.attn.register_forward_pre_hook(ask, with_kwargs=True)
    model.adapter.attn.register_forward_hook(lambda _, __, out: weights.append(out[1]))
    model.encode_images(torch.stack([it.image for it in items]))
    return weights[0]


@torch.no_grad()
def answer_attention(export: str, shards: str) -> None:
    """The LLM's side (--llm): on each held-out VQA question, the prompt as `launch.eval` builds it, the
    attention of the last prompt position (it predicts the answer's first token), per layer, averaged over
    heads: the share on the image tokens and its spread over them (perplexity renormalised over the image
    tokens), per question type."""
    model, tokenizer, formatter, transform = load_export(export, "cpu")
    model.llm.set_attn_implementation("eager")  # the only one that returns attention weights
    items = eval_items(sorted(glob.glob(shards)), formatter, transform, ("vqa",), 300)
    rows: dict[str, list[tuple[list[float], list[float]]]] = defaultdict(list)
    for it in items:
        ids = torch.tensor([it.prompt])
        embeds = model.embed(ids, it.image[None], torch.tensor([True]))
        out = model.llm(inputs_embeds=embeds, output_attentions=True)
        on_image = ids[0] == model.image_pad_id
        shares, spreads = [], []
        for layer in out.attentions:  # [1, heads, seq, seq]
            last = layer[0, :, -1].mean(0)
            image = last[on_image]
            shares.append(float(image.sum()))
            q = image / image.sum()
            spreads.append(math.exp(float(-(q * (q + 1e-12).log()).sum())))
        rows[it.question_type or "?"].append((shares, spreads))
    print(f"{export}: {int(on_image.sum())} image tokens")
    for kind, got in sorted(rows.items()):
        layers = len(got[0][0])
        share = [sum(g[0][i] for g in got) / len(got) for i in range(layers)]
        spread = [sum(g[1][i] for g in got) / len(got) for i in range(layers)]
        print(f"  {kind:10s} n={len(got):3d}  image share by layer "
              + " ".join(f"{v:.2f}" for v in share) + "  read over " + " ".join(f"{v:.1f}" for v in spread))  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("exports", nargs="+")
    p.add_argument("--shards", default="data/heldout/shards/*.tar")
    p.add_argument("--llm", action="store_true", help="the LLM's answer position on VQA questions instead")
    args = p.parse_args()
    torch.set_num_threads(2)
    for export in args.exports:
        if args.llm:
            answer_attention(export, args.shards)
            continue
        w = attention(export, args.shards)
        _, heads, queries, patches = w.shape
        entropy = -(w * (w + 1e-12).log()).sum(-1)
        centroid = w @ grid(math.isqrt(patches))
        distance = (centroid - grid(math.isqrt(queries))).norm(dim=-1)
        dependence = w.std(0).mean((1, 2)) / w.mean((0, 2, 3))
        print(f"{export}: {queries} queries over {patches} patches, {heads} head(s)")
        for h in range(heads):
            print(f"  head {h}: perplexity {entropy[:, h].mean().exp():.1f} of {patches}, "
                  f"distance {distance[:, h].mean():.3f}, image dependence {dependence[h]:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
