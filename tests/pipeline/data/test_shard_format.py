"""The shard format both halves share: URLs, reading and writing, and images decoded as a viewer shows them."""

import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from pipeline.config import ConfigError
from pipeline.data.shard_format import (
    Skip,
    expand_urls,
    open_image,
    parse,
    read_shard,
    sample_record,
    write_shard,
)
from tests.shards import write_tar

RED, BLUE = (220, 20, 20), (20, 20, 220)


def halves_jpeg(orientation: int | None) -> bytes:
    """40 x 20 as stored: left half red, right half blue; with an EXIF orientation tag if given."""
    image = Image.new("RGB", (40, 20), BLUE)
    image.paste(RED, (0, 0, 20, 20))
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=95, exif=exif.tobytes())
    return out.getvalue()


def near(pixel, colour) -> bool:
    return max(abs(int(a) - b) for a, b in zip(pixel, colour, strict=True)) < 40


def test_exif_orientation_is_applied():
    upright = open_image(halves_jpeg(1))
    assert upright.size == (40, 20) and near(upright.getpixel((5, 10)), RED)
    # 6: the viewer turns the stored image 90 degrees clockwise: its left (red) half ends on top
    turned = open_image(halves_jpeg(6))
    assert turned.size == (20, 40) and turned.mode == "RGB"
    assert near(turned.getpixel((10, 5)), RED) and near(turned.getpixel((10, 35)), BLUE)
    # 8: counter-clockwise: the left half ends at the bottom
    turned = open_image(halves_jpeg(8))
    assert near(turned.getpixel((10, 35)), RED) and near(turned.getpixel((10, 5)), BLUE)


def test_16_bit_png_is_scaled_not_clipped():
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    out = io.BytesIO()
    Image.fromarray(ramp).save(out, format="PNG")
    assert Image.open(io.BytesIO(out.getvalue())).mode == "I;16"
    pixels = np.asarray(open_image(out.getvalue()))
    assert pixels.shape == (64, 64, 3) and pixels.dtype == np.uint8
    assert abs(pixels.mean() - 127.5) < 1 and pixels.min() == 0 and pixels.max() == 255
    assert np.abs(pixels[..., 0].astype(float) - ramp / 257).max() <= 0.5  # v / 257, rounded


def test_transparency_is_composited_on_white():
    image = Image.new("RGBA", (8, 8), (0, 0, 0, 0))  # transparent black
    image.paste((200, 0, 0, 255), (0, 0, 4, 8))  # an opaque red left half
    out = io.BytesIO()
    image.save(out, format="PNG")
    rgb = open_image(out.getvalue())
    assert rgb.getpixel((1, 1)) == (200, 0, 0) and rgb.getpixel((6, 6)) == (255, 255, 255)


def test_a_repeated_member_costs_its_sample_only(tmp_path):
    jpg = halves_jpeg(None)
    write_tar(tmp_path / "s.tar", [
        ("a.jpg", jpg), ("a.txt", b"first"),
        ("b.jpg", jpg), ("b.jpg", jpg), ("b.txt", b"second"),  # the same name twice
        ("c.jpg", jpg), ("c.txt", b"third"), ("c.json", b'{"lang": "en"}'),
    ])  # fmt: skip
    raws = list(read_shard(str(tmp_path / "s.tar")))
    assert [r["__key__"] for r in raws] == ["a", "b", "c"]
    with pytest.raises(Skip, match="b.jpg.*more than once") as bad:
        parse(raws[1])
    assert bad.value.reason == "bad_member"
    c = parse(raws[2])
    assert (c.caption, c.meta, c.image, c.ext) == ("third", {"lang": "en"}, jpg, "jpg")


def test_records_round_trip_and_bad_metadata_is_a_skip(tmp_path):
    records = [sample_record("k1", {"lang": "en", "tasks": {}}, "caption", b"jpegbytes", "jpg"),
               sample_record("k2", {"text": "only text"})]  # fmt: skip
    assert write_shard(tmp_path / "0.tar", records) == 2
    with tarfile.open(tmp_path / "0.tar") as tar:  # plain USTAR members: no pax header each
        assert all(not m.pax_headers for m in tar.getmembers()), "a member carries a pax header"
    first, second = (parse(r) for r in read_shard(str(tmp_path / "0.tar")))
    assert (first.key, first.caption, first.image, first.ext) == ("k1", "caption", b"jpegbytes", "jpg")
    assert (second.image, second.caption, second.meta) == (None, None, {"text": "only text"})
    with pytest.raises(ValueError, match="no dots"):
        sample_record("a.b", {})
    for bad in (b"{not json", b"[1, 2]", b'{"tasks": ["vqa"]}'):
        with pytest.raises(Skip) as skip:
            parse({"__key__": "x", "json": bad})
        assert skip.value.reason == "bad_metadata"


def test_missing_shards_name_the_config_key(tmp_path):
    with pytest.raises(ConfigError, match="data.shards.*not found"):
        expand_urls(str(tmp_path / "{0..3}.tar"))
    with pytest.raises(ConfigError, match="key 'input': no shard URLs"):
        expand_urls("::", key="input")
    (tmp_path / "0.tar").write_bytes(b"")
    assert expand_urls(f"{tmp_path}/{{0..0}}.tar::pipe:cat x") == [str(tmp_path / "0.tar"), "pipe:cat x"]
