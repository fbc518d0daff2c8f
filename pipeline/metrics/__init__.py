"""Metrics: what a step is worth (``processor``: cross-rank accounting, MFU from ``flops``) and where it goes
(``logger``: JSONL always, wandb when on)."""

from pipeline.metrics.logger import (
    EVAL,
    LOSS_PLOT,
    METRICS,
    SAMPLES,
    MetricsLogger,
    NullLogger,
    plot_losses,
    read_metrics,
)
from pipeline.metrics.processor import MetricsProcessor, StepStats

__all__ = ["EVAL", "LOSS_PLOT", "METRICS", "SAMPLES", "MetricsLogger", "MetricsProcessor", "NullLogger", "StepStats",
           "plot_losses", "read_metrics"]  # fmt: skip
