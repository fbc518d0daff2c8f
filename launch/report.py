"""A chained run's report: ``<run>/report.md`` and ``<run>/eval.json`` from what its stages left behind.

Each stage folder (``<run>/<stage>/``) holds ``metrics.jsonl`` and ``final/eval.json`` (its export scored on
held-out shards next to the image-blind twin). The report puts them side by side, with the phase times, the
data-prep funnel and a grid of held-out images with what the last stage's model says about them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from pipeline.data.tasks import METRICS
from pipeline.metrics import read_metrics

SCORES = tuple(METRICS.values())  # cider, vqa_acc, grounded_acc, grounding_acc, ocr_acc, chat_acc


def write_report(run_dir: Path, stages: list[str], phases: dict[str, dict], prep_dir: Path | None, heldout: str,
                 grid_images: int = 8) -> Path:  # fmt: skip
    """Write ``report.md``, ``eval.json`` (the last stage's scores, every stage's under ``stages``) and the
    plots under ``plots/`` for the run's ``stages``, in chain order; returns the report's path."""
    plots = run_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    final = run_dir / stages[-1] / "final"
    evals = {}
    for stage in stages:
        path = run_dir / stage / "final" / "eval.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: stage {stage} was not scored (eval.shards unset?)")
        evals[stage] = json.loads(path.read_text())
    headline = {k: v for k, v in evals[stages[-1]].items() if k != "examples"}
    result = {**headline, "checkpoint": str(final), "stages": {s: _scores(e) for s, e in evals.items()}}
    (run_dir / "eval.json").write_text(json.dumps(result, indent=1))

    figures = {
        "loss": plot_stage_losses([run_dir / s for s in stages], plots / "losses.png"),
        "eval": plot_eval(evals, plots / "eval.png"),
        "grid": plot_grid(final, heldout, grid_images, plots / "heldout_grid.png"),
    }
    if prep_dir is not None and (prep_dir / "plots" / "funnel.png").is_file():
        figures["funnel"] = Path(shutil.copy(prep_dir / "plots" / "funnel.png", plots / "prep_funnel.png"))
    text = _markdown(run_dir, result, evals, phases, prep_dir, figures)
    (run_dir / "report.md").write_text(text)
    return run_dir / "report.md"


def _scores(result: dict) -> dict:
    by_type = sorted(k for k in result if k.startswith("vqa_acc/"))
    return {k: result[k] for k in (*SCORES, *by_type, "blind", "samples", "image_loss") if k in result}


# -- plots ----------------------------------------------------------------------------------------------------
def plot_stage_losses(stages: list[Path], out: Path) -> Path:
    """One panel per stage: the loss per optimizer step, overall and per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, max(len(stages), 1), figsize=(4.2 * max(len(stages), 1), 3.4), squeeze=False)
    for ax, stage in zip(axes[0], stages, strict=False):
        rows = read_metrics(stage / "metrics.jsonl")
        steps = [r["step"] for r in rows]
        ax.plot(steps, [r["loss"] for r in rows], color="black", lw=1.5, label="all")
        for key in sorted({k for r in rows for k in r if k.startswith("loss/")}):
            points = [(r["step"], r[key]) for r in rows if key in r]
            ax.plot(*zip(*points, strict=True), lw=0.9, alpha=0.8, label=key.split("/", 1)[1])
        ax.set(title=stage.name, xlabel="step", yscale="log")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("loss (log)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_eval(evals: dict[str, dict], out: Path) -> Path:
    """Per score, one bar per stage with the images and a hatched one with them blanked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SCORES), figsize=(3.0 * len(SCORES), 3.2))
    stages = list(evals)
    for ax, score in zip(axes, SCORES, strict=True):
        seeing = [evals[s].get(score, 0.0) for s in stages]
        blind = [evals[s].get("blind", {}).get(score, 0.0) for s in stages]
        x = range(len(stages))
        ax.bar([i - 0.2 for i in x], seeing, width=0.4, label="with images")
        ax.bar([i + 0.2 for i in x], blind, width=0.4, hatch="//", alpha=0.6, label="images blanked")
        ax.set_xticks(list(x), stages, rotation=30, fontsize=8)
        ax.set_title(score)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_grid(final: Path, heldout: str, count: int, out: Path) -> Path:
    """Held-out images with the model's caption, and its box for one referring expression (red) beside the
    true box (green)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import ImageDraw

    from pipeline.draw import draw_box

    rows = grid_rows(final, heldout, count)
    cols = 4
    fig, axes = plt.subplots(-(-len(rows) // cols), cols, figsize=(4 * cols, 4.6 * -(-len(rows) // cols)),
                             squeeze=False)  # fmt: skip
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, rows, strict=False):
        image = row["image"].copy()
        draw = ImageDraw.Draw(image)
        for box, colour in ((row["true_box"], (0, 170, 0)), (row["box"], (230, 0, 0))):
            if box is not None:
                draw_box(draw, box, image.size, colour)
        ax.imshow(image)
        ax.set_title(f"{row['key']}\nref: {row['expression']}", fontsize=7)
        ax.text(0, -0.02, _wrap(row["caption"], 60), transform=ax.transAxes, va="top", fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def grid_rows(final: Path, heldout: str, count: int) -> list[dict[str, Any]]:
    """The first ``count`` held-out images with a referring expression: the model's English caption and its
    box for the first expression."""
    from pipeline.data.shard_format import expand_urls
    from pipeline.data.tasks import TASKS
    from pipeline.eval import Item, answers, eval_items
    from pipeline.eval_metrics import parse_box
    from pipeline.export import load_export

    model, tokenizer, formatter, transform = load_export(final, torch.device("cpu"))
    urls = expand_urls(heldout, key="eval.shards")
    refs = eval_items(urls, formatter, transform, ("ref",), count)
    caption = formatter.task_prompt(TASKS["caption"].prompt("en"), True)
    captions = [Item(it.key, "caption", caption, it.image, "") for it in refs]
    said = answers(model, tokenizer, [*refs, *captions], False, 16, 48)
    images = _images(urls, {it.key for it in refs})
    return [
        {"key": it.key, "image": images[it.key], "expression": tokenizer.decode(it.prompt, skip_special_tokens=True).strip(),
         "box": parse_box(said[i]), "true_box": parse_box(it.truth), "caption": said[len(refs) + i]}
        for i, it in enumerate(refs)
    ]  # fmt: skip


def _images(urls: list[str], keys: set[str]) -> dict:
    from pipeline.data.shard_format import open_image, parse, read_shards

    found = {}
    for raw in read_shards(urls):
        sample = parse(raw)
        if sample.key in keys and sample.image is not None:
            found[sample.key] = open_image(sample.image)
        if len(found) == len(keys):
            break
    return found


def _wrap(text: str, width: int) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if len(line) + len(word) + 1 > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line][:4])


