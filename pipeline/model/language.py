"""The language model: any Hugging Face causal LM, from a hub name, a local folder or a config."""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from pipeline.config import ConfigError
from pipeline.schema import LLMConfig


def build_llm(cfg: LLMConfig, vocab_size: int | None = None, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Load ``cfg.name_or_path`` or build a fresh model from ``cfg.arch``.

    A fresh model's vocabulary defaults to ``vocab_size`` (the tokenizer's), rounded up to a multiple of 64
    so that the embedding matmuls stay aligned.
    """
    if cfg.name_or_path:
        try:
            return AutoModelForCausalLM.from_pretrained(
                cfg.name_or_path, trust_remote_code=cfg.trust_remote_code, dtype=dtype
            )
        except OSError as e:  # not a folder, not in the local cache and no internet
            raise ConfigError(
                f"key 'model.llm.name_or_path': cannot load {cfg.name_or_path!r}: {e}"
            ) from None
    arch = dict(cfg.arch)
    model_type = arch.pop("model_type", None)
    if model_type is None:
        raise ConfigError("key 'model.llm': set llm.name_or_path or llm.arch.model_type")
    if "vocab_size" not in arch:
        if vocab_size is None:
            raise ConfigError("key 'model.llm.arch.vocab_size': not set and no tokenizer size given")
        arch["vocab_size"] = -(-vocab_size // 64) * 64
    try:
        config = AutoConfig.for_model(model_type, **arch)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"key 'model.llm.arch': {e}") from None
    return AutoModelForCausalLM.from_config(config, dtype=dtype)
