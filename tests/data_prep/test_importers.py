"""Importers of the datasets the recipe trains on, each through the real prep job on small files written here in
the dataset's official layout: every record is kept or counted under its reason, boxes land on the grid of
the image as shown, and a kept sample of each is formatted with pipeline.inspect."""

import io
import json
import os
import pickle
import random
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from data_prep.job import run
from data_prep.sources import PrepConfig
from data_prep.sources.annotations import BadRecord, grid_box
from data_prep.sources.vqa import most_common
from pipeline.config import CONFIG_ROOT, ConfigError, load_config
from pipeline.data.formats import Formatter
from pipeline.data.loader import read_record
from pipeline.data.shard_format import open_image, read_shards
from pipeline.inspect import inspect_sample, marked_text
from pipeline.schema import StageConfig
from pipeline.tokens import IMAGE_END, IMAGE_PAD, IMAGE_START, to_model_text
from tests.pipeline.data.test_chatml_preprocess import Q, qwen_vl_preprocess

pytestmark = pytest.mark.slow
RED, BLUE = (220, 30, 30), (30, 70, 220)


def jpeg(size=(200, 160), colour=BLUE, left_red: int = 0, exif_orientation: int = 1) -> bytes:
    """A plain image; ``left_red`` pixels of its left edge red, as stored."""
    image = Image.new("RGB", size, colour)
    if left_red:
        image.paste(RED, (0, 0, left_red, size[1]))
    out, exif = io.BytesIO(), Image.Exif()
    if exif_orientation != 1:
        exif[0x0112] = exif_orientation
    image.save(out, format="JPEG", quality=95, exif=exif.tobytes())
    return out.getvalue()


def prep(preset: str, out, *overrides: str) -> dict:
    cfg = load_config(PrepConfig, CONFIG_ROOT / "data" / f"{preset}.yaml",
                      [f"output_dir={out}", "samples_per_shard=3", *overrides])  # fmt: skip
    summary = run(cfg)
    assert summary["input"] == summary["kept"] + sum(summary["dropped"].values()) + sum(
        summary["errors"].values()
    )
    return summary


def kept(summary: dict) -> dict[str, tuple]:
    """source_id -> (record, image bytes) of every kept sample."""
    return {json.loads(raw["json"])["source_id"]: read_record(raw) for raw in read_shards(summary["shards"])}


def inspected(summary: dict, index: int, task: str, tokenizer_dir) -> str:
    """A kept sample as pipeline.inspect formats it for training, with [[supervised]] text."""
    cfg = load_config(StageConfig, CONFIG_ROOT / "stage2.yaml", [
        f"data.shards={'::'.join(summary['shards'])}", f"model.tokenizer={tokenizer_dir}", "model.adapter.num_queries=16",
    ])  # fmt: skip
    example, tokenizer = inspect_sample(cfg, index, task)
    return marked_text(tokenizer, example.input_ids, example.labels)


