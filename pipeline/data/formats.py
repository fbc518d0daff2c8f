"""The seven Qwen-VL task formats: one shard sample -> ``input_ids`` + ``labels`` (../shared/RECIPE.md).

Stages 1-2 supervise only the target text and ``<|endoftext|>``. ChatML follows Qwen-VL finetune.py's
``preprocess``: in every turn ``<|im_start|>``, ``<|im_end|>`` and the newline after it are supervised, the
role name and its newline are not; assistant content is supervised, system and user content are not. Image
positions are never supervised. Labels are not shifted (the model shifts them).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.data.shard_format import Skip
from pipeline.tokens import IGNORE, special_ids, to_model_text

IMAGE = object()  # segment marker: the image span goes here
DEFAULT_SYSTEM = "You are a helpful assistant."
ROLES = ("system", "user", "assistant")
LANGUAGES = {"en": "English", "zh": "Chinese"}
IMAGE_TASKS = ("caption", "vqa", "grounded_caption", "ref", "ocr")

Segment = tuple[Any, bool]  # (text | token ids | IMAGE, supervised)


@dataclass
class Example:
    key: str
    task: str
    input_ids: list[int]
    labels: list[int]
    has_image: bool
    truncated: bool = False
    dropped_turns: int = 0  # leading non-user dialogue turns left out, as Qwen-VL's preprocess does


@dataclass
class Record:
    """One shard sample before its image is decoded: the caption (``.txt``) and the metadata (``.json``)."""

    key: str
    meta: dict
    caption: str | None
    has_image: bool


def available_tasks(record: Record) -> list[str]:
    """The tasks this sample has ground truth for."""
    tasks = record.meta.get("tasks") or {}
    found = []
    if record.has_image:
        found += ["caption"] if (record.caption or record.meta.get("caption")) else []
        found += [t for t in IMAGE_TASKS[1:] if tasks.get(t)]
        found += ["chatml"] if tasks.get("dialogue") else []
    else:
        found += ["text"] if record.meta.get("text") else []
        found += ["chatml"] if record.meta.get("messages") else []
    return found


def task_rng(seed: int, epoch: int, key: str) -> random.Random:
    """The randomness of one sample's formatting (task draw, which QA or referent): fixed per epoch."""
    return random.Random(f"task:{seed}:{epoch}:{key}")


def choose_task(record: Record, weights: dict[str, float], rng: random.Random) -> str:
    """Draw one of the sample's tasks with the configured mixing weights (renormalised over what it has)."""
    candidates = [t for t in available_tasks(record) if t in weights]
    if not candidates:
        raise Skip("no_task", f"sample {record.key} has none of the tasks {sorted(weights)}")
    return rng.choices(candidates, weights=[weights[t] for t in candidates])[0]


def box_text(box: Sequence[int]) -> str:
    x1, y1, x2, y2 = box
    return f"({x1},{y1}),({x2},{y2})"


def quad_text(quad: Sequence[Sequence[int]]) -> str:
    return ",".join(f"({x},{y})" for x, y in quad)


