"""A ``final/`` export as a folder to share, laid out as on the Hugging Face hub.

    python -m pipeline.export --checkpoint runs/demo/stage3/final --out runs/demo/hf

It holds ``model.safetensors``, the tokenizer files, ``config.yaml`` (what ``QwenVL.from_pretrained`` reads),
``config.json`` (the architecture, for people and hub tools) and ``README.md``, a model card with the held-out
scores when the export was evaluated (``eval.json``). ``QwenVL.from_pretrained(out)`` loads it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

from pipeline.config import load_config
from pipeline.model.qwenvl import EXPORT_CONFIG, WEIGHTS
from pipeline.schema import StageConfig

SCORE_NAMES = {"cider": "caption CIDEr", "vqa_acc": "VQA accuracy", "grounding_acc": "grounding acc. (IoU >= 0.5)",
               "ocr_acc": "OCR word accuracy", "chat_acc": "dialogue answer accuracy"}  # fmt: skip


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


def model_card(cfg: StageConfig, scores: dict | None) -> str:
    lines = ["---", "library_name: qwenvl-pipeline", "tags: [vision-language, qwen-vl]", "---", "",
             f"# {cfg.run.name} / {cfg.run.stage}", "",
             f"A Qwen-VL-style model ({cfg.model.vision.arch} vision tower, a {cfg.model.adapter.num_queries}-query "
             f"resampler, a {cfg.model.llm.arch.get('num_hidden_layers', '?')}-layer "
             f"{cfg.model.llm.arch.get('model_type', '')} LM) at {cfg.data.image_size} px, trained with "
             f"qwenvl-pipeline up to {cfg.run.stage} (groups trained there: {', '.join(cfg.train.trainable)}; "
             f"{cfg.train.max_steps} steps; data: `{cfg.data.shards}`).", "",
             "```python", "from pipeline.model.qwenvl import QwenVL", "model, tokenizer, cfg = QwenVL.from_pretrained(\"<this folder>\")",
             "```", "", "Or: `python -m pipeline.generate --checkpoint <this folder> --image IMG --prompt TEXT`."]  # fmt: skip
    if scores:
        lines += ["", "## Held-out scores", "", "Each with the images blanked in brackets (the image-blind twin).", "",
                  "| score | value | images blanked | samples |", "|---|---|---|---|"]  # fmt: skip
        for key, name in SCORE_NAMES.items():
            if key in scores:
                lines.append(f"| {name} | {scores[key]:.3f} | {scores['blind'][key]:.3f} | "
                             f"{scores.get('samples', {}).get(key, '?')} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.export", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a final/ export")
    p.add_argument("--out", required=True, help="the folder to write (replaced)")
    args = p.parse_args(argv)
    print(f"exported: {export_hf(args.checkpoint, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