# -- markdown -------------------------------------------------------------------------------------------------
def _score_table(evals: dict[str, dict], keys) -> list[str]:
    """A row per stage: each score with its blind twin in brackets ("-" where a stage lacks it)."""
    header = [
        "| stage | " + " | ".join(k.split("/")[-1] for k in keys) + " |",
        "|---" * (len(keys) + 1) + "|",
    ]
    rows = [f"| {stage} | " + " | ".join(f"{e[k]:.3f} ({e['blind'][k]:.3f})" if k in e else "-" for k in keys) + " |"
            for stage, e in evals.items()]  # fmt: skip
    return header + rows


def _markdown(run_dir: Path, result: dict, evals: dict[str, dict], phases: dict[str, dict],
              prep_dir: Path | None, figures: dict[str, Path]) -> str:  # fmt: skip
    lines = [f"# Report: {run_dir}", "", f"Final model: `{result['checkpoint']}`. Scores on held-out data, "
             "each next to the same model with its images blanked (the image-blind twin: what it knows without "
             "looking).", "", *_score_table(evals, SCORES)]  # fmt: skip
    kinds = sorted({k for e in evals.values() for k in e if k.startswith("vqa_acc/")})
    if kinds:
        lines += [
            "",
            "VQA accuracy by answer type (VQAv2's), blind in brackets:",
            "",
            *_score_table(evals, kinds),
        ]
    tasks = sorted({t for e in evals.values() for t in e.get("image_loss", {})})
    lines += ["", "Does it look? The loss of the reference answers (teacher-forced) with each image, with it blanked, "
              "and with another sample's image: a model that uses its images is lowest with its own.", "",
              "| stage | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]  # fmt: skip
    for stage, e in evals.items():
        losses = e.get("image_loss", {})
        cells = [" / ".join(f"{losses[t][k]:.3f}" for k in ("seeing", "blank", "shuffled")) if t in losses else "-"
                 for t in tasks]  # fmt: skip
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    samples = result.get("samples", {})
    lines += [
        "",
        "Samples behind each score (final stage): " + ", ".join(f"{k} {v}" for k, v in samples.items()),
    ]
    lines += ["", "## Training", "", "| stage | steps | first loss | last loss | seconds | samples/s |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for stage in evals:
        rows = read_metrics(run_dir / stage / "metrics.jsonl")
        if rows:
            seconds = sum(r["step_s"] for r in rows)
            lines.append(f"| {stage} | {rows[-1]['step']} | {rows[0]['loss']:.3f} | {rows[-1]['loss']:.3f} | "
                         f"{seconds:.0f} | {sum(r['samples_per_s'] for r in rows) / len(rows):.1f} |")  # fmt: skip
    lines += ["", "## Phases", "", "| phase | seconds | reused |", "|---|---|---|"]
    for name, t in phases.items():
        lines.append(f"| {name} | {t.get('seconds', '-')} | {'yes' if t.get('reused') else 'no'} |")
    if prep_dir is not None and (prep_dir / "summary.json").is_file():
        prep = json.loads((prep_dir / "summary.json").read_text())
        lines += ["", "## Data", "", f"`{prep_dir}`: {prep['kept']} of {prep['input']} samples kept "
                  f"({100 * prep['kept_rate']:.1f}%); dropped: " + ", ".join(f"{k} {v}" for k, v in prep["dropped"].items() if v)]  # fmt: skip
    lines += ["", "## Plots", ""]
    lines += [f"![{name}](plots/{path.name})" for name, path in figures.items()]
    lines += [
        "",
        "## Examples (final stage)",
        "",
        "| task | truth | with images | blind |",
        "|---|---|---|---|",
    ]
    for ex in list(evals.values())[-1].get("examples", [])[:12]:
        cells = [ex["task"], ex["truth"], ex["generated"], ex["blind"]]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ")[:120] for c in cells) + " |")
    return "\n".join(lines) + "\n"