# -- COCO-style captions -----------------------------------------------------------------------------------------
def test_coco_captions_and_karpathy_splits(tmp_path, tokenizer_dir):
    images = tmp_path / "images"
    (images / "train2014").mkdir(parents=True)
    for i in (1, 2, 4):
        (images / "train2014" / f"COCO_train2014_{i:012d}.jpg").write_bytes(jpeg())
    captions = {"info": {}, "licenses": [],
                "images": [{"id": i, "file_name": f"train2014/COCO_train2014_{i:012d}.jpg", "width": 200,
                            "height": 160} for i in (1, 2, 3, 4)] + [{"id": 5, "file_name": "../../secret.jpg"}],
                "annotations": [{"id": 10 + k, "image_id": 1, "caption": f"A blue picture, take {k}."} for k in range(5)]
                + [{"id": 20, "image_id": 3, "caption": "An image that is missing."},
                   {"id": 21, "image_id": 5, "caption": "A path out of the folder."}]}  # fmt: skip
    (tmp_path / "captions_train2014.json").write_text(json.dumps(captions))
    summary = prep("coco", tmp_path / "out", f"coco.input={tmp_path / 'captions_train2014.json'}",
                   f"coco.image_root={images}")  # fmt: skip
    # image 2 and 4 have no caption, image 3 no file, image 5 leaves the folder
    assert summary["input"] == 5 and summary["kept"] == 1
    assert summary["errors"] == {"no_caption": 2, "missing_file": 1, "bad_path": 1}
    ((record, _),) = kept(summary).values()
    assert record.caption == "A blue picture, take 0." and len(record.meta["captions"]) == 5
    assert "[[ A blue picture, take" in inspected(summary, 0, "caption", tokenizer_dir)

    karpathy = {"dataset": "coco", "images": [
        {"filepath": "train2014", "filename": f"COCO_train2014_{i:012d}.jpg", "imgid": i, "cocoid": i, "split": split,
         "sentids": [i], "sentences": [{"tokens": ["a", "picture"], "raw": f"A picture number {i}.", "imgid": i,
                                        "sentid": i}]}
        for i, split in ((1, "train"), (2, "restval"), (4, "val"))]}  # fmt: skip
    (tmp_path / "dataset_coco.json").write_text(json.dumps(karpathy))
    summary = prep("coco", tmp_path / "karpathy", f"coco.input={tmp_path / 'dataset_coco.json'}",
                   f"coco.image_root={images}")  # fmt: skip
    assert summary["input"] == 2 and summary["kept"] == 2  # the val image is not read
    assert sorted(r.caption for r, _ in kept(summary).values()) == [
        "A picture number 1.",
        "A picture number 2.",
    ]


# -- VQAv2-style questions and annotations -----------------------------------------------------------------------
def test_vqav2_questions_with_annotations(tmp_path, tokenizer_dir):
    images = tmp_path / "train2014"
    images.mkdir()
    for i in (7, 8):
        (images / f"COCO_train2014_{i:012d}.jpg").write_bytes(jpeg())
    questions = {"info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": "train2014",
                 "license": {}, "questions": [
                     {"image_id": 7, "question": "What colour is the picture?", "question_id": 70},
                     {"image_id": 7, "question": "How many squares are there?", "question_id": 71},
                     {"image_id": 8, "question": "Is it raining?", "question_id": 80},
                     {"image_id": 9, "question": "Where is the image?", "question_id": 90}]}  # fmt: skip

    def answers(*given):
        return [{"answer": a, "answer_confidence": "yes", "answer_id": k + 1} for k, a in enumerate(given)]

    annotations = {"info": {}, "license": {}, "data_subtype": "train2014", "annotations": [
        {"question_id": 70, "image_id": 7, "question_type": "what color", "answer_type": "other",
         "multiple_choice_answer": "blue", "answers": answers(*["blue"] * 6, "Blue", "dark blue", "navy", "blue ")},
        {"question_id": 71, "image_id": 7, "question_type": "how many", "answer_type": "number",
         "multiple_choice_answer": "2", "answers": answers("2", "two", "2", "two", "3", "2", "two", "two", "1", "0")},
        {"question_id": 90, "image_id": 9, "question_type": "where", "answer_type": "other",
         "multiple_choice_answer": "x", "answers": answers(*["x"] * 10)}]}  # fmt: skip
    (tmp_path / "q.json").write_text(json.dumps(questions))
    (tmp_path / "a.json").write_text(json.dumps(annotations))
    summary = prep("vqav2", tmp_path / "out", f"vqa.questions={tmp_path / 'q.json'}",
                   f"vqa.annotations={tmp_path / 'a.json'}", f"vqa.image_root={images}")  # fmt: skip
    assert summary["input"] == 4 and summary["kept"] == 2
    assert summary["errors"] == {"no_answer": 1, "missing_file": 1}  # question 80 unanswered; image 9 absent
    qa = {
        r.meta["tasks"]["vqa"][0]["question_id"]: r.meta["tasks"]["vqa"][0] for r, _ in kept(summary).values()
    }
    assert qa[70]["answer"] == "blue" and len(qa[70]["answers"]) == 10
    assert qa[71]["answer"] == "two"  # 4 x "two" against 3 x "2"
    text = inspected(summary, 0, "vqa", tokenizer_dir)
    assert re.search(r"\?\s*Answer:\[\[ (blue|two)<\|endoftext\|>\]\]", text), text


