"""dev/LOG.md (issue 30): can the demo's model learn VQA's binding questions at all? The demo's stage 0 and
stage 1, then one VQA-only phase at 112 px on the world's multi-object images, then VQA by question type on
all held-out items (`launch.eval --tasks vqa --limit 300 --question-types`), with the blind twin.

    PYTHONPATH=. python dev/vqa_phase.py OUT [--steps 400] [--llm-layers 2] [--heads N] [--tower PATH] [--shards GLOB] [--reuse RUN]

--tower: a CLIP checkpoint of the scorer's architecture (e.g. from dev/standin_trials.py --save) in the place of
the prep's scorer (the demo's `vision_init: none`, its stem keys set by hand). --reuse: copy stage0 and
stage1 of an earlier run of this script with the same --llm-layers and --tower, so only the phase runs.
Writes OUT/demo.yaml, the run in OUT/demo/ and the scores in OUT/vqa.json.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline.config import CONFIG_ROOT

REUSED = ("prep", "prep data/synthetic-one", "heldout", "stage0", "stage1")


def config(args) -> dict:
    cfg = yaml.safe_load((CONFIG_ROOT / "demo.yaml").read_text())
    stages = cfg["stages"]
    stages["stage2-vqa"] = {
        "data": {"image_size": 112, "tasks": {"vqa": 1}, **({"shards": args.shards} if args.shards else {})},
        "train": {"max_steps": args.steps, "global_batch_size": 32, "micro_batch_size": 16,
                  "optimizer": {"lr": args.lr, "min_lr": args.lr / 10, "warmup_steps": min(50, args.steps // 20),
                                "lr_scale": {"vision": 0.1}}},
        "logging": {"sample_every": 0},
    }  # fmt: skip
    cfg["stages"] = {k: stages[k] for k in ("stage0", "stage1", "stage2-vqa")}
    cfg["eval_limit"] = cfg["final_eval_limit"] = 20  # the stage ends' own scores; the phase is scored below
    arch = yaml.safe_load((CONFIG_ROOT / "model" / "tiny.yaml").read_text())["llm"]["arch"]
    arch["num_hidden_layers"] = args.llm_layers
    for phase in cfg["stages"].values():
        phase["model"] = {"llm": {"arch": dict(arch)}}  # a dict key: the demo passes it whole
        if args.heads:
            phase["model"]["adapter"] = {"num_heads": args.heads}
        if args.tower:
            phase["model"]["vision"] = {"stem": "conv", "stem_channels": [16, 32], "stem_grid_layers": 2}
    if args.tower:
        cfg["vision_init"] = "none"
        cfg["stages"]["stage0"]["model"]["vision"]["pretrained"] = str(Path(args.tower).resolve())
    return cfg


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--llm-layers", type=int, default=2)
    p.add_argument("--heads", type=int, help="the resampler's heads (default: LLM width / 128, Qwen-VL's)")
    p.add_argument(
        "--tower", help="a CLIP checkpoint with the scorer's conv stem (default: the prep's scorer)"
    )
    p.add_argument("--shards", help="the phase's own training shards (default: the demo's data)")
    p.add_argument("--reuse", help="an earlier OUT whose stage0 and stage1 to copy")
    args = p.parse_args()
    out = Path(args.out)
    (out / "demo").mkdir(parents=True, exist_ok=True)
    cfg = config(args)
    (out / "demo.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    if args.reuse:
        for stage in ("stage0", "stage1"):
            shutil.copytree(Path(args.reuse) / "demo" / stage, out / "demo" / stage, dirs_exist_ok=True)
        phases = json.loads((Path(args.reuse) / "demo" / "phases.json").read_text())
        (out / "demo" / "phases.json").write_text(json.dumps({k: phases[k] for k in REUSED if k in phases}))
    env = {**os.environ, "WANDB_MODE": "offline"}
    py = sys.executable
    subprocess.run([py, "-m", "launch.demo", "--config", str(out / "demo.yaml"), f"output_dir={out}"],
                   check=True, env=env)  # fmt: skip
    subprocess.run([py, "-m", "launch.eval", "--checkpoint", str(out / "demo" / "stage2-vqa" / "final"),
                    "--shards", f"{cfg['heldout']}/shards/*.tar", "--tasks", "vqa", "--limit", "300",
                    "--question-types", "--out", str(out / "vqa.json")], check=True, env=env)  # fmt: skip


if __name__ == "__main__":
    main()
