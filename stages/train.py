"""One stage, end to end. Every stage runs this same code; ``configs/stageN.yaml`` says what differs.

build the model -> load ``train.init_from`` (224 -> 448 interpolation when the size changes) -> freeze
(each group logged with its parameter count) -> AdamW groups of the trainable parameters -> DeepSpeed
engine -> resume (``train.resume``) -> steps (metrics every step, sample tables, checkpoints) -> ``final/``.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from pipeline import checkpoint
from pipeline import engine as ds
from pipeline.config import ConfigError, save_config
from pipeline.data.formats import Formatter
from pipeline.data.loader import STATS as LOADER_STATS
from pipeline.data.loader import build_loader
from pipeline.data.shard_format import expand_urls
from pipeline.eval import evaluate_export
from pipeline.flops import FlopModel, device_peak_flops
from pipeline.generate import end_ids, greedy, prompt_length
from pipeline.metrics import MetricsLogger, NullLogger
from pipeline.model.qwenvl import QwenVL, load_weights, save_pretrained
from pipeline.model.vision import image_transform
from pipeline.optim import freeze, lr_factor, param_groups
from pipeline.schema import MODULE_GROUPS, StageConfig

log = logging.getLogger("stages")
SAMPLE_TOKENS = 48  # new tokens per generated sample in the tables


class NonFiniteLoss(RuntimeError):
    pass


def stage_dir(cfg: StageConfig) -> Path:
    return Path(cfg.run.output_dir) / cfg.run.name / cfg.run.stage


def run(cfg: StageConfig) -> dict[str, Any]:
    """Train one stage; returns the last step's metrics row (on every rank)."""
    dist = ds.init_distributed()
    _setup_logging(dist.rank)
    try:
        return Trainer(cfg, dist).train()
    finally:
        ds.shutdown()


