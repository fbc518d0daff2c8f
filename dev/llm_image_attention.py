"""dev/LOG.md (issue 30): on a VQA question, how much does the LLM's answer position read the image?

    PYTHONPATH=. python dev/llm_image_attention.py EXPORT [EXPORT ...] [--shards 'data/heldout/shards/*.tar']

For each held-out VQA question (the prompt exactly as `launch.eval` builds it), the attention of the last
prompt position (the one that predicts the answer's first token), per LLM layer, averaged over heads: the
share it gives the image tokens, and that share's spread over the image tokens (perplexity of the attention
renormalised over them: 1 = one token, 64 = uniform). Per question type. A model that answers from a
global average reads the image tokens near-uniformly; one that looks an object up reads a few.
"""

import argparse
import glob
import math
from collections import defaultdict

import torch

from pipeline.eval import eval_items
from pipeline.export import load_export


@torch.no_grad()
def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("exports", nargs="+")
    p.add_argument("--shards", default="data/heldout/shards/*.tar")
    args = p.parse_args()
    torch.set_num_threads(2)
    for export in args.exports:
        model, tokenizer, formatter, transform = load_export(export, "cpu")
        model.llm.config._attn_implementation = "eager"  # the only one that returns attention weights
        items = eval_items(sorted(glob.glob(args.shards)), formatter, transform, ("vqa",), 300)
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


if __name__ == "__main__":
    main()
