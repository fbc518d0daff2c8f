"""QwenVL: open_clip vision tower -> resampler -> Hugging Face causal LM.

The resampler's outputs are written into the ``<|image_pad|>`` positions of the LLM's input embeddings.
Plain ``nn.Module``: nothing here knows about DeepSpeed. The three submodules are the freeze groups
(``vision``, ``adapter``, ``llm``) the stage configs name.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file, save_model
from torch import nn

from pipeline.config import load_config, save_config
from pipeline.model.kernels import TokenLoss
from pipeline.model.language import build_llm
from pipeline.model.pos_embed import resize_grid
from pipeline.model.resampler import Resampler
from pipeline.model.vision import build_vision_tower, normalize_pixels, pixel_stats
from pipeline.schema import ModelConfig, StageConfig
from pipeline.tokens import IGNORE, prepare_tokenizer, special_ids

WEIGHTS = "model.safetensors"
EXPORT_CONFIG = "config.yaml"
VIT_POS_EMBED = "vision.positional_embedding"


class VLOutput(NamedTuple):  # a tuple, so that ZeRO-3's hooks see the tensors in it
    loss: torch.Tensor  # mean over every supervised token of the batch
    logits: torch.Tensor
    sample_loss: torch.Tensor  # [B] summed token losses (per-task loss = sum over its samples / tokens)
    sample_tokens: torch.Tensor  # [B] supervised tokens


class QwenVL(nn.Module):
    def __init__(self, vision: nn.Module, adapter: Resampler, llm: nn.Module, image_pad_id: int,
                 pixel_stats: tuple[tuple[float, ...], tuple[float, ...]]):  # fmt: skip
        super().__init__()
        self.vision, self.adapter, self.llm = vision, adapter, llm
        self.image_pad_id = image_pad_id
        self.num_queries = adapter.query.shape[0]
        self.pixel_stats = pixel_stats  # (mean, std) for 8-bit pixels; plain floats, never cast to bf16
        # set (train.kernels=[fused_cross_entropy]): the loss reads the LLM's last hidden states and its head
        # weight, and the full logits are never made (the output's logits are then empty)
        self.token_loss: TokenLoss | None = None

    @classmethod
    def from_config(cls, cfg: ModelConfig, image_size: int, tokenizer, dtype=torch.float32) -> QwenVL:
        """Build from a model preset; adds missing special tokens to ``tokenizer`` and resizes the LLM's
        embeddings when the tokenizer has more tokens than it."""
        prepare_tokenizer(tokenizer)
        vision = build_vision_tower(cfg.vision, image_size)
        llm = build_llm(cfg.llm, vocab_size=len(tokenizer), dtype=dtype)
        if len(tokenizer) > llm.get_input_embeddings().num_embeddings:
            llm.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64)
        width = llm.get_input_embeddings().embedding_dim
        heads = cfg.adapter.num_heads or max(1, width // 128)
        adapter = Resampler(cfg.adapter.num_queries, vision.transformer.width, width, heads)
        return cls(vision, adapter, llm, special_ids(tokenizer).image_pad, pixel_stats(cfg.vision)).to(dtype)

    @classmethod
    def from_pretrained(cls, folder: str | Path, dtype=torch.float32) -> tuple[QwenVL, object, StageConfig]:
        """Load a ``final/`` export (``save_pretrained``): (model, tokenizer, the stage config it came from).
        Needs nothing but the folder: no hub, no pretrained tag, no earlier stage."""
        from transformers import AutoTokenizer

        folder = Path(folder)
        if not (folder / WEIGHTS).is_file() or not (folder / EXPORT_CONFIG).is_file():
            raise FileNotFoundError(f"{folder}: not an export (needs {WEIGHTS} and {EXPORT_CONFIG})")
        cfg = load_config(StageConfig, folder / EXPORT_CONFIG)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = cls.from_config(cfg.model, cfg.data.image_size, tokenizer, dtype)
        load_weights(model, folder)
        return model, tokenizer, cfg

    def set_activation_checkpointing(self, towers: list[str]) -> None:
        """Recompute each block's activations in backward for ``towers`` (``vision``, ``llm``): less memory
        for a larger micro-batch, at about one more forward of that tower."""
        unknown = set(towers) - {"vision", "llm"}
        if unknown:
            raise ValueError(f"activation checkpointing is per tower (vision, llm), not {sorted(unknown)}")
        self.vision.set_grad_checkpointing("vision" in towers)
        if (
            "llm" in towers
        ):  # non-reentrant: also right for a frozen LLM whose inputs need gradients (stage 1)
            self.llm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            self.llm.activation_checkpointing_disable()

    def vision_input(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] normalised floats, or 8-bit pixels normalised here -> the ViT's input, in its dtype."""
        if pixel_values.dtype == torch.uint8:
            pixel_values = normalize_pixels(pixel_values, *self.pixel_stats)
        return pixel_values.to(self.adapter.query.dtype)

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] (see ``vision_input``) -> [B, num_queries, LLM width]."""
        _, patches = self.vision(self.vision_input(pixel_values))
        return self.adapter(patches)

    def embed(
        self, input_ids: torch.Tensor, pixel_values: torch.Tensor, has_image: torch.Tensor
    ) -> torch.Tensor:
        """Token embeddings with the image features written into the image placeholder positions.

        ``pixel_values`` holds the batch's real images only, in row order (``has_image.sum()`` of them). A
        micro-batch without any encodes one blank image with zero weight instead, so that every rank runs the
        vision path on every step (ZeRO-3 gathers parameters per module call: a rank that skipped it would
        leave the others waiting).
        """
        embeds = self.llm.get_input_embeddings()(input_ids)
        slots = input_ids == self.image_pad_id
        expected = has_image.long() * self.num_queries
        if not torch.equal(slots.sum(dim=1), expected) or pixel_values.shape[0] != int(has_image.sum()):
            raise ValueError(
                f"image placeholders per sample {slots.sum(dim=1).tolist()} != {expected.tolist()} "
                f"({self.num_queries} per image) or {pixel_values.shape[0]} images for "
                f"{int(has_image.sum())} image samples: the data and the model disagree"
            )
        if pixel_values.shape[0]:
            features = self.encode_images(pixel_values).to(embeds.dtype)
            return embeds.masked_scatter(slots.unsqueeze(-1), features)
        blank = embeds.new_zeros(1, 3, *self.image_size)
        return embeds + 0.0 * self.encode_images(blank).sum().to(embeds.dtype)

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.vision.image_size)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor,
        has_image: torch.Tensor,
        labels: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        sample_index: torch.Tensor | None = None,
        keys: list[str] | None = None,
        **_: object,  # the rest of a loader batch (tasks)
    ) -> VLOutput:
        """A packed batch (``data.packing``) comes with ``position_ids`` that restart at every sample: the LLM
        then attends block-diagonally (transformers builds the mask from them; flash-attention takes its
        variable-length path), and ``sample_index`` (the sample of each token, -1 on padding) splits the loss
        over its ``keys`` (one per sample). Its ``has_image`` counts each row's images."""
        embeds = self.embed(input_ids, pixel_values, has_image)
        # no attention mask with packing: it would hide the packing from transformers
        inputs = (
            {"position_ids": position_ids} if position_ids is not None else {"attention_mask": attention_mask}
        )
        if labels is None or self.token_loss is None:
            logits = self.llm(inputs_embeds=embeds, use_cache=False, **inputs).logits
            if labels is None:
                return VLOutput(logits.new_zeros(()), logits, logits.new_zeros(0), logits.new_zeros(0))
            flat = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                   ignore_index=IGNORE, reduction="none")  # fmt: skip
        else:
            hidden = self.llm.get_decoder()(inputs_embeds=embeds, use_cache=False, **inputs).last_hidden_state
            head = self.llm.get_output_embeddings()
            flat = self.token_loss(
                hidden[:, :-1].flatten(0, 1), head.weight, head.bias, labels[:, 1:].flatten()
            )
            logits = hidden.new_zeros(0)
        samples = len(keys) if sample_index is not None and keys is not None else None
        return _with_loss(flat, logits, labels, sample_index, samples)


