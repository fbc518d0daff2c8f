"""The task registry: each of Qwen-VL's seven task formats is one class here, holding

- its ground truth: whether a sample has it (``has``) and what makes it unusable (``problem``, checked before
  formatting, so that bad data is a counted skip and a formatter bug an exception);
- its training format (``segments``: text, token ids and the image span, each supervised or not);
- its evaluation prompt: the training format up to the first supervised token, so the model is asked as it
  was taught; the reference answer is the rest (``pipeline.eval``); the benchmarks take ``benchmark_prompt``;
- its metric on generated answers (``metric`` names it in eval.json; ``score`` computes it).

Adding a task is one class here and its name in ``TASKS``; the config schema, the formatter, the loader, the
sample inspector, held-out evaluation and the benchmarks all read this registry.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from pipeline.data.shard_format import Skip, box_text
from pipeline.eval_metrics import (
    REF,
    by_answer_type,
    cider,
    exact_match_accuracy,
    grounded_caption_accuracy,
    grounding_accuracy,
    ocr_accuracy,  # fmt: skip
    parse_box,
)
from pipeline.tokens import DEFAULT_SYSTEM, SpecialIds

IMAGE = object()  # segment marker: the image span goes here
Segment = tuple[Any, bool]  # (text | token ids | IMAGE, supervised)
ROLES = ("system", "user", "assistant")
LANGUAGES = {"en": "English", "zh": "Chinese"}
# the fixed words of the formats (Qwen-VL's), each written here only
CAPTION_PROMPT = "Generate the caption in {language}:"
GROUNDED_CAPTION_PROMPT = "Generate the caption in English with grounding:"
OCR_PROMPT = "OCR with grounding:"
ANSWER = " Answer:"  # after a VQA question
PICTURE = "Picture 1: "  # before an image in a dialogue turn


@dataclass
class Record:
    """One shard sample before its image is decoded: the caption (``.txt``) and the metadata (``.json``)."""

    key: str
    meta: dict
    caption: str | None
    has_image: bool

    @property
    def tasks(self) -> dict:
        return self.meta.get("tasks") or {}


class Task:
    name: ClassVar[str]
    image: ClassVar[bool | None]  # True: a sample with an image; False: a text-only one; None: either
    metric: ClassVar[str | None] = None  # its score's key in eval.json; None: not scored

    def has(self, record: Record) -> bool:
        raise NotImplementedError

    def problem(self, record: Record) -> str | None:
        raise NotImplementedError

    def segments(self, record: Record, rng: random.Random, ids: SpecialIds) -> list[Segment]:
        raise NotImplementedError

    def score(self, predictions: list[str], truths: list[str]) -> dict[str, float]:
        raise NotImplementedError(f"task {self.name} has no metric")

    def dropped_turns(self, record: Record) -> int:
        """Turns of the sample's ground truth its format leaves out (ChatML's opening assistant turn)."""
        return 0

    def applies(self, record: Record) -> bool:
        return (self.image is None or self.image == record.has_image) and self.has(record)


def target(prompt: list[Segment], answer: str, ids: SpecialIds) -> list[Segment]:
    """Stages 1-2: the image and the prompt (masked), then the target and <|endoftext|> (supervised)."""
    return [(IMAGE, False), *prompt, (answer, True), ([ids.endoftext], True)]


class Caption(Task):
    name, image, metric = "caption", True, "cider"

    def has(self, record: Record) -> bool:
        return bool(record.caption or record.meta.get("caption") or record.meta.get("captions"))

    def problem(self, record: Record) -> str | None:
        meta = record.meta
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

    def segments(self, record: Record, rng: random.Random, ids: SpecialIds) -> list[Segment]:
        captions = record.meta.get("captions")
        caption = rng.choice(captions) if captions else record.caption or record.meta["caption"]
        language = record.meta.get("lang", "en")
        return target([(self.prompt(language), False)], " " + caption.strip(), ids)

    @staticmethod
    def prompt(language: str = "en") -> str:
        return CAPTION_PROMPT.format(language=LANGUAGES.get(language, language))

    @staticmethod
    def benchmark_prompt() -> str:
        """Qwen-VL's eval_mm/ caption prompt (not its training one)."""
        return "Describe the image in English:"

    def score(self, predictions: list[str], truths: list[str]) -> dict[str, float]:
        return {self.metric: cider(predictions, [[t] for t in truths])}


