"""The offline tokenizer: byte-level BPE trained with HF `tokenizers` on a text corpus (by default the synthetic
world's English and Chinese, written by ``python -m data_prep.synthetic.corpus``), with the Qwen2 family's
reserved special tokens as single ids and Qwen2's ChatML chat template, saved as a transformers tokenizer.

    python -m data_prep.synthetic.corpus --out .cache/corpus.jsonl
    python -m launch.tokenizer --corpus .cache/corpus.jsonl --out .cache/tokenizer      (make tokenizer)

The formats' fixed prompts are added to every corpus so that they become whole words. A rebuild happens only
when the corpus, the vocabulary size or the builder changes (a fingerprint is stored next to the files).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pipeline.data.tasks import fixed_prompts
from pipeline.tokens import CHAT_TEMPLATE, ENDOFTEXT, SPECIAL_TOKENS

BUILDER_VERSION = "bpe-v1"
BUILD_INFO = "build_info.json"
MAX_VOCAB = 8192  # a ceiling: BPE stops earlier when the corpus has no more pairs to merge
PROMPT_REPEATS = 50  # the fixed prompts' weight in the corpus: enough for BPE to merge each into whole words


def read_corpus(path: str | Path) -> list[str]:
    """A JSONL file of strings (texts may hold newlines), one text per line."""
    texts = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            text = json.loads(line)
            if not isinstance(text, str):
                raise ValueError(f"{path}:{line_no}: a corpus line must be a JSON string")
            texts.append(text)
    return texts


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


def ensure_tokenizer(out: str | Path, corpus: list[str], vocab_size: int = MAX_VOCAB,
                     force: bool = False) -> tuple[Path, bool]:  # fmt: skip
    """Build the tokenizer into ``out`` unless an identical build is already there. Returns (path, built)."""
    from filelock import FileLock

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    texts = fixed_prompts() * PROMPT_REPEATS + corpus
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