def _with_loss(
    flat_loss: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    sample_index: torch.Tensor | None = None,
    samples: int | None = None,
) -> VLOutput:
    """Next-token cross-entropy (``flat_loss``: position t's loss on label t+1, labels come unshifted from the
    data), summed per row, or per packed sample (``sample_index``: a sample's first label is never a target,
    so no loss crosses from one sample into the next; ``samples`` of them, else counted here at the cost of a
    device sync)."""
    targets = labels[:, 1:]
    token_loss = flat_loss.float().view_as(targets)
    supervised = targets != IGNORE
    if sample_index is None:
        sample_loss, sample_tokens = token_loss.sum(dim=1), supervised.sum(dim=1)
    else:
        owner = sample_index[:, 1:].clamp(min=0).flatten()
        count = samples if samples is not None else int(sample_index.max()) + 1
        sample_loss = token_loss.new_zeros(count).index_add(0, owner, token_loss.flatten())
        sample_tokens = supervised.new_zeros(count, dtype=torch.long).index_add(
            0, owner, supervised.flatten().long()
        )
    loss = sample_loss.sum() / sample_tokens.sum().clamp(min=1)
    return VLOutput(loss, logits, sample_loss, sample_tokens)


def resize_vit_pos_embed(pos: torch.Tensor, num_positions: int) -> torch.Tensor:
    """Move a ViT position embedding to another grid; the class-token row(s) before the grid stay."""
    prefix = pos.shape[0] - math.isqrt(pos.shape[0]) ** 2
    new_prefix = num_positions - math.isqrt(num_positions) ** 2
    if prefix != new_prefix:
        raise ValueError(f"position embedding with {prefix} prefix rows cannot move to {new_prefix}")
    return torch.cat([pos[:prefix], resize_grid(pos[prefix:], num_positions - prefix)])


