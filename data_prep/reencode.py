"""What a kept image becomes in its shard: the bytes as they came when they already show upright 8-bit pixels
that fit, otherwise the image a viewer shows, resized and re-encoded."""

from __future__ import annotations

import io

from PIL import Image

from data_prep.filters import ImageInfo
from pipeline.data.shard_format import needs_conversion, viewable_rgb

_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}


def fit(data: bytes, image: Image.Image, info: ImageInfo, max_side: int, quality: int) -> tuple[bytes, str]:
    """Keep the bytes when they already show upright 8-bit pixels that fit, as jpg/png/webp; otherwise
    write the image a viewer shows (``viewable_rgb``), resized so the longer side <= max_side: PNG stays
    PNG, the rest becomes JPEG. ``image`` may be decoded at a reduced scale already (``filters.decode``)."""
    ext = _FORMATS.get(info.format)
    fits = max(info.width, info.height) <= max_side
    if fits and ext is not None and not needs_conversion(image):
        return data, ext
    scale = min(1.0, max_side / max(info.width, info.height))
    size = (max(1, round(info.width * scale)), max(1, round(info.height * scale)))
    rgb = viewable_rgb(image)
    if rgb.size != size:  # area averaging, as img2dataset's INTER_AREA: 2.3x faster than bicubic (dev/LOG.md)
        rgb = rgb.resize(size, Image.Resampling.BOX)
    buffer = io.BytesIO()
    if info.format == "PNG":
        rgb.save(buffer, format="PNG")
        return buffer.getvalue(), "png"
    rgb.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue(), "jpg"
