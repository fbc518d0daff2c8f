"""preview.png: a contact sheet of the world with its ground truth drawn on (boxes green, OCR quads
magenta), clean samples first, then one sample of each noise kind, titled with its label."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402


def _tile(image_bytes: bytes, meta: dict) -> Image.Image | None:
    try:
        image = Image.open(io.BytesIO(image_bytes)).convert("RGB")
    except OSError:
        return None  # corrupt noise: shown as an empty tile
    draw = ImageDraw.Draw(image)
    w, h = image.size
    for ref in meta["tasks"]["ref"]:
        x1, y1, x2, y2 = ref["box"]
        draw.rectangle(
            (x1 * w / 1000, y1 * h / 1000, x2 * w / 1000, y2 * h / 1000), outline=(0, 255, 0), width=2
        )
    for word in meta["tasks"]["ocr"]:
        draw.polygon([(x * w / 1000, y * h / 1000) for x, y in word["quad"]], outline=(255, 0, 255), width=2)
    return image


def write_preview(samples: list[tuple[bytes, dict]], path: str | Path, columns: int = 4) -> Path:
    rows = -(-len(samples) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (data, meta) in zip(axes.flat, samples, strict=False):
        tile = _tile(data, meta)
        if tile is not None:
            ax.imshow(tile)
        caption = meta["caption"]
        if any(ord(c) >= 0x2E80 for c in caption):  # CJK, kana, Hangul: matplotlib's default font has none
            caption = f"(caption in {meta['lang']}; English ground truth:) {meta['tasks']['caption_en']}"
        title = f"{meta['key']} [{meta['noise']}, {meta['lang']}]\n{caption}"
        ax.set_title(textwrap.shorten(title, 110), fontsize=7, wrap=True)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)