def save_weights(model: QwenVL, folder: str | Path) -> Path:
    """All weights as one safetensors file (shared tensors, such as tied embeddings, stored once)."""
    path = Path(folder) / WEIGHTS
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, str(path))
    return path


def save_pretrained(
    folder: str | Path, state_dict: dict[str, torch.Tensor], llm_config, tokenizer, cfg: StageConfig
) -> Path:
    """A self-contained export: weights (safetensors), the stage config with the model made independent of
    hub names and pretrained tags (the LLM's architecture written out), and the tokenizer."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arch = {k: v for k, v in llm_config.to_diff_dict().items() if k != "transformers_version"}
    exported = dataclasses.replace(
        cfg,
        model=dataclasses.replace(
            cfg.model,
            vision=dataclasses.replace(cfg.model.vision, pretrained=None),
            llm=dataclasses.replace(cfg.model.llm, name_or_path=None, arch=arch),
            tokenizer=str(folder),
        ),
    )
    save_file(_untied(state_dict), str(folder / WEIGHTS))
    tokenizer.save_pretrained(folder)
    save_config(exported, folder / EXPORT_CONFIG)
    return folder


def _untied(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (tied embeddings): keep the first name of each."""
    seen: set[int] = set()
    out = {}
    for name, tensor in state_dict.items():
        ptr = tensor.data_ptr()
        if ptr in seen:
            continue
        seen.add(ptr)
        out[name] = tensor.contiguous()
    return out


def load_weights(model: QwenVL, path: str | Path) -> None:
    """Load safetensors weights, resizing the ViT position embedding when the resolution changed (the
    resampler's key position embedding follows the ViT grid on its own)."""
    path = Path(path)
    state = load_file(path / WEIGHTS if path.is_dir() else path)
    target = model.state_dict()
    if VIT_POS_EMBED in state and state[VIT_POS_EMBED].shape != target[VIT_POS_EMBED].shape:
        state[VIT_POS_EMBED] = resize_vit_pos_embed(state[VIT_POS_EMBED], target[VIT_POS_EMBED].shape[0])
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise ValueError(f"{path}: weights do not fit the model: {e}") from None
    loaded = {p.data_ptr() for name, p in model.state_dict().items() if name in state}
    missing = [name for name in missing if target[name].data_ptr() not in loaded]  # tied copies are fine
    if missing or unexpected:
        raise ValueError(
            f"{path}: weights do not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
