"""Scoring a predictions file in a benchmark's official results format against the benchmark's own files, by
its official rule: what ``python -m launch.eval score`` runs, for our predictions or any other model's.

- VQA (``vqav2``, ``okvqa``, ``textvqa``, ``vizwiz``): predictions ``[{"question_id", "answer"}]`` as EvalAI
  takes them; questions and annotations in VQAv2's layout, or TextVQA's release file as the annotations alone,
  or VizWiz's own annotation file (predictions ``[{"image", "answer"}]``, as its evaluation server takes
  them). ``vqa_acc`` is the challenge's accuracy (``vqa_accuracy``), with its means per answer type and per
  question type.
- ``gqa``: predictions ``[{"questionId", "prediction"}]`` as GQA's evaluation takes them, against its balanced
  questions file: exact match of the stripped, lower-cased strings (Qwen-VL's
  ``evaluate_exact_match_accuracy``).
- referring (``refcoco``, ``refcoco+``, ``refcocog``): predictions ``[{"sent_id", "bbox": [x1, y1, x2, y2]}]``
  in image pixels, one per expression of the split's refs (REFER's ``refs(<split_by>).p`` or the same list as
  JSON, with ``instances.json``); ``ref_acc`` is the share at IoU >= 0.5 with the object's box. A missing,
  malformed or degenerate box is a miss, as Qwen-VL's evaluation counts an unparsable answer.
- captions (``coco_caption``, ``flickr30k``, ``nocaps``): predictions ``[{"image_id", "caption"}]``, against
  COCO-style ``captions_*.json`` or Karpathy's split file (``split``); CIDEr, BLEU-4, METEOR and ROUGE-L as
  pycocoevalcap's ``COCOEvalCap`` computes them after its PTB tokenizer (SPICE is left out: it downloads
  models). METEOR runs on Java; without Java it is left out and said so.

Every question or image of the benchmark needs exactly one prediction: one missing, repeated or unknown is an
error that names it and the file.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
from pathlib import Path
from typing import Any

from pipeline.benchmarks.vqa_accuracy import vqa_accuracy
from pipeline.data.dataset_files import load_plain_pickle

log = logging.getLogger(__name__)


class ScoringError(ValueError):
    """A predictions or benchmark file that cannot be scored; the message names the file and the item."""


def read_json(path: str | Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ScoringError(f"{what} {path}: {e}") from None


def keyed(path: str | Path, key: str, value: str, text: bool = True) -> dict[Any, Any]:
    """A predictions file (a JSON list of objects) as {its ``key``: its ``value``} (a string if ``text``)."""
    items = read_json(path, "predictions")
    if not isinstance(items, list):
        raise ScoringError(f"predictions {path}: a JSON list of {{{key!r}, {value!r}}} objects is needed")
    out: dict[Any, Any] = {}
    for i, item in enumerate(items):
        if (
            not isinstance(item, dict)
            or key not in item
            or value not in item
            or (text and not isinstance(item[value], str))
        ):
            raise ScoringError(
                f"predictions {path}[{i}]: needs {key!r} and {'a string ' if text else ''}{value!r}"
            )
        if item[key] in out:
            raise ScoringError(f"predictions {path}: {key} {item[key]!r} is predicted twice")
        out[item[key]] = item[value]
    return out


def matched(predictions: dict, expected: list, path: str | Path, what: str) -> list:
    """The predictions in the benchmark's order; every item needs one, and none may be extra."""
    missing = [k for k in expected if k not in predictions]
    if missing:
        raise ScoringError(f"predictions {path}: {what} {missing[0]!r} has no prediction "
                           f"({len(missing)} of {len(expected)} missing)")  # fmt: skip
    extra = set(predictions) - set(expected)
    if extra:
        raise ScoringError(
            f"predictions {path}: {what} {sorted(extra, key=str)[0]!r} is not in the benchmark"
        )
    return [predictions[k] for k in expected]


def restricted(truth: dict, ids: list | None, where: str | Path) -> dict:
    """The benchmark's items, or only ``ids`` of them (a run with --limit scores what it asked)."""
    if ids is None:
        return truth
    unknown = [i for i in ids if i not in truth]
    if unknown:
        raise ScoringError(f"{where}: item {unknown[0]!r} is not in the benchmark")
    return {i: truth[i] for i in ids}