def _setup_logging(rank: int) -> None:
    """Our own loggers at INFO on rank 0 (WARNING elsewhere); libraries' INFO chatter stays off."""
    logging.basicConfig(
        level=logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    for name in ("stages", "pipeline"):
        logging.getLogger(name).setLevel(logging.INFO if rank == 0 else logging.WARNING)


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class StepStats:
    """One rank's account of one optimizer step; ranks' accounts are gathered and summed."""

    loss_sum: float = 0.0
    tokens: int = 0  # supervised tokens
    task_loss: dict[str, float] = field(default_factory=dict)
    task_tokens: dict[str, int] = field(default_factory=dict)
    samples: int = 0
    input_tokens: int = 0  # non-padding tokens through the LLM
    padded_tokens: int = 0
    flops: float = 0.0
    data_wait: float = 0.0
    nonfinite_keys: list[str] = field(default_factory=list)
    loader: dict[str, dict[str, int]] = field(default_factory=dict)
    memory_gb: float = 0.0

    def add(self, out, batch: dict, flops: float) -> None:
        losses, tokens = out.sample_loss.detach().double().cpu(), out.sample_tokens.cpu()
        if not torch.isfinite(out.loss.detach()).item():
            self.nonfinite_keys += batch["keys"]
        self.loss_sum += float(losses.sum())
        self.tokens += int(tokens.sum())
        for task, loss, count in zip(batch["tasks"], losses.tolist(), tokens.tolist(), strict=True):
            self.task_loss[task] = self.task_loss.get(task, 0.0) + loss
            self.task_tokens[task] = self.task_tokens.get(task, 0) + count
        self.samples += len(batch["keys"])
        self.input_tokens += int(batch["attention_mask"].sum())
        self.padded_tokens += int((batch["attention_mask"] == 0).sum())
        self.flops += flops


def _summed(stats: list[StepStats]) -> StepStats:
    total = StepStats(loader={name: Counter() for name in LOADER_STATS})
    for s in stats:  # rank order: the sums are the same on every rank and every rerun
        total.loss_sum += s.loss_sum
        total.tokens += s.tokens
        for task in s.task_loss:
            total.task_loss[task] = total.task_loss.get(task, 0.0) + s.task_loss[task]
            total.task_tokens[task] = total.task_tokens.get(task, 0) + s.task_tokens[task]
        total.samples += s.samples
        total.input_tokens += s.input_tokens
        total.padded_tokens += s.padded_tokens
        total.flops += s.flops
        total.data_wait += s.data_wait
        total.nonfinite_keys += s.nonfinite_keys
        for name in LOADER_STATS:
            total.loader[name].update(s.loader.get(name, {}))
        total.memory_gb = max(total.memory_gb, s.memory_gb)
    return total


class Trainer:
    def __init__(self, cfg: StageConfig, dist: ds.Dist):
        self.cfg, self.dist = cfg, dist
        self.out = stage_dir(cfg)
        self.ckpt_root = self.out / "checkpoints"
        t = cfg.train
        self.accumulation = t.accumulation(dist.world_size)
        dtype_name = ds.precision(cfg, dist.device)
        if dtype_name != t.precision:
            log.warning("no CUDA device: training in fp32 (train.precision=%s applies on GPUs)", t.precision)
        resume_from = self._resume_point()
        self.tokenizer = _tokenizer(cfg.model.tokenizer)
        self.loader = build_loader(  # before the model: shards that match no file fail here, naming the key
            cfg.data,
            Formatter(self.tokenizer, cfg.model.adapter.num_queries, cfg.data.max_length),
            image_transform(cfg.model.vision, cfg.data.image_size, cfg.data.pixels),
            t.micro_batch_size,
            cfg.run.seed,
            dist.rank,
            dist.world_size,
        )

        _seed(cfg.run.seed)  # the same initial weights on every rank
        model = QwenVL.from_config(cfg.model, cfg.data.image_size, self.tokenizer)
        if resume_from is None and t.init_from:
            _load_init(model, t.init_from)
        freeze(model, t.trainable)
        model.set_activation_checkpointing(t.activation_checkpointing)
        self.flop_model = FlopModel.of(model, t.trainable)
        self.llm_config = model.llm.config
        groups = param_groups(model, t.optimizer)
        optimizer = torch.optim.AdamW(
            groups, lr=t.optimizer.lr, betas=tuple(t.optimizer.betas), eps=t.optimizer.eps
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(t.optimizer, t.max_steps))
        ds_config = ds.deepspeed_config(cfg, dist.world_size, self.llm_config.hidden_size, dtype_name)
        self.engine = ds.build_engine(model, optimizer, scheduler, ds_config)
        self.zero3 = ds.zero_stage(self.engine) == 3

        self.step, run_id = 0, None
        if resume_from is not None:
            trainer, rank_state = checkpoint.load(self.engine, resume_from)
            self.step, run_id = trainer["step"], trainer.get("wandb_id")
            self.loader.load_state_dict(rank_state["loader"])
            checkpoint.set_rng_state(rank_state["rng"])
            log.info("resumed from %s at step %d", resume_from, self.step)
        self.logger = self._logger(run_id)
        self.peak = _peak_flops(dist, cfg.logging.peak_tflops)

    def _resume_point(self) -> Path | None:
        mode = self.cfg.train.resume
        if mode == "never":
            return None
        if mode == "auto":
            return checkpoint.latest(self.ckpt_root)
        folder = Path(mode)
        if not checkpoint.is_complete(folder):
            raise ConfigError(f"key 'train.resume': {mode} is not a complete checkpoint (a step-N folder)")
        return folder

    def _logger(self, run_id: str | None):
        if not self.dist.main:
            return NullLogger()
        save_config(self.cfg, self.out / "config.yaml")
        c = self.cfg
        from omegaconf import OmegaConf

        return MetricsLogger(
            self.out, OmegaConf.to_container(OmegaConf.structured(c)), c.logging.wandb, c.logging.project,
            c.logging.entity, c.run.name, c.run.stage, self.step, run_id,
        )  # fmt: skip

    # -- the loop -----------------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        t = self.cfg.train
        batches = iter(self.loader)
        bar = tqdm(total=t.max_steps, initial=self.step, desc=self.cfg.run.stage, disable=not self.dist.main,
                   dynamic_ncols=True, file=sys.stderr)  # fmt: skip
        row: dict[str, Any] = {}
        try:
            while self.step < t.max_steps:
                row, batch = self.train_step(batches)
                bar.update(1)
                bar.set_postfix(loss=f"{row['loss']:.4f}", samples_s=f"{row['samples_per_s']:.1f}")
                if self.step % self.cfg.logging.log_every == 0 or self.step == 1:
                    log.info(_console(row, t.max_steps))
                if self.step == 1 and self.dist.main:  # the optimizer's moments exist from step 1 on
                    log.info(_held(self.engine))
                every = self.cfg.logging.sample_every
                if every and (self.step % every == 0 or self.step == t.max_steps):
                    self._samples(batch)
                if self.step % t.checkpoint_every == 0 or self.step == t.max_steps:
                    self._checkpoint()
            self._export()
        finally:
            bar.close()
            self.logger.close()
        return row

    def train_step(self, batches) -> tuple[dict[str, Any], dict]:
        """One optimizer step over every rank's micro-batches: (its logged metrics row, the last micro-batch)."""
        start = time.perf_counter()
        stats, batch = self._accumulate(batches)
        total = _summed(ds.gather_objects(stats))
        if total.nonfinite_keys:
            raise NonFiniteLoss(
                f"step {self.step + 1}: non-finite loss in the batch of samples {total.nonfinite_keys[:16]}; "
                f"the weights were not updated; the last good checkpoint is {checkpoint.latest(self.ckpt_root)}"
            )
        lrs = self._lrs()  # the LRs this update uses (the schedule moves on in step())
        self.engine.step()
        self.step += 1
        row = self._row(total, lrs, time.perf_counter() - start)
        self.logger.log(row)
        return row, batch

    def _accumulate(self, batches) -> tuple[StepStats, dict]:
        """Forward and backward of every micro-batch of one optimizer step (the step itself is the caller's)."""
        stats = StepStats()
        for micro in range(self.accumulation):
            wait = time.perf_counter()
            batch = next(batches)
            stats.data_wait += time.perf_counter() - wait
            images = int(batch["has_image"].sum())
            stats_flops = self.flop_model.batch(max(images, 1), batch["attention_mask"].sum(1))
            out = self.engine(**self._to_device(batch))
            stats.add(out, batch, stats_flops)
            self.engine.backward(out.loss)
            if micro < self.accumulation - 1:
                self.engine.step()  # DeepSpeed counts micro-steps; no update before the boundary
        stats.loader = self.loader.stats()
        stats.memory_gb = _memory_gb(self.dist.device)
        return stats, batch

    def _to_device(self, batch: dict) -> dict:
        device = self.dist.device
        return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def _lrs(self) -> dict[str, float]:
        """The LR of each module group that learns (its top ViT layer's, under layer-wise decay)."""
        groups = self.engine.optimizer.param_groups
        lrs = {
            m: max((g["lr"] for g in groups if g["name"].split(".")[0] == m), default=None)
            for m in MODULE_GROUPS
        }
        return {f"lr/{m}": lr for m, lr in lrs.items() if lr is not None}

    def _row(self, total: StepStats, lrs: dict[str, float], seconds: float) -> dict[str, Any]:
        row: dict[str, Any] = {"step": self.step, "loss": total.loss_sum / max(total.tokens, 1)}
        for task in sorted(total.task_loss):
            row[f"loss/{task}"] = total.task_loss[task] / max(total.task_tokens[task], 1)
        row.update(lrs)
        norm = self.engine.get_global_grad_norm()
        row["grad_norm"] = float(norm) if norm is not None else None
        row["samples_per_s"] = total.samples / seconds
        row["tokens_per_s"] = total.input_tokens / seconds
        row["padding_share"] = total.padded_tokens / max(total.padded_tokens + total.input_tokens, 1)
        if self.peak:
            row["mfu"] = total.flops / (seconds * self.dist.world_size * self.peak)
        row["data_wait_share"] = total.data_wait / (seconds * self.dist.world_size)
        row["step_s"] = seconds
        row["memory_gb"] = total.memory_gb
        for name in ("skipped", "truncated", "dropped_turns"):  # cumulative, per reason or task
            for key, count in sorted(total.loader[name].items()):
                row[f"{name}/{key}"] = count
        seen = sum(total.loader["tasks"].values())
        for task, count in sorted(total.loader["tasks"].items()):
            row[f"mix/{task}"] = count / seen
        return row

    # -- samples, checkpoints, export --------------------------------------------------------------------
    def _samples(self, batch: dict) -> None:
        """Generated text beside the ground truth for the first samples of this rank's last micro-batch."""
        model = self.engine.module
        eos = end_ids(self.tokenizer)
        image_rows = torch.cumsum(batch["has_image"].long(), 0) - 1
        rows = []
        for i in range(min(self.cfg.logging.sample_count, len(batch["keys"]))):
            length = int(batch["attention_mask"][i].sum())
            input_ids, labels = batch["input_ids"][i, :length], batch["labels"][i, :length].tolist()
            cut = prompt_length(labels)
            has_image = bool(batch["has_image"][i])
            pixels = (
                batch["pixel_values"][image_rows[i] : image_rows[i] + 1]
                if has_image
                else batch["pixel_values"][:0]
            )
            new = greedy(model, input_ids[:cut].to(self.dist.device), pixels.to(self.dist.device),
                         has_image, SAMPLE_TOKENS, eos, synced=self.zero3)  # fmt: skip
            decode = self.tokenizer.decode
            rows.append({
                "key": batch["keys"][i], "task": batch["tasks"][i],
                "prompt": decode(input_ids[:cut].tolist()).replace("<|image_pad|>", ""),
                "generated": decode(new), "target": decode(input_ids[cut:].tolist()),
                "image": _viewable(pixels[0]) if has_image else None,
            })  # fmt: skip
        self.logger.samples(self.step, rows)

    def _checkpoint(self) -> None:
        rank_state = {"loader": self.loader.state_dict(), "rng": checkpoint.rng_state()}
        trainer = {
            "world_size": self.dist.world_size,
            "wandb_id": self.logger.run_id,
            "stage": self.cfg.run.stage,
        }
        folder = checkpoint.save(
            self.engine, self.ckpt_root, self.step, rank_state, trainer, self.cfg.train.keep_last
        )
        log.info("checkpoint %s", folder)

    def _export(self) -> None:
        state = ds.full_state_dict(self.engine)
        if self.dist.main:
            folder = save_pretrained(self.out / "final", state, self.llm_config, self.tokenizer, self.cfg)
            log.info("final weights: %s (QwenVL.from_pretrained loads it)", folder)
            if self.cfg.eval.shards:
                self._evaluate(folder)
        ds.barrier()

    def _evaluate(self, folder: Path) -> None:
        """The export scored on held-out shards by rank 0 alone (the export is whole, also under ZeRO-3)."""
        e = self.cfg.eval
        result = evaluate_export(folder, expand_urls(e.shards, key="eval.shards"), limit=e.limit,
                                 batch_size=e.batch_size, max_new_tokens=e.max_new_tokens, device=self.dist.device)  # fmt: skip
        self.logger.evaluation(self.step, result)
        log.info("held-out eval (blind in brackets): %s", ", ".join(
            f"{k} {v:.3f} ({result['blind'][k]:.3f})" for k, v in result.items() if isinstance(v, float)))  # fmt: skip


def _tokenizer(name: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except OSError as e:
        raise ConfigError(
            f"key 'model.tokenizer': cannot load {name!r} (run `make tokenizer`?): {e}"
        ) from None


def _load_init(model: QwenVL, path: str) -> None:
    if not Path(path).exists():
        raise ConfigError(
            f"key 'train.init_from': {path} does not exist; run the previous stage first (same run.name), "
            "or set train.init_from=null to start from fresh weights"
        )
    try:
        load_weights(model, path)
    except ValueError as e:
        raise ConfigError(f"key 'train.init_from': {e}") from None
    log.info("initialised from %s", path)


def _peak_flops(dist: ds.Dist, configured_tflops: float | None) -> float | None:
    """The per-device peak for MFU, the same on every rank. On CPU a rank's device is its share of the cores:
    the ranks measure at the same moment on that many threads (torch's default of every core per rank
    oversubscribes the machine and reads low), and take the mean."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", dist.world_size))
    ds.barrier()
    rates = ds.gather_objects(
        device_peak_flops(dist.device, configured_tflops, max(1, (os.cpu_count() or 1) // local))
    )
    return None if rates[0] is None else sum(rates) / len(rates)


def _held(engine) -> str:
    held = {k: v / 2**20 for k, v in ds.state_bytes(engine).items()}
    return (f"ZeRO-{ds.zero_stage(engine)}: rank 0 holds {held['param_bytes']:.1f} MiB of parameters and "
            f"{held['optimizer_bytes']:.1f} MiB of optimizer state")  # fmt: skip


def _memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import psutil

    return psutil.Process().memory_info().rss / 2**30


def _viewable(pixels: torch.Tensor) -> np.ndarray:
    """A normalised image tensor back to uint8 HWC for display (min-max, since the mean/std are the tower's)."""
    x = pixels.float()
    x = (x - x.min()) / (x.max() - x.min()).clamp(min=1e-6)
    return (x.permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)


def _console(row: dict[str, Any], max_steps: int) -> str:
    parts = [f"step {row['step']}/{max_steps}", f"loss {row['loss']:.4f}"]
    lr = max((v for k, v in row.items() if k.startswith("lr/")), default=None)
    if lr is not None:
        parts.append(f"lr {lr:.2e}")
    if row.get("grad_norm") is not None:
        parts.append(f"grad {row['grad_norm']:.3f}")
    parts.append(f"{row['samples_per_s']:.1f} samples/s")
    parts.append(f"{row['tokens_per_s']:.0f} tok/s")
    if "mfu" in row:
        parts.append(f"mfu {100 * row['mfu']:.1f}%")
    parts.append(f"data wait {100 * row['data_wait_share']:.1f}%")
    return " | ".join(parts)
