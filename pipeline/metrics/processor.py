"""Cross-rank accounting of an optimizer step: each rank's :class:`StepStats`, gathered and summed in rank
order (so the sums are the same on every rank and every rerun), become one metrics row and a console line."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from pipeline.backends import StepResult
from pipeline.data.loader import merge_stats
from pipeline.distributed import Dist, barrier, gather_objects
from pipeline.metrics.flops import FlopModel, device_peak_flops
from pipeline.schema import MODULE_GROUPS


@dataclass
class StepStats:
    """One rank's account of one optimizer step."""

    loss_sum: float = 0.0
    tokens: int = 0  # supervised tokens
    task_loss: dict[str, float] = field(default_factory=dict)
    task_tokens: dict[str, int] = field(default_factory=dict)
    source_loss: dict[str, float] = field(default_factory=dict)
    source_tokens: dict[str, int] = field(default_factory=dict)
    samples: int = 0
    input_tokens: int = 0  # non-padding tokens through the LLM
    padded_tokens: int = 0
    flops: float = 0.0
    data_wait: float = 0.0
    nonfinite_keys: list[str] = field(default_factory=list)
    loader: dict[str, dict[str, int]] = field(default_factory=dict)
    memory_gb: float = 0.0

    def add(self, out, batch: dict, flops: float) -> None:
        """A micro-batch's model output (per-sample losses and supervised tokens) and its FLOPs."""
        losses, tokens = out.sample_loss.detach().double().cpu(), out.sample_tokens.cpu()
        if not torch.isfinite(out.loss.detach()).item():
            self.nonfinite_keys += batch["keys"]
        self.loss_sum += float(losses.sum())
        self.tokens += int(tokens.sum())
        for task, source, loss, count in zip(batch["tasks"], batch["sources"], losses.tolist(), tokens.tolist(),
                                             strict=True):  # fmt: skip
            _add(self.task_loss, self.task_tokens, task, loss, count)
            _add(self.source_loss, self.source_tokens, source, loss, count)
        self.samples += len(batch["keys"])
        self.input_tokens += int(batch["attention_mask"].sum())
        self.padded_tokens += int((batch["attention_mask"] == 0).sum())
        self.flops += flops

    @classmethod
    def summed(cls, stats: list[StepStats]) -> StepStats:
        total = cls(loader=merge_stats([s.loader for s in stats]))
        for s in stats:
            total.loss_sum += s.loss_sum
            total.tokens += s.tokens
            for task in s.task_loss:
                _add(total.task_loss, total.task_tokens, task, s.task_loss[task], s.task_tokens[task])
            for name in s.source_loss:
                _add(total.source_loss, total.source_tokens, name, s.source_loss[name], s.source_tokens[name])
            total.samples += s.samples
            total.input_tokens += s.input_tokens
            total.padded_tokens += s.padded_tokens
            total.flops += s.flops
            total.data_wait += s.data_wait
            total.nonfinite_keys += s.nonfinite_keys
            total.memory_gb = max(total.memory_gb, s.memory_gb)
        return total


class MetricsProcessor:
    """Turns the ranks' accounts of a step into the row that ``metrics.jsonl`` and wandb get."""

    def __init__(self, flop_model: FlopModel, dist: Dist, peak_flops: float | None):
        self.flop_model, self.dist, self.peak = flop_model, dist, peak_flops

    @classmethod
    def create(cls, flop_model: FlopModel, dist: Dist, configured_tflops: float | None) -> MetricsProcessor:
        """With the per-device peak for MFU, the same on every rank. On CPU a rank's device is the threads it
        trains on (its share of the cores: ``pipeline.distributed.share_cpu_threads``): the ranks measure at the
        same moment on them, and take the mean."""
        barrier()
        rates = gather_objects(device_peak_flops(dist.device, configured_tflops))
        return cls(flop_model, dist, None if rates[0] is None else sum(rates) / len(rates))

    def micro_batch(self, stats: StepStats, out, batch: dict, data_wait: float) -> None:
        """One micro-batch into this rank's account: its losses, tokens, FLOPs and the wait for it."""
        images = int(batch["has_image"].sum())
        flops = self.flop_model.batch(max(images, 1), sequence_lengths(batch))
        stats.data_wait += data_wait
        stats.add(out, batch, flops)

    def gather(self, stats: StepStats, loader_stats: dict) -> StepStats:
        """Every rank's account of this step, summed (a collective: every rank calls it)."""
        stats.loader = loader_stats
        stats.memory_gb = memory_gb(self.dist.device)
        return StepStats.summed(gather_objects(stats))

    def row(self, step: int, total: StepStats, result: StepResult, seconds: float) -> dict[str, Any]:
        row: dict[str, Any] = {"step": step, "loss": total.loss_sum / max(total.tokens, 1)}
        for task in sorted(total.task_loss):
            row[f"loss/{task}"] = total.task_loss[task] / max(total.task_tokens[task], 1)
        for source in sorted(total.source_loss):
            row[f"loss/source/{source}"] = total.source_loss[source] / max(total.source_tokens[source], 1)
        row.update(module_lrs(result.lrs))
        row["grad_norm"] = result.grad_norm
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
        for source, count in sorted(total.loader["sources"].items()):  # cumulative, as the task mix
            row[f"mix/source/{source}"] = count / seen
            row[f"epochs/source/{source}"] = total.loader["epochs"].get(source, 0)
            row[f"skipped/source/{source}"] = total.loader["source_skipped"].get(source, 0)
        return row


def _add(losses: dict[str, float], tokens: dict[str, int], key: str, loss: float, count: int) -> None:
    losses[key] = losses.get(key, 0.0) + loss
    tokens[key] = tokens.get(key, 0) + count


def data_summary(loader: dict[str, dict[str, int]]) -> str:
    """What each source gave over the run (for the stage's last log line)."""
    seen = max(sum(loader["sources"].values()), 1)
    parts = [f"{name} {count} samples ({count / seen:.1%}, {loader['epochs'].get(name, 0)} epochs begun, "
             f"{loader['source_skipped'].get(name, 0)} skipped)" for name, count in loader["sources"].items()]  # fmt: skip
    return "data by source: " + "; ".join(parts)


def sequence_lengths(batch: dict) -> torch.Tensor:
    """The tokens of each attention block: a row's, or with packing each sample's (attention stays within it)."""
    if "sample_index" in batch:
        index = batch["sample_index"]
        return torch.bincount(index[index >= 0])
    return batch["attention_mask"].sum(1)


def module_lrs(group_lrs: dict[str, float]) -> dict[str, float]:
    """The LR of each module group that learns (its top ViT layer's, under layer-wise decay)."""
    lrs = {
        m: max((lr for name, lr in group_lrs.items() if name.split(".")[0] == m), default=None)
        for m in MODULE_GROUPS
    }
    return {f"lr/{m}": lr for m, lr in lrs.items() if lr is not None}


def memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import psutil

    return psutil.Process().memory_info().rss / 2**30


def console_line(row: dict[str, Any], max_steps: int) -> str:
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
