"""What a stage does beside training, at the end of a step or of the stage: generated samples in the metrics,
the ``final/`` export, its held-out evaluation. Each is a :class:`Hook`; the trainer calls them in order."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from pipeline.backends import Backend
from pipeline.benchmarks.run import run_benchmark
from pipeline.data.loader import batch_samples
from pipeline.data.shard_format import expand_urls
from pipeline.distributed import Dist, barrier
from pipeline.eval import Share, evaluate_export
from pipeline.export import load_export
from pipeline.generate import end_ids, greedy, prompt_length
from pipeline.metrics import MetricsLogger, NullLogger
from pipeline.model.qwenvl import save_pretrained
from pipeline.schema import StageConfig

log = logging.getLogger("stages")
SAMPLE_TOKENS = 48  # new tokens per generated sample in the tables


class Trainer(Protocol):
    """What hooks read of the trainer (``stages.train.Trainer``)."""

    cfg: StageConfig
    dist: Dist
    step: int
    backend: Backend
    tokenizer: Any
    llm_config: Any
    logger: MetricsLogger | NullLogger
    final_dir: Path


class Hook:
    """Every rank calls every hook (a hook may run collectives); only rank 0 writes."""

    def on_step(self, trainer: Trainer, batch: dict) -> None:
        """After optimizer step ``trainer.step``; ``batch`` is this rank's last micro-batch."""

    def on_end(self, trainer: Trainer) -> None:
        """After the last step."""


class Samples(Hook):
    """Generated text beside the ground truth for the first samples of this rank's last micro-batch, every
    ``logging.sample_every`` steps and at the last (samples.jsonl, a wandb table with the images)."""

    def on_step(self, trainer: Trainer, batch: dict) -> None:
        every, step = trainer.cfg.logging.sample_every, trainer.step
        if not every or (step % every and step != trainer.cfg.train.max_steps):
            return
        backend, tokenizer, device = trainer.backend, trainer.tokenizer, trainer.dist.device
        eos = end_ids(tokenizer)
        rows = []
        for sample in batch_samples(batch, trainer.cfg.logging.sample_count):
            input_ids, pixels, has_image = sample["input_ids"], sample["pixels"], sample["has_image"]
            cut = prompt_length(sample["labels"].tolist())
            with backend.generation() as synced:
                new = greedy(backend.model, input_ids[:cut].to(device), pixels.to(device), has_image, SAMPLE_TOKENS,
                             eos, synced=synced)  # fmt: skip
            decode = tokenizer.decode
            rows.append({
                "key": sample["key"], "task": sample["task"],
                "prompt": decode(input_ids[:cut].tolist()).replace("<|image_pad|>", ""),
                "generated": decode(new), "target": decode(input_ids[cut:].tolist()),
                "image": viewable(pixels[0]) if has_image else None,
            })  # fmt: skip
        trainer.logger.samples(step, rows)


class Export(Hook):
    """``final/``: the whole model's weights (gathered from every rank), its config and the tokenizer."""

    def on_end(self, trainer: Trainer) -> None:
        state = trainer.backend.full_state_dict()
        if trainer.dist.main:
            folder = save_pretrained(
                trainer.final_dir, state, trainer.llm_config, trainer.tokenizer, trainer.cfg
            )
            log.info("final weights: %s (QwenVL.from_pretrained loads it)", folder)


class Evaluate(Hook):
    """The export (whole, also under ZeRO-3) scored on ``eval.shards`` by every rank, each a share of the batches
    (final/eval.json), and on ``eval.benchmarks`` by rank 0 alone (final/benchmarks/), each with its blind twin,
    into eval.jsonl and wandb. Runs after :class:`Export`."""

    def on_end(self, trainer: Trainer) -> None:
        e = trainer.cfg.eval
        if e.shards:
            self.held_out(trainer)
        if e.benchmarks and trainer.dist.main:
            self.benchmarks(trainer)

    def benchmarks(self, trainer: Trainer) -> None:
        e = trainer.cfg.eval
        model, tokenizer, formatter, transform = load_export(trainer.final_dir, trainer.dist.device)
        for b in e.benchmarks:  # a BenchmarkConfig is its benchmark's files, with a name and a limit
            result = run_benchmark(model, tokenizer, formatter, transform, b.name, b,
                                   trainer.final_dir / "benchmarks", b.limit, e.batch_size)  # fmt: skip
            trainer.logger.benchmark(trainer.step, result)
            log.info("benchmark %s%s: %s", b.name, f" {b.split}" if b.split else "", ", ".join(
                f"{k} {v:.3f} ({result['blind'][k]:.3f} blind)" for k, v in result.items() if isinstance(v, float)))  # fmt: skip

    def held_out(self, trainer: Trainer) -> None:
        """Every rank scores its share of the batches (``pipeline.eval.Share``): the same scores, sooner."""
        e, dist = trainer.cfg.eval, trainer.dist
        barrier()  # final/ is rank 0's to write
        result = evaluate_export(trainer.final_dir, expand_urls(e.shards, key="eval.shards"), limit=e.limit,
                                 batch_size=e.batch_size, max_new_tokens=e.max_new_tokens, device=dist.device,
                                 share=Share(dist.rank, dist.world_size))  # fmt: skip
        if not dist.main:
            return
        trainer.logger.evaluation(trainer.step, result)
        log.info("held-out eval (blind in brackets): %s", ", ".join(
            f"{k} {v:.3f} ({result['blind'][k]:.3f})" for k, v in result.items() if isinstance(v, float)))  # fmt: skip


def default_hooks() -> list[Hook]:
    return [Samples(), Export(), Evaluate()]


def viewable(pixels: torch.Tensor) -> np.ndarray:
    """A normalised image tensor back to uint8 HWC for display (min-max, since the mean/std are the tower's)."""
    x = pixels.float()
    x = (x - x.min()) / (x.max() - x.min()).clamp(min=1e-6)
    return (x.permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)