def test_textvqa_own_release_file(tmp_path):
    images = tmp_path / "train_images"
    images.mkdir()
    (images / "0054c91397f2fe05.jpg").write_bytes(jpeg())
    release = {"dataset_type": "train", "dataset_name": "textvqa", "dataset_version": "0.5.1", "data": [
        {"question": "what is written on the sign?", "image_id": "0054c91397f2fe05", "image_classes": ["Sign"],
         "flickr_original_url": "", "flickr_300k_url": "", "image_width": 200, "image_height": 160,
         "answers": ["stop"] * 8 + ["stop sign", "STOP"], "question_tokens": [], "question_id": 3,
         "set_name": "train"},
        {"question": "what brand?", "image_id": "ffff", "answers": ["acme"] * 10, "question_id": 4}]}  # fmt: skip
    (tmp_path / "TextVQA_0.5.1_train.json").write_text(json.dumps(release))
    summary = prep("textvqa", tmp_path / "out", f"vqa.questions={tmp_path / 'TextVQA_0.5.1_train.json'}",
                   f"vqa.image_root={images}")  # fmt: skip
    assert summary["kept"] == 1 and summary["errors"] == {"missing_file": 1}
    ((record, _),) = kept(summary).values()
    assert record.meta["tasks"]["vqa"][0]["answer"] == "stop"


def test_most_common_answer_is_case_blind_and_the_first_among_equals():
    assert most_common(["Yes", "no", "yes", "No"]) == "Yes"
    assert most_common(["2", "two", "two", "2"]) == "2"
    assert most_common(["b", "a", "a"]) == "a"


# -- RefCOCO ---------------------------------------------------------------------------------------------------
def test_grid_boxes_are_checked_and_turned_with_the_image():
    frame = (200, 100, 1)
    assert grid_box([0, 0, 200, 100], frame) == [0, 0, 999, 999]  # the whole image, to its edge
    assert grid_box([50, 25, 50, 50], frame) == [250, 250, 500, 750]
    assert grid_box([199.6, 99.5, 0.9, 1.0], frame) == [
        998,
        995,
        999,
        999,
    ]  # rounding past the edge is clamped
    assert grid_box([0.1, 0.2, 0.5, 0.6], frame, xywh=False, normalised=True) == [100, 200, 500, 600]
    for box, kind in (([0, 0, 0, 10], "degenerate_box"), ([10, 10, -3, 5], "degenerate_box"),
                      ([150, 0, 60, 50], "box_outside_image"), ([-5, 0, 10, 10], "box_outside_image"),
                      ([1, 2, 3], "bad_box"), ([0, 0, float("nan"), 1], "bad_box")):  # fmt: skip
        with pytest.raises(BadRecord) as caught:
            grid_box(box, frame)
        assert caught.value.kind == kind, box
    # stored 200 x 100 with EXIF orientation 6: shown turned clockwise, 100 x 200; the stored left quarter is
    # shown as the top quarter
    assert grid_box([0, 0, 50, 100], (200, 100, 6)) == [0, 0, 999, 250]
    assert grid_box([0, 0, 50, 100], (200, 100, 8)) == [0, 750, 999, 999]
    assert grid_box([0, 0, 50, 100], (200, 100, 3)) == [750, 0, 999, 999]


