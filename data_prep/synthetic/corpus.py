"""The synthetic world's text corpus for the offline tokenizer (``pipeline.tokenizer``): every task's ground
truth (the world's own task builder), pure text and text dialogues, in English and Chinese. Other languages
and junk are left out: they are noise, not vocabulary.

    python -m data_prep.synthetic.corpus --out .cache/corpus.jsonl      (one JSON string per line)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from data_prep.synthetic.scene import sample_scene
from data_prep.synthetic.world import WorldConfig, sample_rng, scene_tasks, text_sample


def corpus(num_samples: int = 3000, seed: int = 0) -> Iterator[str]:
    cfg = WorldConfig(num_samples=num_samples, seed=seed)
    for index in range(num_samples):
        rng = sample_rng(cfg, index, "corpus")
        yield from task_texts(scene_tasks(sample_scene(rng), rng, chinese=True))
    for index in range(num_samples // 2):
        sample = text_sample(cfg, index)
        yield from [sample["text"]] if sample["kind"] == "text" else _message_texts(sample["messages"])


def task_texts(tasks: dict) -> Iterator[str]:
    yield from (tasks["caption_en"], tasks["caption_zh"], tasks["grounded_caption"])
    yield from (text for qa in tasks["vqa"] for text in (qa["question"], qa["answer"]))
    yield from (ref["expression"] for ref in tasks["ref"])
    yield from (word["text"] for word in tasks["ocr"])
    yield from _message_texts(tasks["dialogue"])


def _message_texts(messages: list[dict]) -> Iterator[str]:
    for message in messages:
        content = message["content"]
        yield from (
            [content] if isinstance(content, str) else (p["text"] for p in content if p["type"] == "text")
        )


def write_corpus(out: str | Path, num_samples: int = 3000, seed: int = 0) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(
        "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in corpus(num_samples, seed)), "utf-8"
    )
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m data_prep.synthetic.corpus", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--out", default=".cache/corpus.jsonl", help="output JSONL (default .cache/corpus.jsonl)")
    p.add_argument("--num-samples", type=int, default=3000, help="world scenes to draw text from")
    args = p.parse_args(argv)
    print(f"corpus: {write_corpus(args.out, args.num_samples)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
