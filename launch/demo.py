"""`make demo`: the whole recipe on the embedded default, offline, to an evaluated chat model.

    python -m launch.demo [--config configs/demo.yaml] [--fresh] [key=value ...]

synthetic world -> `make prep` (its CLIP scorer becomes the vision tower; further prepared sets beside it) ->
held-out shards -> stage 0 (the LLM's text warm-start, on the tasks' text with the images left out) -> stages
1, 2, 3 (each under the `deepspeed` launcher a user runs, each scored on the held-out shards at its end, next to
its image-blind twin; a stage may run in several phases, a curriculum) -> report (``runs/demo/report.md``,
``eval.json``, plots) -> a Hugging Face-style export. A second run reuses every finished phase (a stage that
was cut off resumes from its last checkpoint); ``--fresh`` deletes the run and its held-out data first.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_prep.sources import PrepConfig
from pipeline.config import CONFIG_ROOT, ConfigError, flatten, load_config, save_config, to_overrides
from pipeline.schema import StageConfig

STAGES = ("stage0", "stage1", "stage2", "stage3")
SYNTHETIC = CONFIG_ROOT / "data" / "synthetic.yaml"
# how a prep runs, not what it makes: a prepared folder is reused whatever these were
PREP_RUNTIME = ("ray_address", "workers", "log_every", "filters.clip.device", "filters.clip.workers",
                "filters.clip.batch_size")  # fmt: skip
PHASE = re.compile(r"stage\d(-[a-z0-9_]+)?")  # a stage, or a stage and a label: an output folder's name


def stage_of(phase: str) -> str:
    """The stage a phase of the chain runs: ``stage2`` for ``stage2`` and for ``stage2-ref``."""
    return phase.split("-", 1)[0]


@dataclass
class DemoConfig:
    name: str = "demo"  # run.name of every stage: outputs under <output_dir>/<name>/
    output_dir: str = "runs"
    # processes per stage under the deepspeed launcher (CPU: DeepSpeed's CPU accelerator, gloo)
    ranks: int = 1
    data: str = "data/synthetic"  # `make prep`'s output: reused when its summary.json is there
    # keys of configs/data/synthetic.yaml set for that prep, as a mapping
    prep: dict[str, Any] = field(default_factory=dict)
    # further prepared sets: output folder -> keys of configs/data/synthetic.yaml over `prep` (the same
    # scorer filters them); a phase reads one by naming its shards, e.g. data.shards=<folder>/shards/*.tar
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the held-out world's shards (synthetic.split=heldout: disjoint seeds, no noise)
    heldout: str = "data/heldout"
    heldout_samples: int = 300
    vision_init: str = "scorer"  # scorer: the prep's CLIP scorer initialises the ViT | none: a fresh ViT
    eval_limit: int = 100  # held-out items per task at each stage end (each also image-blind)
    # the last phase's: the final model's scores, which the goals are judged on, on the whole held-out set
    # (100 items leave a standard error of about 0.035 at 15%; dev/LOG.md)
    final_eval_limit: int = 300
    report_images: int = 8  # held-out images in the report's grid
    # phase -> its settings in that stage config's keys, run in the order listed, each from the one before's
    # final/; a phase is a stage (stage2) or a further phase of one (stage2-ref: launch/stage2.py, outputs
    # under <name>/stage2-ref/)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.vision_init not in ("scorer", "none"):
            raise ConfigError(f"key 'vision_init': {self.vision_init!r} is not one of ('scorer', 'none')")
        if not self.stages:
            raise ConfigError("key 'stages': name at least one stage")
        for key in ("eval_limit", "final_eval_limit"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"key '{key}': must be > 0")
        if unknown := [p for p in self.stages if stage_of(p) not in STAGES or not PHASE.fullmatch(p)]:
            raise ConfigError(f"key 'stages': unknown {unknown}; a phase is one of {STAGES}, or one of them "
                              "with a label (stage2-ref)")  # fmt: skip
        order = [STAGES.index(stage_of(p)) for p in self.stages]
        if order != sorted(order):
            raise ConfigError(f"key 'stages': {list(self.stages)} run in the order listed; a stage's phases "
                              "come after the stage before it")  # fmt: skip
        if self.ranks < 1:
            raise ConfigError("key 'ranks': must be >= 1")

    def stage_overrides(self, phase: str) -> list[str]:
        """The demo's settings of ``phase`` as its stage's command line takes them (with its own ``run.stage``
        when it is a further phase), checked by loading the stage's config with them (a wrong key or value
        fails here, before any phase runs)."""
        try:
            overrides = to_overrides(StageConfig, self.stages[phase])
            if phase != stage_of(phase):
                overrides.append(f"run.stage={phase}")
            load_config(StageConfig, CONFIG_ROOT / f"{stage_of(phase)}.yaml", overrides)
        except ConfigError as e:
            raise ConfigError(f"key 'stages.{phase}': {e}") from None
        return overrides

    def prep_overrides(self, dataset: str | None = None) -> list[str]:
        """The prep's overrides of ``data`` or of one of ``datasets`` (``prep``, then that set's own keys)."""
        key = "prep" if dataset is None else f"datasets.{dataset}"
        try:
            own = to_overrides(PrepConfig, self.datasets.get(dataset, {}))
            return to_overrides(PrepConfig, self.prep) + own
        except ConfigError as e:
            raise ConfigError(f"key '{key}': {e}") from None

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


class Phases:
    """Runs the chain's phases in order, each once: a phase whose output is there is reused. Times are kept in
    ``phases.json`` (a reused phase keeps the seconds it took when it ran)."""

    def __init__(self, path: Path):
        self.path = path
        self.times: dict[str, dict] = json.loads(path.read_text()) if path.is_file() else {}
        self.start = time.perf_counter()

    def __call__(self, name: str, done: Callable[[], bool], work: Callable[[], None]) -> None:
        if done():
            before = self.times.get(name, {}).get("seconds")
            print(
                f"[demo] {name}: done before, reused" + (f" (took {before:.0f} s)" if before else ""),
                flush=True,
            )
            self.times.setdefault(name, {})["reused"] = True
        else:
            print(f"[demo] {name} ...", flush=True)
            start = time.perf_counter()
            work()
            seconds = time.perf_counter() - start
            self.times[name] = {"seconds": round(seconds, 1), "reused": False}
            print(
                f"[demo] {name}: {seconds:.0f} s (demo so far {time.perf_counter() - self.start:.0f} s)",
                flush=True,
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.times, indent=1))


def _python(*args: str) -> None:
    subprocess.run([sys.executable, *args], check=True)


def _prep_done(folder: str) -> bool:
    return (Path(folder) / "summary.json").is_file()


def check_prepared(folder: str, overrides: list[str], key: str) -> None:
    """A prepared ``folder`` the demo would reuse must have been made with the settings it asks for (``make
    prep``'s defaults and the demo's differ: its scorer becomes the tower); otherwise a ConfigError on
    ``key`` names each differing setting."""
    saved = Path(folder) / "config.yaml"
    if not _prep_done(folder) or not saved.is_file():
        return
    here = f"output_dir={folder}"
    want = flatten(dataclasses.asdict(load_config(PrepConfig, SYNTHETIC, [*overrides, here])))
    made = flatten(dataclasses.asdict(load_config(PrepConfig, saved, [here])))
    if differ := [k for k in want if k not in PREP_RUNTIME and made.get(k) != want[k]]:
        raise ConfigError(f"key '{key}': {folder} was prepared with "
                          + ", ".join(f"{k}={made.get(k)!r} (the demo's: {want[k]!r})" for k in differ)
                          + f"; delete {folder} to prepare it again, or set a new folder")  # fmt: skip


def _shards(folder: str) -> str:
    return json.loads((Path(folder) / "summary.json").read_text())["shard_pattern"]


def scorer_tower(cfg: DemoConfig, stage: str) -> tuple[Path, list[str]]:
    """The prep's CLIP scorer as the vision tower of ``stage`` (the chain's first): its weights, once its
    architecture is checked against the stage's ``model.vision.arch``, and the ``model.vision`` overrides of
    its stem, which every stage of the chain builds; its resolution (``scorer.json``) is the one the stage
    should train at, and a stage at another is told that its position embedding is resized."""
    scorer = json.loads((Path(cfg.data) / "summary.json").read_text())["clip"].get("scorer")
    if not scorer:
        raise ConfigError(f"key 'vision_init': {cfg.data}/summary.json names no CLIP scorer (re-run `make prep` "
                          "with the synthetic scorer on; it reuses a trained one)")  # fmt: skip
    info = json.loads((Path(scorer) / "scorer.json").read_text())
    tower = load_config(StageConfig, CONFIG_ROOT / f"{stage_of(stage)}.yaml", cfg.stage_overrides(stage))
    if tower.model.vision.arch != info["arch"]:
        raise ConfigError(f"key 'vision_init': the scorer {scorer} is a {info['arch']}, but {stage}'s "
                          f"model.vision.arch is {tower.model.vision.arch}")  # fmt: skip
    if tower.data.image_size != info["image_size"]:
        print(f"[demo] {stage} trains at {tower.data.image_size} px, the scorer at {info['image_size']}: "
              "its position embedding is interpolated", flush=True)  # fmt: skip
    stem = [f"model.vision.stem={info.get('stem', 'patch')}"]
    if info.get("stem") == "conv":
        channels = ",".join(str(c) for c in info["stem_channels"])
        stem += [
            f"model.vision.stem_channels=[{channels}]",
            f"model.vision.stem_grid_layers={info['stem_grid_layers']}",
        ]
    return Path(scorer) / info["weights"], stem


def stage_command(cfg: DemoConfig, stage: str, overrides: list[str]) -> tuple[list[str], dict[str, str]]:
    """The launcher command a user would type for one phase of the chain (``deepspeed --num_gpus N``), and
    its environment."""
    from pipeline.backends import backend_class

    args = [f"run.name={cfg.name}", f"run.output_dir={cfg.output_dir}", *overrides]
    script = Path(__file__).with_name(f"{stage_of(stage)}.py")
    return backend_class().launcher_command(str(script), args, cfg.ranks)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m launch.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(CONFIG_ROOT / "demo.yaml"))
    p.add_argument("--fresh", action="store_true", help="delete this demo's run and held-out data first")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. ranks=1 stages.stage1.train.max_steps=10")
    args = p.parse_args(argv)
    try:
        cfg = load_config(DemoConfig, args.config, args.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.fresh:
        for folder in (cfg.run_dir, Path(cfg.heldout)):
            shutil.rmtree(folder, ignore_errors=True)
    try:
        run(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as e:
        print(f"[demo] failed: {' '.join(map(str, e.cmd))} exited with {e.returncode}", file=sys.stderr)
        return 1
    return 0


def run(cfg: DemoConfig) -> dict:
    out = cfg.run_dir
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "demo.yaml")
    chain = list(cfg.stages)
    # every phase's settings checked (and turned into its command line) before the first phase runs
    overrides = {stage: cfg.stage_overrides(stage) for stage in chain}
    prep = {folder: cfg.prep_overrides(folder) for folder in [None, *cfg.datasets]}
    heldout_keys = ["synthetic.split=heldout", f"synthetic.num_samples={cfg.heldout_samples}",
                    "filters.clip.enabled=false"]  # fmt: skip
    check_prepared(cfg.heldout, heldout_keys, "heldout")
    for folder, keys in prep.items():
        check_prepared(folder or cfg.data, keys, "data" if folder is None else f"datasets.{folder}")
    phases = Phases(out / "phases.json")
    synthetic = str(SYNTHETIC)

    for folder, keys in prep.items():  # data's scorer is trained (or found in the cache) first
        phases("prep" if folder is None else f"prep {folder}", lambda f=folder or cfg.data: _prep_done(f),
               lambda f=folder or cfg.data, k=keys: _python("-m", "data_prep", "--config", synthetic,
                                                            f"output_dir={f}", *k))  # fmt: skip
    phases("heldout", lambda: _prep_done(cfg.heldout),
           lambda: _python("-m", "data_prep", "--config", synthetic, f"output_dir={cfg.heldout}", *heldout_keys))  # fmt: skip
    heldout = _shards(cfg.heldout)
    shards = f"data.shards={_shards(cfg.data)}"
    weights, stem = scorer_tower(cfg, chain[0]) if cfg.vision_init == "scorer" else (None, [])
    for before, stage in zip([None, *chain], chain, strict=False):
        limit = cfg.final_eval_limit if stage == chain[-1] else cfg.eval_limit
        extra = [shards, f"eval.shards={heldout}", f"eval.limit={limit}", *stem]
        if before is not None:  # stages 2 and 3 default to stage N-1; stage 1 starts fresh unless chained
            extra.append(f"train.init_from={out / before / 'final'}")
        if stage == chain[0] and weights is not None:  # the first stage builds the model
            extra.append(f"model.vision.pretrained={weights}")
        command, env = stage_command(cfg, stage, [*extra, *overrides[stage]])
        final = out / stage / "final"
        phases(stage, lambda f=final: (f / "eval.json").is_file(),
               lambda c=command, e=env: subprocess.run(c, check=True, env=e))  # fmt: skip

    from launch.report import write_report

    phases("report", lambda: False,
           lambda: write_report(out, chain, phases.times, Path(cfg.data), heldout, cfg.report_images))  # fmt: skip
    from pipeline.export import export_hf

    phases("export", lambda: False, lambda: export_hf(out / chain[-1] / "final", out / "hf"))
    result = json.loads((out / "eval.json").read_text())
    total = sum(t.get("seconds", 0) for t in phases.times.values())
    print(f"\n[demo] report: {out / 'report.md'}   eval: {out / 'eval.json'}   export: {out / 'hf'}")
    print(f"[demo] phases took {total:.0f} s in all")
    print("[demo] held-out, final model (image-blind twin in brackets): " + ", ".join(
        f"{k} {v:.3f} ({result['blind'].get(k, float('nan')):.3f})" for k, v in result.items() if isinstance(v, float)))  # fmt: skip
    return result


if __name__ == "__main__":
    sys.exit(main())
