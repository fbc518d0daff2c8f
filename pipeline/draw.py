"""Boxes on the [0, 1000) grid that Qwen-VL writes, drawn on images (the generate CLI, the demo's report)."""

from __future__ import annotations

from pipeline.eval_metrics import BOX, REF


def draw_box(draw, box, size: tuple[int, int], colour=(255, 0, 0)) -> tuple[float, ...]:
    """One box on the [0, 1000) grid drawn in pixels; corners given in any order (a model may swap them)."""
    x1, y1, x2, y2 = (v * size[i % 2] / 1000 for i, v in enumerate(box))
    xy = (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))
    draw.rectangle(xy, outline=colour, width=max(1, size[0] // 150))
    return xy


def draw_boxes(image, text: str):
    """The boxes of a generated answer ([0, 1000) grid, as Qwen-VL writes them) drawn on a copy of the image,
    each labelled with the <ref> text just before it, when there is one."""
    from PIL import ImageDraw

    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    for match in BOX.finditer(text):
        box = draw_box(draw, [int(v) for v in match.groups()], out.size)
        refs = REF.findall(text[: match.start()])
        if refs:
            draw.text((box[0] + 2, box[1] + 2), refs[-1], fill=(255, 0, 0))
    return out
