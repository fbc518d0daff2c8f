import json

import pytest

from data_prep.synthetic.corpus import corpus, write_corpus
from launch.tokenizer import main
from pipeline.data.tasks import fixed_prompts
from pipeline.tokenizer import BUILD_INFO, ensure_tokenizer, fingerprint, read_corpus
from pipeline.tokens import SPECIAL_TOKENS


@pytest.mark.parametrize("token", SPECIAL_TOKENS)
def test_every_special_token_is_one_id(tokenizer, token):
    ids = tokenizer(token, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1 and tokenizer.convert_ids_to_tokens(ids) == [token]
    # still atomic inside text, with no space around it
    ids = tokenizer(f"a{token}b", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids)[1] == token


def test_special_tokens_are_distinct_and_registered(tokenizer):
    ids = tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)
    assert len(set(ids)) == len(SPECIAL_TOKENS)
    assert tokenizer.eos_token == tokenizer.pad_token == "<|endoftext|>"
    assert set(SPECIAL_TOKENS) <= set(tokenizer.all_special_tokens)


def test_image_span_has_exactly_one_id_per_pad(tokenizer):
    pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    ids = tokenizer("<|image_pad|>" * 256, add_special_tokens=False)["input_ids"]
    assert ids == [pad] * 256
    span = "<|vision_start|>" + "<|image_pad|>" * 256 + "<|vision_end|>Generate the caption in English:"
    ids = tokenizer(span, add_special_tokens=False)["input_ids"]
    assert ids.count(pad) == 256 and ids[0] == tokenizer.convert_tokens_to_ids("<|vision_start|>")
    assert ids[257] == tokenizer.convert_tokens_to_ids("<|vision_end|>")


@pytest.mark.parametrize(
    "text",
    ["A large red circle to the left of a small blue square.", "米色背景上有一个小的粉色菱形。",
     "<ref>the red star</ref><box>(12,345),(678,999)</box>", "Unseen words: zebra, Ωmega, émoji 🙂"],
)  # fmt: skip
def test_round_trip_is_exact(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text


def test_digits_and_chinese_characters_are_single_tokens(tokenizer):
    tokens = tokenizer.tokenize("(123,456)")
    assert [t for t in tokens if t.isdigit()] == list("123456")
    assert len(tokenizer("粉色菱形", add_special_tokens=False)["input_ids"]) == 4


@pytest.mark.parametrize("prompt", fixed_prompts())
def test_every_fixed_prompt_is_whole_words(tokenizer, prompt):
    """One token per piece of the byte-level pre-tokenizer: BPE merged every word of the prompt whole."""
    pieces = [piece for piece, _ in tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str(prompt)]
    assert tokenizer.tokenize(prompt) == pieces
    assert tokenizer.tokenize("Generate the caption in English:") == [
        "Generate", "Ġthe", "Ġcaption", "Ġin", "ĠEnglish", ":"
    ]  # fmt: skip


def test_chat_template_is_chatml(tokenizer):
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "How many sides does a square have?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHow many sides does a square have?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_corpus_is_english_and_chinese_only(tmp_path):
    texts = list(corpus(num_samples=200))
    assert read_corpus(write_corpus(tmp_path / "corpus.jsonl", num_samples=200)) == texts
    assert any("色" in t for t in texts)
    for t in texts:
        assert all(ord(c) < 0x3000 or 0x3000 <= ord(c) <= 0x303F or 0x4E00 <= ord(c) <= 0x9FFF or 0xFF00 <= ord(c) <= 0xFFEF
                   or c in "“”" for c in t), t  # fmt: skip


def test_cached_then_rebuilt_when_inputs_change(tmp_path, capsys):
    out, texts = tmp_path / "tok", list(corpus(num_samples=300))
    assert ensure_tokenizer(out, texts, vocab_size=600)[1] is True
    stamp = (out / "tokenizer.json").stat().st_mtime_ns
    assert ensure_tokenizer(out, texts, vocab_size=600)[1] is False
    assert (out / "tokenizer.json").stat().st_mtime_ns == stamp
    file = write_corpus(tmp_path / "corpus.jsonl", num_samples=300)
    assert main(["--corpus", str(file), "--out", str(out), "--vocab-size", "500"]) == 0
    assert "built" in capsys.readouterr().out
    assert json.loads((out / BUILD_INFO).read_text())["vocab_size"] == 500
    assert fingerprint(["a red circle"], 500) != fingerprint(
        ["a red square"], 500
    )  # corpus changes rebuild too
