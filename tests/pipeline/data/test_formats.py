"""Golden label masks for every task format, written by hand: [[...]] marks the supervised tokens."""

import copy
import random

import pytest

from pipeline.data.formats import Formatter, Record, Skip, available_tasks, choose_task
from pipeline.inspect import marked_text
from pipeline.tokens import IGNORE

Q = 4  # image tokens per image in these examples
IMG = "<|vision_start|><|image_pad|>x4<|vision_end|>"
BOX = [10, 20, 300, 400]
META = {
    "lang": "en",
    "tasks": {
        "vqa": [{"question": "How many circles are there?", "answer": "2"}],
        "grounded_caption": "<ref>a red circle</ref><box>(10,20),(300,400)</box> on a white background.",
        "ref": [{"expression": "the red circle", "box": BOX}],
        "ocr": [{"text": "STOP", "quad": [[1, 2], [3, 4], [5, 6], [7, 8]]}],
        "dialogue": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]},
            {"role": "assistant", "content": "A red circle."},
            {"role": "user", "content": "How many circles?"},
            {"role": "assistant", "content": "Two."},
        ],
    },
}
IMAGE_RECORD = Record("k1", META, "A red circle.", has_image=True)

GOLDEN = {
    "caption": f"{IMG}Generate the caption in English:[[ A red circle.<|endoftext|>]]",
    "vqa": f"{IMG}How many circles are there? Answer:[[ 2<|endoftext|>]]",
    "grounded_caption": f"{IMG}Generate the caption in English with grounding:[[ <|object_ref_start|>a red circle"
    "<|object_ref_end|><|box_start|>(10,20),(300,400)<|box_end|> on a white background.<|endoftext|>]]",
    "ref": f"{IMG}<|object_ref_start|>the red circle<|object_ref_end|>[[<|box_start|>(10,20),(300,400)"
    "<|box_end|><|endoftext|>]]",
    "ocr": f"{IMG}OCR with grounding:[[ <|object_ref_start|>STOP<|object_ref_end|><|quad_start|>"
    "(1,2),(3,4),(5,6),(7,8)<|quad_end|><|endoftext|>]]",
    "chatml": "[[<|im_start|>]]system\nYou are a helpful assistant.[[<|im_end|>\n<|im_start|>]]user\n"
    f"Picture 1: {IMG}\nDescribe the image.[[<|im_end|>\n<|im_start|>]]assistant\n"
    "[[A red circle.<|im_end|>\n<|im_start|>]]user\nHow many circles?[[<|im_end|>\n<|im_start|>]]assistant\n"
    "[[Two.<|im_end|>\n]]",
}


@pytest.fixture(scope="module")
def fmt(tokenizer):
    return Formatter(tokenizer, num_queries=Q, max_length=512)


def check(fmt, record, task, expected):
    example = fmt(record, task, random.Random(0))
    assert marked_text(fmt.tokenizer, example.input_ids, example.labels) == expected
    assert all(label in (i, IGNORE) for i, label in zip(example.input_ids, example.labels, strict=True))
    pads = [i for i, t in enumerate(example.input_ids) if t == fmt.ids.image_pad]
    assert all(example.labels[i] == IGNORE for i in pads)  # never on image positions
    return example


@pytest.mark.parametrize("task", list(GOLDEN))
def test_image_task_golden_masks(fmt, task):
    example = check(fmt, IMAGE_RECORD, task, GOLDEN[task])
    assert example.has_image and example.task == task and not example.truncated


def test_chinese_caption(fmt):
    record = Record("k2", {"lang": "zh"}, "一个红色圆形。", has_image=True)
    check(fmt, record, "caption", f"{IMG}Generate the caption in Chinese:[[ 一个红色圆形。<|endoftext|>]]")


