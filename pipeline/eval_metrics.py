"""The scores of Qwen-VL's evaluation (its eval_mm/), on generated text: caption CIDEr (pycocoevalcap, PTB
tokenised), VQA accuracy (normalised exact match), referring grounding accuracy (the generated box at IoU >= 0.5
with the true one), grounded-caption phrase accuracy (each grounded phrase generated with its box), OCR word
accuracy and dialogue answer accuracy. Boxes are in Qwen-VL's [0, 1000) grid."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

Box = tuple[int, int, int, int]

_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
            "seven": "7", "eight": "8", "nine": "9", "ten": "10"}  # fmt: skip
_ARTICLES = {"a", "an", "the"}
_PUNCT = re.compile(r"[^\w\s]")
BOX = re.compile(r"\((\d+),\s*(\d+)\),\s*\((\d+),\s*(\d+)\)")
REF = re.compile(r"(?:<ref>|<\|object_ref_start\|>)(.*?)(?:</ref>|<\|object_ref_end\|>)")
GROUNDED = re.compile(  # a phrase and its box, as tags or as the tokenizer's tokens
    r"(?:<ref>|<\|object_ref_start\|>)(.*?)(?:</ref>|<\|object_ref_end\|>)\s*"
    r"(?:<box>|<\|box_start\|>)(.*?)(?:</box>|<\|box_end\|>)"
)


def normalize_answer(text: str) -> str:
    """The VQA evaluation's normalisation: lower case, no punctuation, number words as digits, no articles."""
    words = _PUNCT.sub(" ", text.lower()).split()
    return " ".join(_NUMBERS.get(w, w) for w in words if w not in _ARTICLES)


def exact_match_accuracy(predictions: Sequence[str], answers: Sequence[str]) -> float:
    """VQA and dialogue answers: the share of predictions equal to the answer once both are normalised."""
    pairs = list(zip(predictions, answers, strict=True))
    return sum(normalize_answer(p) == normalize_answer(a) for p, a in pairs) / max(len(pairs), 1)


def answer_type(answer: str) -> str:
    """VQAv2's answer types: ``yes_no``, ``number`` (digits once normalised) or ``other``."""
    norm = normalize_answer(answer)
    return "yes_no" if norm in ("yes", "no") else "number" if norm.isdigit() else "other"


def by_answer_type(answers: Sequence[str]) -> dict[str, list[int]]:
    """The indices of ``answers`` under each answer type present, types sorted."""
    groups: dict[str, list[int]] = {}
    for i, answer in enumerate(answers):
        groups.setdefault(answer_type(answer), []).append(i)
    return dict(sorted(groups.items()))


def parse_box(text: str) -> Box | None:
    """The first box "(x1,y1),(x2,y2)" in generated text (inside <box> tags or the tokenizer's box tokens)."""
    match = BOX.search(text)
    return tuple(int(v) for v in match.groups()) if match else None  # type: ignore[return-value]


def iou(a: Box, b: Box) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0, width) * max(0, height)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def grounding_accuracy(predictions: Sequence[str], boxes: Sequence[Box], threshold: float = 0.5) -> float:
    """The share of predictions whose first box overlaps the true box at IoU >= ``threshold`` (no box: a miss)."""
    hits = 0
    for text, box in zip(predictions, boxes, strict=True):
        found = parse_box(text)
        hits += found is not None and iou(found, tuple(box)) >= threshold
    return hits / max(len(boxes), 1)


def grounded_caption_accuracy(
    predictions: Sequence[str], truths: Sequence[str], threshold: float = 0.5
) -> float:
    """The share of the references' grounded phrases (``<ref>phrase</ref><box>..</box>``) that the prediction
    grounds too: the same phrase (case and spaces aside) with a box at IoU >= ``threshold``, each predicted
    phrase used once."""
    found = total = 0
    for text, truth in zip(predictions, truths, strict=True):
        predicted: dict[str, list[Box]] = {}
        for phrase, box in GROUNDED.findall(text):
            if (parsed := parse_box(box)) is not None:
                predicted.setdefault(" ".join(phrase.lower().split()), []).append(parsed)
        for phrase, box in GROUNDED.findall(truth):
            total += 1
            true_box, boxes = parse_box(box), predicted.get(" ".join(phrase.lower().split()), [])
            hit = next((b for b in boxes if true_box and iou(b, true_box) >= threshold), None)
            if hit is not None:
                boxes.remove(hit)
                found += 1
    return found / max(total, 1)


def ocr_accuracy(predictions: Sequence[str], words: Sequence[Sequence[str]]) -> float:
    """The share of all true words that the prediction reads (each <ref> word once), over every sample."""
    found = total = 0
    for text, truth in zip(predictions, words, strict=True):
        read = Counter(w.strip() for w in REF.findall(text))
        for word in truth:
            total += 1
            if read[word] > 0:
                read[word] -= 1
                found += 1
    return found / max(total, 1)


def cider(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus CIDEr-D as COCO's caption evaluation computes it (PTB tokeniser, which runs on Java)."""
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    if not predictions:
        return 0.0
    tokenizer = PTBTokenizer()
    ids = [str(i) for i in range(len(predictions))]
    res = tokenizer.tokenize({i: [{"caption": p}] for i, p in zip(ids, predictions, strict=True)})
    gts = tokenizer.tokenize(
        {i: [{"caption": r} for r in refs] for i, refs in zip(ids, references, strict=True)}
    )
    score, _ = Cider().compute_score(gts, res)
    return float(score)