# -- VQA ------------------------------------------------------------------------------------------------------
def vqa_truth(annotations: str | Path, questions: str | Path | None = None) -> tuple[dict[Any, dict], str]:
    """question_id -> {"answers": the humans', "answer_type", "question_type"}, in the questions' order; and
    the key the predictions name a question by (``question_id``, or VizWiz's ``image``)."""
    data = read_json(annotations, "annotations")
    if native_vizwiz(data):  # keyed by image name; no question ids
        return {q["image"]: {"answers": [a.get("answer") for a in q["answers"]], "answer_type": q.get("answer_type", ""),
                             "question_type": ""} for q in data}, "image"  # fmt: skip
    if isinstance(data, dict) and isinstance(data.get("data"), list):  # TextVQA's release file
        return {q["question_id"]: {"answers": list(q["answers"]), "answer_type": "", "question_type": ""}
                for q in data["data"] if isinstance(q, dict) and "question_id" in q}, "question_id"  # fmt: skip
    if not (isinstance(data, dict) and isinstance(data.get("annotations"), list)):
        raise ScoringError(f"annotations {annotations}: neither VQAv2's 'annotations' nor TextVQA's 'data'")
    truth = {}
    for a in data["annotations"]:
        humans = [h.get("answer") for h in a.get("answers") or [] if isinstance(h, dict)]
        if not humans or not all(isinstance(h, str) for h in humans):
            raise ScoringError(
                f"annotations {annotations}: question {a.get('question_id')!r} has no human answers"
            )
        truth[a["question_id"]] = {"answers": humans, "answer_type": a.get("answer_type", ""),
                                   "question_type": a.get("question_type", "")}  # fmt: skip
    if questions is None:
        return truth, "question_id"
    listed = read_json(questions, "questions")
    if not (isinstance(listed, dict) and isinstance(listed.get("questions"), list)):
        raise ScoringError(f"questions {questions}: no 'questions' list")
    ids = [q.get("question_id") for q in listed["questions"] if isinstance(q, dict)]
    lacking = [i for i in ids if i not in truth]
    if lacking:
        raise ScoringError(
            f"annotations {annotations}: question {lacking[0]!r} of {questions} is not annotated"
        )
    return {i: truth[i] for i in ids}, "question_id"


def native_vizwiz(data: Any) -> bool:
    """VizWiz's own annotation file: a list of {image, question, answers, answer_type, answerable}."""
    return isinstance(data, list) and bool(data) and all(isinstance(q, dict) and "image" in q and "answers" in q
                                                         for q in data)  # fmt: skip


def score_vqa(predictions: str | Path, annotations: str | Path, questions: str | Path | None = None,
              ids: list | None = None) -> dict:  # fmt: skip
    truth, key = vqa_truth(annotations, questions)
    truth = restricted(truth, ids, annotations)
    answers = matched(keyed(predictions, key, "answer"), list(truth), predictions, "question")
    accuracies = [vqa_accuracy(p, t["answers"]) for p, t in zip(answers, truth.values(), strict=True)]
    return {"vqa_acc": _mean(accuracies), "questions": len(accuracies),
            "per_answer_type": _grouped(accuracies, [t["answer_type"] for t in truth.values()]),
            "per_question_type": _grouped(accuracies, [t["question_type"] for t in truth.values()])}  # fmt: skip


# -- GQA ------------------------------------------------------------------------------------------------------
def score_gqa(predictions: str | Path, questions: str | Path, ids: list | None = None) -> dict:
    data = read_json(questions, "questions")
    if not isinstance(data, dict) or not all(isinstance(q, dict) and "answer" in q for q in data.values()):
        raise ScoringError(f"questions {questions}: GQA's {{question id: {{..., 'answer'}}}} is needed")
    data = restricted(data, ids, questions)
    answers = matched(keyed(predictions, "questionId", "prediction"), list(data), predictions, "question")
    hits = [
        float(p.strip().lower() == str(q["answer"]).strip().lower())
        for p, q in zip(answers, data.values(), strict=True)
    ]
    return {"accuracy": _mean(hits), "questions": len(hits)}


# -- referring expressions ------------------------------------------------------------------------------------
def load_refs(refs: str | Path) -> list[dict]:
    """REFER's refs: the pickle (plain types only) or the same list as JSON."""
    try:
        data = read_json(refs, "refs") if str(refs).endswith(".json") else load_plain_pickle(refs)
    except (OSError, pickle.UnpicklingError, EOFError, UnicodeDecodeError, ValueError) as e:
        raise ScoringError(f"refs {refs}: {e}") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ScoringError(f"refs {refs}: not REFER's list of refs")
    return data


def ref_truth(refs: str | Path, instances: str | Path, split: str) -> dict[Any, list[float]]:
    """sent_id -> its object's box [x1, y1, x2, y2] in pixels, for every expression of the split's refs."""
    data = load_refs(refs)
    objects = read_json(instances, "instances")
    if not isinstance(objects, dict) or not isinstance(objects.get("annotations"), list):
        raise ScoringError(f"instances {instances}: COCO's 'annotations' list is needed")
    boxes = {a["id"]: a["bbox"] for a in objects["annotations"] if isinstance(a, dict) and "id" in a}
    truth = {}
    for ref in data:
        if ref.get("split") != split:
            continue
        if ref.get("ann_id") not in boxes:
            raise ScoringError(
                f"refs {refs}: ref {ref.get('ref_id')!r}: object {ref.get('ann_id')!r} not in {instances}"
            )
        x, y, w, h = boxes[ref["ann_id"]]
        for sentence in ref.get("sentences") or []:
            truth[sentence["sent_id"]] = [x, y, x + w, y + h]
    if not truth:
        raise ScoringError(f"refs {refs}: no expression in split {split!r}")
    return truth


