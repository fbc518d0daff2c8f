"""One metrics logger with backends: a JSONL file (always) and wandb (online, offline or disabled).

The trainer logs through it without ever asking whether wandb is on (nanochat's DummyWandb idea). Only rank 0
writes; other ranks hold a logger that drops everything. One JSONL row per optimizer step, ``step`` counted
from 1. On resume the file is cut back to the checkpoint's step, so it never holds a step twice.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
METRICS = "metrics.jsonl"
SAMPLES = "samples.jsonl"
EVAL = "eval.jsonl"
LOSS_PLOT = "loss.png"


class MetricsLogger:
    def __init__(
        self,
        folder: Path,
        config: dict[str, Any],
        wandb_mode: str,
        project: str,
        entity: str | None,
        group: str,
        job_type: str,
        start_step: int,
        run_id: str | None,
    ):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / METRICS
        _truncate(self.path, start_step)
        _truncate(folder / SAMPLES, start_step)
        self._file = self.path.open("a")
        self._samples = (folder / SAMPLES).open("a")
        self._wandb = None
        self.run_id = run_id
        if wandb_mode != "disabled":
            import wandb

            self.run_id = run_id or uuid.uuid4().hex[:12]
            self._wandb = wandb.init(
                project=project, entity=entity, group=group, job_type=job_type, name=f"{group}-{job_type}",
                id=self.run_id, resume="allow", dir=str(folder), mode=wandb_mode, config=config,
            )  # fmt: skip

    def log(self, row: dict[str, Any]) -> None:
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])

    def evaluation(self, step: int, result: dict[str, Any]) -> None:
        """Held-out scores (pipeline.eval): a row of eval.jsonl, and eval/*, blind/* and image_loss/* at this step
        in wandb."""
        scores = {f"eval/{k}": v for k, v in result.items() if isinstance(v, float)}
        scores |= {f"blind/{k}": v for k, v in result.get("blind", {}).items()}
        for task, losses in result.get("image_loss", {}).items():  # own image / blanked / another's
            scores |= {f"image_loss/{task}/{name}": v for name, v in losses.items()}
        with (self.folder / EVAL).open("a") as f:
            f.write(json.dumps({"step": step, **scores, "samples": result.get("samples", {})}) + "\n")
        if self._wandb is not None:
            self._wandb.log(scores, step=step)

    def benchmark(self, step: int, result: dict[str, Any]) -> None:
        """A benchmark's scores (pipeline.benchmarks): bench/<benchmark>[-<split>]/<score> and bench_blind/...,
        a row of eval.jsonl and wandb at this step."""
        name = f"{result['benchmark']}-{result['split']}" if result.get("split") else result["benchmark"]
        scores = {f"bench/{name}/{k}": v for k, v in result.items() if isinstance(v, float)}
        scores |= {f"bench_blind/{name}/{k}": v for k, v in result["blind"].items() if isinstance(v, float)}
        with (self.folder / EVAL).open("a") as f:
            f.write(json.dumps({"step": step, **scores, "items": {name: result["items"]}}) + "\n")
        if self._wandb is not None:
            self._wandb.log(scores, step=step)

    def samples(self, step: int, rows: list[dict[str, Any]]) -> None:
        """Generated text beside the ground truth: a wandb table (with the images) and samples.jsonl."""
        for row in rows:
            self._samples.write(json.dumps({"step": step, **{k: v for k, v in row.items() if k != "image"}}))
            self._samples.write("\n")
        self._samples.flush()
        if self._wandb is not None:
            import wandb

            columns = ["key", "task", "prompt", "generated", "target"]
            table = wandb.Table(columns=["image", *columns])
            for row in rows:
                image = wandb.Image(row["image"]) if row.get("image") is not None else None
                table.add_data(image, *(row[c] for c in columns))
            self._wandb.log({"samples": table}, step=step)

    def close(self) -> None:
        self._file.close()
        self._samples.close()
        if self._wandb is not None:
            self._wandb.finish()
        plot_losses(self.path, self.folder / LOSS_PLOT)


class NullLogger:
    """What ranks other than 0 hold."""

    run_id = None

    def log(self, row: dict[str, Any]) -> None:
        pass

    def samples(self, step: int, rows: list[dict[str, Any]]) -> None:
        pass

    def evaluation(self, step: int, result: dict[str, Any]) -> None:
        pass

    def benchmark(self, step: int, result: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def _truncate(path: Path, keep_through: int) -> None:
    """Keep only the rows of steps <= keep_through (a resumed run rewrites the steps after its checkpoint)."""
    if not path.is_file():
        return
    rows = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in rows if json.loads(line)["step"] <= keep_through]
    path.write_text("".join(line + "\n" for line in kept))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_losses(path: Path, out: Path) -> Path | None:
    """Loss and per-task losses against the step, with the peak-group LR on a second axis."""
    rows = read_metrics(path) if path.is_file() else []
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(steps, [r["loss"] for r in rows], label="loss", color="black", linewidth=1.6)
    tasks = sorted({k for r in rows for k in r if k.startswith("loss/")})
    for key in tasks:
        points = [(r["step"], r[key]) for r in rows if key in r]
        ax.plot(*zip(*points, strict=True), label=key.split("/", 1)[1], linewidth=0.9, alpha=0.8)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy")
    ax.set_title(f"{path.parent.name}: training loss")
    ax.grid(alpha=0.3)
    lrs = [k for k in rows[-1] if k.startswith("lr/")]
    if lrs:
        lr_ax = ax.twinx()
        lr_ax.plot(steps, [max(r[k] for k in lrs) for r in rows], color="grey", linestyle=":", label="lr")
        lr_ax.set_ylabel("peak learning rate", color="grey")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
