"""Issue 30's LLM-side levers for referring, measured alone: stage 2 from a demo stage's final/ on world
samples of chosen tasks, then held-out grounding accuracy (blind beside it) and the referring image-loss
triple (own image / blanked / another's).

    PYTHONPATH=. python dev/ref_trials.py --init RUN/stage1/final --heldout HELDOUT/shards --steps 300 \
        --lr 2e-3 [--one-share 1] [--tasks ref=1,caption=1] [--size 112] [--samples 4000]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from safetensors.torch import save_file

from data_prep.synthetic.shards import world_samples, write_shards
from pipeline.backends import backend_class
from pipeline.config import CONFIG_ROOT, load_config
from pipeline.data.formats import Formatter
from pipeline.data.shard_format import read_shards, write_shard
from pipeline.eval import evaluate
from pipeline.model.qwenvl import WEIGHTS
from pipeline.model.vision import image_transform
from pipeline.schema import StageConfig
from stages.train import Trainer


def training_shards(num: int, one_share: float | None, seed: int, cache: Path) -> str:
    """Shards of world pairs with every task's ground truth, ``one_share`` of them images of one object (None:
    the world's own share, about a quarter), written once per setting under ``cache``."""
    tag = "all" if one_share is None else "one" if one_share == 1 else f"one{one_share:g}"
    out = cache / f"world-{num}-{tag}-{seed}"
    pattern = str(out / f"{{000000..{(num + 499) // 500 - 1:06d}}}.tar")
    if (out / "done").exists():
        return pattern
    ones: list[dict] = []  # 2000 world images per seed
    others: list[dict] = []
    want = num if one_share is None else round(num * one_share)
    chunk = 0
    while (
        len(ones) + len(others) < num if one_share is None else len(ones) < want or len(others) < num - want
    ):
        for sample in world_samples(2000, 0, seed + 1000 * chunk):
            (ones if len(json.loads(sample["json"])["tasks"]["ref"]) == 1 else others).append(sample)
        chunk += 1
    if one_share is None:  # by sample key, whatever the chunks drew
        samples = sorted(ones + others, key=lambda s: s["__key__"])[:num]
    else:
        samples = ones[:want] + others[: num - want]
        if 0 < one_share < 1:  # one-object images spread over the run
            random.Random(seed).shuffle(samples)
    write_shards(samples, out, 500)
    (out / "done").touch()
    return pattern


def one_object(heldout: Path, cache: Path) -> str:
    """The held-out images of one object, as a shard of their own (written once under ``cache``)."""
    out = cache / f"heldout-one-{heldout.resolve().as_posix().replace('/', '_')}"
    if not (out / "000000.tar").exists():
        records = [{k: v for k, v in raw.items() if not k.startswith("__") or k == "__key__"}
                   for raw in read_shards(sorted(str(p) for p in heldout.glob("*.tar")))
                   if len(json.loads(raw["json"]).get("tasks", {}).get("ref") or []) == 1]  # fmt: skip
        out.mkdir(parents=True, exist_ok=True)
        write_shard(out / "000000.tar", records)
    return str(out / "000000.tar")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--init", required=True, help="a stage's final/ folder")
    p.add_argument("--heldout", required=True, help="held-out shards folder")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--samples", type=int, default=4000)
    p.add_argument(
        "--one-share", type=float, default=None, help="share of one-object images (default: the world's)"
    )
    p.add_argument("--tasks", default="ref=1")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--cache", default="/tmp/ref-trials", help="where the trials' shards are kept between runs"
    )
    p.add_argument("--save", help="a folder to save the trained weights in (train.init_from of a next run)")
    p.add_argument("--set", nargs="*", default=[], help="more stage-config overrides")
    args = p.parse_args()

    out = Path(tempfile.mkdtemp(prefix="ref-trial-"))
    t0 = time.time()
    shards = training_shards(args.samples, args.one_share, args.seed, Path(args.cache))
    tasks = [f"data.tasks.{kv.split('=')[0]}={kv.split('=')[1]}" for kv in args.tasks.split(",")]
    cfg = load_config(StageConfig, CONFIG_ROOT / "stage2.yaml", [
        f"data.shards={shards}", f"run.output_dir={out}", f"train.max_steps={args.steps}",
        f"data.image_size={args.size}", "data.tasks={}", *tasks, f"train.global_batch_size={args.batch}",
        "train.micro_batch_size=16", f"train.init_from={args.init}", "train.resume=never",
        "train.checkpoint_every=100000", f"train.optimizer.lr={args.lr}", f"train.optimizer.min_lr={args.lr / 10}",
        "train.optimizer.warmup_steps=20", "data.num_workers=1", "logging.wandb=disabled",
        "logging.sample_every=0", "eval.shards=null", *args.set,
    ])  # fmt: skip
    trainer = Trainer(cfg, backend_class().init_distributed(), hooks=[])
    trainer.train()
    train_s = time.time() - t0
    if args.save:  # a curriculum: the next run starts from these weights (--set train.init_from=FOLDER)
        Path(args.save).mkdir(parents=True, exist_ok=True)  # the backend's copies: DeepSpeed's flat buffers
        save_file(trainer.backend.full_state_dict(), str(Path(args.save) / WEIGHTS))  # share storage
    formatter = Formatter(trainer.tokenizer, cfg.model.adapter.num_queries, cfg.data.max_length)
    transform = image_transform(cfg.model.vision, args.size)
    row = {"args": vars(args), "train_s": round(train_s)}
    heldout = Path(args.heldout)
    for name, urls in (("all", sorted(str(p) for p in heldout.glob("*.tar"))),
                       ("one", [one_object(heldout, Path(args.cache))])):  # fmt: skip
        result = evaluate(trainer.backend.model, trainer.tokenizer, formatter, transform, urls, tasks=("ref",),
                          limit=100)  # fmt: skip
        row[name] = {"grounding": result["grounding_acc"], "blind": result["blind"]["grounding_acc"],
                     "items": result["samples"]["grounding_acc"], "image_loss": result["image_loss"]["ref"]}  # fmt: skip
    row["examples"] = [(e["truth"], e["generated"]) for e in result["examples"][:4]]
    print(json.dumps(row))


if __name__ == "__main__":
    main()
