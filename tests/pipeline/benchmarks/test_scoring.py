"""Official metrics on files written here in each benchmark's official layout, every score worked out by hand:
VQA accuracy (the challenge's answer processing, leave-one-out over 10 humans), GQA exact match, and the caption
scores of pycocoevalcap; plus ``python -m launch.eval score``."""

import json

import pytest

from launch.eval import main as eval_main
from pipeline.benchmarks.scoring import ScoringError, score_captions, score_gqa, score_vqa
from pipeline.benchmarks.vqa_accuracy import normalise_prediction, vqa_accuracy


@pytest.mark.parametrize(
    ("prediction", "humans", "accuracy"),
    [
        ("red", ["red"] + ["blue"] * 9, 0.3),  # 1 match: 9 subsets hold it (1/3 each), the 10th does not
        ("red", ["red"] * 2 + ["blue"] * 8, 0.6),  # 2: (2 x 1/3 + 8 x 2/3) / 10
        ("red", ["red"] * 3 + ["blue"] * 7, 0.9),  # 3: (3 x 2/3 + 7 x 1) / 10
        ("red", ["red"] * 10, 1.0),
        ("Yes.", ["yes"] * 10, 1.0),  # the prediction's period and capital go
        ("yes !", ["yes"] * 3 + ["no"] * 7, 0.9),  # a mark beside a space is deleted
        (
            "black-and-white",
            ["black and white"] * 3 + ["gray"] * 7,
            0.9,
        ),  # a mark inside a word becomes a space
        ("1,000", ["1000"] * 3 + ["many"] * 7, 0.9),  # a comma between digits: every mark deleted
        ("two", ["2"] * 3 + ["3"] * 7, 0.9),  # number words become digits
        ("two", ["two"] * 10, 0.0),  # ... in the prediction only: the humans' answers are never converted
        ("the dog", ["dog"] * 2 + ["a dog"] * 8, 0.6),  # articles go from the prediction, not from the humans
        ("dont know", ["don't know"] * 3 + ["no"] * 7, 0.9),  # contractions get their apostrophe
        ("", ["yes"] * 10, 0.0),  # an empty prediction
        # humans' punctuation is processed only when they disagree, and never stripped after: a final mark
        # leaves a space, so "cat?" can match nothing, while a mark inside an answer can
        ("black and white", ["black-and-white"] * 3 + ["gray"] * 7, 0.9),
        ("black-and-white", ["black-and-white"] * 10, 0.0),
        ("cat", ["cat?"] * 3 + ["dog"] * 7, 0.0),
    ],
)
def test_vqa_accuracy_follows_the_challenge(prediction, humans, accuracy):
    assert vqa_accuracy(prediction, humans) == pytest.approx(accuracy)


def test_answer_processing_edge_cases():
    assert normalise_prediction("  The\tanswer is\nTen.  ") == "answer is 10"
    assert normalise_prediction("3.5") == "3.5"  # a period before a digit stays
    assert normalise_prediction("it's a cat's toy") == "it's cat's toy"
    assert normalise_prediction("(left)") == "left"


def write(path, data) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def vqa_files(tmp_path):
    humans = {1: ["red"] * 3 + ["blue"] * 7, 2: ["two"] * 10, 3: ["yes"] * 10, 4: ["2"] * 10}
    questions = {"info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": "val2014",
                 "license": {}, "questions": [{"image_id": 9, "question": f"q{i}?", "question_id": i} for i in humans]}  # fmt: skip
    annotations = {"info": {}, "license": {}, "data_subtype": "val2014", "annotations": [
        {"question_id": i, "image_id": 9, "question_type": "what color" if i == 1 else "how many",
         "answer_type": "other" if i == 1 else "number", "multiple_choice_answer": a[0],
         "answers": [{"answer": x, "answer_confidence": "yes", "answer_id": k + 1} for k, x in enumerate(a)]}
        for i, a in humans.items()]}  # fmt: skip
    return write(tmp_path / "q.json", questions), write(tmp_path / "a.json", annotations)


