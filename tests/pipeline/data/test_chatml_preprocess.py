"""Our ChatML masking against Qwen-VL finetune.py's ``preprocess``, re-implemented here rule by rule on our
tokenizer, over 200 generated dialogues (100 with an image, 100 text-only)."""

import random

from data_prep.synthetic.scene import sample_scene
from data_prep.synthetic.world import WorldConfig, sample_rng, scene_tasks, text_sample
from pipeline.data.formats import Formatter, Record
from pipeline.tokens import IGNORE, IMAGE_END, IMAGE_PAD, IMAGE_START

Q = 16


def qwen_vl_preprocess(messages: list[dict], tokenizer) -> tuple[list[int], list[int]]:
    """finetune.py ``preprocess`` for one conversation, without padding; images are written as Qwen-VL's
    tokenizer expands ``<img>path</img>``: the image start, Q pads, the image end."""
    im_start, im_end = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])

    def tok(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False).input_ids

    nl_tokens = tok("\n")
    roles = {"user": "<|im_start|>user", "assistant": "<|im_start|>assistant"}
    system_message = "You are a helpful assistant."
    if messages[0]["role"] == "system":
        system_message, messages = messages[0]["content"], messages[1:]
    if roles[messages[0]["role"]] != roles["user"]:  # finetune.py: `source = source[1:]`
        messages = messages[1:]
    system = [im_start] + tok("system") + nl_tokens + tok(system_message) + [im_end] + nl_tokens
    input_id = list(system)
    target = [im_start] + [IGNORE] * (len(system) - 3) + [im_end] + nl_tokens
    for sentence in messages:
        role = roles[sentence["role"]]
        value = _value(sentence["content"])
        _input_id = tok(role) + nl_tokens + tok(value) + [im_end] + nl_tokens
        input_id += _input_id
        if role == "<|im_start|>user":
            _target = [im_start] + [IGNORE] * (len(_input_id) - 3) + [im_end] + nl_tokens
        else:
            _target = (
                [im_start]
                + [IGNORE] * len(tok(role))
                + _input_id[len(tok(role)) + 1 : -2]
                + [im_end]
                + nl_tokens
            )
        target += _target
    assert len(input_id) == len(target)
    return input_id, target


def _value(content) -> str:
    if isinstance(content, str):
        return content
    image = f"Picture 1: {IMAGE_START}{IMAGE_PAD * Q}{IMAGE_END}\n"
    return "".join(image if part["type"] == "image" else part["text"] for part in content)


def dialogues() -> list[tuple[Record, list[dict]]]:
    cfg = WorldConfig(seed=7)
    out = []
    for index in range(100):
        rng = sample_rng(cfg, index, "chatml-test")
        messages = scene_tasks(sample_scene(rng, "clean", 0.3), rng, chinese=False)["dialogue"]
        out.append((Record(f"i{index}", {"tasks": {"dialogue": messages}}, None, True), messages))
    index = 0
    while len(out) < 200:
        sample = text_sample(cfg, index)
        index += 1
        if sample["kind"] == "dialogue":
            out.append((Record(sample["key"], sample, None, False), sample["messages"]))
    return out


def test_chatml_masks_equal_qwen_vl_preprocess_on_240_dialogues(tokenizer):
    fmt = Formatter(tokenizer, Q, max_length=4096)
    samples = dialogues()
    assert len(samples) == 200
    assert sum(len(m) > 3 for _, m in samples) > 150  # mostly multi-turn
    opener = {"role": "assistant", "content": "Hello! Ask me about the picture."}
    for record, messages in samples[90:130]:  # 40 that open with an assistant turn, with and without image
        dialogue = (
            [opener, *messages] if messages[0]["role"] != "system" else [messages[0], opener, *messages[1:]]
        )
        samples.append(
            (Record(f"{record.key}-opener", {"messages": dialogue}, None, record.has_image), dialogue)
        )
    for record, messages in samples:
        example = fmt(record, "chatml", random.Random(0))
        ids, labels = qwen_vl_preprocess(messages, tokenizer)
        assert example.input_ids == ids, record.key
        assert example.labels == labels, record.key
        assert example.dropped_turns == record.key.endswith("-opener"), record.key
