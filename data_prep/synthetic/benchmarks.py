"""Synthetic-world shards written as two of the paper's benchmarks, in their official layouts, so that a model
trained on the world goes through the same benchmark code as a real one (``python -m launch.eval --benchmark``):

- VQAv2: ``questions.json`` (``questions``, ``data_subtype``) and ``annotations.json`` (10 human answers per
  question, all the world's answer), images as ``COCO_<subtype>_<image_id:012d>.jpg``;
- RefCOCO: ``refs.json`` (REFER's list of refs, split ``val``) and ``instances.json`` (COCO's images and object
  boxes ``[x, y, w, h]`` in pixels), images by ``file_name``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image

from pipeline.data.shard_format import Skip, expand_urls, parse, read_shards

SUBTYPE = "heldout"


def answer_type(answer: str) -> str:
    return "yes/no" if answer.lower() in ("yes", "no") else "number" if answer.isdigit() else "other"


def write_benchmarks(shards: str, out: Path) -> dict[str, Path]:
    """The VQA and referring ground truth of ``shards`` as VQAv2's and RefCOCO's files under ``out``; returns
    the paths by the flag names of ``launch.eval`` (``images``, ``questions``, ...)."""
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    questions, answers, refs, coco_images, objects = [], [], [], [], []
    for raw in read_shards(expand_urls(shards, key="--shards")):
        try:
            sample = parse(raw)
        except Skip:
            continue
        tasks = sample.meta.get("tasks") or {}
        if sample.image is None or not (tasks.get("vqa") or tasks.get("ref")):
            continue
        image_id = len(coco_images) + 1
        name = f"COCO_{SUBTYPE}_{image_id:012d}.jpg"
        (images / name).write_bytes(sample.image)
        with Image.open(io.BytesIO(sample.image)) as im:
            width, height = im.size
        coco_images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        if tasks.get("vqa"):
            for qa in tasks["vqa"]:
                qid = len(questions) + 1
                questions.append({"image_id": image_id, "question": qa["question"], "question_id": qid})
                answers.append({"question_id": qid, "image_id": image_id, "answer_type": answer_type(qa["answer"]),
                                "question_type": " ".join(qa["question"].lower().split()[:2]),
                                "multiple_choice_answer": qa["answer"],
                                "answers": [{"answer": qa["answer"], "answer_confidence": "yes", "answer_id": k + 1}
                                            for k in range(10)]})  # fmt: skip
        if tasks.get("ref"):
            for ref in tasks["ref"]:
                x1, y1, x2, y2 = ref["box"]
                bbox = [
                    x1 / 1000 * width,
                    y1 / 1000 * height,
                    (x2 - x1) / 1000 * width,
                    (y2 - y1) / 1000 * height,
                ]
                objects.append({"id": len(objects) + 1, "image_id": image_id, "bbox": bbox, "category_id": 1,
                                "area": bbox[2] * bbox[3], "iscrowd": 0})  # fmt: skip
                sent_id = len(refs) + 1
                refs.append({"ref_id": len(refs), "ann_id": objects[-1]["id"], "image_id": image_id, "split": "val",
                             "category_id": 1, "sent_ids": [sent_id],
                             "sentences": [{"sent_id": sent_id, "sent": ref["expression"], "raw": ref["expression"],
                                            "tokens": ref["expression"].split()}]})  # fmt: skip
    files = {"images": images, "questions": out / "questions.json", "annotations": out / "annotations.json",
             "refs": out / "refs.json", "instances": out / "instances.json"}  # fmt: skip
    files["questions"].write_text(json.dumps({"info": {}, "task_type": "Open-Ended", "data_type": "synthetic",
                                              "data_subtype": SUBTYPE, "license": {}, "questions": questions}))  # fmt: skip
    files["annotations"].write_text(json.dumps({"info": {}, "license": {}, "data_subtype": SUBTYPE,
                                                "annotations": answers}))  # fmt: skip
    files["refs"].write_text(json.dumps(refs))
    files["instances"].write_text(json.dumps({"info": {}, "licenses": [], "images": coco_images,
                                              "annotations": objects,
                                              "categories": [{"id": 1, "name": "shape", "supercategory": "shape"}]}))  # fmt: skip
    return files