def test_vqav2_files_scored_by_hand(tmp_path):
    questions, annotations = vqa_files(tmp_path)
    predictions = write(tmp_path / "p.json", [{"question_id": 1, "answer": "red"}, {"question_id": 2, "answer": "Two"},
                                              {"question_id": 3, "answer": "Yes"}, {"question_id": 4, "answer": "two"}])  # fmt: skip
    scores = score_vqa(predictions, annotations, questions)
    # q1: 3 of 10 humans -> 0.9; q2: "Two" -> "2" against unconverted "two" -> 0; q3 -> 1; q4: "two" -> "2" -> 1
    assert scores["vqa_acc"] == pytest.approx((0.9 + 0 + 1 + 1) / 4)
    assert scores["per_answer_type"] == pytest.approx({"number": 2 / 3, "other": 0.9})
    assert scores["questions"] == 4


def test_a_question_without_prediction_is_an_error_naming_it(tmp_path):
    questions, annotations = vqa_files(tmp_path)
    predictions = write(tmp_path / "p.json", [{"question_id": i, "answer": "x"} for i in (1, 2, 4)])
    with pytest.raises(ScoringError, match=r"p.json: question 3 has no prediction \(1 of 4 missing\)"):
        score_vqa(predictions, annotations, questions)
    twice = write(tmp_path / "twice.json", [{"question_id": i, "answer": "x"} for i in (1, 2, 3, 4, 4)])
    with pytest.raises(ScoringError, match="question_id 4 is predicted twice"):
        score_vqa(twice, annotations, questions)
    extra = write(tmp_path / "extra.json", [{"question_id": i, "answer": "x"} for i in (1, 2, 3, 4, 77)])
    with pytest.raises(ScoringError, match="question 77 is not in the benchmark"):
        score_vqa(extra, annotations, questions)


def test_textvqa_release_file_as_annotations(tmp_path):
    release = {"dataset_name": "textvqa", "data": [
        {"question_id": 7, "question": "what brand?", "image_id": "ab", "answers": ["Nike"] * 2 + ["nike"] * 8},
        {"question_id": 8, "question": "what number?", "image_id": "cd", "answers": ["12"] * 10}]}  # fmt: skip
    predictions = write(
        tmp_path / "p.json", [{"question_id": 7, "answer": "Nike"}, {"question_id": 8, "answer": "12."}]
    )
    scores = score_vqa(predictions, write(tmp_path / "val.json", release))
    # "Nike" -> "nike", which 8 humans wrote: 1.0; "12." -> "12": 1.0
    assert scores["vqa_acc"] == pytest.approx(1.0)


def test_gqa_exact_match(tmp_path):
    questions = {"201307251": {"imageId": "n1", "question": "Is it red?", "answer": "yes", "fullAnswer": "Yes."},
                 "201640614": {"imageId": "n2", "question": "What is it?", "answer": "cat", "fullAnswer": "A cat."},
                 "202228614": {"imageId": "n3", "question": "Which side?", "answer": "left", "fullAnswer": "Left."}}  # fmt: skip
    predictions = write(tmp_path / "p.json", [{"questionId": "201307251", "prediction": "Yes"},
                                              {"questionId": "201640614", "prediction": "a cat"},
                                              {"questionId": "202228614", "prediction": " left "}])  # fmt: skip
    assert score_gqa(predictions, write(tmp_path / "q.json", questions))["accuracy"] == pytest.approx(2 / 3)


def caption_files(tmp_path):
    captions = {"info": {}, "licenses": [], "images": [{"id": 42, "file_name": "a.jpg"}, {"id": 43, "file_name": "b.jpg"}],
                "annotations": [{"id": k, "image_id": 42, "caption": "A red square on a beige floor."} for k in range(3)]
                + [{"id": 10 + k, "image_id": 43, "caption": "Two dogs running through tall green grass."} for k in range(3)]}  # fmt: skip
    return write(tmp_path / "captions_val2014.json", captions)


