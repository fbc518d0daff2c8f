"""Exports: a ``final/`` folder loaded ready to answer (``load_export``), and written as a folder to share,
laid out as on the Hugging Face hub (``export_hf``; the command is ``python -m launch.export``).

The shared folder holds ``model.safetensors``, the tokenizer files, ``config.yaml`` (what ``QwenVL.from_pretrained`` reads),
``config.json`` (the architecture, for people and hub tools) and ``README.md``, a model card with the held-out
scores when the export was evaluated (``eval.json``). ``QwenVL.from_pretrained(out)`` loads it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import torch

from pipeline.config import load_config
from pipeline.data.formats import Formatter
from pipeline.model.qwenvl import EXPORT_CONFIG, WEIGHTS, QwenVL
from pipeline.model.vision import image_transform
from pipeline.schema import StageConfig

SCORE_NAMES = {"cider": "caption CIDEr", "vqa_acc": "VQA accuracy", "grounding_acc": "grounding acc. (IoU >= 0.5)",
               "ocr_acc": "OCR word accuracy", "chat_acc": "dialogue answer accuracy"}  # fmt: skip


def load_export(folder: str | Path, device: str | torch.device | None = None):
    """A final/ export ready to answer: (model in eval mode on ``device``, tokenizer, its Formatter, its image
    transform); the device defaults to CUDA when there is one."""
    model, tokenizer, cfg = QwenVL.from_pretrained(folder)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    formatter = Formatter(tokenizer, cfg.model.adapter.num_queries, cfg.data.max_length)
    return (
        model.to(device).eval(),
        tokenizer,
        formatter,
        image_transform(cfg.model.vision, cfg.data.image_size),
    )


def export_hf(final: str | Path, out: str | Path) -> Path:
    final, out = Path(final), Path(out)
    if not (final / WEIGHTS).is_file() or not (final / EXPORT_CONFIG).is_file():
        raise FileNotFoundError(f"{final}: not a final/ export (needs {WEIGHTS} and {EXPORT_CONFIG})")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(final, tmp, ignore=shutil.ignore_patterns("eval.json"))
    cfg = load_config(StageConfig, final / EXPORT_CONFIG)
    config = {
        "architectures": ["QwenVL"],
        "model_type": "qwenvl-pipeline",
        "image_size": cfg.data.image_size,
        "num_image_tokens": cfg.model.adapter.num_queries,
        "vision": asdict(cfg.model.vision),
        "adapter": asdict(cfg.model.adapter),
        "text_config": cfg.model.llm.arch,
        "trained_stage": cfg.run.stage,
    }
    (tmp / "config.json").write_text(json.dumps(config, indent=1))
    scores = json.loads((final / "eval.json").read_text()) if (final / "eval.json").is_file() else None
    if scores:
        (tmp / "eval.json").write_text(
            json.dumps({k: v for k, v in scores.items() if k != "examples"}, indent=1)
        )
    (tmp / "README.md").write_text(model_card(cfg, scores))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def data_description(cfg: StageConfig) -> str:
    """The stage's data as the card says it: its shards, or its mixture's sources with their weights."""
    if not cfg.data.sources:
        return f"`{cfg.data.shards}`"
    return ", ".join(f"`{s.name}` (weight {s.weight:g})" for s in cfg.data.sources)


def model_card(cfg: StageConfig, scores: dict | None) -> str:
    lines = ["---", "library_name: qwenvl-pipeline", "tags: [vision-language, qwen-vl]", "---", "",
             f"# {cfg.run.name} / {cfg.run.stage}", "",
             f"A Qwen-VL-style model ({cfg.model.vision.arch} vision tower, a {cfg.model.adapter.num_queries}-query "
             f"resampler, a {cfg.model.llm.arch.get('num_hidden_layers', '?')}-layer "
             f"{cfg.model.llm.arch.get('model_type', '')} LM) at {cfg.data.image_size} px, trained with "
             f"qwenvl-pipeline up to {cfg.run.stage} (groups trained there: {', '.join(cfg.train.trainable)}; "
             f"{cfg.train.max_steps} steps; data: {data_description(cfg)}).", "",
             "```python", "from pipeline.model.qwenvl import QwenVL", "model, tokenizer, cfg = QwenVL.from_pretrained(\"<this folder>\")",
             "```", "", "Or: `python -m launch.generate --checkpoint <this folder> --image IMG --prompt TEXT`."]  # fmt: skip
    if scores:
        lines += ["", "## Held-out scores", "", "Each with the images blanked in brackets (the image-blind twin).", "",
                  "| score | value | images blanked | samples |", "|---|---|---|---|"]  # fmt: skip
        for key, name in SCORE_NAMES.items():
            if key in scores:
                lines.append(f"| {name} | {scores[key]:.3f} | {scores['blind'][key]:.3f} | "
                             f"{scores.get('samples', {}).get(key, '?')} |")  # fmt: skip
    return "\n".join(lines) + "\n"
