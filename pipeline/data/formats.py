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

from pipeline.data.shard_format import Skip, box_text
from pipeline.tokens import DEFAULT_SYSTEM, IGNORE, special_ids, to_model_text

IMAGE = object()  # segment marker: the image span goes here
ROLES = ("system", "user", "assistant")
LANGUAGES = {"en": "English", "zh": "Chinese"}
IMAGE_TASKS = ("caption", "vqa", "grounded_caption", "ref", "ocr")
# the fixed words of the formats (Qwen-VL's), each written here only
CAPTION_PROMPT = "Generate the caption in {language}:"
GROUNDED_CAPTION_PROMPT = "Generate the caption in English with grounding:"
OCR_PROMPT = "OCR with grounding:"
ANSWER = " Answer:"  # after a VQA question
PICTURE = "Picture 1: "  # before an image in a dialogue turn


def fixed_prompts() -> list[str]:
    """Every fixed piece of text the formats put around the data, as the tokenizer sees it."""
    captions = [CAPTION_PROMPT.format(language=name) for name in LANGUAGES.values()]
    roles = [f"{role}\n" for role in ROLES]
    return [*captions, GROUNDED_CAPTION_PROMPT, OCR_PROMPT, ANSWER, PICTURE, DEFAULT_SYSTEM, *roles]


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
    source: str = "default"  # the mixture's source it came from (data.sources)


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
        found += (
            ["caption"]
            if (record.caption or record.meta.get("caption") or record.meta.get("captions"))
            else []
        )
        found += [t for t in IMAGE_TASKS[1:] if tasks.get(t)]
        found += ["chatml"] if tasks.get("dialogue") else []
    else:
        found += ["text"] if record.meta.get("text") else []
        found += ["chatml"] if record.meta.get("messages") else []
    return found


def ground_truth_problem(record: Record, task: str) -> str | None:
    """What makes this sample's ground truth for ``task`` unusable (its shape or types), or None. Checked
    before formatting, so that bad data is a counted skip and a bug in the formatter is an exception."""
    meta, tasks = record.meta, record.meta.get("tasks") or {}
    if task == "caption":
        if "captions" in meta:  # several references (COCO: 5): one is drawn per epoch
            captions = meta["captions"]
            if (
                not isinstance(captions, list)
                or not captions
                or not all(isinstance(c, str) for c in captions)
            ):
                return "captions is not a non-empty list of strings"
            return _optional_str(meta, "lang")
        return _typed(record.caption or meta.get("caption"), str, "caption") or _optional_str(meta, "lang")
    if task == "vqa":
        return _records(tasks.get("vqa"), "vqa", {"question": str, "answer": str})
    if task == "grounded_caption":
        return _typed(tasks.get("grounded_caption"), str, "grounded_caption")
    if task == "ref":
        return _records(tasks.get("ref"), "ref", {"expression": str, "box": _box})
    if task == "ocr":
        return _records(tasks.get("ocr"), "ocr", {"text": str, "quad": _quad})
    if task == "text":
        return _typed(meta.get("text"), str, "text")
    if task == "chatml":
        return _messages(meta.get("messages") or tasks.get("dialogue"))
    raise ValueError(f"unknown task {task!r}")


def _typed(value: Any, kind: type, what: str) -> str | None:
    return None if isinstance(value, kind) else f"{what} is {type(value).__name__}, not {kind.__name__}"


def _optional_str(meta: dict, key: str) -> str | None:
    return None if meta.get(key) is None else _typed(meta[key], str, key)


def _ints(value: Any, n: int) -> bool:
    return (
        isinstance(value, list | tuple)
        and len(value) == n
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    )


def _box(value: Any) -> bool:
    return _ints(value, 4)


def _quad(value: Any) -> bool:
    return isinstance(value, list | tuple) and len(value) == 4 and all(_ints(point, 2) for point in value)


def _records(items: Any, what: str, fields: dict[str, Any]) -> str | None:
    if not isinstance(items, list) or not items:
        return f"{what} is not a non-empty list"
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            return f"{what}[{i}] is not an object"
        for name, check in fields.items():
            ok = isinstance(item.get(name), check) if isinstance(check, type) else check(item.get(name))
            if not ok:
                return f"{what}[{i}].{name} is malformed: {item.get(name)!r:.60}"
    return None


def _messages(messages: Any) -> str | None:
    if not isinstance(messages, list) or not messages:
        return "messages is not a non-empty list"
    for i, m in enumerate(messages):
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str):
            continue
        if not isinstance(content, list) or not all(isinstance(p, dict) for p in content):
            return f"messages[{i}].content is neither a string nor a list of parts"
        if any(p.get("type") == "text" and not isinstance(p.get("text"), str) for p in content):
            return f"messages[{i}] has a text part without a string 'text'"
    return None