def test_captions_scored_with_pycocoevalcap(tmp_path):
    annotations = caption_files(tmp_path)
    exact = write(tmp_path / "p.json", [{"image_id": 42, "caption": "A red square on a beige floor."},
                                        {"image_id": 43, "caption": "Two dogs running through tall green grass."}])  # fmt: skip
    scores = score_captions(exact, annotations)
    # every n-gram of a caption is in its own image's references only, so its idf is log(2) and its tf-idf vector
    # equals the references': CIDEr-D = 10 x (mean over n of cosine 1) = 10 for each image
    assert scores["cider"] == pytest.approx(10.0)
    assert scores["bleu4"] == pytest.approx(1.0, abs=1e-6) and scores["rouge_l"] == pytest.approx(1.0)
    assert 0.9 < scores.get("meteor", 1.0) <= 1.0
    half = write(tmp_path / "half.json", [{"image_id": 42, "caption": "A red square on a beige floor."},
                                          {"image_id": 43, "caption": ""}])  # fmt: skip
    assert score_captions(half, annotations)["cider"] == pytest.approx(5.0)  # an empty caption scores 0


def test_karpathy_split_needs_its_split(tmp_path):
    karpathy = {"dataset": "flickr30k", "images": [
        {"filename": f"{i}.jpg", "imgid": i, "split": split, "sentences": [{"raw": f"A photo number {i}.", "imgid": i}]}
        for i, split in ((0, "test"), (1, "train"))]}  # fmt: skip
    annotations = write(tmp_path / "dataset_flickr30k.json", karpathy)
    predictions = write(tmp_path / "p.json", [{"image_id": 0, "caption": "A photo number 0."}])
    with pytest.raises(ScoringError, match="needs --split"):
        score_captions(predictions, annotations)
    assert score_captions(predictions, annotations, "test")["images"] == 1


def test_score_command_writes_the_scores(tmp_path, capsys):
    questions, annotations = vqa_files(tmp_path)
    predictions = write(tmp_path / "p.json", [{"question_id": i, "answer": "red"} for i in (1, 2, 3, 4)])
    out = tmp_path / "scores" / "s.json"
    argv = ["score", "--benchmark", "vqav2", "--predictions", predictions, "--questions", questions,
            "--annotations", annotations, "--out", str(out)]  # fmt: skip
    assert eval_main(argv) == 0
    scores = json.loads(out.read_text())
    assert scores["benchmark"] == "vqav2" and scores["vqa_acc"] == pytest.approx(0.9 / 4)
    assert 0 <= scores["vqa_acc"] <= 1
    missing = write(tmp_path / "m.json", [{"question_id": 1, "answer": "red"}])
    assert eval_main(argv[:4] + [missing] + argv[5:]) == 2
    assert "question 2 has no prediction" in capsys.readouterr().err