class VQA(Task):
    name, image, metric = "vqa", True, "vqa_acc"

    def has(self, record: Record) -> bool:
        return bool(record.tasks.get("vqa"))

    def problem(self, record: Record) -> str | None:
        return _records(record.tasks.get("vqa"), "vqa", {"question": str, "answer": str})

    def segments(self, record: Record, rng: random.Random, ids: SpecialIds) -> list[Segment]:
        qa = rng.choice(record.tasks["vqa"])
        return target([(self.prompt(qa["question"]), False)], f" {qa['answer']}", ids)

    @staticmethod
    def prompt(question: str) -> str:
        """Qwen-VL's ``{question} Answer:``, in training and in its eval_mm/ alike."""
        return question + ANSWER

    def score(self, predictions: list[str], truths: list[str]) -> dict[str, float]:
        result = {self.metric: exact_match_accuracy(predictions, truths)}
        for kind, idx in by_answer_type(truths).items():  # as VQAv2 reports it: which kinds the image answers
            result[f"{self.metric}/{kind}"] = exact_match_accuracy(
                [predictions[i] for i in idx], [truths[i] for i in idx]
            )
        return result

    @staticmethod
    def question_type(record: Record, prompt: str) -> str | None:
        """The type of the question in ``prompt``: the sample's own (``type``, or VQAv2's ``question_type``),
        else the question's first two words, lower-cased ("how many", "what colour")."""
        for qa in record.tasks["vqa"]:
            if qa["question"] in prompt:
                return (
                    qa.get("type") or qa.get("question_type") or " ".join(qa["question"].lower().split()[:2])
                )
        return None


class GroundedCaption(Task):
    name, image, metric = "grounded_caption", True, "grounded_acc"

    def has(self, record: Record) -> bool:
        return bool(record.tasks.get("grounded_caption"))

    def problem(self, record: Record) -> str | None:
        return _typed(record.tasks.get("grounded_caption"), str, "grounded_caption")

    def segments(self, record: Record, rng: random.Random, ids: SpecialIds) -> list[Segment]:
        return target([(GROUNDED_CAPTION_PROMPT, False)], " " + record.tasks["grounded_caption"], ids)

    def score(self, predictions: list[str], truths: list[str]) -> dict[str, float]:
        return {self.metric: grounded_caption_accuracy(predictions, truths)}


class Ref(Task):
    name, image, metric = "ref", True, "grounding_acc"

    def has(self, record: Record) -> bool:
        return bool(record.tasks.get("ref"))

    def problem(self, record: Record) -> str | None:
        return _records(record.tasks.get("ref"), "ref", {"expression": str, "box": _box})

    def segments(self, record: Record, rng: random.Random, ids: SpecialIds) -> list[Segment]:
        ref = rng.choice(record.tasks["ref"])
        return target([(self.prompt(ref["expression"]), False)], f"<box>{box_text(ref['box'])}</box>", ids)

    @staticmethod
    def prompt(expression: str) -> str:
        return f"<ref>{expression}</ref>"

    @classmethod
    def benchmark_prompt(cls, expression: str) -> str:
        """Qwen-VL's eval_mm/ grounding prompt: the box tag opened for the model."""
        return cls.prompt(expression) + "<box>"

    def score(self, predictions: list[str], truths: list[str]) -> dict[str, float]:
        return {self.metric: grounding_accuracy(predictions, [parse_box(t) for t in truths])}


class OCR(Task):
    name, image, metric = "ocr", True, "ocr_acc"

    def has(self, record: Record) -> bool:
        return bool(record.tasks.get("ocr"))

    def problem(self, record: Record) -> str | None:
        return _records(record.tasks.get("ocr"), "ocr", {"text": str, "quad": _quad})

    def segments(self, record: Record, rng: random.Random, ids: SpecialIds) -> list[Segment]:
        words = "".join(
            f"<ref>{w['text']}</ref><quad>{quad_text(w['quad'])}</quad>" for w in record.tasks["ocr"]
        )
        return target([(OCR_PROMPT, False)], " " + words, ids)

    def score(self, predictions: list[str], truths: list[str]) -> dict[str, float]:
        return {self.metric: ocr_accuracy(predictions, [REF.findall(t) for t in truths])}


