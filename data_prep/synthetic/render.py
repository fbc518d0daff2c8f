"""Scene -> pixels (PIL). Everything drawn is read from the scene, so ground truth matches the image."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw

from data_prep.synthetic.scene import BACKGROUNDS, COLOURS, TEXT_PAD, Scene, font, text_box

# Unit-square outlines (0..1), stretched to each object's box.
_STAR = [
    (0.5 + (0.5 if i % 2 == 0 else 0.2) * math.sin(i * math.pi / 5),
     0.5 - (0.5 if i % 2 == 0 else 0.2) * math.cos(i * math.pi / 5))
    for i in range(10)
]  # fmt: skip
OUTLINES = {
    "square": [(0, 0), (1, 0), (1, 1), (0, 1)],
    "triangle": [(0.5, 0), (1, 1), (0, 1)],
    "diamond": [(0.5, 0), (1, 0.5), (0.5, 1), (0, 0.5)],
    "hexagon": [(0.25, 0), (0.75, 0), (1, 0.5), (0.75, 1), (0.25, 1), (0, 0.5)],
    "cross": [(1 / 3, 0), (2 / 3, 0), (2 / 3, 1 / 3), (1, 1 / 3), (1, 2 / 3), (2 / 3, 2 / 3),
              (2 / 3, 1), (1 / 3, 1), (1 / 3, 2 / 3), (0, 2 / 3), (0, 1 / 3), (1 / 3, 1 / 3)],
    "star": _STAR,
}  # fmt: skip


def _fill_unit_square(points):
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, y0, sx, sy = min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)
    return [((x - x0) / sx, (y - y0) / sy) for x, y in points]


OUTLINES = {shape: _fill_unit_square(points) for shape, points in OUTLINES.items()}


def render(scene: Scene) -> Image.Image:
    image = Image.fromarray(_background(scene))
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        rgb = COLOURS[obj.colour][0]
        x1, y1, x2, y2 = obj.box
        if obj.shape == "circle":
            draw.ellipse((x1, y1, x2 - 1, y2 - 1), fill=rgb)
        else:
            w, h = x2 - 1 - x1, y2 - 1 - y1
            draw.polygon([(x1 + u * w, y1 + v * h) for u, v in OUTLINES[obj.shape]], fill=rgb)
    for word in scene.words:
        _draw_word(image, word)
    return image


def encode_jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _draw_word(image: Image.Image, word) -> None:
    _, _, tw, th = text_box(word.text, word.font_size)
    pad = TEXT_PAD
    layer = Image.new("RGBA", (tw + 2 * pad, th + 2 * pad), (0, 0, 0, 0))
    ImageDraw.Draw(layer).text(
        (pad, pad), word.text, font=font(word.font_size), fill=COLOURS[word.colour][0] + (255,)
    )
    rotated = layer.rotate(word.angle, resample=Image.BICUBIC, expand=True)
    image.paste(rotated, word.origin, rotated)


def _background(scene: Scene) -> np.ndarray:
    h, w = scene.height, scene.width
    base = np.array(BACKGROUNDS[scene.background][0], dtype=np.float32)
    rng = np.random.default_rng(scene.texture_seed)
    if scene.background_kind == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        t = (xx * math.cos(angle) + yy * math.sin(angle)) / max(h, w)
        img = base * (0.85 + 0.25 * (t - t.min()) / max(1e-6, float(np.ptp(t))))[..., None]
    elif scene.background_kind == "striped":
        period = int(rng.integers(8, 32))
        vertical = rng.random() < 0.5
        bands = ((np.arange(w if vertical else h) // period) % 2).astype(np.float32) * 18.0
        img = np.broadcast_to(base, (h, w, 3)).copy()
        img += bands[None, :, None] if vertical else bands[:, None, None]
    elif scene.background_kind == "noisy":
        img = base + rng.normal(0, 10, size=(h, w, 3)).astype(np.float32)
    else:
        img = np.broadcast_to(base, (h, w, 3)).copy()
    return np.clip(img, 0, 255).astype(np.uint8)