def refcoco_files(tmp_path):
    import pickle

    def ref(ref_id, ann_id, split, *sent_ids):
        return {"ref_id": ref_id, "ann_id": ann_id, "image_id": 5, "split": split, "category_id": 1,
                "sentences": [{"sent_id": s, "sent": f"thing {s}", "raw": f"thing {s}", "tokens": []} for s in sent_ids]}  # fmt: skip

    refs = [
        ref(0, 1, "testA", 10, 11),
        ref(1, 2, "testA", 12),
        ref(2, 3, "testA", 13, 14, 15),
        ref(3, 1, "val", 20),
    ]
    instances = {"images": [{"id": 5, "file_name": "COCO_train2014_000000000005.jpg", "width": 640, "height": 480}],
                 "annotations": [{"id": 1, "image_id": 5, "bbox": [0, 0, 100, 100]},
                                 {"id": 2, "image_id": 5, "bbox": [600, 400, 40, 80]},  # at the image's corner
                                 {"id": 3, "image_id": 5, "bbox": [10, 20, 200, 100]}]}  # fmt: skip
    (tmp_path / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    return str(tmp_path / "refs(unc).p"), write(tmp_path / "instances.json", instances)


def test_refcoco_accuracy_at_iou_half(tmp_path):
    from pipeline.benchmarks.scoring import grid_to_pixels, score_refcoco

    refs, instances = refcoco_files(tmp_path)
    corner = grid_to_pixels([939, 833, 999, 999], 640, 480)  # the generated grid box back in pixels
    assert corner[2:] == [640.0, 480.0]
    predictions = write(tmp_path / "p.json", [
        {"sent_id": 10, "bbox": [0, 0, 100, 100]},  # exact: hit
        {"sent_id": 11, "bbox": [50, 0, 150, 100]},  # IoU 5000 / 15000 = 1/3: miss
        {"sent_id": 12, "bbox": corner},  # 38.4 x 79.8 px inside the 40 x 80 corner box: IoU 0.958, hit
        {"sent_id": 13, "bbox": [10, 20, 210, 70]},  # IoU 10000 / 20000 = 0.5 exactly: hit
        {"sent_id": 14, "bbox": [10, 20, 10, 120]},  # no width: miss
        {"sent_id": 15, "bbox": None},  # nothing parsed from the answer: miss
    ])  # fmt: skip
    scores = score_refcoco(predictions, refs, instances, "testA")
    assert scores == {"ref_acc": 0.5, "expressions": 6, "split": "testA"}
    short = write(
        tmp_path / "short.json", [{"sent_id": s, "bbox": [0, 0, 1, 1]} for s in (10, 11, 12, 13, 15)]
    )
    with pytest.raises(ScoringError, match="expression 14 has no prediction"):
        score_refcoco(short, refs, instances, "testA")
    assert score_refcoco(write(tmp_path / "v.json", [{"sent_id": 20, "bbox": [0, 0, 100, 100]}]), refs, instances,
                         "val")["ref_acc"] == 1.0  # fmt: skip


def test_vizwiz_own_annotation_file(tmp_path):
    val = [{"image": "VizWiz_val_00000000.jpg", "question": "What is this?", "answerable": 1, "answer_type": "other",
            "answers": [{"answer": "soup", "answer_confidence": "yes"}] * 3 + [{"answer": "can", "answer_confidence": "maybe"}] * 7},
           {"image": "VizWiz_val_00000001.jpg", "question": "What colour?", "answerable": 0, "answer_type": "unanswerable",
            "answers": [{"answer": "unanswerable", "answer_confidence": "yes"}] * 10}]  # fmt: skip
    predictions = write(tmp_path / "p.json", [{"image": "VizWiz_val_00000000.jpg", "answer": "soup"},
                                              {"image": "VizWiz_val_00000001.jpg", "answer": "blue"}])  # fmt: skip
    scores = score_vqa(predictions, write(tmp_path / "val.json", val))
    assert scores["vqa_acc"] == pytest.approx((0.9 + 0.0) / 2)
    assert scores["per_answer_type"] == pytest.approx({"other": 0.9, "unanswerable": 0.0})


def test_score_command_on_every_kind_of_benchmark(tmp_path):
    refs, instances = refcoco_files(tmp_path)
    gqa_questions = write(tmp_path / "gqa.json", {"1": {"imageId": "n1", "question": "Is it red?", "answer": "yes"},
                                                 "2": {"imageId": "n2", "question": "What is it?", "answer": "cat"}})  # fmt: skip
    cases = {
        "gqa": (["--questions", gqa_questions], [{"questionId": "1", "prediction": "yes"},
                                                 {"questionId": "2", "prediction": "dog"}], "accuracy", 0.5),
        "refcoco": (["--refs", refs, "--instances", instances, "--split", "val"],
                    [{"sent_id": 20, "bbox": [0, 0, 100, 100]}], "ref_acc", 1.0),
        "flickr30k": (["--annotations", caption_files(tmp_path)],
                      [{"image_id": 42, "caption": "A red square on a beige floor."},
                       {"image_id": 43, "caption": "Two dogs running through tall green grass."}], "cider", 10.0),
    }  # fmt: skip
    for name, (files, predictions, key, expected) in cases.items():
        out = tmp_path / f"{name}.json"
        argv = ["score", "--benchmark", name, "--predictions", write(tmp_path / f"p-{name}.json", predictions),
                *files, "--out", str(out)]  # fmt: skip
        assert eval_main(argv) == 0, name
        assert json.loads(out.read_text())[key] == pytest.approx(expected), name
