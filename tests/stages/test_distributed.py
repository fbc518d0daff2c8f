"""Real multi-rank DeepSpeed on CPU (gloo) through the `deepspeed` launcher, as a user runs it: exact resume
after kill -9, ZeRO-3 with a rank whose batches are text-only, two nodes on one machine."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from data_prep.synthetic.shards import world_samples, write_shards
from pipeline.data.shard_format import expand_urls
from pipeline.distributed import free_port
from pipeline.eval import evaluate_export
from pipeline.metrics import read_metrics
from tests.conftest import REPO, wait_for

pytestmark = pytest.mark.slow
DEEPSPEED = [sys.executable, "-m", "deepspeed.launcher.runner"]
TINY = ["data.image_size=56", "model.adapter.num_queries=16", "train.micro_batch_size=2", "logging.wandb=disabled",
        "logging.sample_every=0", "logging.log_every=1"]  # fmt: skip
TIMEOUT = 900  # s: catches a hang; a 2-core machine under other load can take minutes per run


def _env() -> dict[str, str]:
    """This process may hold a process group of its own (test_train.py): its variables must not leak."""
    drop = {"RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE"}
    return {
        **{k: v for k, v in os.environ.items() if k not in drop},
        "DS_ACCELERATOR": "cpu",
        "PYTHONUNBUFFERED": "1",
    }


def shm_buffers(port: int) -> list[Path]:
    """The files DeepSpeed's CPU all-reduce maps for the run on this port (64 MB per rank, if left behind)."""
    return sorted(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*"))


def launch(ranks: int, out: Path, shards: str | None, *overrides: str, stage: str = "stage1", popen: bool = False,
           port: int | None = None):  # fmt: skip
    port = port or free_port()
    data = [f"data.shards={shards}"] if shards else []  # None: the overrides name data.sources
    cmd = [*DEEPSPEED, "--num_gpus", str(ranks), "--master_port", str(port), f"launch/{stage}.py", *data,
           f"run.output_dir={out}", *TINY, *overrides]  # fmt: skip
    if popen:
        return subprocess.Popen(cmd, cwd=REPO, env=_env(), start_new_session=True, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert not shm_buffers(port), "a finished run left its shared-memory buffers behind"
    return done.stdout + done.stderr


def metrics(out: Path, stage: str = "stage1") -> list[dict]:
    return read_metrics(out / "default" / stage / "metrics.jsonl")


def three_sources(root: Path) -> Path:
    """A mixture file of three one-task sources of different sizes: the 2-sample one wraps around (2 ranks x 2
    workers draw about 7 samples from it)."""
    from data_prep.synthetic.shards import one_task_shards

    sets = [("laion", 120, "caption", 5), ("refcoco", 40, "ref", 2), ("vqa", 2, "vqa", 2)]
    lines = [f"    - {{name: {name}, shards: '{one_task_shards(root / name, n, task, per_shard=20, seed=i)}', "
             f"weight: {weight}}}" for i, (name, n, task, weight) in enumerate(sets)]  # fmt: skip
    path = root / "three.yaml"
    path.write_text("data:\n  tasks: {caption: 1, ref: 1, vqa: 1}\n  sources:\n" + "\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(("ranks", "zero", "data"), [(1, 2, None), (2, 3, None), (1, 3, None), (2, 2, None),
                                                     (2, 2, "mixture"), (2, 3, "packing")])  # fmt: skip
def test_kill_9_then_resume_gives_the_same_losses_bit_for_bit(tmp_path, world_shards, ranks, zero, data):
    run = ["train.max_steps=8", "train.checkpoint_every=2", "train.global_batch_size=4", "data.num_workers=2",
           f"deepspeed.zero_stage={zero}"]  # fmt: skip
    mixture = data == "mixture"
    if data == "packing":  # rows of up to 256 tokens, several samples each, windows of 2 micro-batches
        run += ["data.packing=true", "data.max_length=256", "data.group_by_length=2"]
    if mixture:
        run.append(f"mixture={three_sources(tmp_path)}")
        world_shards = None
    launch(ranks, tmp_path / "straight", world_shards, *run)
    straight = {r["step"]: r for r in metrics(tmp_path / "straight")}
    assert sorted(straight) == list(range(1, 9))

    killed = tmp_path / "killed"
    checkpoints = killed / "default" / "stage1" / "checkpoints"
    port = free_port()
    proc = launch(ranks, killed, world_shards, *run, popen=True, port=port)
    try:
        assert wait_for(lambda: (checkpoints / "latest").is_file(), TIMEOUT), "no checkpoint was written"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    assert not shm_buffers(port), "a killed run left its shared-memory buffers behind"
    before = metrics(killed)
    assert len(before) < 8, "the run ended before the kill: nothing to resume"
    # what a kill during a later save leaves: a half-written folder and a half-written pointer
    partial = checkpoints / "step-00000006.tmp"
    partial.mkdir()
    (partial / "mp_rank_00_model_states.pt").write_bytes(b"\x80\x04truncated")
    (checkpoints / "latest.part").write_text("step-000")

    log = launch(ranks, killed, world_shards, *run)
    resumed_at = int(re.search(r"resumed from \S+ at step (\d+)", log).group(1))
    assert resumed_at >= 2 and not partial.exists()
    after = {r["step"]: r for r in metrics(killed)}
    assert sorted(after) == list(range(1, 9))  # no step twice, none missing
    for step in range(resumed_at + 1, 9):
        assert after[step]["loss"] == straight[step]["loss"], f"step {step}"
        assert after[step]["grad_norm"] == straight[step]["grad_norm"], f"step {step}"
        if mixture:  # the per-source counts carry over too, and the small source went round
            sources = {k: v for k, v in after[step].items() if "/source/" in k}
            assert sources == {k: v for k, v in straight[step].items() if "/source/" in k}, f"step {step}"
    if data == "packing":  # more samples than rows went through each step
        assert all(straight[step]["samples_per_s"] * straight[step]["step_s"] > 4 for step in straight)
    if mixture:
        assert {"loss/source/laion", "mix/source/vqa"} <= set(straight[8]) and straight[8][
            "epochs/source/vqa"
        ] >= 2


@pytest.mark.parametrize("packing", [False, True])
def test_zero3_with_a_text_only_rank_does_not_hang_and_matches_zero2(tmp_path, packing):
    # two shards, one text-only and one image-only: with one reader per rank, every step one rank
    # holds only text and encodes a zero-weight blank while the other encodes real images
    samples = world_samples(24, 24)
    text = write_shards([s for s in samples if "jpg" not in s], tmp_path / "text", per_shard=24)
    images = write_shards([s for s in samples if "jpg" in s], tmp_path / "images", per_shard=24)
    shards = f"{text}::{images}"
    run = ["train.max_steps=3", "train.global_batch_size=4", "data.num_workers=0", "data.open_shards=1",
           "data.tasks={caption: 1, text: 1}"]  # fmt: skip
    if packing:  # packed rows of text only on one rank, of images on the other
        run += ["data.packing=true", "data.max_length=256"]
    launch(2, tmp_path / "z3", shards, *run, "deepspeed.zero_stage=3")
    launch(2, tmp_path / "z2", shards, *run, "deepspeed.zero_stage=2")
    z3, z2 = metrics(tmp_path / "z3"), metrics(tmp_path / "z2")
    assert len(z3) == len(z2) == 3
    for a, b in zip(z3, z2, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    # in the first epoch one rank reads only text (packed rows take more samples a step, so later epochs,
    # whose shard order is reshuffled, come sooner with packing)
    assert all({"loss/caption", "loss/text"} <= set(a) for a in z3[: 1 if packing else 3])


def test_two_nodes_on_one_machine_match_two_ranks_on_one(tmp_path, world_shards):
    # the stage-end evaluation too: each rank scores its share of the batches (pipeline.eval.Share)
    run = ["train.max_steps=3", "train.global_batch_size=4", "data.num_workers=0", f"eval.shards={world_shards}",
           "eval.limit=3", "eval.batch_size=2", "eval.max_new_tokens=6"]  # fmt: skip
    launch(2, tmp_path / "one", world_shards, *run)
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("localhost slots=1\n127.0.0.1 slots=1\n")
    port = free_port()
    nodes = [
        subprocess.Popen([*DEEPSPEED, "--hostfile", str(hostfile), "--no_ssh", "--num_nodes", "2", "--node_rank",
                          str(rank), "--master_addr", "127.0.0.1", "--master_port", str(port), "launch/stage1.py",
                          f"data.shards={world_shards}", f"run.output_dir={tmp_path / 'two'}", *TINY, *run],
                         cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in (0, 1)
    ]  # fmt: skip
    for node in nodes:
        out, _ = node.communicate(timeout=TIMEOUT)
        assert node.returncode == 0, out[-4000:]
    one, two = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert [r["loss"] for r in two] == [r["loss"] for r in one]
    final = tmp_path / "one" / "default" / "stage1" / "final"
    shared = (final / "eval.json").read_text()
    assert (tmp_path / "two" / "default" / "stage1" / "final" / "eval.json").read_text() == shared
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank runs
    try:  # one process alone scores the same export to the same bytes
        evaluate_export(final, expand_urls(world_shards), limit=3, batch_size=2, max_new_tokens=6,
                        out=tmp_path / "alone.json")  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert (tmp_path / "alone.json").read_text() == shared
    assert len(json.loads(shared)["examples"]) > 1
    assert (
        json.loads(
            (
                tmp_path / "two" / "default" / "stage1" / "checkpoints" / "step-00000003" / "trainer.json"
            ).read_text()
        )["world_size"]
        == 2
    )
