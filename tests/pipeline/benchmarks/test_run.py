"""A model through two benchmarks built from the synthetic world in their official layouts (VQAv2, RefCOCO):
predictions in the official results format, scores with the blind twin, the paper's table; and the generated
grid box mapped back to the stored image's pixels."""

import io
import json

import pytest
from PIL import Image

from data_prep.synthetic.benchmarks import write_benchmarks
from pipeline.benchmarks.files import BenchFiles
from pipeline.benchmarks.run import RESULTS, run_benchmark
from pipeline.benchmarks.scoring import ScoringError, score_refcoco, score_vqa
from pipeline.benchmarks.suites import gqa_answer, stored_pixels
from pipeline.data.formats import Formatter
from pipeline.model.vision import image_transform
from pipeline.schema import VisionConfig


def test_a_model_goes_through_vqav2_and_refcoco_from_their_files(
    tmp_path, world_shards, tiny_model, tokenizer
):
    files = write_benchmarks(world_shards, tmp_path / "bench")
    fmt, transform = Formatter(tokenizer, 16, 512), image_transform(VisionConfig(), 56)
    out = tmp_path / "out"
    vqa_files = BenchFiles(images=str(files["images"]), questions=str(files["questions"]),
                           annotations=str(files["annotations"]))  # fmt: skip
    vqa = run_benchmark(tiny_model, tokenizer, fmt, transform, "vqav2", vqa_files, out, limit=6, batch_size=4)
    predictions = json.loads((out / "vqav2" / "predictions.json").read_text())
    assert [p["question_id"] for p in predictions] == [1, 2, 3, 4, 5, 6]
    assert all(set(p) == {"question_id", "answer"} and isinstance(p["answer"], str) for p in predictions)
    assert vqa["items"] == 6 and 0 <= vqa["vqa_acc"] <= 1 and 0 <= vqa["blind"]["vqa_acc"] <= 1
    rescored = score_vqa(
        out / "vqav2" / "predictions.json", files["annotations"], files["questions"], ids=list(range(1, 7))
    )
    assert rescored["vqa_acc"] == vqa["vqa_acc"]

    ref_files = BenchFiles(images=str(files["images"]), refs=str(files["refs"]), instances=str(files["instances"]),
                           split="val")  # fmt: skip
    ref = run_benchmark(
        tiny_model, tokenizer, fmt, transform, "refcoco", ref_files, out, limit=4, batch_size=4
    )
    boxes = json.loads((out / "refcoco-val" / "predictions_blind.json").read_text())
    assert [set(b) for b in boxes] == [{"sent_id", "bbox"}] * 4
    assert all(b["bbox"] is None or len(b["bbox"]) == 4 for b in boxes)
    assert ref["split"] == "val" and "ref_acc" in ref["blind"]
    table = (out / RESULTS).read_text()
    assert (
        "| | Flickr30K | NoCaps | VQAv2 |" in table and "RefCOCO val" in table and "| image-blind |" in table
    )
    # a perfect answer scores 1: the world's boxes, written back on the grid, land inside IoU 0.5
    truth = json.loads(files["instances"].read_text())["annotations"]
    exact = [{"sent_id": b["sent_id"], "bbox": [o["bbox"][0], o["bbox"][1], o["bbox"][0] + o["bbox"][2],
                                                o["bbox"][1] + o["bbox"][3]]} for b, o in zip(boxes, truth, strict=False)]  # fmt: skip
    (tmp_path / "exact.json").write_text(json.dumps(exact))
    ids = [b["sent_id"] for b in boxes]
    assert (
        score_refcoco(tmp_path / "exact.json", files["refs"], files["instances"], "val", ids)["ref_acc"]
        == 1.0
    )


def test_a_missing_image_names_the_item(tmp_path, world_shards, tiny_model, tokenizer):
    files = write_benchmarks(world_shards, tmp_path / "bench")
    first = sorted(files["images"].iterdir())[0]
    first.unlink()
    vqa_files = BenchFiles(images=str(files["images"]), questions=str(files["questions"]),
                           annotations=str(files["annotations"]))  # fmt: skip
    with pytest.raises(ScoringError, match=f"item 1: image .*{first.name}"):
        run_benchmark(tiny_model, tokenizer, Formatter(tokenizer, 16, 512), image_transform(VisionConfig(), 56),
                      "vqav2", vqa_files, tmp_path / "out", limit=2)  # fmt: skip


def test_a_grid_box_goes_back_to_the_stored_pixels(tmp_path):
    image, exif = Image.new("RGB", (200, 100)), Image.Exif()
    exif[0x0112] = 6  # stored 200 x 100, shown turned clockwise: 100 x 200
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    (tmp_path / "turned.jpg").write_bytes(buffer.getvalue())
    # the shown top quarter is the stored left quarter
    left = stored_pixels((0, 0, 999, 250), tmp_path / "turned.jpg")
    assert left == pytest.approx([0.0, 0.0, 250 / 999 * 200, 100.0])
    image.save(tmp_path / "plain.jpg")
    assert stored_pixels((0, 0, 999, 999), tmp_path / "plain.jpg") == pytest.approx([0, 0, 200, 100])


def test_gqa_answers_are_cut_as_qwen_vl_cuts_them():
    assert gqa_answer("The cat is on the left.") == "left"
    assert gqa_answer("Yes, it is.") == "yes"
    assert gqa_answer("a piece of cake") == "piece"


def test_vizwiz_own_files_are_answered_by_image(tmp_path, world_shards, tiny_model, tokenizer):
    files = write_benchmarks(world_shards, tmp_path / "bench")
    names = sorted(p.name for p in files["images"].iterdir())[:2]
    val = [{"image": n, "question": "What is it?", "answer_type": "other", "answerable": 1,
            "answers": [{"answer": "a square", "answer_confidence": "yes"}] * 10} for n in names]  # fmt: skip
    (tmp_path / "val.json").write_text(json.dumps(val))
    vizwiz = BenchFiles(images=str(files["images"]), annotations=str(tmp_path / "val.json"))
    result = run_benchmark(tiny_model, tokenizer, Formatter(tokenizer, 16, 512), image_transform(VisionConfig(), 56),
                           "vizwiz", vizwiz, tmp_path / "out")  # fmt: skip
    predictions = json.loads((tmp_path / "out" / "vizwiz" / "predictions.json").read_text())
    assert [p["image"] for p in predictions] == names and result["items"] == 2
    assert "| VizWiz |" in (tmp_path / "out" / RESULTS).read_text()
