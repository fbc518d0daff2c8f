"""Sources: laion (img2dataset against a local HTTP server), wds and llava, each through the real prep job."""

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

from data_prep.job import run
from data_prep.sources import PrepConfig, check_source
from data_prep.sources.laion import error_kind
from data_prep.sources.llava import llava_messages
from pipeline.config import CONFIG_ROOT, ConfigError, load_config
from pipeline.data.formats import available_tasks
from pipeline.data.loader import read_record
from pipeline.data.shard_format import read_shards
from tests.image_server import SLOW_SECONDS
from tests.image_server import image_bytes as _image
from tests.shards import write_tar

pytestmark = pytest.mark.slow
CAPTION = "A large {} square on a plain beige background."
CLIENT_TIMEOUT = 5  # s: every answer but /slow/ comes at once, /slow/ ones after SLOW_SECONDS
assert SLOW_SECONDS >= 10 * CLIENT_TIMEOUT


def test_laion_preset_downloads_with_img2dataset_and_counts_every_failure(tmp_path, image_server, tiny_clip):
    kinds = ["ok"] * 12 + ["missing"] * 3 + ["slow"] * 2 + ["corrupt"] * 2
    urls = [f"{image_server}/{kind}/{i}" for i, kind in enumerate(kinds)]
    captions = [f"{CAPTION.format('red')} Photo {i}." for i in range(len(kinds))]
    pq.write_table(pa.table({"URL": urls, "TEXT": captions}), tmp_path / "pairs.parquet")
    cfg = load_config(PrepConfig, CONFIG_ROOT / "data" / "laion.yaml", [
        f"laion.input={tmp_path / 'pairs.parquet'}", f"output_dir={tmp_path / 'out'}", "samples_per_shard=8",
        f"laion.download.timeout={CLIENT_TIMEOUT}", "laion.download.processes=1", "laion.download.threads=8",
        "filters.clip.arch=tiny-ViT-14", f"filters.clip.pretrained={tiny_clip}", "filters.clip.threshold=-1.0",
    ])  # fmt: skip
    summary = run(cfg)
    assert summary["input"] == len(kinds)
    assert summary["errors"] == {"http_404": 3, "timeout": 2}
    assert summary["dropped"] == {"decode_error": 2}
    assert summary["kept"] == 12
    kept = [json.loads(s["json"]) for s in read_shards(summary["shards"])]
    assert sorted(m["source_id"] for m in kept) == sorted(u for u in urls if "/ok/" in u)
    assert len(summary["shards"]) == 3  # 19 rows in img2dataset shards of 8


def test_error_kinds_from_img2dataset_messages():
    assert error_kind("HTTP Error 404: Not Found") == "http_404"
    assert error_kind("<urlopen error timed out>") == "timeout"
    assert error_kind("The read operation timed out") == "timeout"
    assert error_kind("<urlopen error [Errno 111] Connection refused>") == "connection_error"
    assert error_kind("something else") == "download_error"


def test_laion_input_without_the_url_column_names_the_key(tmp_path):
    pq.write_table(pa.table({"url": ["http://x/1"], "TEXT": ["a"]}), tmp_path / "p.parquet")
    cfg = load_config(PrepConfig, CONFIG_ROOT / "data" / "laion.yaml",
                      [f"laion.input={tmp_path / 'p.parquet'}", f"output_dir={tmp_path / 'out'}"])  # fmt: skip
    with pytest.raises(ConfigError, match="laion.download.url_col"):
        run(cfg)


