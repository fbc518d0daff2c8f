"""One stage, end to end. Every stage runs this same code; ``configs/stageN.yaml`` says what differs.

build the model -> load ``train.init_from`` (224 -> 448 interpolation when the size changes) -> freeze
(each group logged with its parameter count) -> AdamW groups of the trainable parameters -> the backend
(DeepSpeed) -> resume (``train.resume``) -> steps (metrics every step, hooks, checkpoints) -> end hooks
(``final/``, its evaluation).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from pipeline import checkpoint
from pipeline.backends import Backend, backend_class
from pipeline.config import ConfigError, save_config
from pipeline.data.formats import Formatter
from pipeline.data.loader import build_loader
from pipeline.distributed import Dist, barrier, precision, share_cpu_threads, shutdown
from pipeline.metrics import MetricsLogger, MetricsProcessor, NullLogger, StepStats
from pipeline.metrics.flops import FlopModel
from pipeline.metrics.processor import console_line, data_summary
from pipeline.model.qwenvl import QwenVL
from pipeline.model.vision import image_transform
from pipeline.optim import freeze, lr_factor, param_groups
from pipeline.schema import StageConfig
from pipeline.tokens import load_tokenizer
from stages.hooks import Hook, default_hooks
from stages.setup import load_init, resume_point, seed_everything, setup_logging, stage_dir, use_speed_levers

log = logging.getLogger("stages")


class NonFiniteLoss(RuntimeError):
    pass


def run(cfg: StageConfig, backend: str = "deepspeed") -> dict[str, Any]:
    """Train one stage; returns the last step's metrics row (on every rank)."""
    kind = backend_class(backend)
    dist = kind.init_distributed()
    setup_logging(dist.rank)
    share_cpu_threads(dist)
    try:
        return Trainer(cfg, dist, kind).train()
    finally:
        shutdown()


