"""dev/LOG.md (issue 30): can the demo's LLM learn VQA's lookups at all, from text, with no image in the way?

    PYTHONPATH=. python dev/text_binding.py [--steps 1000] [--lr 5e-4] [--layers 2] [--arch KEY=INT ...]
        [--multi] [--fused [--slots N]] [--init EXPORT [--save OUT]]

Each sample writes a scene of the world as words, its objects in random order ("a red circle, a blue
square."), then one of its VQA questions and the answer: `{scene} {question} Answer: {answer}` (--multi: all
of its questions, each answered). --fused writes the scene as the VLM's image span instead, one position per
object (see `encode`). The tiny LLM (configs/model/tiny.yaml's arch, fresh or an export's) learns the answer
tokens alone, in batches of 32; held-out accuracy per question type (all answer tokens right under teacher
forcing, which is what greedy decoding gives) every 250 steps, and per type and object count at the end: a
one-object scene needs no lookup. Position questions are left out: the words give no places. --save writes
the --init export with the LLM trained here.
"""

import argparse
import math
import random
import shutil
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
from pipeline.model.qwenvl import QwenVL, save_weights
from pipeline.schema import LLMConfig
from pipeline.tokens import IGNORE, load_tokenizer, special_ids

TYPES = ("colour", "count", "shape", "yesno")


def samples(count: int, seed: int, multi: bool = False) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """``count`` scenes as words, each with one of its questions, or all of them (``multi``), as (question,
    answer, type) triples; the type carries the object count too, for the accuracy per count."""
    rng = random.Random(seed)
    out = []
    while len(out) < count:
        scene = sample_scene(rng)
        objects = [f"a {o.colour} {o.shape}" for o in scene.objects]
        rng.shuffle(objects)
        qas = [q for q in vqa(scene, rng) if q["type"] in TYPES]
        qas = rng.sample(qas, len(qas)) if multi else [rng.choice(qas)]
        out.append(
            (", ".join(objects), [(q["question"], q["answer"], f"{q['type']}/{len(objects)}") for q in qas])
        )
    return out


Row = tuple[Example, list[tuple[int, int]]]  # an example, and the (position, shape id) pairs of --fused


def encode(tokenizer, rows, fused: bool = False, slots: int = 0) -> list[Row]:
    """Text-only examples, each answer and its end token supervised; the first question's type as the task.

    ``fused``: the scene is written as the VLM's image span, ``<|vision_start|> ... <|vision_end|>``, and each
    object in it is one position, its colour's and its shape's embeddings summed (the shape ids go with the
    example), as an ideal image token would carry one object whole. ``slots``: the span
    has that many positions, the objects at random ones, the rest ``<|image_pad|>``, as an image's 64."""
    ids_of = special_ids(tokenizer)
    rng = random.Random(len(rows))
    out = []
    for i, (scene, qas) in enumerate(rows):
        extra = []
        if fused:
            objects = [[tokenizer.encode(" " + w)[0] for w in obj.split()[1:]] for obj in scene.split(", ")]
            span = [ids_of.image_pad] * max(slots, len(objects))
            at = sorted(rng.sample(range(len(span)), len(objects)))
            for k, (colour, _) in zip(at, objects, strict=True):
                span[k] = colour
            extra = [(1 + k, shape) for k, (_, shape) in zip(at, objects, strict=True)]
            ids = [ids_of.image_start, *span, ids_of.image_end]
        else:
            ids = tokenizer.encode(scene + ".")
        labels = [IGNORE] * len(ids)
        for question, answer, _ in qas:
            prompt = tokenizer.encode(f" {question} Answer:")
            target = tokenizer.encode(f" {answer}") + [tokenizer.eos_token_id]
            ids, labels = ids + prompt + target, labels + [IGNORE] * len(prompt) + target
        out.append((Example(str(i), qas[0][2], ids, labels, False), extra))
    return out


