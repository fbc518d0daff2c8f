import itertools
import json
import subprocess
import sys

import pytest

from launch.inspect_sample import main
from pipeline.data.shard_format import expand_urls, read_shards
from pipeline.tokens import IGNORE

STAGE2_TASKS = ["caption", "vqa", "grounded_caption", "ref", "ocr", "text"]


def run(capsys, stage: int, index: int, shards: str, task: str | None = None) -> dict:
    argv = [
        "--config",
        f"configs/stage{stage}.yaml",
        "--index",
        str(index),
        "--json",
        f"data.shards={shards}",
    ]
    assert main(argv + (["--task", task] if task else [])) == 0
    return json.loads(capsys.readouterr().out)


def raw_meta(shards: str, index: int) -> dict:
    raw = next(itertools.islice(read_shards(expand_urls(shards)), index, None))
    return json.loads(raw["json"])


def supervised(out: dict) -> str:
    return "".join(t for t, label in zip(out["tokens"], out["labels"], strict=True) if label != IGNORE)


def check_ids(out: dict, image_tokens: int = 64) -> None:
    assert len(out["tokens"]) == len(out["input_ids"]) == len(out["labels"]) == out["num_tokens"]
    assert all(label in (i, IGNORE) for i, label in zip(out["input_ids"], out["labels"], strict=True))
    pads = [label for t, label in zip(out["tokens"], out["labels"], strict=True) if t == "<|image_pad|>"]
    assert pads == ([IGNORE] * image_tokens if out["has_image"] else [])


def first_index(shards: str, want) -> int:
    return next(i for i in itertools.count() if want(raw_meta(shards, i)))


def test_stage1_caption_sample(capsys, world_shards):
    index = first_index(world_shards, lambda m: "tasks" in m)
    out = run(capsys, 1, index, world_shards)
    check_ids(out)
    assert out["task"] == "caption"
    assert supervised(out) == " " + raw_meta(world_shards, index)["clean_caption"] + "<|endoftext|>"


@pytest.mark.parametrize("task", STAGE2_TASKS)
def test_stage2_every_task(capsys, world_shards, task):
    tasks = {"text": lambda m: "text" in m, "caption": lambda m: "tasks" in m}
    want = tasks.get(task, lambda m: bool(m.get("tasks", {}).get(task)))
    index = first_index(world_shards, want)
    out = run(capsys, 2, index, world_shards, task)
    check_ids(out)
    meta, target = raw_meta(world_shards, index), supervised(out)
    assert out["task"] == task and target.endswith("<|endoftext|>") and out["has_image"] == (task != "text")
    if task == "vqa":
        assert any(target == f" {qa['answer']}<|endoftext|>" for qa in meta["tasks"]["vqa"])
    elif task == "ref":
        assert target.startswith("<|box_start|>(") and "<|box_end|>" in target
    elif task == "ocr":
        assert target.count("<|quad_start|>") == len(meta["tasks"]["ocr"])
    elif task == "grounded_caption":
        assert "<|object_ref_start|>" in target and "<ref>" not in target
    elif task == "text":
        assert target == meta["text"] + "<|endoftext|>"


def test_stage3_multi_turn_dialogue(capsys, world_shards):
    index = first_index(world_shards, lambda m: "tasks" in m)
    out = run(capsys, 3, index, world_shards)
    check_ids(out)
    dialogue = raw_meta(world_shards, index)["tasks"]["dialogue"]
    assert out["task"] == "chatml" and sum(m["role"] == "assistant" for m in dialogue) >= 2
    # every turn: <|im_start|> and <|im_end|>\n; of the content, only the assistant's
    turns = [f"<|im_start|>{m['content'] if m['role'] == 'assistant' else ''}<|im_end|>\n" for m in dialogue]
    assert supervised(out) == "".join(turns)
    assert out["tokens"].count("<|im_start|>") == len(dialogue)


def test_the_command_line_marks_supervised_text(world_shards):
    cmd = [sys.executable, "-m", "launch.inspect_sample", "--config", "configs/stage2.yaml", "--task", "vqa",
           "--index", str(first_index(world_shards, lambda m: "tasks" in m)), f"data.shards={world_shards}"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert "task vqa" in out and " Answer:[[ " in out and "<|image_pad|>x64" in out
    bad = subprocess.run(cmd[:-1] + ["data.shards=/nonexistent/{0..1}.tar"], capture_output=True, text=True)
    assert bad.returncode == 2 and "data.shards" in bad.stderr


def test_source_picks_one_source_of_a_mixture(capsys, tmp_path):
    from data_prep.synthetic.shards import one_task_shards

    refs = one_task_shards(tmp_path / "refs", 4, "ref", per_shard=4, seed=5)
    caps = one_task_shards(tmp_path / "caps", 4, "caption", per_shard=4, seed=6)
    sources = f"[{{name: caps, shards: '{caps}'}}, {{name: refs, shards: '{refs}', tasks: [ref]}}]"
    base = ["--config", "configs/stage2.yaml", "--index", "2", "--json", f"data.sources={sources}"]
    assert main(base + ["--source", "refs"]) == 0
    # drawn among the source's tasks
    assert "<|box_start|>" in supervised(json.loads(capsys.readouterr().out))
    assert main(base) == 0  # the first source by default
    assert "<|box_start|>" not in supervised(json.loads(capsys.readouterr().out))
    assert main(base + ["--source", "nope"]) == 2
    assert "--source 'nope': data.sources has ['caps', 'refs']" in capsys.readouterr().err
