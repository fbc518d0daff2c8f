"""A model run through a benchmark from its own files: batched greedy answers with the images and with every
image blanked (the image-blind twin), each written in the benchmark's official results format and scored by
its official rule, then every benchmark of the output folder gathered into a markdown table in the layout of
the paper's Tables 4 and 5.

    out/<benchmark>[-<split>]/predictions.json, predictions_blind.json, scores.json;  out/results.md
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from pipeline.benchmarks.files import BenchFiles
from pipeline.benchmarks.scoring import ScoringError
from pipeline.benchmarks.suites import SUITES, BenchItem
from pipeline.data.formats import Formatter
from pipeline.data.shard_format import open_image
from pipeline.generate import end_ids, greedy_batch

RESULTS = "results.md"
# the paper's tables: (column, benchmark folder, score key)
TABLE4 = [("Flickr30K", "flickr30k", "cider"), ("NoCaps", "nocaps", "cider"), ("VQAv2", "vqav2", "vqa_acc"),
          ("OKVQA", "okvqa", "vqa_acc"), ("GQA", "gqa", "accuracy"), ("VizWiz", "vizwiz", "vqa_acc"),
          ("TextVQA", "textvqa", "vqa_acc")]  # fmt: skip
TABLE5 = [(f"{name} {split}", f"{folder}-{split}", "ref_acc")
          for name, folder, splits in (("RefCOCO", "refcoco", ("val", "testA", "testB")),
                                       ("RefCOCO+", "refcoco+", ("val", "testA", "testB")),
                                       ("RefCOCOg", "refcocog", ("val", "test")))
          for split in splits]  # fmt: skip


def run_benchmark(model, tokenizer, formatter: Formatter, transform: Callable, name: str, files: BenchFiles,
                  out: str | Path, limit: int | None = None, batch_size: int = 16) -> dict:  # fmt: skip
    """Answer, write and score one benchmark (with its blind twin); returns its scores.json."""
    suite = SUITES[name]
    suite.check(files)
    items = suite.items(files)[:limit]
    if not items:
        raise ScoringError(f"{name}: no items in its files")
    folder = Path(out) / (f"{name}-{files.split}" if suite.kind == "ref" else name)
    folder.mkdir(parents=True, exist_ok=True)
    answers = {blind: [] for blind in (False, True)}
    for start in tqdm(range(0, len(items), batch_size), desc=name, unit="batch"):
        batch = items[start : start + batch_size]
        prompts = [formatter.task_prompt(it.text, has_image=True) for it in batch]
        pixels = torch.stack([transform(_image(it)) for it in batch]).to(next(model.parameters()).device)
        for blind in (False, True):
            answers[blind] += _generate(model, tokenizer, prompts, torch.zeros_like(pixels) if blind else pixels,
                                        suite.max_new_tokens)  # fmt: skip
    ids = [it.id for it in items]
    result = {"benchmark": name, "split": files.split, "items": len(items), "limit": limit}
    for blind, stem in ((False, "predictions"), (True, "predictions_blind")):
        path = folder / f"{stem}.json"
        path.write_text(json.dumps([suite.record(it, a) for it, a in zip(items, answers[blind], strict=True)],
                                   ensure_ascii=False))  # fmt: skip
        scores = suite.score(path, files, ids)
        result.update(scores) if not blind else result.update(blind=scores)
    (folder / "scores.json").write_text(json.dumps(result, indent=1))
    (Path(out) / RESULTS).write_text(results_table(out))
    return result


def _image(item: BenchItem):
    try:
        return open_image(item.image.read_bytes())
    except OSError as e:
        raise ScoringError(f"item {item.id!r}: image {item.image}: {e.strerror or e}") from None


@torch.no_grad()
def _generate(
    model, tokenizer, prompts: list[list[int]], pixels: torch.Tensor, max_new_tokens: int
) -> list[str]:
    eos = end_ids(tokenizer)
    generated = greedy_batch(model, prompts, pixels, [True] * len(prompts), max_new_tokens, eos,
                             tokenizer.pad_token_id)  # fmt: skip
    return [
        tokenizer.decode([t for t in g if t not in eos], skip_special_tokens=True).strip() for g in generated
    ]


def results_table(out: str | Path) -> str:
    """Every scored benchmark under ``out`` in the layout of the paper's Tables 4 and 5 (x 100, as the paper
    writes accuracies and CIDEr), the image-blind twin beneath; a benchmark not run is a dash."""
    scores = {p.parent.name: json.loads(p.read_text()) for p in sorted(Path(out).glob("*/scores.json"))}
    lines = []
    for title, table in (("Table 4: captioning (CIDEr) and VQA (accuracy, %)", TABLE4),
                         ("Table 5: referring expression comprehension (accuracy at IoU >= 0.5, %)", TABLE5)):  # fmt: skip
        if not any(folder in scores for _, folder, _ in table):
            continue
        lines += [f"### {title}", "", "| | " + " | ".join(c for c, _, _ in table) + " |",
                  "|---" * (len(table) + 1) + "|"]  # fmt: skip
        for row, pick in (("model", lambda s: s), ("image-blind", lambda s: s["blind"])):
            cells = [_cell(pick(scores[f]).get(key)) if f in scores else "-" for _, f, key in table]
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
        counts = [str(scores[f]["items"]) if f in scores else "-" for _, f, _ in table]
        lines += ["| items | " + " | ".join(counts) + " |", ""]
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"