def inputs(llm, rows: list[Row], pad: int) -> dict:
    """The LLM's keyword inputs, with the fused objects' shape embeddings added where there are any."""
    b = collate([e for e, _ in rows], [], pad, 0)
    table = llm.get_input_embeddings()
    embeds = table(b["input_ids"])
    at = [(r, k, shape) for r, (_, extra) in enumerate(rows) for k, shape in extra]
    if at:
        rows, cols, extra = (torch.tensor(c) for c in zip(*at, strict=True))
        embeds = embeds.index_put((rows, cols), table(extra), accumulate=True)
    return {"inputs_embeds": embeds, "attention_mask": b["attention_mask"], "labels": b["labels"]}


@torch.no_grad()
def accuracy(llm, rows, pad: int) -> tuple[dict[str, float], dict[str, str]]:
    hits, seen = defaultdict(int), defaultdict(int)
    for i in range(0, len(rows), 64):
        chunk = rows[i : i + 64]
        kw = inputs(llm, chunk, pad)
        target = kw.pop("labels")[:, 1:]
        pred = llm(**kw).logits[:, :-1].argmax(-1)
        right = ((pred == target) | (target == IGNORE)).all(1)
        for (e, _), ok in zip(chunk, right.tolist(), strict=True):
            hits[e.task] += ok
            seen[e.task] += 1
    per_type = {
        t: sum(hits[k] for k in seen if k.startswith(t)) / sum(seen[k] for k in seen if k.startswith(t))
        for t in TYPES
    }
    return per_type, {k: f"{hits[k] / seen[k]:.2f} ({seen[k]})" for k in sorted(seen)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--arch", nargs="*", default=[], help="more LLM arch keys, key=int (e.g. hidden_size=256)")
    p.add_argument("--multi", action="store_true", help="train on all of a scene's questions in one sequence")
    p.add_argument("--fused", action="store_true", help="one position per object (see encode)")
    p.add_argument("--slots", type=int, default=0, help="with --fused: the image span's positions")
    p.add_argument("--save", help="with --init: write the export there, its LLM the one trained here")
    p.add_argument("--init", help="an export whose LLM to start from (e.g. a demo's stage0/final)")
    args = p.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model_cfg = yaml.safe_load((CONFIG_ROOT / "model" / "tiny.yaml").read_text())
    tokenizer = load_tokenizer(model_cfg["tokenizer"])
    if args.init:
        model = QwenVL.from_pretrained(args.init)[0]
        llm = model.llm
    else:
        more = {k: int(v) for k, v in (a.split("=") for a in args.arch)}
        arch = {**model_cfg["llm"]["arch"], "num_hidden_layers": args.layers, **more}
        llm = build_llm(LLMConfig(arch=arch), vocab_size=len(tokenizer))
    pad = tokenizer.pad_token_id
    train = encode(tokenizer, samples(20000, 0, args.multi), args.fused, args.slots)
    test = encode(tokenizer, samples(1000, 1), args.fused, args.slots)
    opt = torch.optim.AdamW(llm.parameters(), lr=args.lr, weight_decay=0.1)
    rng = random.Random(0)
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        for group in opt.param_groups:
            group["lr"] = args.lr * min(1, step / 50) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        loss = llm(**inputs(llm, rng.sample(train, 32), pad)).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step % 250 == 0 or step == args.steps:
            llm.eval()
            acc, by_count = accuracy(llm, test, pad)
            llm.train()
            print(f"step {step} loss {loss.item():.3f} {time.perf_counter() - start:.0f} s  "
                  + " ".join(f"{k} {v:.2f}" for k, v in acc.items()), flush=True)  # fmt: skip
    print("per type/object count:", " ".join(f"{k} {v}" for k, v in by_count.items()))
    if args.save:
        shutil.copytree(args.init, args.save)
        save_weights(model, args.save)


if __name__ == "__main__":
    main()
