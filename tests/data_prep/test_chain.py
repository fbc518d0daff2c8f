"""The filter chain in one process: order, reasons and what each kind of input becomes."""

import io
import json
from dataclasses import fields

from PIL import Image

from data_prep.chain import CATCHES, CHAIN, REASONS, build_chain, run_chain
from data_prep.config import Filters
from data_prep.sample import ReadError, Sample
from data_prep.sources import PrepConfig, folder, plan_parts, read_part
from data_prep.stats import PartStats, merge, quality


def _jpeg(size=(320, 240)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, "red").save(buf, format="JPEG")
    return buf.getvalue()


def _run(cfg: PrepConfig, items: list, duplicates=frozenset()) -> tuple[list[Sample], PartStats]:
    stats = PartStats(0)
    return list(run_chain(cfg, iter(items), build_chain(cfg, duplicates), stats)), stats


def test_every_configured_filter_is_in_the_chain_in_the_same_order():
    assert [f.name for f in CHAIN] == [f.name for f in fields(Filters)]
    assert CATCHES["language"] == ("charset", "language")  # other languages: by the character set or by ID
    reasons = [r for rs in REASONS.values() for r in rs]
    assert len(reasons) == len(set(reasons))  # a reason names one filter


def test_each_input_ends_once_under_its_reason():
    caption = "A red image on a plain background."
    items = [
        Sample(
            "k0", "ok.jpg", _jpeg(), f"<b>{caption}</b>", {"tasks": {}}, noise="html", clean_caption=caption
        ),
        Sample("k1", "small.jpg", _jpeg((40, 40)), caption, {}, noise="small"),
        Sample("k2", "wide.jpg", _jpeg((900, 100)), caption, {}),
        Sample("k3", "broken.jpg", b"\xff\xd8 not a jpeg", caption, {}),
        Sample("k4", "dup.jpg", _jpeg(), caption, {}),
        Sample(
            "k5",
            "text.jsonl:1",
            None,
            None,
            {"text": "Une phrase en français, assez longue pour le détecteur."},
        ),
        Sample("k6", "text.jsonl:2", None, None, {"text": "Plain English text about shapes and colours."}),
        ReadError("gone.jpg", "missing_caption", "gone.jpg: no gone.txt next to it"),
    ]
    kept, s = _run(PrepConfig(), items, frozenset({"k4"}))
    assert [x.key for x in kept] == ["k0", "k6"]
    assert kept[0].caption == caption and kept[0].original_size == (320, 240) and kept[0].ext == "jpg"
    assert kept[1].lang == "en" and kept[1].caption is None
    assert s.dropped == {"too_small": 1, "aspect_ratio": 1, "decode_error": 1, "duplicate": 1, "charset": 1}
    assert s.errors == {"missing_caption": 1} and s.input == len(items)
    assert s.noise == {"small": {"too_small": 1}} and s.cleaning["html"]["recovered"] == 1
    assert sum(s.histograms["short_side"]) == 4  # every image that decodes, before the size filter


def test_with_the_decode_filter_off_a_broken_image_is_an_error():
    cfg = PrepConfig()
    cfg.filters.decode.enabled = False
    kept, s = _run(cfg, [Sample("k", "broken.jpg", b"\xff\xd8 not a jpeg", "A caption here.", {})])
    assert not kept and s.errors == {"undecodable": 1} and not s.dropped
    assert "broken.jpg" in s.error_examples[0]


def test_hand_labelled_samples_of_any_source_get_precision_and_recall(tmp_path):
    for name, size, label in [("a", (320, 240), "clean"), ("b", (40, 40), "small"), ("c", (50, 60), "clean")]:
        Image.new("RGB", size, "blue").save(tmp_path / f"{name}.png")
        (tmp_path / f"{name}.txt").write_text("A blue image on a plain background.")
        (tmp_path / f"{name}.json").write_text(json.dumps({"noise": label, "tasks": {}}))
    cfg = PrepConfig(source="folder", folder=folder.Config(input=str(tmp_path)))
    (spec,) = plan_parts(cfg)
    kept, s = _run(cfg, list(read_part(cfg, spec)))
    q = quality(merge([s.to_dict()]), CATCHES)["small"]
    assert (q["samples"], q["caught"], q["flagged"], q["recall"], q["precision"]) == (1, 1, 2, 1.0, 0.5)
    assert [x.source_id for x in kept] == ["a.png"] and "noise" not in kept[0].meta
