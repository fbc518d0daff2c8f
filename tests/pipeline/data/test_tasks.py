"""The task registry: a task is one class, and the schema, the formatter, the task draw and the held-out scores
all follow the registry (a new task added in one place works everywhere)."""

import random

import pytest

from pipeline.config import ConfigError
from pipeline.data.formats import Formatter, Record, available_tasks, choose_task
from pipeline.data.tasks import METRICS, TASKS, Task, target
from pipeline.eval import Item, scores
from pipeline.inspect import marked_text
from pipeline.schema import DataConfig


class Count(Task):
    """A made-up task: how many objects, answered in digits."""

    name, image, metric = "count", True, "count_acc"

    def has(self, record):
        return "count" in record.tasks

    def problem(self, record):
        return None if isinstance(record.tasks["count"], int) else "count is not an int"

    def segments(self, record, rng, ids):
        return target([("Count the objects:", False)], f" {record.tasks['count']}", ids)

    def score(self, predictions, truths):
        return {self.metric: sum(p == t for p, t in zip(predictions, truths, strict=True)) / len(truths)}


def test_the_registry_names_every_format_and_metric():
    assert list(TASKS) == ["caption", "vqa", "grounded_caption", "ref", "ocr", "text", "chatml"]
    assert METRICS == {"caption": "cider", "vqa": "vqa_acc", "grounded_caption": "grounded_acc", "ref": "grounding_acc", "ocr": "ocr_acc",
                       "chatml": "chat_acc"}  # fmt: skip
    assert all(name == task.name for name, task in TASKS.items())


def test_a_task_added_in_one_place_works_everywhere(monkeypatch, tokenizer):
    with pytest.raises(ConfigError, match="data.tasks.count"):
        DataConfig(tasks={"count": 1.0})
    monkeypatch.setitem(TASKS, "count", Count())
    DataConfig(tasks={"count": 1.0, "caption": 1.0})  # the schema reads the registry
    record = Record("k", {"tasks": {"count": 3}}, "Three red squares.", True)
    assert available_tasks(record) == ["caption", "count"]
    assert choose_task(record, {"count": 1.0}, random.Random(0)) == "count"
    example = Formatter(tokenizer, 4, 512)(record, "count", random.Random(0))
    assert marked_text(tokenizer, example.input_ids, example.labels).endswith(
        "Count the objects:[[ 3<|endoftext|>]]"
    )
    items = [Item("a", "count", [], None, "3"), Item("b", "count", [], None, "4")]
    assert scores(items, ["3", "5"]) == {"count_acc": 0.5}
