"""Greedy continuation of a formatted sample: the prompt (everything before its last supervised answer)
through the model, the answer generated with the LLM's KV cache. Used for the sample tables of training.

Under ZeRO-3 every rank must call it the same number of times (``synced=True`` keeps the ranks' decoding
loops in step), since each forward gathers parameters from all ranks.
"""

from __future__ import annotations

import torch

from pipeline.tokens import IGNORE


def prompt_length(labels: list[int]) -> int:
    """Where the last supervised answer starts (the last masked -> supervised switch); a sample supervised
    from its first token (pure text) keeps its first few tokens as the prompt."""
    starts = [i for i in range(1, len(labels)) if labels[i - 1] == IGNORE and labels[i] != IGNORE]
    return starts[-1] if starts else min(8, max(1, len(labels) // 2))


@torch.no_grad()
def greedy(
    model,
    prompt_ids: torch.Tensor,
    pixel_values: torch.Tensor,
    has_image: bool,
    max_new_tokens: int,
    eos_ids: list[int],
    synced: bool = False,
) -> list[int]:
    """One sample: ``prompt_ids`` [T], ``pixel_values`` [1, 3, H, W] or [0, 3, H, W]; returns new token ids."""
    ids = prompt_ids.unsqueeze(0)
    embeds = model.embed(ids, pixel_values, torch.tensor([has_image], device=ids.device))
    out = model.llm.generate(
        inputs_embeds=embeds,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=eos_ids,
        pad_token_id=eos_ids[0],
        synced_gpus=synced,
    )
    new = out[0].tolist()
    while new and new[-1] in eos_ids and len(new) > 1 and new[-2] in eos_ids:  # padding after the end
        new.pop()
    return new
