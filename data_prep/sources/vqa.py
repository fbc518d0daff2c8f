"""vqa: visual questions with human answers, for VQAv2, OK-VQA and TextVQA.

Two official layouts:

- VQAv2's (OK-VQA's, and TextVQA's as Qwen-VL's evaluation converts it): a questions file (``questions``:
  ``image_id``, ``question``, ``question_id``; ``data_subtype`` names the image folder) and an annotations file
  (``annotations``: ``question_id``, ``answers`` of 10 ``{"answer"}``); ``vqa.annotations`` names it.
- TextVQA's own ``TextVQA_0.5.1_<split>.json``: ``data``, each with ``question``, ``question_id``,
  ``image_id`` and ``answers`` (10 strings); no annotations file.

One sample per question (the unit every count is in). The image is ``vqa.image_pattern`` filled with
``image_id`` and ``subtype``, under ``vqa.image_root``. The training answer is the most common human answer
(the first given among equals); all of them are kept in ``answers`` for evaluation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

from data_prep.config import PrepSettings
from data_prep.sample import ReadError, Sample, sample_key
from data_prep.sources.annotations import BadRecord, image_file, index_parts, read_json, require_dir
from pipeline.config import ConfigError


@dataclass
class Config:
    questions: str = ""  # v2_OpenEnded_mscoco_<split>_questions.json, or TextVQA's own file
    annotations: str = ""  # v2_mscoco_<split>_annotations.json; empty for TextVQA's own file
    image_root: str = ""
    image_pattern: str = "COCO_{subtype}_{image_id:012d}.jpg"  # TextVQA: "{image_id}.jpg"
    lang: str = "en"


def check(cfg: PrepSettings, src: Config) -> None:
    require_dir(src.image_root, "vqa.image_root")
    questions(src)


def plan(cfg: PrepSettings, src: Config) -> list[dict]:
    return index_parts(len(questions(src)), cfg.samples_per_shard)


def read(cfg: PrepSettings, src: Config, spec: dict) -> Iterator[Sample | ReadError]:
    records, answers = questions(src), answer_lists(src)
    for position, index in enumerate(range(spec["start"], spec["end"])):
        q, subtype = records[index]
        where = (
            f"{src.questions} question {q.get('question_id')}"
            if isinstance(q, dict)
            else f"{src.questions}[{index}]"
        )
        try:
            qa = question_answer(q, answers)
            image = image_file(src.image_root, image_name(src, q, subtype))
        except BadRecord as e:
            yield ReadError(where, e.kind, f"{where}: {e}")
            continue
        yield Sample(
            sample_key(spec["part"], position), where, image, None, {"lang": src.lang, "tasks": {"vqa": [qa]}}
        )


def question_answer(q: object, answers: dict) -> dict:
    """One question record -> its ``{"question", "answer", "answers", "question_id"}``."""
    if not isinstance(q, dict) or not isinstance(q.get("question"), str) or not q["question"].strip():
        raise BadRecord("bad_metadata", "no question text")
    qid = q.get("question_id")
    given = q["answers"] if "answers" in q else answers.get(qid) if isinstance(qid, int | str) else None
    if given is None:
        raise BadRecord("no_answer", "no annotation for this question")
    humans = [a.get("answer") if isinstance(a, dict) else a for a in given] if isinstance(given, list) else []
    humans = [a.strip() for a in humans if isinstance(a, str) and a.strip()]
    if not humans:
        raise BadRecord("no_answer", "no usable human answer")
    return {"question": q["question"].strip(), "answer": most_common(humans), "answers": humans,
            "question_id": q.get("question_id")}  # fmt: skip


def most_common(answers: list[str]) -> str:
    """The answer most humans gave (compared case-blind); among equals the first given, as written."""
    counts = Counter(a.lower() for a in answers)
    top = max(counts.values())
    return next(a for a in answers if counts[a.lower()] == top)


def image_name(src: Config, q: dict, subtype: str) -> str:
    try:
        return src.image_pattern.format(image_id=q.get("image_id"), subtype=subtype)
    except (ValueError, TypeError, KeyError) as e:
        raise BadRecord(
            "bad_metadata", f"image_id {q.get('image_id')!r} does not fit vqa.image_pattern: {e}"
        ) from None


def questions(src: Config) -> list[tuple[object, str]]:
    """(question record, image subtype) per question, in file order."""
    data = read_json(src.questions, "vqa.questions")
    if isinstance(data, dict) and isinstance(data.get("questions"), list):
        if not src.annotations:
            raise ConfigError("key 'vqa.annotations': required with a VQAv2-style questions file")
        return [(q, str(data.get("data_subtype", ""))) for q in data["questions"]]
    if isinstance(data, dict) and isinstance(data.get("data"), list):  # TextVQA's own file
        return [(q, str(data.get("dataset_split", ""))) for q in data["data"]]
    raise ConfigError(
        f"key 'vqa.questions': {src.questions} has neither 'questions' (VQAv2) nor 'data' (TextVQA)"
    )


def answer_lists(src: Config) -> dict:
    """question_id -> its human answers (empty without an annotations file)."""
    return _answer_index(src.annotations) if src.annotations else {}


@lru_cache(maxsize=2)
def _answer_index(path: str) -> dict:
    data = read_json(path, "vqa.annotations")
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise ConfigError(f"key 'vqa.annotations': {path} has no 'annotations' list")
    return {a["question_id"]: a.get("answers") for a in data["annotations"]
            if isinstance(a, dict) and isinstance(a.get("question_id"), int | str)}  # fmt: skip
