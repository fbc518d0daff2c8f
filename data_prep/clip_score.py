"""CLIP score = cosine similarity of open_clip image and caption embeddings, in batches.

The model is any open_clip architecture with a pretrained tag or a local checkpoint. ``pretrained:
synthetic`` is the tiny scorer trained offline on clean synthetic pairs (``data_prep.clip_train``); its
folder holds the weights (safetensors) and ``scorer.json`` with the image size and a calibrated threshold.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool
from safetensors import SafetensorError

from data_prep.config import ClipFilter
from pipeline.config import ConfigError, register_open_clip_configs
from pipeline.data.shard_format import open_image
from pipeline.model.stem import install_stem

# an unknown tag, weights of another arch, bytes that are not safetensors
_LOAD_ERRORS = (RuntimeError, AssertionError, KeyError, SafetensorError)


def pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def encode_text(
    model: torch.nn.Module, tokens: torch.Tensor, normalize: bool = True, short: int = 64
) -> torch.Tensor:
    """``model.encode_text`` without the work on padding: rows of at most ``short`` tokens and longer rows
    run as two sub-batches, each cut to its longest row. Exact for open_clip's own text tower, which has a
    causal mask and pools at the end-of-text token; any other tower runs unchanged. Worth it because Chinese
    captions need about 3 times the tokens of English ones (dev/LOG.md)."""
    if type(model) is not open_clip.CLIP or model.text_pool_type != "argmax":
        return model.encode_text(tokens, normalize=normalize)
    lengths = (tokens != 0).sum(1)
    order, features = [], []
    for rows in (lengths <= short, lengths > short):
        if rows.any():
            order.append(rows.nonzero().squeeze(1))
            features.append(_encode_text_cut(model, tokens[rows, : int(lengths[rows].max())]))
    x = torch.cat(features)[torch.cat(order).argsort()]
    return F.normalize(x, dim=-1) if normalize else x


def _encode_text_cut(model: open_clip.CLIP, tokens: torch.Tensor) -> torch.Tensor:
    """``open_clip.CLIP.encode_text`` on a context cut to ``tokens.shape[1]``."""
    n, cast = tokens.shape[1], model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:n].to(cast)
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:n, :n]))
    x = text_global_pool(x, tokens, "argmax")
    if isinstance(model.text_projection, torch.nn.Linear):
        return model.text_projection(x)
    return x if model.text_projection is None else x @ model.text_projection


class ClipScorer:
    def __init__(
        self, cfg: ClipFilter, scorer_dir: str | Path | None = None, info: dict | None = None
    ) -> None:
        """``scorer_dir``: a synthetic scorer's folder; ``info`` stands in for its ``scorer.json`` while that
        is not written yet (calibration)."""
        register_open_clip_configs()
        self.cfg = cfg
        self.device = pick_device(cfg.device)
        threshold, kwargs, stem = cfg.threshold, {}, ("patch", [], 0)
        pretrained = cfg.pretrained
        if scorer_dir is not None:  # the synthetic scorer: its image size, stem and calibrated threshold
            info = info or json.loads((Path(scorer_dir) / "scorer.json").read_text())
            pretrained = str(Path(scorer_dir) / info["weights"])
            kwargs = {"force_image_size": info["image_size"]}
            threshold = info.get("threshold") if threshold is None else threshold
            stem = (info.get("stem", "patch"), info.get("stem_channels", []), info.get("stem_grid_layers", 0))
        if threshold is None:
            raise ConfigError(f"key 'filters.clip.threshold': required with pretrained={cfg.pretrained!r}")
        self.threshold = float(threshold)
        try:
            model, _, self.preprocess = open_clip.create_model_and_transforms(
                cfg.arch, pretrained=None if stem[0] == "conv" else pretrained, image_resize_mode="squash",
                **kwargs,
            )  # fmt: skip
            if stem[0] == "conv":  # the weights fit the tower once its stem is in place
                install_stem(model.visual, *stem)
                open_clip.load_checkpoint(model, pretrained)
        except _LOAD_ERRORS as e:
            raise ConfigError(
                f"key 'filters.clip.pretrained': cannot load {pretrained!r} into arch {cfg.arch!r}: {e!r}"
            ) from None
        self.model = model.to(self.device).eval()
        self.tokenizer = open_clip.get_tokenizer(cfg.arch)

    def pixels(self, image_bytes: list[bytes]) -> torch.Tensor:
        return torch.stack([self.preprocess(open_image(b)) for b in image_bytes])

    @torch.no_grad()
    def score_pixels(self, pixels: torch.Tensor, captions: list[str]) -> np.ndarray:
        image = self.model.encode_image(pixels.to(self.device), normalize=True)
        text = encode_text(self.model, self.tokenizer(captions).to(self.device))
        return (image * text).sum(-1).float().cpu().numpy()

    def score(self, image_bytes: list[bytes], captions: list[str]) -> np.ndarray:
        """Decode, preprocess and score in batches of ``batch_size``."""
        scores, step = [], self.cfg.batch_size
        for i in range(0, len(captions), step):
            pixels = self.pixels(image_bytes[i : i + step])
            scores.append(self.score_pixels(pixels, captions[i : i + step]))
        return np.concatenate(scores) if scores else np.zeros(0, dtype=np.float32)
