"""dev/LOG.md (issue 30): can the demo's LLM learn VQA's lookups at all, from text, with no image in the way?

    PYTHONPATH=. python dev/text_binding.py [--steps 1000] [--lr 5e-4] [--layers 2] [--init EXPORT]

Each sample writes a scene of the world as words, its objects in random order ("a red circle, a blue
square."), then one of its VQA questions and the answer: `{scene} {question} Answer: {answer}`. The tiny
LLM (configs/model/tiny.yaml's arch, fresh or an export's) learns the answer tokens alone, in batches of 32;
held-out accuracy per question type (all answer tokens right under teacher forcing, which is what greedy
decoding gives) every 250 steps. Position questions are left out: the words give no places. If it learns
colour, shape and existence here, the lookup is within the LLM's reach and the image path is what fails.
"""

import argparse
import math
import random
import time
from collections import defaultdict

import torch
import yaml

from data_prep.synthetic.scene import sample_scene
from data_prep.synthetic.text import vqa
from pipeline.config import CONFIG_ROOT
from pipeline.data.formats import Example
from pipeline.data.loader import collate
from pipeline.model.language import build_llm
from pipeline.model.qwenvl import QwenVL
from pipeline.schema import LLMConfig
from pipeline.tokens import IGNORE, load_tokenizer

TYPES = ("colour", "count", "shape", "yesno")


def samples(count: int, seed: int) -> list[tuple[str, str, str]]:
    """(prompt, answer, type) triples of ``count`` scenes, one question each."""
    rng = random.Random(seed)
    out = []
    while len(out) < count:
        scene = sample_scene(rng)
        objects = [f"a {o.colour} {o.shape}" for o in scene.objects]
        rng.shuffle(objects)
        qa = rng.choice([q for q in vqa(scene, rng) if q["type"] in TYPES])
        out.append((f"{', '.join(objects)}. {qa['question']} Answer:", f" {qa['answer']}", qa["type"]))
    return out


def encode(tokenizer, rows) -> list[Example]:
    """Text-only examples, the answer and the end token supervised; the question type as the task."""
    out = []
    for prompt, answer, kind in rows:
        ids, target = tokenizer.encode(prompt), tokenizer.encode(answer) + [tokenizer.eos_token_id]
        out.append(Example(kind, kind, ids + target, [IGNORE] * len(ids) + target, False))
    return out


def batch(examples: list[Example], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    b = collate(examples, [], pad, 0)
    return b["input_ids"], b["labels"], b["attention_mask"]


@torch.no_grad()
def accuracy(llm, rows, pad: int) -> dict[str, float]:
    hits, seen = defaultdict(int), defaultdict(int)
    for i in range(0, len(rows), 64):
        chunk = rows[i : i + 64]
        ids, labels, mask = batch(chunk, pad)
        pred = llm(input_ids=ids, attention_mask=mask).logits[:, :-1].argmax(-1)
        target = labels[:, 1:]
        right = ((pred == target) | (target == IGNORE)).all(1)
        for e, ok in zip(chunk, right.tolist(), strict=True):
            hits[e.task] += ok
            seen[e.task] += 1
    return {k: hits[k] / seen[k] for k in sorted(seen)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--init", help="an export whose LLM to start from (e.g. a demo's stage0/final)")
    args = p.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model_cfg = yaml.safe_load((CONFIG_ROOT / "model" / "tiny.yaml").read_text())
    tokenizer = load_tokenizer(model_cfg["tokenizer"])
    if args.init:
        llm = QwenVL.from_pretrained(args.init)[0].llm
    else:
        arch = {**model_cfg["llm"]["arch"], "num_hidden_layers": args.layers}
        llm = build_llm(LLMConfig(arch=arch), vocab_size=len(tokenizer))
    pad = tokenizer.pad_token_id
    train, test = encode(tokenizer, samples(20000, 0)), encode(tokenizer, samples(1000, 1))
    opt = torch.optim.AdamW(llm.parameters(), lr=args.lr, weight_decay=0.1)
    rng = random.Random(0)
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        for group in opt.param_groups:
            group["lr"] = args.lr * min(1, step / 50) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        ids, labels, mask = batch(rng.sample(train, 32), pad)
        loss = llm(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step % 250 == 0 or step == args.steps:
            llm.eval()
            acc = accuracy(llm, test, pad)
            llm.train()
            print(f"step {step} loss {loss.item():.3f} {time.perf_counter() - start:.0f} s  "
                  + " ".join(f"{k} {v:.2f}" for k, v in acc.items()), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