class Text(Task):
    """Pure text: every token learnt."""

    name, image = "text", False

    def has(self, record: Record) -> bool:
        return bool(record.meta.get("text"))

    def problem(self, record: Record) -> str | None:
        return _typed(record.meta.get("text"), str, "text")

    def segments(self, record: Record, rng: random.Random, ids: SpecialIds) -> list[Segment]:
        return [(record.meta["text"], True), ([ids.endoftext], True)]


class ChatML(Task):
    """Stage 3: Qwen-VL finetune.py's ``preprocess`` rules. In every turn ``<|im_start|>``, ``<|im_end|>``
    and the newline after it are supervised, the role name and its newline are not; assistant content is
    supervised, system and user content are not. A dialogue that opens with an assistant turn loses it."""

    name, image, metric = "chatml", None, "chat_acc"

    def has(self, record: Record) -> bool:
        if record.has_image:
            return bool(record.tasks.get("dialogue"))
        return bool(record.meta.get("messages"))

    def problem(self, record: Record) -> str | None:
        return _messages(self.messages(record))

    @staticmethod
    def messages(record: Record) -> Any:
        return record.meta.get("messages") or record.tasks.get("dialogue")

    def dropped_turns(self, record: Record) -> int:
        """Leading non-user turns left out (after the system message), as ``preprocess`` drops them."""
        messages = self.messages(record)
        offset = 1 if messages[0]["role"] == "system" else 0
        return int(len(messages) > offset and messages[offset].get("role") != "user")

    def segments(self, record: Record, rng: random.Random, ids: SpecialIds) -> list[Segment]:
        messages = self.messages(record)
        if messages[0]["role"] != "system":
            messages = [{"role": "system", "content": DEFAULT_SYSTEM}, *messages]
        if len(messages) > 1 and messages[1].get("role") != "user":  # Qwen-VL's preprocess drops it
            messages = [messages[0], *messages[2:]]
        turns = [(m["role"], self._content(record, m)) for m in messages]
        images = sum(piece is IMAGE for _, content in turns for piece in content)
        if images > 1:
            raise Skip("multiple_images", f"sample {record.key}: {images} images in one dialogue")
        if images and not record.has_image:
            raise Skip("missing_image", f"sample {record.key}: the dialogue shows an image the sample lacks")
        if record.has_image and not images:  # the image goes first in the first user turn
            first_user = next((i for i, (role, _) in enumerate(turns) if role == "user"), None)
            if first_user is None:
                raise Skip("bad_dialogue", f"sample {record.key}: no user turn to show the image in")
            turns[first_user] = ("user", [PICTURE, IMAGE, "\n", *turns[first_user][1]])
        segments: list[Segment] = []
        for role, content in turns:
            supervised = role == "assistant"
            segments += [([ids.im_start], True), (role, False), ("\n", False)]
            segments += [(piece, supervised) for piece in content]
            segments += [([ids.im_end], True), ("\n", True)]
        return segments

    @staticmethod
    def _content(record: Record, message: dict) -> list:
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

    def score(self, predictions: list[str], truths: list[str]) -> dict[str, float]:
        return {self.metric: exact_match_accuracy(predictions, truths)}


TASKS: dict[str, Task] = {
    t.name: t for t in (Caption(), VQA(), GroundedCaption(), Ref(), OCR(), Text(), ChatML())
}
METRICS = {name: task.metric for name, task in TASKS.items() if task.metric}  # task -> its key in eval.json


def fixed_prompts() -> list[str]:
    """Every fixed piece of text the formats put around the data, as the tokenizer sees it."""
    captions = [CAPTION_PROMPT.format(language=name) for name in LANGUAGES.values()]
    roles = [f"{role}\n" for role in ROLES]
    return [*captions, GROUNDED_CAPTION_PROMPT, OCR_PROMPT, ANSWER, PICTURE, DEFAULT_SYSTEM, *roles]


def quad_text(quad: Sequence[Sequence[int]]) -> str:
    return ",".join(f"({x},{y})" for x, y in quad)


# -- ground-truth checks ---------------------------------------------------------------------------------------
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
