import io
import random

import pytest
from PIL import Image

from data_prep.filters import (
    aspect_reason,
    charset_reason,
    clean_text,
    decode,
    dedup_key,
    language_reason,
    size_reason,
    text_reason,
)
from data_prep.synthetic import text as T
from data_prep.synthetic.scene import sample_scene


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("<p>A red <b>circle</b>.</p>", "A red circle."),
        ("A&nbsp;red&amp;blue square&#160;", "A red&blue square"),
        ("&lt;b&gt;bold&lt;/b&gt; text", "bold text"),
        ("See https://cdn1.example.com/i/2.jpg or www.example.com now", "See or now"),
        ("mail info12@example.com today", "mail today"),
        ("IMG_1234.JPG a cat DSC99.jpg", "a cat"),
        ("||| stars *** and ~~~ waves ===", "stars and waves"),
        ("Wait... what?", "Wait... what?"),
        ("米色背景上有一个大的黑色圆形。", "米色背景上有一个大的黑色圆形。"),
        ("  spaced \n\t out  ", "spaced out"),
    ],
)
def test_clean_text(raw, clean):
    assert clean_text(raw) == clean


def test_cleaning_recovers_every_html_caption_of_the_world():
    rng = random.Random(0)
    for _ in range(300):
        scene = sample_scene(rng)
        caption = T.caption_zh(scene, rng) if rng.random() < 0.3 else T.caption_en(scene, rng)
        assert clean_text(T.html_junk(caption, rng)) == caption
        assert clean_text(T.empty_junk(rng)) == ""


def test_text_length_rules():
    assert text_reason("", 5, 100) == "text_empty"
    assert text_reason("abc", 5, 100) == "text_too_short"
    assert text_reason("x" * 101, 5, 100) == "text_too_long"
    assert text_reason("A red circle.", 5, 100) is None


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), "red").save(buf, format="PNG")
    return buf.getvalue()


def probe_image(data: bytes):
    return decode(data)[1]


def test_image_rules():
    info = probe_image(_png(300, 100))
    assert (info.width, info.height, info.format) == (300, 100, "PNG")
    assert (
        aspect_reason(info, 3.0) is None and aspect_reason(probe_image(_png(301, 100)), 3.0) == "aspect_ratio"
    )
    assert aspect_reason(probe_image(_png(100, 301)), 3.0) == "aspect_ratio"
    assert size_reason(info, 100) is None and size_reason(info, 101) == "too_small"
    data = _png(64, 64)
    for broken in (data[: len(data) // 2], b"not an image", b""):
        with pytest.raises(Exception):  # noqa: B017 - PIL raises several kinds; the engine counts them all
            probe_image(broken)


def test_decode_reduces_large_jpegs_but_reports_the_original():
    buf = io.BytesIO()
    gradient = Image.linear_gradient("L").resize((2000, 1000)).convert("RGB")
    gradient.save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    image, info = decode(data, max_side=512)
    assert (info.width, info.height, info.format) == (2000, 1000, "JPEG")
    assert image.size == (1000, 500)  # 1/2 DCT scale: 1/4 would fall below 512
    assert decode(data)[0].size == (2000, 1000)
    assert decode(_png(2000, 1000), max_side=512)[0].size == (2000, 1000)  # only JPEG has DCT scaling
    with pytest.raises(OSError, match="truncated"):
        decode(data[: len(data) * 2 // 3], max_side=512)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("A red circle, 3 squares & 2 stars!", None),
        ("深灰色背景上有一个小的红色星形。图中写着“HOTEL”和“NORTH”。", None),
        ("Une photo qui montre un cercle, posé sur un fond uni.", "charset"),
        ("На этой картинке изображены", "charset"),
        ("これは写真です", "charset"),
        ("빨간 원", "charset"),
        ("صورة", "charset"),
    ],
)
def test_charset_rule(text, reason):
    assert charset_reason(text) == reason


def test_language_id_catches_ascii_only_other_languages():
    german = "Ein Bild mit der Form Kreis in der Farbe rot auf einem einfachen und ruhigen Hintergrund."
    assert language_reason(german, ["en", "zh"], 0.5) == ("language", "de")
    assert language_reason("A large red circle on a plain beige background.", ["en", "zh"], 0.5) == (
        None,
        "en",
    )
    assert language_reason("米色背景上有一个大的黑色圆形。", ["en", "zh"], 0.5) == (None, "zh")
    assert language_reason(german, ["en", "de"], 0.5) == (None, "de")  # kept languages are configurable


def test_dedup_key_needs_same_image_and_caption():
    a, b = _png(10, 10), _png(11, 10)
    assert dedup_key(a, "x") == dedup_key(a, "x")
    assert dedup_key(a, "x") != dedup_key(a, "y") and dedup_key(a, "x") != dedup_key(b, "x")