def test_wds_source_keeps_task_metadata_and_text_only_samples(tmp_path, world_shards, tiny_clip):
    cfg = load_config(PrepConfig, CONFIG_ROOT / "data" / "wds.yaml", [
        f"wds.input={world_shards}", f"output_dir={tmp_path / 'out'}",
        "filters.clip.arch=tiny-ViT-14", f"filters.clip.pretrained={tiny_clip}", "filters.clip.threshold=-1.0",
    ])  # fmt: skip
    summary = run(cfg)
    assert summary["input"] == 220 and summary["errors"] == {}
    assert len(summary["shards"]) == 9  # one output shard per input shard
    out = [s for s in read_shards(summary["shards"])]
    records = [read_record(s)[0] for s in out]
    assert sum(not r.has_image for r in records) > 0
    assert any("grounded_caption" in available_tasks(r) for r in records)
    assert summary["input"] == summary["kept"] + sum(summary["dropped"].values())


def test_wds_source_counts_a_truncated_shard(tmp_path):
    good = tmp_path / "good.tar"
    with wds.TarWriter(str(good)) as w:
        for i in range(6):
            w.write({"__key__": f"s{i}", "jpg": _image(i), "txt": f"{CAPTION.format('red')} Number {i}."})
    broken = tmp_path / "broken.tar"
    broken.write_bytes(
        good.read_bytes()[: good.stat().st_size // 2 + 700]
    )  # cut inside the 4th sample's .txt
    cfg = load_config(PrepConfig, CONFIG_ROOT / "data" / "wds.yaml", [
        f"wds.input={tmp_path}/{{good,broken}}.tar", f"output_dir={tmp_path / 'out'}", "filters.clip.enabled=false",
        "filters.dedup.enabled=false",  # the broken shard repeats the good one
    ])  # fmt: skip
    summary = run(cfg)
    # the cut sample and the unreadable rest of the shard are one error (they cannot be counted)
    assert summary["errors"] == {"shard_error": 1}
    assert summary["kept"] == 6 + 3 and summary["input"] == 9 + 1
    assert any("broken.tar" in e for e in summary["error_examples"])


def test_llava_messages_place_the_image():
    messages = llava_messages([
        {"from": "human", "value": "<image>\nWhat is in the picture?"},
        {"from": "gpt", "value": "A red square."},
    ])  # fmt: skip
    assert messages == [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the picture?"}]},
        {"role": "assistant", "content": "A red square."},
    ]
    with pytest.raises(ValueError):
        llava_messages([{"from": "robot", "value": "hi"}])


def test_llava_source_becomes_chatml_samples(tmp_path):
    images = tmp_path / "images"
    (images / "coco").mkdir(parents=True)
    (images / "coco" / "a.jpg").write_bytes(_image(0))
    entries = [
        {"id": "a", "image": "coco/a.jpg", "conversations": [
            {"from": "human", "value": "<image>\nDescribe the image."},
            {"from": "gpt", "value": "A large red square on a plain beige background."}]},
        {"id": "gone", "image": "coco/missing.jpg", "conversations": [
            {"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": "Something red."}]},
        {"id": "escape", "image": "../../etc/passwd", "conversations": [
            {"from": "human", "value": "<image>\nHi"}, {"from": "gpt", "value": "Hello there."}]},
        {"id": "text", "conversations": [
            {"from": "human", "value": "What is two plus two?"}, {"from": "gpt", "value": "Two plus two is four."}]},
        {"id": "broken", "conversations": [{"from": "alien", "value": "?"}]},
    ]  # fmt: skip
    (tmp_path / "llava.json").write_text(json.dumps(entries))
    cfg = load_config(PrepConfig, CONFIG_ROOT / "data" / "llava.yaml", [
        f"llava.input={tmp_path / 'llava.json'}", f"llava.image_root={images}", f"output_dir={tmp_path / 'out'}",
    ])  # fmt: skip
    summary = run(cfg)
    assert summary["errors"] == {"missing_file": 1, "bad_metadata": 2}  # missing image; path escape; bad role
    assert summary["kept"] == 2
    out = {json.loads(s["json"])["source_id"]: s for s in read_shards(summary["shards"])}
    record, image = read_record(out["a"])
    assert image == out["a"]["jpg"] and available_tasks(record) == ["caption", "chatml"]
    text_record, _ = read_record(out["text"])
    assert available_tasks(text_record) == ["chatml"]


def _encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def test_prep_writes_what_a_viewer_shows_and_a_repeated_member_costs_one_sample(tmp_path):
    """Hostile inputs: an EXIF-rotated JPEG, a 16-bit PNG, a transparent PNG, a member name given twice."""
    stored = Image.new("RGB", (240, 120), (20, 20, 220))
    stored.paste((220, 20, 20), (0, 0, 120, 120))  # left half red as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: 120 x 240, red on top
    ramp = np.linspace(0, 65535, 160 * 120).reshape(120, 160).astype(np.uint16)
    clear = Image.new("RGBA", (160, 120), (0, 0, 0, 0))
    images = {
        "rotated": (_encoded(stored, "JPEG", quality=95, exif=exif.tobytes()), "jpg"),
        "deep": (_encoded(Image.fromarray(ramp), "PNG"), "png"),
        "clear": (_encoded(clear, "PNG"), "png"),
        "plain": (_image(1), "jpg"),
    }
    members = []
    for i, (name, (data, ext)) in enumerate(images.items()):
        members += [(f"{name}.{ext}", data), (f"{name}.txt", f"{CAPTION.format('red')} Number {i}.".encode())]
        if name == "rotated":
            members.append(("twice.jpg", _image(2)))
            members.append(("twice.jpg", _image(3)))
            members.append(("twice.txt", CAPTION.format("blue").encode()))
    write_tar(tmp_path / "in.tar", members)
    cfg = load_config(PrepConfig, CONFIG_ROOT / "data" / "wds.yaml", [
        f"wds.input={tmp_path / 'in.tar'}", f"output_dir={tmp_path / 'out'}", "filters.clip.enabled=false",
    ])  # fmt: skip
    summary = run(cfg)
    assert summary["errors"] == {"bad_member": 1} and summary["kept"] == 4  # the samples after it too
    out = {json.loads(s["json"])["source_id"].split("#")[1]: s for s in read_shards(summary["shards"])}
    rotated = Image.open(io.BytesIO(out["rotated"]["jpg"]))
    assert rotated.getexif().get(0x0112, 1) == 1 and rotated.size == (120, 240)
    pixels = np.asarray(rotated.convert("RGB")).astype(int)
    assert pixels[30, 60, 0] > 180 and pixels[210, 60, 2] > 180  # red on top, blue below
    meta = json.loads(out["rotated"]["json"])
    assert (meta["original_width"], meta["original_height"]) == (120, 240)
    deep = np.asarray(Image.open(io.BytesIO(out["deep"]["png"])))
    assert deep.dtype == np.uint8 and deep.ndim == 3 and abs(deep.mean() - 127.5) < 1
    assert np.asarray(Image.open(io.BytesIO(out["clear"]["png"])).convert("RGB")).min() == 255  # on white
    assert out["plain"]["jpg"] == images["plain"][0]  # already viewable: the bytes are kept


def test_each_source_checks_its_own_section_and_the_config_its_name():
    cfg = load_config(PrepConfig, None, ["source=folder"])
    with pytest.raises(ConfigError, match="key 'folder.input': folder '' not found"):
        check_source(cfg)
    llava = load_config(PrepConfig, None, ["source=llava", "llava.input=x.json"])
    with pytest.raises(ConfigError, match="key 'llava.image_root': required"):
        check_source(llava)
    laion = load_config(PrepConfig, None, ["source=laion"])
    with pytest.raises(ConfigError, match="key 'laion.input'"):
        check_source(laion)
    with pytest.raises(ConfigError, match="key 'source': 'nope' is not one of"):
        load_config(PrepConfig, None, ["source=nope"])
    with pytest.raises(ConfigError, match="laion.downlaod"):  # a section is typed like every config
        load_config(PrepConfig, None, ["laion.downlaod.threads=4"])
    assert load_config(PrepConfig, None, ["source=wds", "wds.input=a.tar"]).source_config.input == "a.tar"
