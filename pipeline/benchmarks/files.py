"""What a benchmark is read from: its own files, as the config (``eval.benchmarks``) and the command line
(``python -m launch.eval --benchmark``) name them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class BenchFiles:
    """A benchmark's own files (``pipeline.benchmarks.suites`` says which each needs)."""

    images: str | None = None  # the image folder
    questions: str | None = None
    annotations: str | None = None
    refs: str | None = None
    instances: str | None = None
    split: str | None = None
    image_pattern: str | None = None  # VQA: the image file from image_id and the questions' subtype
