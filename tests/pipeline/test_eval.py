import copy
import json

import pytest
import torch

from pipeline.config import CONFIG_ROOT, load_config
from pipeline.data.formats import Formatter
from pipeline.data.shard_format import expand_urls
from pipeline.data.tasks import METRICS
from pipeline.eval import by_question_type, eval_items, evaluate, image_use, scores
from pipeline.model.vision import image_transform
from pipeline.schema import ModelConfig


def _setup(tokenizer):
    cfg = load_config(ModelConfig, CONFIG_ROOT / "model" / "tiny.yaml", ["adapter.num_queries=16"])
    return Formatter(tokenizer, 16, 512), image_transform(cfg.vision, 56)


def test_items_hold_each_tasks_prompt_and_reference(world_shards, tokenizer):
    formatter, transform = _setup(tokenizer)
    items = eval_items(expand_urls(world_shards), formatter, transform, tuple(METRICS), limit=4)
    assert {it.task for it in items} == set(METRICS) and len(items) <= 4 * len(METRICS)
    by_task = {it.task: it for it in items}
    assert by_task["ref"].truth.startswith("<|box_start|>(") and by_task["ref"].image is not None
    prompt = tokenizer.decode(by_task["vqa"].prompt)
    assert prompt.endswith(" Answer:") and "<|image_pad|>" in prompt
    assert tokenizer.decode(by_task["chatml"].prompt).endswith("<|im_start|>assistant\n")
    # the references score perfectly against themselves, and a wrong answer does not
    perfect = scores(items, [it.truth for it in items])
    assert (
        perfect["vqa_acc"]
        == perfect["grounding_acc"]
        == perfect["grounded_acc"]
        == perfect["ocr_acc"]
        == perfect["chat_acc"]
        == 1.0
    )
    assert scores(items, ["no" for _ in items])["grounding_acc"] == 0.0


def test_evaluate_reports_every_key_with_its_blind_twin(tiny_model, world_shards, tokenizer):
    formatter, transform = _setup(tokenizer)
    result = evaluate(tiny_model, tokenizer, formatter, transform, expand_urls(world_shards), limit=3,
                      batch_size=4, max_new_tokens=8)  # fmt: skip
    keys = set(METRICS.values())
    assert keys <= set(result) and keys <= set(result["blind"]) and keys <= set(result["samples"])
    assert all(result["samples"][k] == 3 for k in keys)
    by_type = {k for k in result if k.startswith("vqa_acc/")}  # VQAv2's answer types
    assert by_type and by_type <= {"vqa_acc/yes_no", "vqa_acc/number", "vqa_acc/other"}
    assert set(result["blind"]) == keys | by_type and set(result["samples"]) == keys | by_type
    assert sum(result["samples"][k] for k in by_type) == result["samples"]["vqa_acc"]
    assert all(0 <= result[k] for k in keys) and result["examples"]
    assert set(result["image_loss"]) == {"caption", "vqa", "grounded_caption", "ref", "ocr", "chatml"}
    assert "vqa_by_question_type" not in result  # only when asked: eval.json keeps its keys
    json.dumps(result)  # eval.json is plain JSON


def test_vqa_accuracy_per_question_type_uses_each_samples_own_type(world_shards, tokenizer):
    formatter, transform = _setup(tokenizer)
    items = eval_items(expand_urls(world_shards), formatter, transform, ("vqa",), limit=30)
    kinds = {it.question_type for it in items}
    assert len(kinds) > 2 and kinds <= {"count", "colour", "shape", "position", "yesno"}  # the world's types
    counts = [it for it in items if it.question_type == "count"]
    assert counts and all("How many" in tokenizer.decode(it.prompt) for it in counts)
    wrong = ["a wrong answer"] * len(items)
    table = by_question_type(items, [it.truth for it in items], wrong)
    assert sum(row["samples"] for row in table.values()) == len(items)
    assert all(row["vqa_acc"] == 1.0 and row["blind"] == 0.0 for row in table.values())


def test_image_use_tells_a_model_that_looks_from_one_that_does_not(tiny_model, world_shards, tokenizer):
    formatter, transform = _setup(tokenizer)
    items = eval_items(expand_urls(world_shards), formatter, transform, ("caption", "vqa", "chatml"), limit=6)
    looks = image_use(tiny_model, items, tokenizer.pad_token_id, batch_size=4)
    assert set(looks) >= {"caption", "vqa"}
    assert all(v["seeing"] != v["shuffled"] and v["seeing"] != v["blank"] for v in looks.values())
    # padding changes nothing: one item per batch gives the same losses
    alone = image_use(tiny_model, items, tokenizer.pad_token_id, batch_size=1)
    assert all(alone[t]["seeing"] == pytest.approx(looks[t]["seeing"], abs=1e-3) for t in looks)
    blind = copy.deepcopy(tiny_model)
    with torch.no_grad():
        for param in blind.adapter.parameters():
            param.zero_()  # every image becomes the same features
    ignores = image_use(blind, items, tokenizer.pad_token_id, batch_size=4)
    assert all(
        v["seeing"] == pytest.approx(v["blank"]) == pytest.approx(v["shuffled"]) for v in ignores.values()
    )
