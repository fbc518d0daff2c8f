"""The two-set case of issue 27, as a user meets it: a caption-only set (LAION-like) and a referring-only set
(RefCOCO-like) of different sizes, read by a short stage-2 run (one rank, the tiny model at 56 px) as one
source (``data.shards=A::B``, which mixes by shard counts) and as two weighted sources; the referring share
is read from metrics.jsonl (``mix/ref``, ``mix/source/refcoco``) after the last step.

    PYTHONPATH=. python dev/mix_shares.py [--captions 1000] [--refs 200] [--steps 32] [--batch 16]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from data_prep.synthetic.shards import one_task_shards
from pipeline.metrics import read_metrics

TINY = ["data.image_size=56", "model.adapter.num_queries=16", "data.num_workers=1", "logging.wandb=disabled",
        "logging.sample_every=0", "train.init_from=null", "data.tasks={caption: 1, ref: 1}"]  # fmt: skip


def stage2(out: Path, data: str, steps: int, batch: int) -> dict:
    cmd = [sys.executable, "launch/stage2.py", data, f"run.output_dir={out}", f"train.max_steps={steps}",
           f"train.global_batch_size={batch}", f"train.micro_batch_size={batch}", f"train.checkpoint_every={steps}",
           *TINY]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return read_metrics(out / "default" / "stage2" / "metrics.jsonl")[-1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--captions", type=int, default=1000)
    p.add_argument("--refs", type=int, default=200)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--batch", type=int, default=16)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        laion = one_task_shards(root / "laion", args.captions, "caption", per_shard=100, seed=1)
        refcoco = one_task_shards(root / "refcoco", args.refs, "ref", per_shard=100, seed=2)
        samples = args.steps * args.batch
        last = stage2(root / "one", f"data.shards={laion}::{refcoco}", args.steps, args.batch)
        print(f"data.shards=A::B ({args.captions} + {args.refs}): referring share {last['mix/ref']:.3f} "
              f"over {samples} samples")  # fmt: skip
        for weights in ((1, 1), (3, 1)):
            sources = (f"data.sources=[{{name: laion, shards: '{laion}', weight: {weights[0]}}}, "
                       f"{{name: refcoco, shards: '{refcoco}', weight: {weights[1]}}}]")  # fmt: skip
            last = stage2(root / f"w{weights[0]}", sources, args.steps, args.batch)
            print(f"sources {weights[0]}:{weights[1]}: mix/source/refcoco {last['mix/source/refcoco']:.3f} "
                  f"(goal {weights[1] / sum(weights):.2f} +- 0.05), mix/ref {last['mix/ref']:.3f}, "
                  f"epochs/source/refcoco {last['epochs/source/refcoco']}, over {samples} samples")  # fmt: skip


if __name__ == "__main__":
    main()