def task_rng(seed: int | str, epoch: int, key: str) -> random.Random:
    """The randomness of one sample's formatting (task draw, which QA or referent): fixed per epoch."""
    return random.Random(f"task:{seed}:{epoch}:{key}")


def choose_task(record: Record, weights: dict[str, float], rng: random.Random) -> str:
    """Draw one of the sample's tasks with the configured mixing weights (renormalised over what it has)."""
    candidates = [t for t in available_tasks(record) if t in weights]
    if not candidates:
        raise Skip("no_task", f"sample {record.key} has none of the tasks {sorted(weights)}")
    return rng.choices(candidates, weights=[weights[t] for t in candidates])[0]


def quad_text(quad: Sequence[Sequence[int]]) -> str:
    return ",".join(f"({x},{y})" for x, y in quad)


class Formatter:
    """Turns records into token ids and labels for one tokenizer and image length."""

    def __init__(self, tokenizer, num_queries: int, max_length: int):
        self.tokenizer = tokenizer
        self.ids = special_ids(tokenizer)
        self.image_span = [self.ids.image_start] + [self.ids.image_pad] * num_queries + [self.ids.image_end]
        self.max_length = max_length

    def __call__(self, record: Record, task: str, rng: random.Random, images: bool = True) -> Example:
        """``images=False`` leaves the image span out: the task's text alone, as a text-only sample."""
        if problem := ground_truth_problem(record, task):
            raise Skip("bad_metadata", f"sample {record.key}: {task} ground truth unusable: {problem}")
        self._dropped_turns = 0  # set by _chatml
        segments = getattr(self, f"_{task}")(record, rng)
        if not images:
            segments = [s for s in segments if s[0] is not IMAGE]
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

    # -- prompts for generation ------------------------------------------------------------------------------
    def task_prompt(self, text: str, has_image: bool) -> list[int]:
        """A stage 1-2 style prompt: the image span, then ``text`` (e.g. CAPTION_PROMPT or a question + ANSWER)."""
        return self.encode([(IMAGE, False), (text, False)] if has_image else [(text, False)])[0]

    def chat_prompt(self, messages: list[dict], has_image: bool) -> list[int]:
        """A ChatML conversation (the image shown in the first user turn) up to the assistant's next answer."""
        record = Record(
            "prompt", {"messages": [*messages, {"role": "assistant", "content": ""}]}, None, has_image
        )
        segments = self._chatml(record, random.Random(0))
        return self.encode(segments[:-2])[0]  # without the empty answer's <|im_end|> and newline

    # -- stages 1-2: prompt (masked) -> target + <|endoftext|> (supervised) --------------------------------
    def _target(self, prompt: list[Segment], target: str) -> list[Segment]:
        return [(IMAGE, False), *prompt, (target, True), ([self.ids.endoftext], True)]

    def _caption(self, record: Record, rng: random.Random) -> list[Segment]:
        captions = record.meta.get("captions")
        caption = rng.choice(captions) if captions else record.caption or record.meta["caption"]
        language = record.meta.get("lang", "en")
        prompt = CAPTION_PROMPT.format(language=LANGUAGES.get(language, language))
        return self._target([(prompt, False)], " " + caption.strip())

    def _vqa(self, record: Record, rng: random.Random) -> list[Segment]:
        qa = rng.choice(record.meta["tasks"]["vqa"])
        return self._target([(qa["question"] + ANSWER, False)], f" {qa['answer']}")

    def _grounded_caption(self, record: Record, rng: random.Random) -> list[Segment]:
        return self._target(
            [(GROUNDED_CAPTION_PROMPT, False)], " " + record.meta["tasks"]["grounded_caption"]
        )

    def _ref(self, record: Record, rng: random.Random) -> list[Segment]:
        ref = rng.choice(record.meta["tasks"]["ref"])
        return self._target(
            [(f"<ref>{ref['expression']}</ref>", False)], f"<box>{box_text(ref['box'])}</box>"
        )

    def _ocr(self, record: Record, rng: random.Random) -> list[Segment]:
        words = "".join(
            f"<ref>{w['text']}</ref><quad>{quad_text(w['quad'])}</quad>" for w in record.meta["tasks"]["ocr"]
        )
        return self._target([(OCR_PROMPT, False)], " " + words)

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
            turns[first_user] = ("user", [PICTURE, IMAGE, "\n", *turns[first_user][1]])
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
                pieces += [PICTURE, IMAGE, "\n"]  # Qwen-VL's "Picture k: <img>...</img>\n"
            elif part.get("type") == "text":
                pieces.append(part["text"])
            else:
                raise Skip("bad_dialogue", f"sample {record.key}: unknown content part {part.get('type')!r}")
        return pieces
