"""The paper's benchmarks as read from their own files: what each asks (its items, with Qwen-VL's eval_mm/
prompt, which the task registry holds), how an answer is written in its official results format, and how
that file is scored.

| benchmark | files (``BenchFiles``) | prompt after the image | results format |
|---|---|---|---|
| vqav2, okvqa, textvqa, vizwiz | questions + annotations (VQAv2 layout), TextVQA's release file or VizWiz's own file, images | ``{question} Answer:`` | ``[{question_id, answer}]`` (VizWiz's own: ``[{image, answer}]``) |
| gqa | balanced questions JSON, images | ``{question} Answer:`` | ``[{questionId, prediction}]`` |
| refcoco, refcoco+, refcocog | refs + instances + split, images | ``<ref>{expression}</ref><box>`` | ``[{sent_id, bbox}]``, pixels |
| coco_caption, flickr30k, nocaps | COCO-style captions or Karpathy's file (+ split), images | ``Describe the image in English:`` | ``[{image_id, caption}]`` |
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from PIL import Image

from pipeline.benchmarks import scoring
from pipeline.benchmarks.files import BenchFiles
from pipeline.data.shard_format import orientation
from pipeline.data.tasks import VQA, Caption, Ref
from pipeline.eval_metrics import parse_box


@dataclass
class BenchItem:
    id: Any  # what the results format keys it by
    image: Path
    text: str  # the prompt after the image


class Suite:
    kind: ClassVar[str]
    needs: ClassVar[tuple[str, ...]]
    max_new_tokens: ClassVar[int]

    def items(self, files: BenchFiles) -> list[BenchItem]:
        raise NotImplementedError

    def record(self, item: BenchItem, answer: str) -> dict:
        raise NotImplementedError

    def score(self, predictions: Path, files: BenchFiles, ids: list | None = None) -> dict:
        raise NotImplementedError

    def check(self, files: BenchFiles) -> None:
        if missing := [f"--{n}" for n in self.needs if getattr(files, n) is None]:
            raise scoring.ScoringError(f"{type(self).__name__}: needs {' '.join(missing)}")


class VQASuite(Suite):
    """VQAv2, OK-VQA, TextVQA, VizWiz: Qwen-VL's ``{question} Answer:``, 10 new tokens at most."""

    kind, needs, max_new_tokens = "vqa", ("images", "annotations"), 10

    def __init__(self, pattern: str):
        self.pattern = pattern

    def items(self, files: BenchFiles) -> list[BenchItem]:
        pattern = files.image_pattern or self.pattern
        if files.questions is None:  # the annotations hold the questions: VizWiz's or TextVQA's own file
            data = scoring.read_json(files.annotations, "annotations")
            if scoring.native_vizwiz(data):
                return [BenchItem(q["image"], Path(files.images) / q["image"], VQA.prompt(q["question"].strip()))
                        for q in data]  # fmt: skip
            listed, subtype = (data.get("data") if isinstance(data, dict) else None), ""
        else:
            data = scoring.read_json(files.questions, "questions")
            listed, subtype = (
                (data.get("questions"), data.get("data_subtype", ""))
                if isinstance(data, dict)
                else (None, "")
            )
        if not isinstance(listed, list):
            raise scoring.ScoringError(f"questions {files.questions or files.annotations}: no questions list")
        return [BenchItem(q["question_id"], Path(files.images) / pattern.format(image_id=q["image_id"], subtype=subtype),
                          VQA.prompt(q["question"].strip())) for q in listed]  # fmt: skip

    def record(self, item: BenchItem, answer: str) -> dict:
        if isinstance(item.id, str) and item.id == item.image.name:  # VizWiz's own files key by image
            return {"image": item.id, "answer": answer}
        return {"question_id": item.id, "answer": answer}

    def score(self, predictions: Path, files: BenchFiles, ids: list | None = None) -> dict:
        return scoring.score_vqa(predictions, files.annotations, files.questions, ids)


class GQASuite(Suite):
    kind, needs, max_new_tokens = "gqa", ("images", "questions"), 10

    def items(self, files: BenchFiles) -> list[BenchItem]:
        data = scoring.read_json(files.questions, "questions")
        return [BenchItem(qid, Path(files.images) / f"{q['imageId']}.jpg", VQA.prompt(q["question"].strip()))
                for qid, q in data.items()]  # fmt: skip

    def record(self, item: BenchItem, answer: str) -> dict:
        return {"questionId": item.id, "prediction": gqa_answer(answer)}

    def score(self, predictions: Path, files: BenchFiles, ids: list | None = None) -> dict:
        return scoring.score_gqa(predictions, files.questions, ids)


