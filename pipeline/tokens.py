"""The special tokens of the Qwen-VL formats, mapped onto the Qwen2 family's reserved tokens.

Data is written with the paper's readable tags (``<img>``, ``<ref>``, ``<box>``, ``<quad>``); the model sees
the tokenizer's reserved single-token equivalents. A tokenizer that lacks one gets it added as a special
token, and the model's embeddings are resized to match (``QwenVL.from_config`` does that).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

IGNORE = -100  # label of every position that is not supervised
ENDOFTEXT = "<|endoftext|>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
IMAGE_START, IMAGE_END, IMAGE_PAD = "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"
# The paper's tags -> reserved Qwen2 tokens.
TAGS = {
    "<img>": IMAGE_START,
    "</img>": IMAGE_END,
    "<ref>": "<|object_ref_start|>",
    "</ref>": "<|object_ref_end|>",
    "<box>": "<|box_start|>",
    "</box>": "<|box_end|>",
    "<quad>": "<|quad_start|>",
    "</quad>": "<|quad_end|>",
}
REQUIRED = [ENDOFTEXT, IM_START, IM_END, IMAGE_PAD, *TAGS.values()]
# every reserved token of the Qwen2 family a tokenizer built here carries (``pipeline.tokenizer``), in id order
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END, *list(TAGS.values())[2:], IMAGE_START, IMAGE_END, "<|vision_pad|>",
                  IMAGE_PAD, "<|video_pad|>"]  # fmt: skip
DEFAULT_SYSTEM = "You are a helpful assistant."
# ChatML, as Qwen2's tokenizer_config.json defines it (default system prompt included)
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    f"{{{{ '{IM_START}system\n{DEFAULT_SYSTEM}{IM_END}\n' }}}}{{% endif %}}"
    f"{{{{ '{IM_START}' + message['role'] + '\n' + message['content'] + '{IM_END}' + '\n' }}}}"
    "{% endfor %}"
    f"{{% if add_generation_prompt %}}{{{{ '{IM_START}assistant\n' }}}}{{% endif %}}"
)
_TAG_RE = re.compile("|".join(re.escape(t) for t in TAGS))


def to_model_text(text: str) -> str:
    """Replace the paper's tags by the tokenizer's reserved tokens."""
    return _TAG_RE.sub(lambda m: TAGS[m.group(0)], text)


@dataclass(frozen=True)
class SpecialIds:
    endoftext: int
    im_start: int
    im_end: int
    image_start: int
    image_end: int
    image_pad: int
    pad: int


def prepare_tokenizer(tokenizer) -> list[str]:
    """Make every token of ``REQUIRED`` one atomic special token; returns the ones that had to be added."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in REQUIRED if t not in vocab]
    if missing:
        tokenizer.add_special_tokens(
            {"additional_special_tokens": missing}, replace_extra_special_tokens=False
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = ENDOFTEXT  # as Qwen2 does: pads are masked, never learned
    for token in REQUIRED:
        ids = tokenizer.encode(token, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(
                f"tokenizer splits {token!r} into {len(ids)} tokens; it must be one special token"
            )
    return missing


def special_ids(tokenizer) -> SpecialIds:
    get = tokenizer.convert_tokens_to_ids
    return SpecialIds(
        endoftext=get(ENDOFTEXT),
        im_start=get(IM_START),
        im_end=get(IM_END),
        image_start=get(IMAGE_START),
        image_end=get(IMAGE_END),
        image_pad=get(IMAGE_PAD),
        pad=tokenizer.pad_token_id,
    )


def load_tokenizer(name: str):
    """A Hugging Face tokenizer by hub name or folder; a missing one is an error naming ``model.tokenizer``."""
    from transformers import AutoTokenizer

    from pipeline.config import ConfigError

    try:
        return AutoTokenizer.from_pretrained(name)
    except OSError as e:
        raise ConfigError(
            f"key 'model.tokenizer': cannot load {name!r} (run `make tokenizer`?): {e}"
        ) from None
