"""The offline tokenizer: byte-level BPE trained with HF `tokenizers` on the synthetic world's English and
Chinese text, saved as a PreTrainedTokenizerFast folder with the Qwen2 family's special tokens.

Because the special tokens carry Qwen2's names, code written against this tokenizer runs unchanged on a
real Qwen2 tokenizer. The folder is cached: it is rebuilt only when its inputs (corpus, vocabulary size,
special tokens, builder version) change.

    python -m data_prep.tokenizer --out .cache/tokenizer
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

BUILDER_VERSION = "bpe-v1"
ENDOFTEXT = "<|endoftext|>"
SPECIAL_TOKENS = [
    ENDOFTEXT,
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# ChatML, as Qwen2's tokenizer_config.json defines it (default system prompt included).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
BUILD_INFO = "build_info.json"
MAX_VOCAB = 8192  # a ceiling: BPE stops earlier when the corpus has no more pairs to merge
# The fixed words of the Qwen-VL task formats and ChatML, so that they are whole tokens.
TASK_PROMPTS = [
    "Generate the caption in English:", "Generate the caption in English with grounding:", "OCR with grounding:",
    " Answer:", "Picture 1:", "system\n", "user\n", "assistant\n", "You are a helpful assistant.",
] * 50  # fmt: skip


def corpus(num_samples: int = 3000, seed: int = 0) -> Iterator[str]:
    """English and Chinese text of the world: every task's ground truth (the world's own task builder),
    pure text and text dialogues. Other languages and junk are left out: they are noise, not vocabulary."""
    from data_prep.synthetic.scene import sample_scene
    from data_prep.synthetic.world import WorldConfig, sample_rng, scene_tasks, text_sample

    yield from TASK_PROMPTS
    cfg = WorldConfig(num_samples=num_samples, seed=seed)
    for index in range(num_samples):
        rng = sample_rng(cfg, index, "corpus")
        yield from task_texts(scene_tasks(sample_scene(rng), rng, chinese=True))
    for index in range(num_samples // 2):
        sample = text_sample(cfg, index)
        yield from [sample["text"]] if sample["kind"] == "text" else _message_texts(sample["messages"])


def task_texts(tasks: dict) -> Iterator[str]:
    yield from (tasks["caption_en"], tasks["caption_zh"], tasks["grounded_caption"])
    yield from (f"{qa['question']} Answer: {qa['answer']}" for qa in tasks["vqa"])
    yield from (ref["expression"] for ref in tasks["ref"])
    yield from (word["text"] for word in tasks["ocr"])
    yield from _message_texts(tasks["dialogue"])


def _message_texts(messages: list[dict]) -> Iterator[str]:
    for message in messages:
        content = message["content"]
        yield from (
            [content] if isinstance(content, str) else (p["text"] for p in content if p["type"] == "text")
        )


def fingerprint(texts: list[str], vocab_size: int) -> str:
    h = hashlib.sha256(json.dumps([BUILDER_VERSION, vocab_size, SPECIAL_TOKENS, CHAT_TEMPLATE]).encode())
    for t in texts:
        h.update(t.encode("utf-8") + b"\0")
    return h.hexdigest()


def build(texts: list[str], vocab_size: int):
    """Train the BPE and wrap it as a transformers PreTrainedTokenizerFast."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # Every digit is its own token (box coordinates, as Qwen does) and so is every CJK character (a small
    # corpus would otherwise merge whole template phrases); then GPT-2 byte-level splitting.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.Split(Regex("[\u3400-\u9fff\uf900-\ufaff]"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable: no unknown tokens
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=ENDOFTEXT,
        pad_token=ENDOFTEXT,  # as in Qwen2: padding is masked out, never learned
        additional_special_tokens=SPECIAL_TOKENS[1:],
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def ensure_tokenizer(out: str | Path, vocab_size: int = MAX_VOCAB, force: bool = False) -> tuple[Path, bool]:
    """Build the tokenizer into ``out`` unless an identical build is already there. Returns (path, built)."""
    from filelock import FileLock

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    texts = list(corpus())
    fp = fingerprint(texts, vocab_size)
    with FileLock(str(out) + ".lock"):  # parallel test workers build it once
        info = out / BUILD_INFO
        if not force and info.is_file() and json.loads(info.read_text()).get("fingerprint") == fp:
            return out, False
        tokenizer = build(texts, vocab_size)
        tokenizer.save_pretrained(out)
        info.write_text(
            json.dumps({"fingerprint": fp, "vocab_size": len(tokenizer), "corpus_texts": len(texts)})
        )
    return out, True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_prep.tokenizer", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=".cache/tokenizer", help="output folder (default .cache/tokenizer)")
    p.add_argument(
        "--vocab-size", type=int, default=MAX_VOCAB, help="largest BPE vocabulary, special tokens included"
    )
    p.add_argument("--force", action="store_true", help="rebuild even if the cached build matches")
    args = p.parse_args(argv)
    path, built = ensure_tokenizer(args.out, args.vocab_size, args.force)
    info = json.loads((path / BUILD_INFO).read_text())
    print(f"tokenizer {'built' if built else 'up to date'}: {path} ({info['vocab_size']} tokens)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
