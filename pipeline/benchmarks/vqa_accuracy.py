"""VQA accuracy exactly as the VQA challenge's evaluation computes it (GT-Vision-Lab/VQA, ``vqaEval.py``; the
same rule EvalAI and Qwen-VL's ``eval_mm/vqa_eval.py`` apply), written here from its rules:

1. the prediction: newlines and tabs to spaces, stripped, then punctuation and then digits, articles and
   contractions processed;
2. the human answers: punctuation processed only when they are not all the same string;
3. for each of the (10) humans, min(1, the other humans that match the prediction / 3); the accuracy is the
   mean over those leave-one-out subsets.

Punctuation: each mark of ``PUNCT`` is deleted where it touches a space or the text has a comma between digits
(``1,000``), else replaced by a space; then a period not followed by a digit is deleted (at most 32 of them: the
reference passes ``re.UNICODE`` where ``re.sub`` takes its count). Digits and articles: lower case, number words
zero to ten as digits, no ``a``/``an``/``the``, and contractions written without their apostrophe given it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

PUNCT = (
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
)
NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
           "seven": "7", "eight": "8", "nine": "9", "ten": "10"}  # fmt: skip
ARTICLES = ("a", "an", "the")
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")
_DIGIT_COMMA = re.compile(r"(\d)(,)(\d)")
_PERIOD_COUNT = int(re.UNICODE)  # the reference's count argument (32)

# the challenge's contraction table: the form without apostrophes (and a few half-written ones) -> the word
_CONTRACTED = """
ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't he'd he'd've
he's how'd how'll how's I'd've I'm I've isn't it'd it'd've it'll ma'am mightn't mightn't've might've mustn't
must've needn't not've o'clock oughtn't 'ow's'at shan't she'd've should've shouldn't shouldn't've
somebody'd've somebody'll somebody's someone'd someone'd've someone'll someone's something'd something'd've
something'll that's there'd there'd've there're there's they'd they'd've they'll they're they've 'twas wasn't
we'd've we've weren't what'll what're what's what've when's where'd where's where've who'd who'd've who'll who's
who've why'll why're why's won't would've wouldn't wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll
you're you've
""".split()


def _spellings(word: str) -> set[str]:
    """The keys the table gives a contracted word: without its apostrophe, or, with several, without any one
    of them."""
    marks = [i for i, c in enumerate(word) if c == "'"]
    return {word.replace("'", "")} if len(marks) == 1 else {word[:i] + word[i + 1 :] for i in marks}


CONTRACTIONS = {key: word for word in _CONTRACTED for key in _spellings(word)}
# the table's own oddities: two words kept as they are ("lets" and "shes" are left alone), one written backwards
CONTRACTIONS.update({"let's": "let's", "she's": "she's", "somebody'd": "somebodyd"})


def process_punctuation(text: str) -> str:
    out = text
    strip_all = _DIGIT_COMMA.search(text) is not None
    for mark in PUNCT:
        if strip_all or mark + " " in text or " " + mark in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD.sub("", out, _PERIOD_COUNT)


def process_digits_articles(text: str) -> str:
    words = [NUMBERS.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def normalise_prediction(text: str) -> str:
    return process_digits_articles(process_punctuation(text.replace("\n", " ").replace("\t", " ").strip()))


def vqa_accuracy(prediction: str, humans: Sequence[str]) -> float:
    """One question's accuracy: the mean over leave-one-out subsets of min(1, matching humans / 3)."""
    if not humans:
        raise ValueError("a question without human answers cannot be scored")
    answer = normalise_prediction(prediction)
    truth = list(humans) if len(set(humans)) == 1 else [process_punctuation(h) for h in humans]
    matches = [h == answer for h in truth]
    total = sum(matches)
    return sum(min(1.0, (total - hit) / 3) for hit in matches) / len(truth)
