"""Packed rows (data.packing): the same losses and gradients as the samples unpacked, no sample sees another,
and a packing loader restores exactly."""

import copy
import json
import random

import pytest
import torch

from pipeline.data.formats import Formatter, Record
from pipeline.data.loader import batch_samples, collate, collate_packed
from pipeline.tokens import IGNORE
from tests.pipeline.data.test_loader import SIZE, loader, same, take


@pytest.fixture(scope="module")
def examples(tokenizer):
    fmt = Formatter(tokenizer, 16, 512)
    captions = ["A red circle on a beige background.", "Two blue squares and a green triangle, left to right.",
                "A small yellow star."]  # fmt: skip
    out = [
        fmt(Record(f"i{i}", {"lang": "en"}, c, True), "caption", random.Random(i))
        for i, c in enumerate(captions)
    ]
    out.append(
        fmt(Record("t", {"text": "A square has four equal sides."}, None, False), "text", random.Random(0))
    )
    return out


def images(seed: int = 1) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    return [torch.randn(3, SIZE, SIZE) for _ in range(3)]


def run(model, batch: dict):
    model.zero_grad()
    out = model(**{k: v for k, v in batch.items() if torch.is_tensor(v)})
    out.sample_loss.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


def test_packed_losses_and_gradients_equal_the_unpacked(tiny_model, tokenizer, examples):
    model = copy.deepcopy(tiny_model).float().train()
    plain, plain_grads = run(model, collate(examples, images(), tokenizer.pad_token_id, SIZE))
    rows = [[0, 3], [1, 2]]  # an image sample with a text one, and two image samples
    packed_batch = collate_packed(
        examples, rows, [images()[i] for i in (0, 1, 2)], tokenizer.pad_token_id, SIZE
    )
    packed, packed_grads = run(model, packed_batch)
    order = [0, 3, 1, 2]
    assert packed_batch["keys"] == [examples[i].key for i in order]
    assert torch.equal(packed.sample_tokens, plain.sample_tokens[order])
    assert ((packed.sample_loss - plain.sample_loss[order]).abs() / plain.sample_loss[order]).max() <= 1e-5
    assert packed_grads.keys() == plain_grads.keys()
    for name, grad in plain_grads.items():
        scale = grad.abs().max().clamp(min=1e-12)
        assert (packed_grads[name] - grad).abs().max() / scale <= 1e-5, name


def test_a_sample_changes_no_other_sample_in_its_row(tiny_model, tokenizer, examples):
    model = copy.deepcopy(tiny_model).float().eval()
    pad = tokenizer.pad_token_id
    base = collate_packed(examples, [[0, 1, 3]], images()[:2], pad, SIZE)
    changed_text = copy.deepcopy(examples)
    other = Formatter(tokenizer, 16, 512)(Record("i1", {"lang": "en"}, "Ten purple hexagons in a row, all large.", True),
                                          "caption", random.Random(1))  # fmt: skip
    changed_text[1] = other
    variants = [collate_packed(changed_text, [[0, 1, 3]], images()[:2], pad, SIZE),
                collate_packed(examples, [[0, 1, 3]], [images()[0], torch.randn(3, SIZE, SIZE)], pad, SIZE)]  # fmt: skip
    with torch.no_grad():
        reference = model(**{k: v for k, v in base.items() if torch.is_tensor(v)}).logits
        first = int((base["sample_index"][0] == 0).sum())
        for variant in variants:
            logits = model(**{k: v for k, v in variant.items() if torch.is_tensor(v)}).logits
            assert torch.allclose(logits[0, :first], reference[0, :first], atol=1e-6)  # sample 0: untouched
            rest = logits[0, first:]  # the changed sample (and what follows it) did change
            assert rest.shape != reference[0, first:].shape or not torch.allclose(
                rest, reference[0, first:], atol=1e-4
            )


def test_a_packed_row_restarts_positions_and_masks_each_first_label(tokenizer, examples):
    batch = collate_packed(examples, [[0, 1], [2, 3]], images(), tokenizer.pad_token_id, SIZE)
    n0 = len(examples[0].input_ids)
    assert batch["position_ids"][0, n0] == 0 and batch["position_ids"][0, n0 - 1] == n0 - 1
    assert batch["labels"][0, 0] == IGNORE and batch["labels"][0, n0] == IGNORE
    assert batch["has_image"].tolist() == [2, 1] and batch["sample_has_image"] == [True, True, True, False]
    samples = batch_samples(batch, 4)
    assert [s["key"] for s in samples] == ["i0", "i1", "i2", "t"]
    assert torch.equal(samples[1]["input_ids"], torch.tensor(examples[1].input_ids))
    assert (
        torch.equal(samples[1]["pixels"][0], batch["pixel_values"][1]) and samples[3]["pixels"].shape[0] == 0
    )


def packed_loader(shards, tokenizer, rank=0, world_size=1, workers=0):
    return loader(
        shards, tokenizer, rank, world_size, workers, batch=2, max_length=512, group=4, packing=True
    )


@pytest.mark.parametrize(("world_size", "workers"), [(1, 0), (2, 2)])
def test_a_packing_loader_fills_rows_and_restores_exactly(world_shards, tokenizer, world_size, workers):
    for rank in range(world_size):
        reference = packed_loader(world_shards, tokenizer, rank, world_size, workers)
        uninterrupted = take(iter(reference), 12)
        for batch in uninterrupted:
            assert batch["input_ids"].shape[1] <= 512 and batch["input_ids"].shape[0] <= 2
            assert len(batch["keys"]) == int(batch["sample_index"].max()) + 1 > batch["input_ids"].shape[0]
        first = packed_loader(world_shards, tokenizer, rank, world_size, workers)
        assert all(same(a, b) for a, b in zip(take(iter(first), 9), uninterrupted, strict=False))
        state = json.loads(json.dumps(first.state_dict()))
        restored = packed_loader(world_shards, tokenizer, rank, world_size, workers)
        restored.load_state_dict(state)
        after = take(iter(restored), 3)
        assert all(same(a, b) and torch.equal(a["position_ids"], b["position_ids"])
                   for a, b in zip(after, uninterrupted[9:], strict=True))  # fmt: skip
    padding = sum(int((b["attention_mask"] == 0).sum()) for b in uninterrupted) / sum(
        b["attention_mask"].numel() for b in uninterrupted
    )
    # rows filled first fit until a sample fits none (python -m bench packing measures it against grouping)
    assert padding < 0.05, padding


def test_a_packed_batch_counts_the_flops_of_its_samples(tokenizer, examples):
    from pipeline.metrics.processor import sequence_lengths

    plain = collate(examples, images(), tokenizer.pad_token_id, SIZE)
    packed = collate_packed(examples, [[0, 1, 2, 3]], images(), tokenizer.pad_token_id, SIZE)
    assert (
        sequence_lengths(packed).tolist()
        == sequence_lengths(plain).tolist()
        == [len(e.input_ids) for e in examples]
    )
