"""Greedy continuation of formatted samples: the prompt (everything before its last supervised answer)
through the model, the answer generated with the LLM's KV cache, one sample or a left-padded batch. Used for
the sample tables of training, for evaluation and for ``launch.generate``.

Under ZeRO-3 every rank must call it the same number of times (``synced=True`` keeps the ranks' decoding
loops in step), since each forward gathers parameters from all ranks.
"""

from __future__ import annotations

import torch

from pipeline.tokens import ENDOFTEXT, IGNORE, IM_END


def prompt_length(labels: list[int]) -> int:
    """Where the last supervised answer starts (the last masked -> supervised switch); a sample supervised
    from its first token (pure text) keeps its first few tokens as the prompt."""
    starts = [i for i in range(1, len(labels)) if labels[i - 1] == IGNORE and labels[i] != IGNORE]
    return starts[-1] if starts else min(8, max(1, len(labels) // 2))


def end_ids(tokenizer) -> list[int]:
    """The tokens that end an answer: <|endoftext|> (stages 1-2) and <|im_end|> (ChatML)."""
    return tokenizer.convert_tokens_to_ids([ENDOFTEXT, IM_END])


def answer_texts(tokenizer, generated: list[list[int]], eos: list[int]) -> list[str]:
    """Generated ids as text, without the end tokens (the model's box and ref tokens kept)."""
    return [
        tokenizer.decode([t for t in ids if t not in eos], skip_special_tokens=False) for ids in generated
    ]


@torch.no_grad()
def greedy_batch(
    model,
    prompts: list[list[int]],
    pixel_values: torch.Tensor,
    has_image: list[bool],
    max_new_tokens: int,
    eos_ids: list[int],
    pad_id: int,
    synced: bool = False,
    temperature: float = 0.0,
    top_p: float = 1.0,
) -> list[list[int]]:
    """Several prompts at once, left-padded (so that every answer starts at the same step), with the LLM's KV
    cache; ``pixel_values`` holds the real images of the prompts that have one, in order. Greedy, or sampled
    with ``temperature`` > 0 and ``top_p``. Returns each answer's new token ids up to and including its first
    end token."""
    device = pixel_values.device
    length = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), length), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, length - len(prompt) :] = torch.as_tensor(prompt, device=device)
        mask[row, length - len(prompt) :] = 1
    embeds = model.embed(ids, pixel_values, torch.tensor(has_image, device=device))
    out = model.llm.generate(
        inputs_embeds=embeds,
        attention_mask=mask,
        max_new_tokens=max_new_tokens,
        eos_token_id=eos_ids,
        pad_token_id=pad_id,
        synced_gpus=synced,
        **(
            {"do_sample": True, "temperature": temperature, "top_p": top_p}
            if temperature > 0
            else {"do_sample": False}
        ),
    )
    answers = []
    for row in out.tolist():
        end = next((i for i, t in enumerate(row) if t in eos_ids), len(row) - 1)
        answers.append(row[: end + 1])
    return answers


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
    return greedy_batch(model, [prompt_ids.tolist()], pixel_values, [has_image], max_new_tokens, eos_ids,
                        eos_ids[0], synced)[0]  # fmt: skip