def test_pure_text_is_fully_supervised(fmt):
    record = Record("t1", {"text": "Mixing blue and yellow gives green."}, None, has_image=False)
    example = check(fmt, record, "text", "[[Mixing blue and yellow gives green.<|endoftext|>]]")
    assert not example.has_image


def test_text_only_dialogue_with_its_own_system_message(fmt):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Sides of a square?"},
        {"role": "assistant", "content": "Four."},
    ]
    record = Record("t2", {"messages": messages}, None, has_image=False)
    check(fmt, record, "chatml", "[[<|im_start|>]]system\nBe brief.[[<|im_end|>\n<|im_start|>]]user\n"
          "Sides of a square?[[<|im_end|>\n<|im_start|>]]assistant\n[[Four.<|im_end|>\n]]")  # fmt: skip


def test_an_image_the_dialogue_does_not_show_goes_first_in_the_first_user_turn(fmt):
    meta = {
        "tasks": {
            "dialogue": [{"role": "user", "content": "Colour?"}, {"role": "assistant", "content": "Red."}]
        }
    }
    check(fmt, Record("k3", meta, None, True), "chatml",
          "[[<|im_start|>]]system\nYou are a helpful assistant.[[<|im_end|>\n<|im_start|>]]user\n"
          f"Picture 1: {IMG}\nColour?[[<|im_end|>\n<|im_start|>]]assistant\n[[Red.<|im_end|>\n]]")  # fmt: skip


@pytest.mark.parametrize(
    ("content", "has_image", "reason"),
    [
        ([{"type": "image"}, {"type": "image"}], True, "multiple_images"),
        ([{"type": "image"}], False, "missing_image"),
        ([{"type": "video"}], True, "bad_dialogue"),
    ],
)
def test_unusable_dialogues_are_skipped_with_a_reason(fmt, content, has_image, reason):
    messages = [{"role": "user", "content": content}, {"role": "assistant", "content": "x"}]
    with pytest.raises(Skip) as e:
        fmt(Record("k", {"messages": messages}, None, has_image), "chatml", random.Random(0))
    assert e.value.reason == reason


def test_an_image_sample_whose_dialogue_has_no_user_turn_is_skipped(fmt):
    # a bare assistant turn (dropped, as Qwen-VL's preprocess drops an opening one) leaves nowhere for the image
    messages = [{"role": "system", "content": "s"}, {"role": "assistant", "content": "Red."}]
    with pytest.raises(Skip) as e:
        fmt(Record("k", {"messages": messages}, None, True), "chatml", random.Random(0))
    assert e.value.reason == "bad_dialogue" and "no user turn" in str(e.value)


BROKEN = [  # (task, a change that breaks its ground truth)
    ("caption", lambda m: m.update(lang=["en"])),
    ("vqa", lambda m: m["tasks"]["vqa"][0].pop("answer")),
    ("vqa", lambda m: m["tasks"].update(vqa={"question": "q", "answer": "a"})),
    ("grounded_caption", lambda m: m["tasks"].update(grounded_caption=["a", "b"])),
    ("ref", lambda m: m["tasks"]["ref"][0].update(box=[1, 2, 3])),
    ("ref", lambda m: m["tasks"]["ref"][0].update(box=["1", 2, 3, 4])),
    ("ocr", lambda m: m["tasks"]["ocr"][0].update(quad=[[1, 2], [3, 4], [5, 6]])),
    ("ocr", lambda m: m["tasks"]["ocr"].append("STOP")),
    ("chatml", lambda m: m["tasks"]["dialogue"].append({"role": "user", "content": 5})),
    ("chatml", lambda m: m["tasks"]["dialogue"][0]["content"].append({"type": "text"})),
]


@pytest.mark.parametrize(("task", "breaks"), BROKEN)
def test_malformed_ground_truth_is_a_bad_metadata_skip(fmt, task, breaks):
    meta = copy.deepcopy(META)
    breaks(meta)
    with pytest.raises(Skip) as e:
        fmt(Record("k", meta, "A red circle.", True), task, random.Random(0))
    assert e.value.reason == "bad_metadata" and task in str(e.value)


