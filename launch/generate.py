"""Answer prompts about an image with a trained export: one prompt, a batch, or a ChatML chat on stdin.

python -m launch.generate --checkpoint runs/default/stage3/final --image cat.jpg --prompt "What is it? Answer:"
python -m launch.generate --checkpoint runs/default/stage3/final --image shapes.png --chat --draw boxes.png
"""

from __future__ import annotations

import argparse
import itertools
import sys

import torch

from pipeline.data.loader import decode_image
from pipeline.draw import draw_boxes
from pipeline.export import load_export
from pipeline.generate import answer_texts, end_ids, greedy_batch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m launch.generate",
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
