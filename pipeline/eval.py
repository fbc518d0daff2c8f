"""Held-out evaluation as Qwen-VL's eval_mm/ does it, each score next to the image-blind twin (the same model
and prompts with every image blanked to the mean colour): what the model learned from the pixels.

    python -m launch.eval --checkpoint runs/default/stage2/final --shards 'data/heldout/shards/{000000..000001}.tar'

Prompts are the training formats' (VQA ``{question} Answer:``, grounding ``<ref>{expression}</ref>`` then the
box, OCR ``OCR with grounding:``, ChatML up to the last assistant turn); one item per sample and task, its
question drawn with a fixed seed. Answers are batched greedy generations with the KV cache.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from pipeline.data.formats import Example, Formatter, available_tasks, task_rng
from pipeline.data.loader import collate, decode_image, read_record
from pipeline.data.shard_format import Skip, read_shards
from pipeline.data.tasks import METRICS, TASKS
from pipeline.distributed import gather_objects
from pipeline.eval_metrics import by_answer_type, exact_match_accuracy
from pipeline.export import load_export
from pipeline.generate import answer_texts, end_ids, greedy_batch, prompt_length
from pipeline.tokens import IGNORE


@dataclass(frozen=True)
class Share:
    """This process's share when ``world`` ranks score one evaluation together: batch ``i`` of each pass is
    rank ``i % world``'s, and every rank gets every batch's result back in batch order. Each batch is computed
    as it is by one process alone, so the scores do not depend on the number of ranks."""

    rank: int = 0
    world: int = 1

    def mine(self, n: int) -> range:
        return range(self.rank, n, self.world)

    def in_order(self, done: dict[int, object]) -> list:
        """Every batch's result, in batch order, from this rank's ``done`` (batch index -> result)."""
        if self.world > 1:
            done = {i: r for part in gather_objects(done) for i, r in part.items()}
        return [done[i] for i in sorted(done)]


ALONE = Share()


@dataclass
class Item:
    key: str
    task: str
    prompt: list[int]
    image: torch.Tensor | None  # normalised pixels, or None for a text-only sample
    truth: str  # the reference answer, as the formats write it
    answer: list[int] = field(default_factory=list)  # its token ids, end token included (teacher forcing)
    question_type: str | None = None  # VQA: the question's type (the sample's, or its first two words)


def eval_items(urls: list[str], formatter: Formatter, transform: Callable, tasks: tuple[str, ...],
               limit: int) -> list[Item]:  # fmt: skip
    """Up to ``limit`` items per task from the shards, in shard order; unusable samples are passed over."""
    items: list[Item] = []
    counts = dict.fromkeys(tasks, 0)
    decode = formatter.tokenizer.decode
    for raw in read_shards(urls):
        try:
            record, image_bytes = read_record(raw)
            image = transform(decode_image(image_bytes, record.key)) if image_bytes is not None else None
        except Skip:
            continue
        for task in available_tasks(record):
            if task not in counts or counts[task] >= limit:
                continue
            try:
                example = formatter(record, task, task_rng(0, 0, record.key))
            except Skip:
                continue
            cut = prompt_length(example.labels)
            truth = decode(_until_end(example.input_ids[cut:], formatter), skip_special_tokens=False)
            kind = (
                TASKS["vqa"].question_type(record, decode(example.input_ids[:cut])) if task == "vqa" else None
            )
            items.append(Item(record.key, task, example.input_ids[:cut], image if example.has_image else None,
                              truth.strip(), example.input_ids[cut:], kind))  # fmt: skip
            counts[task] += 1
        if all(n >= limit for n in counts.values()):
            break
    return items


def by_question_type(items: list[Item], seeing: list[str], blind: list[str]) -> dict[str, dict]:
    """VQA accuracy per question type, with the image-blind twin and the item count: which kinds of question
    the model answers from the image."""
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        if item.task == "vqa":
            groups.setdefault(item.question_type or "unknown", []).append(i)
    out = {}
    for kind, idx in sorted(groups.items()):
        truths = [items[i].truth for i in idx]
        out[kind] = {"samples": len(idx),
                     "vqa_acc": round(exact_match_accuracy([seeing[i].strip() for i in idx], truths), 4),
                     "blind": round(exact_match_accuracy([blind[i].strip() for i in idx], truths), 4)}  # fmt: skip
    return out


def _until_end(ids: list[int], formatter: Formatter) -> list[int]:
    ends = {formatter.ids.endoftext, formatter.ids.im_end}
    return ids[: next((i for i, t in enumerate(ids) if t in ends), len(ids))]


@torch.no_grad()
def answers(model, tokenizer, items: list[Item], blind: bool, batch_size: int, max_new_tokens: int,
            share: Share = ALONE) -> list[str]:  # fmt: skip
    """Generated answers in item order; ``blind`` blanks every image (zeros after normalisation: the mean)."""
    device = next(model.parameters()).device
    eos = end_ids(tokenizer)
    done: dict[int, list[str]] = {}
    starts = range(0, len(items), batch_size)
    for b in tqdm(share.mine(len(starts)), desc="eval (blind)" if blind else "eval", leave=False):
        batch = items[starts[b] : starts[b] + batch_size]
        images = [it.image for it in batch if it.image is not None]
        if images:
            pixels = torch.stack(images).to(device)
            pixels = torch.zeros_like(pixels) if blind else pixels
        else:
            pixels = torch.zeros(0, 3, *model.image_size, device=device)
        generated = greedy_batch(model, [it.prompt for it in batch], pixels, [it.image is not None for it in batch],
                                 max_new_tokens, eos, tokenizer.pad_token_id)  # fmt: skip
        done[b] = answer_texts(tokenizer, generated, eos)
    return [text for texts in share.in_order(done) for text in texts]


@torch.no_grad()
def image_use(
    model, items: list[Item], pad_id: int, batch_size: int = 16, share: Share = ALONE
) -> dict[str, dict[str, float]]:
    """Per task, the teacher-forced loss of the reference answers with each item's own image, with the image
    blanked and with another item's image (the next one of the task): a model that uses its images scores
    lowest with its own. Items without an image are left out."""
    device = next(model.parameters()).device
    by_task: dict[str, list[Item]] = {}
    for item in items:
        if item.image is not None:
            by_task.setdefault(item.task, []).append(item)
    jobs = [(task, start) for task, group in by_task.items() for start in range(0, len(group), batch_size)]
    done: dict[int, tuple[str, dict[str, float], int]] = {}
    for j in share.mine(len(jobs)):
        task, start = jobs[j]
        group = by_task[task]
        batch = group[start : start + batch_size]
        examples = [Example(it.key, task, it.prompt + it.answer, [IGNORE] * len(it.prompt) + it.answer, True)
                    for it in batch]  # fmt: skip
        inputs = collate(examples, [it.image for it in batch], pad_id, batch[0].image.shape[-1])
        shuffled = [group[(start + i + 1) % len(group)].image for i in range(len(batch))]
        pixels = {"seeing": inputs["pixel_values"], "blank": torch.zeros_like(inputs["pixel_values"]),
                  "shuffled": torch.stack(shuffled)}  # fmt: skip
        sums = {}
        for name, values in pixels.items():
            out = model(inputs["input_ids"].to(device), inputs["attention_mask"].to(device), values.to(device),
                        inputs["has_image"].to(device), inputs["labels"].to(device))  # fmt: skip
            sums[name] = float(out.sample_loss.sum())
        done[j] = (task, sums, int(out.sample_tokens.sum()))
    totals: dict[str, tuple[dict[str, float], int]] = {}
    for task, sums, tokens in share.in_order(done):  # summed in batch order, as one process does
        acc, count = totals.get(task, (dict.fromkeys(sums, 0.0), 0))
        totals[task] = ({name: acc[name] + value for name, value in sums.items()}, count + tokens)
    return {task: {name: round(total / max(count, 1), 4) for name, total in acc.items()}
            for task, (acc, count) in totals.items()}  # fmt: skip


def scores(items: list[Item], predicted: list[str]) -> dict[str, float]:
    """Each task's metric (the registry's) over its items."""
    by_task: dict[str, tuple[list[str], list[str]]] = {}
    for item, text in zip(items, predicted, strict=True):
        preds, truths = by_task.setdefault(item.task, ([], []))
        preds.append(text.strip())
        truths.append(item.truth)
    result = {}
    for task, (preds, truths) in by_task.items():
        result |= TASKS[task].score(preds, truths)
    return {k: round(v, 4) for k, v in result.items()}


def evaluate(model, tokenizer, formatter: Formatter, transform: Callable, urls: list[str],
             tasks: tuple[str, ...] = tuple(METRICS), limit: int = 200, batch_size: int = 16,
             max_new_tokens: int = 64, question_types: bool = False, share: Share = ALONE) -> dict:  # fmt: skip
    """Every task's score with the images and blind, and the number of samples behind each; with
    ``question_types``, VQA accuracy per question type too (``vqa_by_question_type``). Under ``share``, each
    rank calls this with its own and every rank returns the whole result."""
    model.eval()
    items = eval_items(urls, formatter, transform, tasks, limit)
    seeing = answers(model, tokenizer, items, False, batch_size, max_new_tokens, share)
    blind = answers(model, tokenizer, items, True, batch_size, max_new_tokens, share)
    counts = {METRICS[t]: sum(it.task == t for it in items) for t in tasks}
    vqa_truths = [it.truth for it in items if it.task == "vqa"]
    counts |= {f"vqa_acc/{kind}": len(idx) for kind, idx in by_answer_type(vqa_truths).items()}
    losses = image_use(model, items, tokenizer.pad_token_id, batch_size, share)
    examples = [{"key": it.key, "task": it.task, "truth": it.truth, "generated": g, "blind": b}
                for it, g, b in list(zip(items, seeing, blind, strict=True))[:: max(1, len(items) // 20)]]  # fmt: skip
    result = {**scores(items, seeing), "blind": scores(items, blind), "samples": counts, "image_loss": losses,
              "examples": examples}  # fmt: skip
    if question_types:
        result["vqa_by_question_type"] = by_question_type(items, seeing, blind)
    return result


def evaluate_export(folder: str | Path, urls: list[str], tasks: tuple[str, ...] = tuple(METRICS), limit: int = 200,
                    batch_size: int = 16, max_new_tokens: int = 64, device=None,
                    out: str | Path | None = None, question_types: bool = False,
                    share: Share = ALONE) -> dict:  # fmt: skip
    """``evaluate`` on a final/ export, also written to ``out`` (default ``folder/eval.json``) by rank 0 of
    ``share``."""
    model, tokenizer, formatter, transform = load_export(folder, device)
    result = evaluate(model, tokenizer, formatter, transform, urls, tasks, limit, batch_size, max_new_tokens,
                      question_types, share)  # fmt: skip
    if share.rank == 0:
        Path(out or Path(folder) / "eval.json").write_text(json.dumps(result, indent=1, ensure_ascii=False))
    return result
