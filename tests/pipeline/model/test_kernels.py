"""The speed levers' plumbing on CPU: the hidden-state loss path the fused kernel plugs into, per-block
compile, and that a run without CUDA ignores them. Liger's kernels themselves run in tests/stages/test_gpu.py."""

import copy

import pytest
import torch
import torch.nn.functional as F

from pipeline.config import ConfigError
from pipeline.data.loader import collate_packed
from pipeline.model.kernels import compile_blocks, transformer_blocks
from pipeline.model.qwenvl import QwenVL
from pipeline.schema import TrainConfig
from stages.setup import use_speed_levers
from tests.pipeline.data.test_packing import SIZE, examples, images  # noqa: F401 (a fixture)
from tests.pipeline.model.test_qwenvl import batch


def plain_token_loss(hidden, weight, bias, targets):
    """What a fused linear cross-entropy must equal: the logits made whole, then cross-entropy in fp32."""
    return F.cross_entropy(
        F.linear(hidden, weight, bias).float(), targets, ignore_index=-100, reduction="none"
    )


def loss_and_grads(model: QwenVL, b: dict) -> tuple[object, dict[str, torch.Tensor]]:
    model.zero_grad()
    out = model(**b)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.fixture
def fresh(tiny_model) -> QwenVL:
    """A copy of the tiny model: the levers change it in place."""
    return copy.deepcopy(tiny_model).train()


@pytest.mark.parametrize("packed", [False, True])
def test_the_loss_from_hidden_states_equals_the_loss_from_logits(fresh, tokenizer, examples, packed):  # noqa: F811
    b = (
        collate_packed(examples, [[0, 1], [2, 3]], images(), tokenizer.pad_token_id, SIZE)
        if packed
        else batch(tokenizer)
    )
    plain, plain_grads = loss_and_grads(fresh, b)
    seen = []

    def token_loss(hidden, weight, bias, targets):
        seen.append((hidden.shape, weight.data_ptr()))
        return plain_token_loss(hidden, weight, bias, targets)

    fresh.token_loss = token_loss
    fused, grads = loss_and_grads(fresh, b)
    rows, length = b["input_ids"].shape
    head = fresh.llm.get_output_embeddings().weight
    assert seen == [(torch.Size([rows * (length - 1), head.shape[1]]), head.data_ptr())]
    assert fused.logits.numel() == 0  # the point of the fused path: no [tokens, vocab] logits kept
    assert torch.allclose(fused.loss, plain.loss, rtol=1e-6)
    assert torch.equal(fused.sample_tokens, plain.sample_tokens)
    assert torch.allclose(fused.sample_loss, plain.sample_loss, rtol=1e-5)
    assert grads.keys() == plain_grads.keys()
    for name, grad in plain_grads.items():
        assert torch.allclose(grads[name], grad, rtol=1e-4, atol=1e-7), name


def test_each_block_of_each_tower_compiles_alone_and_computes_the_same(fresh, tokenizer):
    b = batch(tokenizer)
    plain, plain_grads = loss_and_grads(fresh, b)
    towers = {"vision": fresh.vision, "llm": fresh.llm}
    blocks = sum(len(transformer_blocks(t)) for t in towers.values())
    assert compile_blocks(towers, backend="eager") == blocks == 4 + 2
    assert all(
        block._compiled_call_impl is not None for t in towers.values() for block in transformer_blocks(t)
    )
    compiled, grads = loss_and_grads(fresh, b)
    assert torch.allclose(compiled.loss, plain.loss, rtol=1e-6)
    assert all(torch.allclose(grads[n], g, rtol=1e-4, atol=1e-7) for n, g in plain_grads.items())


def test_without_cuda_the_levers_are_ignored_and_said_so(fresh, caplog):
    t = TrainConfig(kernels=["fused_cross_entropy", "rms_norm"], compile=["llm"])
    assert use_speed_levers(fresh, t, torch.device("cpu")) == []
    assert fresh.token_loss is None and "are ignored" in caplog.text
    assert all(b._compiled_call_impl is None for b in transformer_blocks(fresh.llm))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kernels": ["flash"]}, "train.kernels.*unknown kernel 'flash'"),
        ({"compile": ["adapter"]}, "train.compile.*'adapter': vision or llm"),
    ],
)
def test_unknown_levers_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**overrides)
