"""Greedy continuation of formatted samples: the prompt (everything before its last supervised answer)
through the model, the answer generated with the LLM's KV cache, one sample or a left-padded batch. Used for
the sample tables of training and for evaluation.

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


def load_export(folder, device: str | torch.device | None = None):
    """A final/ export ready to answer: (model in eval mode on ``device``, tokenizer, its Formatter, its image
    transform); the device defaults to CUDA when there is one."""
    from pipeline.data.formats import Formatter
    from pipeline.model.qwenvl import QwenVL
    from pipeline.model.vision import image_transform

    model, tokenizer, cfg = QwenVL.from_pretrained(folder)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    formatter = Formatter(tokenizer, cfg.model.adapter.num_queries, cfg.data.max_length)
    return (
        model.to(device).eval(),
        tokenizer,
        formatter,
        image_transform(cfg.model.vision, cfg.data.image_size),
    )


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


# -- the command line ---------------------------------------------------------------------------------------
def draw_box(draw, box, size: tuple[int, int], colour=(255, 0, 0)) -> tuple[float, ...]:
    """One box on the [0, 1000) grid drawn in pixels; corners given in any order (a model may swap them)."""
    x1, y1, x2, y2 = (v * size[i % 2] / 1000 for i, v in enumerate(box))
    xy = (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))
    draw.rectangle(xy, outline=colour, width=max(1, size[0] // 150))
    return xy


def draw_boxes(image, text: str):
    """The boxes of a generated answer ([0, 1000) grid, as Qwen-VL writes them) drawn on a copy of the image,
    each labelled with the <ref> text just before it, when there is one."""
    from PIL import ImageDraw

    from pipeline.eval_metrics import BOX, REF

    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    for match in BOX.finditer(text):
        box = draw_box(draw, [int(v) for v in match.groups()], out.size)
        refs = REF.findall(text[: match.start()])
        if refs:
            draw.text((box[0] + 2, box[1] + 2), refs[-1], fill=(255, 0, 0))
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse
    import itertools
    import sys

    from pipeline.data.loader import decode_image

    p = argparse.ArgumentParser(prog="python -m pipeline.generate",
                                description="Answer a prompt about an image with a trained checkpoint.")  # fmt: skip
    p.add_argument("--checkpoint", required=True, help="a final/ export (QwenVL.from_pretrained)")
    p.add_argument("--image", help="image file (none: a text-only prompt)")
    p.add_argument("--prompt", action="append", default=[],
                   help="the prompt (repeat for a batch); with --chat, the first user turn")  # fmt: skip
    p.add_argument("--chat", action="store_true", help="ChatML: more user turns from stdin, one per line")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--draw", help="write the image with the answer's boxes drawn to this PNG")
    args = p.parse_args(argv)
    if not args.prompt and not args.chat:
        p.error("give --prompt TEXT, or --chat")

    model, tokenizer, formatter, transform = load_export(args.checkpoint)
    device = next(model.parameters()).device
    eos = end_ids(tokenizer)
    image = decode_image(open(args.image, "rb").read(), args.image) if args.image else None
    pixels = transform(image)[None].to(device) if image else torch.zeros(0, 3, 1, 1, device=device)

    def answer(prompts: list[list[int]]) -> list[str]:
        images = pixels.expand(len(prompts), -1, -1, -1) if image else pixels
        new = greedy_batch(model, prompts, images, [image is not None] * len(prompts), args.max_new_tokens, eos,
                           tokenizer.pad_token_id, temperature=args.temperature, top_p=args.top_p)  # fmt: skip
        return answer_texts(tokenizer, new, eos)

    replies: list[str] = []
    if args.chat:
        messages: list[dict] = []
        # each line of stdin is answered as it comes (an interactive chat), after the --prompt turns
        for turn in itertools.chain(args.prompt, (line.rstrip("\n") for line in sys.stdin)):
            messages.append({"role": "user", "content": turn})
            reply = answer([formatter.chat_prompt(messages, image is not None)])[0]
            messages.append({"role": "assistant", "content": reply})
            replies.append(reply)
            print(f"user: {turn}\nassistant: {reply}", flush=True)
    else:
        replies = answer([formatter.task_prompt(text, image is not None) for text in args.prompt])
        for text, reply in zip(args.prompt, replies, strict=True):
            print(f"{text}{reply}")
    if args.draw and image is not None:
        draw_boxes(image, replies[-1]).save(args.draw)
        print(f"boxes drawn: {args.draw}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
