import copy
import random

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.config import CONFIG_ROOT, load_config
from pipeline.data.formats import Formatter, Record
from pipeline.data.loader import collate
from pipeline.model.qwenvl import VIT_POS_EMBED, QwenVL, load_weights, resize_vit_pos_embed, save_weights
from pipeline.model.vision import image_transform, normalize_pixels, pixel_stats
from pipeline.optim import freeze
from pipeline.schema import ModelConfig

SIZE = 56  # 4x4 patches: fast, and the model does not care


@pytest.fixture(scope="module")
def cfg() -> ModelConfig:
    return load_config(ModelConfig, CONFIG_ROOT / "model" / "tiny.yaml", ["adapter.num_queries=16"])


@pytest.fixture(scope="module")
def model(cfg, tokenizer) -> QwenVL:
    torch.manual_seed(0)
    return QwenVL.from_config(cfg, SIZE, copy.deepcopy(tokenizer))


def batch(tokenizer, num_queries=16, text_only=(False, True, False)):
    fmt = Formatter(tokenizer, num_queries, 512)
    examples = []
    for i, text in enumerate(text_only):
        if text:
            record = Record(f"t{i}", {"text": "A square has four sides."}, None, has_image=False)
            examples.append(fmt(record, "text", random.Random(i)))
        else:
            record = Record(f"i{i}", {"lang": "en"}, f"A red circle number {i}.", has_image=True)
            examples.append(fmt(record, "caption", random.Random(i)))
    torch.manual_seed(1)
    images = [torch.randn(3, SIZE, SIZE) for text in text_only if not text]
    return collate(examples, images, tokenizer.pad_token_id, SIZE)


def test_image_features_fill_exactly_the_placeholder_positions(model, tokenizer):
    b = batch(tokenizer)
    embeds = model.embed(b["input_ids"], b["pixel_values"], b["has_image"])
    features = model.encode_images(b["pixel_values"])
    slots = b["input_ids"] == model.image_pad_id
    assert slots.sum() == 2 * 16  # two image samples, none in the text-only row
    assert torch.allclose(embeds[slots], features.reshape(-1, features.shape[-1]))
    tokens = model.llm.get_input_embeddings()(b["input_ids"])
    assert torch.equal(embeds[~slots], tokens[~slots])


def test_a_placeholder_count_mismatch_is_an_error(model, tokenizer):
    b = batch(tokenizer, num_queries=15)
    with pytest.raises(ValueError, match="15, 0, 15.*16 per image"):
        model(**b)


def test_loss_is_hf_cross_entropy_over_supervised_tokens(model, tokenizer):
    b = batch(tokenizer)
    out = model(**b)
    embeds = model.embed(b["input_ids"], b["pixel_values"], b["has_image"])
    reference = model.llm(inputs_embeds=embeds, attention_mask=b["attention_mask"], labels=b["labels"]).loss
    assert torch.allclose(out.loss, reference, atol=1e-5)
    assert torch.equal(out.sample_tokens, (b["labels"][:, 1:] != -100).sum(1))
    assert torch.allclose(out.sample_loss.sum() / out.sample_tokens.sum(), out.loss)


def test_only_real_images_are_encoded(model, tokenizer):
    seen = []
    hook = model.vision.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    model(**batch(tokenizer, text_only=(False, True, True, False)))
    model(**batch(tokenizer, text_only=(True, True)))
    hook.remove()
    assert seen == [2, 1]  # two images; then one blank for a text-only batch, not one per row


def test_text_only_batches_still_run_the_vision_path(model, tokenizer):
    b = batch(tokenizer, text_only=(True, True))
    model.zero_grad()
    model(**b).loss.backward()
    grads = [p.grad for p in model.vision.parameters()] + [p.grad for p in model.adapter.parameters()]
    assert all(g is not None for g in grads)  # every rank runs the same graph (ZeRO-3 would hang otherwise)
    assert all(not g.any() for g in grads)  # ... with zero weight
    model.zero_grad()


