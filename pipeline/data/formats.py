"""One shard sample and one of its tasks -> ``input_ids`` + ``labels`` (../shared/RECIPE.md).

Each task's format is its class in the registry (``pipeline.data.tasks``): segments of text, token ids and the
image span, each supervised or not. The formatter checks the ground truth, tokenises the segments, truncates
(never into the image span) and masks: stages 1-2 supervise only the target text and ``<|endoftext|>``, ChatML
follows Qwen-VL finetune.py's ``preprocess``. Image positions are never supervised. Labels are not shifted
(the model shifts them).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pipeline.data.shard_format import Skip
from pipeline.data.tasks import IMAGE, TASKS, Record, Segment
from pipeline.tokens import IGNORE, special_ids, to_model_text


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


def available_tasks(record: Record) -> list[str]:
    """The tasks this sample has ground truth for, in the registry's order."""
    return [name for name, task in TASKS.items() if task.applies(record)]


def ground_truth_problem(record: Record, task: str) -> str | None:
    """What makes this sample's ground truth for ``task`` unusable (its shape or types), or None."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}")
    return TASKS[task].problem(record)


def task_rng(seed: int | str, epoch: int, key: str) -> random.Random:
    """The randomness of one sample's formatting (task draw, which QA or referent): fixed per epoch."""
    return random.Random(f"task:{seed}:{epoch}:{key}")


def choose_task(record: Record, weights: dict[str, float], rng: random.Random) -> str:
    """Draw one of the sample's tasks with the configured mixing weights (renormalised over what it has)."""
    candidates = [t for t in available_tasks(record) if t in weights]
    if not candidates:
        raise Skip("no_task", f"sample {record.key} has none of the tasks {sorted(weights)}")
    return rng.choices(candidates, weights=[weights[t] for t in candidates])[0]


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
        segments = TASKS[task].segments(record, rng, self.ids)
        dropped = TASKS[task].dropped_turns(record)
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
        return Example(record.key, task, ids, labels, image_end is not None, truncated, dropped)

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
        """A stage 1-2 style prompt: the image span, then ``text`` (a task's ``prompt``, say)."""
        return self.encode([(IMAGE, False), (text, False)] if has_image else [(text, False)])[0]

    def chat_prompt(self, messages: list[dict], has_image: bool) -> list[int]:
        """A ChatML conversation (the image shown in the first user turn) up to the assistant's next answer."""
        record = Record(
            "prompt", {"messages": [*messages, {"role": "assistant", "content": ""}]}, None, has_image
        )
        segments = TASKS["chatml"].segments(record, random.Random(0), self.ids)
        return self.encode(segments[:-2])[0]  # without the empty answer's <|im_end|> and newline