def test_a_formatter_bug_is_an_exception_not_a_skip(fmt, monkeypatch):
    from pipeline.data.tasks import TASKS

    def broken(record, rng, ids):
        return {}["no such key"]

    monkeypatch.setattr(TASKS["vqa"], "segments", broken)
    with pytest.raises(KeyError):
        fmt(IMAGE_RECORD, "vqa", random.Random(0))


def test_truncation_cuts_text_but_never_an_image_span(tokenizer):
    full = Formatter(tokenizer, Q, 512)(IMAGE_RECORD, "caption", random.Random(0))
    image_end = Q + 2  # <|vision_start|> + Q pads + <|vision_end|>
    cut = Formatter(tokenizer, Q, len(full.input_ids) - 2)(IMAGE_RECORD, "caption", random.Random(0))
    assert cut.truncated and cut.input_ids == full.input_ids[:-2] and cut.labels == full.labels[:-2]
    with pytest.raises(Skip) as e:  # the image span itself would be cut
        Formatter(tokenizer, Q, image_end - 1)(IMAGE_RECORD, "caption", random.Random(0))
    assert e.value.reason == "image_cut"
    with pytest.raises(Skip) as e:  # nothing supervised would be left
        Formatter(tokenizer, Q, image_end + 3)(IMAGE_RECORD, "caption", random.Random(0))
    assert e.value.reason == "no_target"


def test_tasks_are_drawn_by_weight_among_those_a_sample_has():
    assert available_tasks(IMAGE_RECORD) == ["caption", "vqa", "grounded_caption", "ref", "ocr", "chatml"]
    text = Record("t", {"text": "x"}, None, has_image=False)
    assert available_tasks(text) == ["text"]
    rng = random.Random(0)
    draws = [choose_task(IMAGE_RECORD, {"caption": 3.0, "vqa": 1.0, "text": 100.0}, rng) for _ in range(4000)]
    assert set(draws) == {"caption", "vqa"}
    assert draws.count("caption") / len(draws) == pytest.approx(0.75, abs=0.03)
    with pytest.raises(Skip) as e:
        choose_task(text, {"caption": 1.0}, rng)
    assert e.value.reason == "no_task"


def test_generation_prompts_end_where_the_answer_starts(fmt):
    decode = fmt.tokenizer.decode
    image = "<|vision_start|>" + "<|image_pad|>" * Q + "<|vision_end|>"
    assert decode(fmt.task_prompt("What colour? Answer:", True)) == f"{image}What colour? Answer:"
    assert decode(fmt.task_prompt("Hello", False)) == "Hello"
    messages = [{"role": "user", "content": "Describe it."}, {"role": "assistant", "content": "A circle."},
                {"role": "user", "content": "Colour?"}]  # fmt: skip
    assert decode(fmt.chat_prompt(messages, True)) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        f"Picture 1: {image}\nDescribe it.<|im_end|>\n<|im_start|>assistant\nA circle.<|im_end|>\n"
        "<|im_start|>user\nColour?<|im_end|>\n<|im_start|>assistant\n"
    )


@pytest.mark.parametrize("task", ["caption", "vqa", "ref", "chatml"])
def test_without_images_a_task_is_its_text_alone_with_the_same_targets(fmt, task):
    seeing = fmt(IMAGE_RECORD, task, random.Random(0))
    text = fmt(IMAGE_RECORD, task, random.Random(0), images=False)
    assert not text.has_image and fmt.ids.image_pad not in text.input_ids
    assert fmt.ids.image_start not in text.input_ids and fmt.ids.image_end not in text.input_ids
    assert [t for t in text.labels if t != IGNORE] == [t for t in seeing.labels if t != IGNORE]
    assert len(seeing.input_ids) - len(text.input_ids) == Q + 2  # the span, nothing else