def box_iou(a: Any, b: list[float]) -> float:
    """IoU of two [x1, y1, x2, y2] boxes in pixels; a prediction that is not four finite numbers, or has no
    area, overlaps nothing."""
    if not (
        isinstance(a, list | tuple)
        and len(a) == 4
        and all(isinstance(v, int | float) and math.isfinite(v) for v in a)
    ):
        return 0.0
    if a[2] <= a[0] or a[3] <= a[1]:
        return 0.0
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def grid_to_pixels(box: list[int], width: int, height: int) -> list[float]:
    """A generated 0-1000 grid box in image pixels, as Qwen-VL's evaluation maps it (coordinate / 999)."""
    return [box[0] / 999 * width, box[1] / 999 * height, box[2] / 999 * width, box[3] / 999 * height]


def score_refcoco(predictions: str | Path, refs: str | Path, instances: str | Path, split: str,
                  ids: list | None = None) -> dict:  # fmt: skip
    truth = restricted(ref_truth(refs, instances, split), ids, refs)
    boxes = matched(keyed(predictions, "sent_id", "bbox", text=False), list(truth), predictions, "expression")
    hits = [float(box_iou(p, t) >= 0.5) for p, t in zip(boxes, truth.values(), strict=True)]
    return {"ref_acc": _mean(hits), "expressions": len(hits), "split": split}


# -- captions -------------------------------------------------------------------------------------------------
def caption_truth(annotations: str | Path, split: str | None = None) -> dict[Any, list[str]]:
    """image id -> its reference captions: COCO's ``captions_*.json`` (every image), or Karpathy's split file
    (the images of ``split``, keyed by ``cocoid`` where there is one, else ``imgid``)."""
    data = read_json(annotations, "annotations")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ScoringError(f"annotations {annotations}: no 'images' list")
    refs: dict[Any, list[str]] = {}
    if "annotations" in data:
        refs = {im["id"]: [] for im in data["images"]}
        for a in data["annotations"]:
            if a.get("image_id") not in refs:
                raise ScoringError(
                    f"annotations {annotations}: caption of unknown image {a.get('image_id')!r}"
                )
            refs[a["image_id"]].append(a["caption"])
    else:
        if split is None:
            raise ScoringError(f"annotations {annotations}: a Karpathy split file needs --split (test, val)")
        for im in data["images"]:
            if im.get("split") == split:
                refs[im.get("cocoid", im.get("imgid"))] = [s["raw"] for s in im["sentences"]]
    empty = [k for k, v in refs.items() if not v]
    if empty or not refs:
        raise ScoringError(f"annotations {annotations}: image {empty[0] if empty else None!r} has no caption")
    return refs


def score_captions(predictions: str | Path, annotations: str | Path, split: str | None = None,
                   ids: list | None = None) -> dict:  # fmt: skip
    refs = restricted(caption_truth(annotations, split), ids, annotations)
    captions = matched(keyed(predictions, "image_id", "caption"), list(refs), predictions, "image")
    scores = coco_caption_scores(refs, dict(zip(refs, captions, strict=True)))
    return {**scores, "images": len(refs)}


def coco_caption_scores(refs: dict[Any, list[str]], predicted: dict[Any, str]) -> dict[str, float]:
    """COCOEvalCap's scores: PTB-tokenised references and predictions, then BLEU-4, METEOR, ROUGE-L, CIDEr."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    ids = {str(k): k for k in refs}  # the tokenizer keys by string, as COCO's image ids go through JSON
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": c} for c in refs[k]] for i, k in ids.items()})
    res = tokenizer.tokenize({i: [{"caption": predicted[k]}] for i, k in ids.items()})
    scores = {"bleu4": Bleu(4).compute_score(gts, res, verbose=0)[0][3], "rouge_l": Rouge().compute_score(gts, res)[0],
              "cider": Cider().compute_score(gts, res)[0]}  # fmt: skip
    meteor = _meteor(gts, res)
    if meteor is not None:
        scores["meteor"] = meteor
    return {k: float(v) for k, v in scores.items()}


def _meteor(gts: dict, res: dict) -> float | None:
    """METEOR through pycocoevalcap's Java jar; None (and a warning) where Java cannot run it."""
    from pycocoevalcap.meteor.meteor import Meteor

    try:
        scorer = Meteor()
    except OSError as e:  # no Java: the score is left out, not faked
        log.warning("METEOR left out: %s", e)
        return None
    try:
        return scorer.compute_score(gts, res)[0]
    except (OSError, ValueError) as e:  # the jar died (memory, a broken install)
        log.warning("METEOR left out: %s", e)
        scorer.meteor_p.kill()
        if scorer.lock.locked():  # its __del__ takes the lock again
            scorer.lock.release()
        return None


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _grouped(values: list[float], groups: list[str]) -> dict[str, float]:
    out: dict[str, list[float]] = {}
    for value, group in zip(values, groups, strict=True):
        if group:
            out.setdefault(group, []).append(value)
    return {g: _mean(v) for g, v in sorted(out.items())}