class Trainer:
    def __init__(self, cfg: StageConfig, dist: Dist, backend: type[Backend] | None = None,
                 hooks: list[Hook] | None = None):  # fmt: skip
        self.cfg, self.dist, self.hooks = cfg, dist, default_hooks() if hooks is None else hooks
        self.out = stage_dir(cfg)
        self.ckpt_root, self.final_dir = self.out / "checkpoints", self.out / "final"
        t = cfg.train
        self.accumulation = t.accumulation(dist.world_size)
        dtype = precision(t.precision, dist.device)
        if dtype != t.precision:
            log.warning("no CUDA device: training in fp32 (train.precision=%s applies on GPUs)", t.precision)
        resume_from = resume_point(t.resume, self.ckpt_root)
        self.tokenizer = load_tokenizer(cfg.model.tokenizer)
        self.loader = build_loader(  # before the model: shards that match no file fail here, naming the key
            cfg.data,
            Formatter(self.tokenizer, cfg.model.adapter.num_queries, cfg.data.max_length),
            image_transform(cfg.model.vision, cfg.data.image_size, cfg.data.pixels),
            t.micro_batch_size,
            cfg.run.seed,
            dist.rank,
            dist.world_size,
        )

        seed_everything(cfg.run.seed)  # the same initial weights on every rank
        model = QwenVL.from_config(cfg.model, cfg.data.image_size, self.tokenizer)
        if resume_from is None and t.init_from:
            load_init(model, t.init_from)
        freeze(model, t.trainable)
        model.set_activation_checkpointing(t.activation_checkpointing)
        self.levers = use_speed_levers(model, t, dist.device)
        flop_model = FlopModel.of(model, t.trainable)
        self.llm_config = model.llm.config
        optimizer = torch.optim.AdamW(
            param_groups(model, t.optimizer),
            lr=t.optimizer.lr,
            betas=tuple(t.optimizer.betas),
            eps=t.optimizer.eps,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(t.optimizer, t.max_steps))
        self.backend = (backend or backend_class())(model, optimizer, scheduler, cfg, dist, dtype,
                                                    self.llm_config.hidden_size)  # fmt: skip
        if "fused_cross_entropy" in t.kernels and self.backend.partitions_parameters:
            raise ConfigError(
                "key 'train.kernels': fused_cross_entropy reads the LM head's weight outside its forward, "
                f"which {self.backend.description} leaves partitioned; use ZeRO-2 (deepspeed.zero_stage=2)"
            )

        self.step, run_id = 0, None
        if resume_from is not None:
            trainer, rank_state = checkpoint.load(self.backend, resume_from)
            self.step, run_id = trainer["step"], trainer.get("wandb_id")
            self.loader.load_state_dict(rank_state["loader"])
            checkpoint.set_rng_state(rank_state["rng"])
            log.info("resumed from %s at step %d", resume_from, self.step)
        self.logger = self._logger(run_id)
        self.metrics = MetricsProcessor.create(flop_model, dist, cfg.logging.peak_tflops)

    def _logger(self, run_id: str | None) -> MetricsLogger | NullLogger:
        if not self.dist.main:
            return NullLogger()
        save_config(self.cfg, self.out / "config.yaml")
        c = self.cfg
        return MetricsLogger(
            self.out, OmegaConf.to_container(OmegaConf.structured(c)), c.logging.wandb, c.logging.project,
            c.logging.entity, c.run.name, c.run.stage, self.step, run_id,
        )  # fmt: skip

    def train(self) -> dict[str, Any]:
        t = self.cfg.train
        batches = iter(self.loader)
        bar = tqdm(total=t.max_steps, initial=self.step, desc=self.cfg.run.stage, disable=not self.dist.main,
                   dynamic_ncols=True, file=sys.stderr)  # fmt: skip
        row: dict[str, Any] = {}
        self.data_totals: dict[str, dict[str, int]] = {}  # every rank's loader counts, as of the last step
        try:
            while self.step < t.max_steps:
                row, batch = self.train_step(batches)
                bar.update(1)
                bar.set_postfix(loss=f"{row['loss']:.4f}", samples_s=f"{row['samples_per_s']:.1f}")
                if self.step % self.cfg.logging.log_every == 0 or self.step == 1:
                    log.info(console_line(row, t.max_steps))
                if self.step == 1 and self.dist.main:  # the optimizer's moments exist from step 1 on
                    held = {k: v / 2**20 for k, v in self.backend.state_bytes().items()}
                    log.info("%s: rank 0 holds %.1f MiB of parameters and %.1f MiB of optimizer state",
                             self.backend.description, held["param_bytes"], held["optimizer_bytes"])  # fmt: skip
                for hook in self.hooks:
                    hook.on_step(self, batch)
                if self.step % t.checkpoint_every == 0 or self.step == t.max_steps:
                    self.save_checkpoint()
            if self.data_totals and self.dist.main:
                log.info(data_summary(self.data_totals))
            for hook in self.hooks:
                hook.on_end(self)
            barrier()
        finally:
            bar.close()
            self.logger.close()
        return row

    def train_step(self, batches: Iterator[dict]) -> tuple[dict[str, Any], dict]:
        """One optimizer step over every rank's micro-batches: (its logged metrics row, the last micro-batch)."""
        start = time.perf_counter()
        stats = StepStats()
        for _ in range(self.accumulation):
            wait = time.perf_counter()
            batch = next(batches)
            waited = time.perf_counter() - wait
            out = self.backend.forward(self.to_device(batch))
            self.metrics.micro_batch(stats, out, batch, waited)
            self.backend.backward(out.loss)
        total = self.metrics.gather(stats, self.loader.stats())
        self.data_totals = total.loader
        if total.nonfinite_keys:
            raise NonFiniteLoss(
                f"step {self.step + 1}: non-finite loss in the batch of samples {total.nonfinite_keys[:16]}; "
                f"the weights were not updated; the last good checkpoint is {checkpoint.latest(self.ckpt_root)}"
            )
        result = self.backend.step()
        self.step += 1
        row = self.metrics.row(self.step, total, result, time.perf_counter() - start)
        self.logger.log(row)
        return row, batch

    def to_device(self, batch: dict) -> dict:
        device = self.dist.device
        return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def save_checkpoint(self) -> None:
        rank_state = {"loader": self.loader.state_dict(), "rng": checkpoint.rng_state()}
        trainer = {
            "world_size": self.dist.world_size,
            "wandb_id": self.logger.run_id,
            "stage": self.cfg.run.stage,
        }
        folder = checkpoint.save(
            self.backend, self.ckpt_root, self.step, rank_state, trainer, self.cfg.train.keep_last
        )
        log.info("checkpoint %s", folder)