def gqa_answer(text: str) -> str:
    """A generated sentence cut to GQA's one-word answers, as Qwen-VL's evaluation cuts it."""
    answer = re.split(r"[.,!]", text.strip())[0].lower()
    for lead in ("is ", "are ", "a ", "an ", "the "):
        if lead in answer:
            answer = answer.split(lead)[1]
    return answer.split(" of")[0].strip()


class RefSuite(Suite):
    """RefCOCO/+/g: ``<ref>{expression}</ref><box>``; the generated grid box goes back to the image's pixels."""

    kind, needs, max_new_tokens = "ref", ("images", "refs", "instances", "split"), 28

    def items(self, files: BenchFiles) -> list[BenchItem]:
        refs = scoring.load_refs(files.refs)
        images = {im["id"]: im for im in scoring.read_json(files.instances, "instances")["images"]}
        return [BenchItem(s["sent_id"], Path(files.images) / images[ref["image_id"]]["file_name"], Ref.benchmark_prompt(s["sent"]))
                for ref in refs if ref.get("split") == files.split for s in ref["sentences"]]  # fmt: skip

    def record(self, item: BenchItem, answer: str) -> dict:
        box = parse_box(answer)
        return {"sent_id": item.id, "bbox": None if box is None else stored_pixels(box, item.image)}

    def score(self, predictions: Path, files: BenchFiles, ids: list | None = None) -> dict:
        return scoring.score_refcoco(predictions, files.refs, files.instances, files.split, ids)


# shown -> stored position of a point in [0, 1], per EXIF orientation (the inverse of what a viewer does)
_STORED = {1: lambda x, y: (x, y), 2: lambda x, y: (1 - x, y), 3: lambda x, y: (1 - x, 1 - y),
           4: lambda x, y: (x, 1 - y), 5: lambda x, y: (y, x), 6: lambda x, y: (y, 1 - x),
           7: lambda x, y: (1 - y, 1 - x), 8: lambda x, y: (1 - y, x)}  # fmt: skip


def stored_pixels(box: tuple[int, int, int, int], image: Path) -> list[float]:
    """A grid box the model drew on the image as shown, in the pixels of the image as stored (the frame of the
    benchmark's boxes), the grid read as Qwen-VL's evaluation reads it (coordinate / 999)."""
    with Image.open(io.BytesIO(image.read_bytes())) as im:
        width, height, turn = im.width, im.height, orientation(im)
    corners = [_STORED[turn](x / 999, y / 999) for x, y in ((box[0], box[1]), (box[2], box[3]))]
    xs, ys = sorted(c[0] for c in corners), sorted(c[1] for c in corners)
    return [xs[0] * width, ys[0] * height, xs[1] * width, ys[1] * height]


class CaptionSuite(Suite):
    """Flickr30K, NoCaps, COCO: ``Describe the image in English:``, 30 new tokens at most."""

    kind, needs, max_new_tokens = "caption", ("images", "annotations"), 30

    def items(self, files: BenchFiles) -> list[BenchItem]:
        data = scoring.read_json(files.annotations, "annotations")
        refs = scoring.caption_truth(files.annotations, files.split)
        if "annotations" in data:
            names = {im["id"]: im["file_name"] for im in data["images"]}
        else:
            names = {im.get("cocoid", im.get("imgid")): "/".join(p for p in (im.get("filepath"), im["filename"]) if p)
                     for im in data["images"]}  # fmt: skip
        return [BenchItem(i, Path(files.images) / names[i], Caption.benchmark_prompt()) for i in refs]

    def record(self, item: BenchItem, answer: str) -> dict:
        return {"image_id": item.id, "caption": answer}

    def score(self, predictions: Path, files: BenchFiles, ids: list | None = None) -> dict:
        return scoring.score_captions(predictions, files.annotations, files.split, ids)


SUITES: dict[str, Suite] = {
    "vqav2": VQASuite("COCO_{subtype}_{image_id:012d}.jpg"),
    "okvqa": VQASuite("COCO_{subtype}_{image_id:012d}.jpg"),
    "textvqa": VQASuite("{image_id}.jpg"),
    "vizwiz": VQASuite("{image_id}"),
    "gqa": GQASuite(),
    "refcoco": RefSuite(), "refcoco+": RefSuite(), "refcocog": RefSuite(),
    "coco_caption": CaptionSuite(), "flickr30k": CaptionSuite(), "nocaps": CaptionSuite(),
}  # fmt: skip