def test_8_bit_pixels_are_normalised_on_the_device_as_the_workers_would(cfg, model):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8))
    floats = image_transform(cfg.vision, SIZE)(image)
    eight_bit = image_transform(cfg.vision, SIZE, "uint8")(image)
    assert eight_bit.dtype == torch.uint8 and eight_bit.shape == floats.shape
    assert torch.allclose(normalize_pixels(eight_bit[None], *pixel_stats(cfg.vision))[0], floats, atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(
            model.encode_images(eight_bit[None]), model.encode_images(floats[None]), atol=1e-5
        )


def test_a_frozen_tower_builds_no_autograd_graph(cfg, tokenizer):
    """Stage 3: the frozen ViT keeps no activations for backward (autograd skips a tower whose parameters and
    inputs need no gradient), while the adapter above it still learns."""
    model = QwenVL.from_config(cfg, SIZE, copy.deepcopy(tokenizer))
    freeze(model, ["adapter", "llm"])
    patches = []
    hook = model.vision.register_forward_hook(lambda module, args, out: patches.append(out[1]))
    model(**batch(tokenizer)).loss.backward()
    hook.remove()
    assert patches[0].grad_fn is None and not patches[0].requires_grad
    assert all(p.grad is None for p in model.vision.parameters())
    assert all(p.grad is not None for p in model.adapter.parameters())


def test_activation_checkpointing_keeps_fewer_activations_and_gives_the_same_gradients(cfg, tokenizer):
    torch.manual_seed(0)
    model = QwenVL.from_config(cfg, SIZE, copy.deepcopy(tokenizer)).train()
    freeze(model, ["vision", "adapter"])  # stage 1: the frozen LLM still passes gradients to its inputs
    b = batch(tokenizer)
    runs = []
    for towers in ([], ["vision", "llm"]):
        model.set_activation_checkpointing(towers)
        saved = []  # what autograd keeps for backward during the forward
        model.zero_grad()
        with torch.autograd.graph.saved_tensors_hooks(
            lambda t, saved=saved: saved.append(t.numel()) or t, lambda t: t
        ):
            loss = model(**b).loss
        loss.backward()
        runs.append(
            (
                loss.detach(),
                {n: p.grad for n, p in model.named_parameters() if p.grad is not None},
                sum(saved),
            )
        )
    (plain_loss, plain, plain_saved), (loss, grads, saved) = runs
    assert saved < 0.3 * plain_saved, (saved, plain_saved)
    assert torch.equal(loss, plain_loss) and grads.keys() == plain.keys()
    assert all(torch.allclose(grads[n], plain[n], atol=1e-6) for n in plain)


def test_a_few_steps_learn_the_batch(cfg, tokenizer):
    torch.manual_seed(0)
    model = QwenVL.from_config(cfg, SIZE, copy.deepcopy(tokenizer))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    b = batch(tokenizer)
    losses = []
    for _ in range(8):
        loss = model(**b).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0


def test_weights_from_224_load_into_a_448_model(cfg, tokenizer, tmp_path):
    torch.manual_seed(0)
    low = QwenVL.from_config(cfg, 224, copy.deepcopy(tokenizer))
    save_weights(low, tmp_path)
    torch.manual_seed(1)
    high = QwenVL.from_config(cfg, 448, copy.deepcopy(tokenizer))
    load_weights(high, tmp_path)
    old, new = low.state_dict(), high.state_dict()
    assert new[VIT_POS_EMBED].shape == (1 + 32 * 32, 128)
    assert torch.equal(new[VIT_POS_EMBED], resize_vit_pos_embed(old[VIT_POS_EMBED], 1025))
    assert all(torch.equal(new[k], v) for k, v in old.items() if k != VIT_POS_EMBED)
    assert high.adapter.key_pos_embed(1024).shape == (1024, 128)  # the adapter's keys follow the ViT grid
    same = QwenVL.from_config(cfg, 224, copy.deepcopy(tokenizer))
    load_weights(same, tmp_path / "model.safetensors")
    b = batch(tokenizer, text_only=(False,))
    b["pixel_values"] = torch.randn(1, 3, 224, 224)
    assert torch.equal(same(**b).logits, low(**b).logits)


def test_weights_of_another_model_are_refused(cfg, tokenizer, tmp_path):
    save_weights(QwenVL.from_config(cfg, SIZE, copy.deepcopy(tokenizer)), tmp_path)
    tiny = CONFIG_ROOT / "model" / "tiny.yaml"
    deeper = load_config(ModelConfig, tiny, ["adapter.num_queries=16", "llm.arch.num_hidden_layers=3"])
    with pytest.raises(ValueError, match="missing.*layers.2"):
        load_weights(QwenVL.from_config(deeper, SIZE, copy.deepcopy(tokenizer)), tmp_path)
    with pytest.raises(ValueError, match="size mismatch for adapter.query"):
        load_weights(
            QwenVL.from_config(load_config(ModelConfig, tiny), SIZE, copy.deepcopy(tokenizer)), tmp_path
        )


def test_missing_tokens_are_added_and_embeddings_resized(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.add_special_tokens({"additional_special_tokens": ["<extra>"]}, replace_extra_special_tokens=False)
    cfg = load_config(
        ModelConfig, CONFIG_ROOT / "model" / "tiny.yaml", [f"llm.arch.vocab_size={len(tok) - 1}"]
    )
    model = QwenVL.from_config(cfg, SIZE, tok)
    rows = model.llm.get_input_embeddings().num_embeddings
    assert rows >= len(tok) and rows % 64 == 0
