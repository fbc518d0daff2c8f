"""The prep job on Ray Data: parts -> filters -> CLIP score (batched actors) -> shards + per-part stats.

    sources.plan_parts   the input as parts (the synthetic world generated, LAION downloaded)
    dedup.find_duplicates  digests of every part; the first occurrence wins
    -> Ray Data over the parts not yet done:
         chain.filter_part   text clean, decode, size, aspect, language, dedup, fit    (tasks, one per CPU)
         score.ClipStage     CLIP score in batches, one model per actor                (actors, GPU if any)
         write.write_part    shuffled webdataset shard + stats, each to .tmp and renamed
    -> summary.json (the invariant checked), plots/

A part's stats file is written last, after its shard, so a part with a stats file is finished: a rerun
after a crash (even kill -9) skips it and redoes only unfinished parts, which are deterministic.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from data_prep.chain import CATCHES, enabled_steps, filter_part
from data_prep.dedup import find_duplicates
from data_prep.score import ClipStage, clip_threads
from data_prep.sources import PrepConfig, check_source, plan_parts
from data_prep.stats import InvariantError, balance, funnel, merge, quality
from data_prep.write import write_json, write_part
from pipeline.config import ConfigError, save_config

log = logging.getLogger("data_prep")
ROOT = Path(__file__).resolve().parents[1]


# -- the job ---------------------------------------------------------------------------------------------------
def init_ray(cfg: PrepConfig) -> int:
    """Local Ray by default; a cluster with ``ray_address`` (or RAY_ADDRESS). Returns the CPUs to use."""
    import ray
    import ray.data

    address = cfg.ray_address or os.environ.get("RAY_ADDRESS") or None
    if not ray.is_initialized():
        if address:  # a cluster: ship this project to the workers, without data, runs and caches
            env = {"working_dir": str(ROOT), "excludes": ["data/", "runs/", ".venv/", ".cache/", ".git/"]}
            ray.init(address=address, runtime_env=env, logging_level=logging.WARNING)
        else:
            ray.init(  # "local": a new instance, never a cluster left behind by `ray start` or a crash
                address="local", num_cpus=cfg.workers or os.cpu_count(), include_dashboard=False,
                logging_level=logging.WARNING,
            )  # fmt: skip
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # ours is one bar over shards plus a periodic log line
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    return int(ray.cluster_resources().get("CPU", 1))


def preflight(cfg: PrepConfig) -> None:
    """Everything the run needs, checked on the driver before anything is downloaded, generated or filtered:
    a problem is one ConfigError naming the key, not a failure hours later inside a Ray worker."""
    out = Path(cfg.output_dir)
    try:
        for sub in ("shards", "stats", "plots"):
            (out / sub).mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"key 'output_dir': cannot write into {out}: {e}") from None
    check_source(cfg)
    clip = cfg.filters.clip
    if clip.enabled and clip.pretrained != "synthetic":  # the synthetic scorer is trained when missing
        from data_prep.clip_score import ClipScorer

        ClipScorer(clip)  # loads the weights once here: a wrong tag or path fails now


def run(cfg: PrepConfig) -> dict:
    start = time.perf_counter()
    out = Path(cfg.output_dir)
    preflight(cfg)
    save_config(cfg, out / "config.yaml")
    cpus = init_ray(cfg)
    parts = plan_parts(cfg)
    planned = time.perf_counter()
    scorer_dir = _scorer_dir(cfg)  # trains the synthetic scorer on first use
    scorer_ready = time.perf_counter()
    done = {p["part"] for p in parts if (out / "stats" / f"{p['part']:06d}.json").is_file()}
    todo = [p for p in parts if p["part"] not in done]
    log.info("%d parts: %d finished before, %d to do (%d CPUs)", len(parts), len(done), len(todo), cpus)
    duplicates = find_duplicates(cfg, parts) if (todo and cfg.filters.dedup.enabled) else {}
    deduped = time.perf_counter()
    processed = _process(cfg, todo, duplicates, scorer_dir, cpus) if todo else 0
    finished = time.perf_counter()
    for tmp in [*(out / "shards").glob("*.tmp"), *(out / "stats").glob("*.tmp")]:
        tmp.unlink()  # left by a run killed mid-write; its part was redone above
    summary = summarise(cfg, parts)
    summary["run"] = {
        "parts_total": len(parts),
        "parts_skipped": len(done),
        "parts_processed": len(todo),
        "samples_processed": processed,
        "samples_per_s": round(processed / max(finished - deduped, 1e-9), 1) if todo else None,
        "seconds": {
            "plan": round(planned - start, 2),
            "clip_scorer": round(scorer_ready - planned, 2),
            "dedup": round(deduped - scorer_ready, 2),
            "filter_clip_write": round(finished - deduped, 2),
            "total": round(time.perf_counter() - start, 2),
        },
    }
    summary["samples_per_s"] = summary["run"]["samples_per_s"]
    summary["clip"]["scorer"] = scorer_dir  # the trained synthetic scorer's folder (the demo's vision tower)
    write_json(out / "summary.json", summary)
    from data_prep.plots import write_plots

    write_plots(summary, out / "plots", cfg)
    return summary


def _process(cfg: PrepConfig, todo: list[dict], duplicates: dict, scorer_dir: str | None, cpus: int) -> int:
    import ray.data

    items = [{"spec": json.dumps(p), "duplicates": json.dumps(duplicates.get(p["part"], []))} for p in todo]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(filter_part, batch_size=1, fn_kwargs={"cfg": cfg})
    clip = cfg.filters.clip
    if clip.enabled:
        gpus = 1 if _has_gpus() and clip.device != "cpu" else 0
        threads = 1 if gpus else clip_threads(cpus, clip.workers)
        # the memory request also keeps Ray from fusing the filter tasks into the scoring actors
        ds = ds.map_batches(
            ClipStage, batch_size=1, compute=ray.data.ActorPoolStrategy(size=clip.workers),
            num_gpus=gpus, num_cpus=threads, memory=2**30,
            fn_constructor_kwargs={"cfg": cfg, "scorer_dir": scorer_dir, "threads": threads},
        )  # fmt: skip
    ds = ds.map_batches(write_part, batch_size=1, fn_kwargs={"cfg": cfg})
    processed = kept = 0
    start = last = time.perf_counter()
    with tqdm(total=len(todo), desc="prep", unit="shard") as bar:
        for row in ds.iter_rows():
            s = json.loads(row["summary"])
            processed, kept = processed + s["input"], kept + s["kept"]
            rate = processed / max(time.perf_counter() - start, 1e-9)
            bar.set_postfix(samples_per_s=f"{rate:.0f}", kept=f"{kept / max(processed, 1):.1%}")
            bar.update()
            if time.perf_counter() - last >= cfg.log_every:
                last = time.perf_counter()
                log.info("prep: %d/%d shards, %d samples, %.0f samples/s, kept %.1f%%",
                         bar.n, len(todo), processed, rate, 100 * kept / max(processed, 1))  # fmt: skip
    return processed


def _has_gpus() -> bool:
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


def _scorer_dir(cfg: PrepConfig) -> str | None:
    clip = cfg.filters.clip
    if not clip.enabled or clip.pretrained != "synthetic":
        return None
    from data_prep.clip_train import ensure_scorer

    return str(ensure_scorer(clip))


def summarise(cfg: PrepConfig, parts: list[dict]) -> dict:
    out = Path(cfg.output_dir)
    stats = []
    for p in parts:
        path = out / "stats" / f"{p['part']:06d}.json"
        if not path.is_file():
            raise InvariantError(f"{path} missing after the run: part {p['part']} did not finish")
        stats.append(json.loads(path.read_text()))
    merged = merge(stats)
    lost = balance(merged)
    if lost:
        raise InvariantError(f"input {merged['input']} != kept + dropped + errors (off by {lost})")
    thresholds = {s.get("clip_threshold") for s in stats if s.get("clip_threshold") is not None}
    return {
        "source": cfg.source,
        "input": merged["input"],
        "kept": merged["kept"],
        "kept_rate": round(merged["kept"] / max(merged["input"], 1), 4),
        "dropped": merged["dropped"],
        "errors": merged["errors"],
        "invariant": "input == kept + sum(dropped) + sum(errors): holds",
        "funnel": funnel(merged, enabled_steps(cfg)),
        "quality": quality(merged, CATCHES),
        "languages": merged["languages"],
        "clip": {
            "threshold": thresholds.pop() if len(thresholds) == 1 else sorted(thresholds),
            "scored": merged["clip_scored"],
        },  # fmt: skip
        "shards": [str(out / "shards" / f"{p['part']:06d}.tar") for p in parts],
        "shard_pattern": str(out / "shards" / f"{{000000..{len(parts) - 1:06d}}}.tar"),
        "error_examples": [e for s in stats for e in s["error_examples"]][:20],
        "stage_seconds": merged["seconds"],
        "histograms": merged["histograms"],
        "noise_outcomes": merged["noise"],
        "config": asdict(cfg),
    }