def refcoco_files(tmp_path) -> tuple:
    images = tmp_path / "train2014"
    images.mkdir()
    sizes = {1: (200, 100), 2: (200, 100), 3: (300, 200)}
    (images / "COCO_train2014_000000000001.jpg").write_bytes(jpeg((200, 100), left_red=50))
    (images / "COCO_train2014_000000000002.jpg").write_bytes(
        jpeg((200, 100), left_red=50, exif_orientation=6)
    )
    (images / "COCO_train2014_000000000003.jpg").write_bytes(jpeg((320, 200)))  # not the annotated size
    instances = {"info": {}, "licenses": [], "categories": [{"id": 1, "name": "thing", "supercategory": "x"}],
                 "images": [{"id": i, "file_name": f"COCO_train2014_{i:012d}.jpg", "width": w, "height": h}
                            for i, (w, h) in sizes.items()],
                 "annotations": [
                     {"id": 101, "image_id": 1, "bbox": [0, 0, 50, 100], "category_id": 1, "area": 5000, "iscrowd": 0},
                     {"id": 102, "image_id": 1, "bbox": [150.0, 0.0, 50.4, 100.0], "category_id": 1, "iscrowd": 0},
                     {"id": 103, "image_id": 1, "bbox": [150, 0, 80, 50], "category_id": 1, "iscrowd": 0},
                     {"id": 104, "image_id": 1, "bbox": [10, 10, 0, 5], "category_id": 1, "iscrowd": 0},
                     {"id": 201, "image_id": 2, "bbox": [0, 0, 50, 100], "category_id": 1, "iscrowd": 0},
                     {"id": 301, "image_id": 3, "bbox": [0, 0, 10, 10], "category_id": 1, "iscrowd": 0}]}  # fmt: skip

    def ref(ref_id, ann_id, image_id, split, *sentences):
        return {"ref_id": ref_id, "ann_id": ann_id, "image_id": image_id, "split": split, "category_id": 1,
                "file_name": f"COCO_train2014_{image_id:012d}_{ann_id}.jpg", "sent_ids": list(range(len(sentences))),
                "sentences": [{"tokens": s.split(), "raw": s.upper(), "sent_id": k, "sent": s}
                              for k, s in enumerate(sentences)]}  # fmt: skip

    refs = [ref(0, 101, 1, "train", "the red strip", "left part"), ref(1, 102, 1, "train", "right edge"),
            ref(2, 103, 1, "train", "off the image"), ref(3, 104, 1, "train", "a line"),
            ref(4, 201, 2, "train", "the red strip turned"), ref(5, 301, 3, "train", "wrong size"),
            ref(6, 999, 1, "train", "no such object"), ref(7, 101, 1, "train"),
            ref(8, 101, 1, "val", "held out")]  # fmt: skip
    (tmp_path / "instances.json").write_text(json.dumps(instances))
    (tmp_path / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    return images, tmp_path / "refs(unc).p", tmp_path / "instances.json"


def test_refcoco_refs_become_boxes_on_the_shown_image(tmp_path, tokenizer_dir):
    images, refs, instances = refcoco_files(tmp_path)
    summary = prep("refcoco", tmp_path / "out", f"refcoco.refs={refs}", f"refcoco.instances={instances}",
                   f"refcoco.image_root={images}")  # fmt: skip
    assert summary["input"] == 8  # the val ref is not read
    assert summary["errors"] == {"box_outside_image": 1, "degenerate_box": 1, "size_mismatch": 1,
                                 "missing_annotation": 1, "no_expression": 1}  # fmt: skip
    assert summary["kept"] == 3
    out = {k.rsplit(" ", 1)[1]: v for k, v in kept(summary).items()}
    assert out["0"][0].meta["tasks"]["ref"] == [{"expression": "the red strip", "box": [0, 0, 250, 999]},
                                                {"expression": "left part", "box": [0, 0, 250, 999]}]  # fmt: skip
    assert out["1"][0].meta["tasks"]["ref"][0]["box"] == [750, 0, 999, 999]  # 0.4 px past the edge: clamped
    # the EXIF-turned image: the box is the red strip where a viewer (and the loader) sees it, on top
    record, data = out["4"]
    assert record.meta["tasks"]["ref"][0]["box"] == [0, 0, 999, 250]
    shown = np.asarray(open_image(data)).astype(int)
    assert shown.shape[:2] == (200, 100)
    assert shown[20, 50, 0] > 180 and shown[20, 50, 2] < 100  # inside the box: red
    assert shown[150, 50, 2] > 180  # below it: blue
    text = inspected(summary, 0, "ref", tokenizer_dir)
    assert re.search(
        r"<\|object_ref_start\|>.*<\|object_ref_end\|>\[\[<\|box_start\|>\(\d+,\d+\),\(\d+,\d+\)", text
    )


def test_refcoco_reads_a_pickle_of_plain_types_only(tmp_path):
    images, refs, instances = refcoco_files(tmp_path)

    marker = tmp_path / "pickle-code-ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    hostile = tmp_path / "hostile.p"
    hostile.write_bytes(pickle.dumps([{"ref_id": 0, "split": "train", "sentences": [Evil()]}], protocol=2))
    cfg = load_config(PrepConfig, CONFIG_ROOT / "data" / "refcoco.yaml", [
        f"refcoco.refs={hostile}", f"refcoco.instances={instances}", f"refcoco.image_root={images}",
        f"output_dir={tmp_path / 'out'}"])  # fmt: skip
    with pytest.raises(ConfigError, match=r"refcoco.refs.*hostile.p: refusing \w+\.system: only plain types"):
        run(cfg)
    assert not marker.exists()
    # the same refs as JSON are read as well
    (tmp_path / "refs.json").write_text(json.dumps(pickle.loads(refs.read_bytes())))
    summary = prep("refcoco", tmp_path / "json", f"refcoco.refs={tmp_path / 'refs.json'}",
                   f"refcoco.instances={instances}", f"refcoco.image_root={images}")  # fmt: skip
    assert summary["kept"] == 3


# -- GRIT ------------------------------------------------------------------------------------------------------
def test_grit_parquet_downloads_and_becomes_grounded_samples(tmp_path, image_server, tokenizer_dir):
    caption = "A red square next to a blue circle on a table."
    chunk = [[0, 12, 0.1, 0.2, 0.5, 0.6, 0.8], [21, 34, 0.5, 0.25, 0.9, 0.75, 0.7]]
    rows = {
        "url": [f"{image_server}/ok/0", f"{image_server}/ok/1", f"{image_server}/missing/2", f"{image_server}/ok/3"],
        "caption": [caption, caption, caption, caption],
        "noun_chunks": [chunk, chunk, chunk, [[0, 12, 0.1, 0.2, 1.5, 0.6, 0.8]]],
        "ref_exps": [[[0, 34, 0.1, 0.2, 0.9, 0.75, 0.6]], [], [], []],
        "width": [320, 640, 320, 320], "height": [240, 480, 240, 240],
    }  # fmt: skip
    pq.write_table(pa.table(rows), tmp_path / "grit.parquet")
    summary = prep("grit", tmp_path / "out", f"grit.input={tmp_path / 'grit.parquet'}", "grit.download.processes=1",
                   "grit.download.threads=4", "grit.download.timeout=5")  # fmt: skip
    # row 1 says 640 x 480 where the server sends 320 x 240: its boxes are fractions, so it is kept; row 2 is
    # a 404; row 3's box leaves the image
    assert summary["errors"] == {"http_404": 1, "box_outside_image": 1}
    assert summary["kept"] == 2
    record, _ = kept(summary)[rows["url"][0]]
    tasks = record.meta["tasks"]
    assert tasks["grounded_caption"] == ("<ref>A red square</ref><box>(100,200),(500,600)</box> next to "
                                         "<ref>a blue circle</ref><box>(500,250),(900,750)</box> on a table.")  # fmt: skip
    assert tasks["ref"] == [{"expression": "A red square next to a blue circle", "box": [100, 200, 900, 750]}]
    assert record.caption == caption
    assert "<|box_start|>(100,200),(500,600)<|box_end|>" in inspected(
        summary, 0, "grounded_caption", tokenizer_dir
    )


# -- Qwen-VL's fine-tuning JSON --------------------------------------------------------------------------------
def test_qwenvl_json_becomes_chatml_with_preprocess_masks(tmp_path, tokenizer, tokenizer_dir):
    images = tmp_path / "assets"
    images.mkdir()
    (images / "demo.jpeg").write_bytes(jpeg())
    (images / "two.jpeg").write_bytes(jpeg())
    entries = [
        {"id": "identity_0", "conversations": [
            {"from": "user", "value": "Hello, who are you?"},
            {"from": "assistant", "value": "I am a model that reads pictures."}]},
        {"id": "identity_1", "conversations": [
            {"from": "user", "value": "Picture 1: <img>assets/demo.jpeg</img>\nWhat colour is the picture?"},
            {"from": "assistant", "value": "It is blue."},
            {"from": "user", "value": "Frame the blue area."},
            {"from": "assistant", "value": "<ref>the blue area</ref><box>(0,0),(999,999)</box>"}]},
        {"id": "identity_2", "conversations": [
            {"from": "assistant", "value": "Ask me about the picture."},
            {"from": "user", "value": "Picture 1: <img>assets/demo.jpeg</img>\nDescribe it."},
            {"from": "assistant", "value": "A blue picture."}]},
        {"id": "two_images", "conversations": [
            {"from": "user", "value": "Picture 1: <img>assets/demo.jpeg</img>\nPicture 2: <img>assets/two.jpeg</img>\nSame?"},
            {"from": "assistant", "value": "Yes."}]},
        {"id": "remote", "conversations": [
            {"from": "user", "value": "Picture 1: <img>https://example.com/a.jpeg</img>\nWhat?"},
            {"from": "assistant", "value": "No idea."}]},
        {"id": "off_grid", "conversations": [
            {"from": "user", "value": "Picture 1: <img>assets/demo.jpeg</img>\nWhere?"},
            {"from": "assistant", "value": "<ref>it</ref><box>(0,0),(1000,999)</box>"}]},
        {"id": "escape", "conversations": [
            {"from": "user", "value": "Picture 1: <img>../../etc/passwd</img>\nWhat?"},
            {"from": "assistant", "value": "Nothing."}]},
        {"id": "bad_role", "conversations": [{"from": "robot", "value": "beep"}]},
    ]  # fmt: skip
    (tmp_path / "train.json").write_text(json.dumps(entries))
    summary = prep("qwenvl", tmp_path / "out", f"qwenvl.input={tmp_path / 'train.json'}",
                   f"qwenvl.image_root={tmp_path}")  # fmt: skip
    assert summary["errors"] == {"multiple_images": 1, "remote_image": 1, "bad_box": 1, "bad_path": 1,
                                 "bad_metadata": 1}  # fmt: skip
    assert summary["kept"] == 3
    out = {k.rsplit(" ", 1)[1]: v for k, v in kept(summary).items()}
    fmt = Formatter(tokenizer, Q, max_length=4096)
    span = IMAGE_START + IMAGE_PAD * Q + IMAGE_END
    for entry in entries[:3]:  # the masks Qwen-VL's preprocess gives the same conversation
        record, _ = out[entry["id"]]
        example = fmt(record, "chatml", random.Random(0))
        # Qwen-VL's tokenizer reads <img>..</img> as the image span and <ref>, <box> as single special tokens
        reference = [{"role": t["from"], "content": to_model_text(re.sub(r"<img>.*?</img>", span, t["value"]))}
                     for t in entry["conversations"]]  # fmt: skip
        assert (example.input_ids, example.labels) == qwen_vl_preprocess(reference, tokenizer), entry["id"]
    assert out["identity_0"][1] is None and out["identity_1"][1] is not None
    assert "]]assistant\n[[" in inspected(
        summary, 0, "chatml", tokenizer_dir
    )  # the answer learnt, not its role


# -- hostile records: every importer counts them, none crashes -------------------------------------------------
def read_all(preset: str, *overrides: str) -> tuple[int, dict[str, int]]:
    """(samples, errors by kind) of a source's read alone, without the rest of the prep job."""
    from data_prep.sample import ReadError
    from data_prep.sources import check_source, plan_parts, read_part

    cfg = load_config(PrepConfig, CONFIG_ROOT / "data" / f"{preset}.yaml", list(overrides))
    check_source(cfg)
    items = [item for spec in plan_parts(cfg) for item in read_part(cfg, spec)]
    errors: dict[str, int] = {}
    for e in (i for i in items if isinstance(i, ReadError)):
        errors[e.kind] = errors.get(e.kind, 0) + 1
    return len(items) - sum(errors.values()), errors


def test_records_of_the_wrong_types_are_counted_not_fatal(tmp_path):
    (tmp_path / "a.jpg").write_bytes(jpeg())
    odd = [None, 3, "x", [1], {"a": 1}]
    coco = {"images": [{"id": v, "file_name": v} for v in odd] + [{"id": 1, "file_name": "a.jpg"}],
            "annotations": [{"image_id": v, "caption": v} for v in odd] + [{"image_id": 1, "caption": "A picture."}]}  # fmt: skip
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    kept_count, errors = read_all(
        "coco", f"coco.input={tmp_path / 'coco.json'}", f"coco.image_root={tmp_path}"
    )
    assert kept_count == 1 and sum(errors.values()) == len(odd)

    karpathy = {"images": [{"filename": v, "filepath": v, "split": "train", "sentences": v} for v in odd]}
    (tmp_path / "karpathy.json").write_text(json.dumps(karpathy))
    kept_count, errors = read_all(
        "coco", f"coco.input={tmp_path / 'karpathy.json'}", f"coco.image_root={tmp_path}"
    )
    assert kept_count == 0 and sum(errors.values()) == len(odd)

    questions = {"data_subtype": "x", "questions": [{"image_id": v, "question": v, "question_id": v} for v in odd]
                 + [{"image_id": v, "question": "Why?", "question_id": 5} for v in odd]}  # fmt: skip
    annotations = {
        "annotations": [{"question_id": v, "answers": v} for v in odd]
        + [{"question_id": 5, "answers": ["y"] * 10}]
    }
    (tmp_path / "q.json").write_text(json.dumps(questions))
    (tmp_path / "an.json").write_text(json.dumps(annotations))
    kept_count, errors = read_all("vqav2", f"vqa.questions={tmp_path / 'q.json'}", f"vqa.annotations={tmp_path / 'an.json'}",
                                  f"vqa.image_root={tmp_path}", "vqa.image_pattern='{image_id}'")  # fmt: skip
    assert kept_count == 0 and sum(errors.values()) == 2 * len(odd)

    instances = {"images": [{"id": v, "file_name": "a.jpg", "width": 200, "height": 160} for v in odd[1:3]],
                 "annotations": [{"id": v, "bbox": v} for v in odd[1:3]]}  # fmt: skip
    refs = [
        {"ref_id": k, "split": "train", "image_id": v, "ann_id": v, "sentences": v} for k, v in enumerate(odd)
    ]
    refs += [{"ref_id": 9, "split": "train", "image_id": 3, "ann_id": "x", "sentences": [{"sent": "it"}]}]
    (tmp_path / "instances.json").write_text(json.dumps(instances))
    (tmp_path / "refs.json").write_text(json.dumps(refs))
    kept_count, errors = read_all("refcoco", f"refcoco.refs={tmp_path / 'refs.json'}",
                                  f"refcoco.instances={tmp_path / 'instances.json'}", f"refcoco.image_root={tmp_path}")  # fmt: skip
    assert kept_count == 0 and errors == {"no_expression": 5, "bad_box": 1}  # "x" is a box of the wrong shape

    dialogues = [{"id": k, "conversations": [{"from": v, "value": v}]} for k, v in enumerate(odd)] + odd
    (tmp_path / "qwenvl.json").write_text(json.dumps(dialogues))
    kept_count, errors = read_all(
        "qwenvl", f"qwenvl.input={tmp_path / 'qwenvl.json'}", f"qwenvl.image_root={tmp_path}"
    )
    assert kept_count == 0 and errors == {"bad_metadata": 2 * len(odd)}
