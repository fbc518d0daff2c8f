"""dev/LOG.md (issue 30): where do the resampler's queries look? Its cross-attention on held-out images.

    PYTHONPATH=. python dev/resampler_attention.py EXPORT [EXPORT ...] [--shards 'data/heldout/shards/*.tar']

For each export (a stage's final/), on 64 held-out images, per head:
- perplexity: exp of the attention's entropy, averaged over queries and images; the number of patches a
  query reads (all patches: uniform, a global average);
- distance: from each query's own spot on its grid to the centroid of the patches it reads, in image widths
  (about 0.38 for uniform attention on an 8 x 8 query grid, near 0 when each query reads its own region);
- image dependence: the std of a weight over images over its mean (0: the same pattern on every image).
A query that averages many patches, or every query reading the same object, mixes the objects of an image:
their colours and shapes reach the LLM unbound.
"""

import argparse
import glob
import math

import torch

from pipeline.data.shard_format import open_image, parse, read_shards
from pipeline.export import load_export


def images(shards: str, transform, count: int = 64) -> torch.Tensor:
    out = []
    for raw in read_shards(sorted(glob.glob(shards))):
        s = parse(raw)
        if s.image is not None:
            out.append(transform(open_image(s.image)))
        if len(out) == count:
            break
    return torch.stack(out)


def grid(side: int) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    return torch.stack([(y.flatten() + 0.5) / side, (x.flatten() + 0.5) / side], -1)


@torch.no_grad()
def attention(export: str, shards: str) -> torch.Tensor:
    """[images, heads, queries, patches] as the model computes them."""
    model, _, _, transform = load_export(export, "cpu")
    _, patches = model.vision(model.vision_input(images(shards, transform)))
    a = model.adapter
    kv = a.ln_kv(a.kv_proj(patches))
    query = (a.ln_q(a.query) + a.pos_embed).expand(kv.shape[0], -1, -1)
    keys = kv + a.key_pos_embed(kv.shape[1])
    return a.attn(query, keys, kv, need_weights=True, average_attn_weights=False)[1]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("exports", nargs="+")
    p.add_argument("--shards", default="data/heldout/shards/*.tar")
    args = p.parse_args()
    torch.set_num_threads(2)
    for export in args.exports:
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