class Formatter:
    """Turns records into token ids and labels for one tokenizer and image length."""

    def __init__(self, tokenizer, num_queries: int, max_length: int):
        self.tokenizer = tokenizer
        self.ids = special_ids(tokenizer)
        self.image_span = [self.ids.image_start] + [self.ids.image_pad] * num_queries + [self.ids.image_end]
        self.max_length = max_length

    def __call__(self, record: Record, task: str, rng: random.Random) -> Example:
        self._dropped_turns = 0  # set by _chatml
        segments = getattr(self, f"_{task}")(record, rng)
        ids, labels, image_end = self.encode(segments)
        truncated = len(ids) > self.max_length
        if truncated:
            if image_end is not None and image_end > self.max_length:
                raise Skip("image_cut", f"sample {record.key}: {task} needs {image_end} tokens for its image")
            ids, labels = ids[: self.max_length], labels[: self.max_length]
        if all(label == IGNORE for label in labels):
            raise Skip("no_target", f"sample {record.key}: nothing left to supervise")
        return Example(record.key, task, ids, labels, image_end is not None, truncated, self._dropped_turns)

    def encode(self, segments: list[Segment]) -> tuple[list[int], list[int], int | None]:
        """Token ids, labels and the end of the image span (None without an image)."""
        ids: list[int] = []
        labels: list[int] = []
        image_end = None
        for piece, supervised in segments:
            if piece is IMAGE:
                piece, supervised = self.image_span, False
                image_end = len(ids) + len(piece)
            elif isinstance(piece, str):
                piece = self.tokenizer.encode(to_model_text(piece), add_special_tokens=False)
            ids += piece
            labels += piece if supervised else [IGNORE] * len(piece)
        return ids, labels, image_end

    # -- stages 1-2: prompt (masked) -> target + <|endoftext|> (supervised) --------------------------------
    def _target(self, prompt: list[Segment], target: str) -> list[Segment]:
        return [(IMAGE, False), *prompt, (target, True), ([self.ids.endoftext], True)]

    def _caption(self, record: Record, rng: random.Random) -> list[Segment]:
        caption = record.caption or record.meta["caption"]
        language = record.meta.get("lang", "en")
        prompt = f"Generate the caption in {LANGUAGES.get(language, language)}:"
        return self._target([(prompt, False)], " " + caption.strip())

    def _vqa(self, record: Record, rng: random.Random) -> list[Segment]:
        qa = rng.choice(record.meta["tasks"]["vqa"])
        return self._target([(f"{qa['question']} Answer:", False)], f" {qa['answer']}")

    def _grounded_caption(self, record: Record, rng: random.Random) -> list[Segment]:
        prompt = "Generate the caption in English with grounding:"
        return self._target([(prompt, False)], " " + record.meta["tasks"]["grounded_caption"])

    def _ref(self, record: Record, rng: random.Random) -> list[Segment]:
        ref = rng.choice(record.meta["tasks"]["ref"])
        return self._target(
            [(f"<ref>{ref['expression']}</ref>", False)], f"<box>{box_text(ref['box'])}</box>"
        )

    def _ocr(self, record: Record, rng: random.Random) -> list[Segment]:
        words = "".join(
            f"<ref>{w['text']}</ref><quad>{quad_text(w['quad'])}</quad>" for w in record.meta["tasks"]["ocr"]
        )
        return self._target([("OCR with grounding:", False)], " " + words)

    def _text(self, record: Record, rng: random.Random) -> list[Segment]:
        return [(record.meta["text"], True), ([self.ids.endoftext], True)]

    # -- stage 3: ChatML ----------------------------------------------------------------------------------
    def _chatml(self, record: Record, rng: random.Random) -> list[Segment]:
        messages = record.meta.get("messages") or record.meta["tasks"]["dialogue"]
        if messages[0]["role"] != "system":
            messages = [{"role": "system", "content": DEFAULT_SYSTEM}, *messages]
        if len(messages) > 1 and messages[1].get("role") != "user":  # Qwen-VL's preprocess drops it
            messages = [messages[0], *messages[2:]]
            self._dropped_turns = 1
        turns = [(m["role"], self._content(record, m)) for m in messages]
        images = sum(piece is IMAGE for _, content in turns for piece in content)
        if images > 1:
            raise Skip("multiple_images", f"sample {record.key}: {images} images in one dialogue")
        if images and not record.has_image:
            raise Skip("missing_image", f"sample {record.key}: the dialogue shows an image the sample lacks")
        if record.has_image and not images:  # the image goes first in the first user turn
            first_user = next(i for i, (role, _) in enumerate(turns) if role == "user")
            turns[first_user] = ("user", ["Picture 1: ", IMAGE, "\n", *turns[first_user][1]])
        segments: list[Segment] = []
        for role, content in turns:
            supervised = role == "assistant"
            segments += [([self.ids.im_start], True), (role, False), ("\n", False)]
            segments += [(piece, supervised) for piece in content]
            segments += [([self.ids.im_end], True), ("\n", True)]
        return segments

    def _content(self, record: Record, message: dict) -> list:
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise Skip("bad_dialogue", f"sample {record.key}: unknown role {role!r}")
        if isinstance(content, str):
            return [content]
        pieces: list = []
        for part in content:
            if part.get("type") == "image":
                pieces += ["Picture 1: ", IMAGE, "\n"]  # Qwen-VL's "Picture k: <img>...</img>\n"
            elif part.get("type") == "text":
                pieces.append(part["text"])
            else:
                raise Skip("bad_dialogue", f"sample {record.key}: unknown content part {part.get('type')!r}")
        return pieces
