import pytest

from pipeline.eval_metrics import (
    answer_type,
    cider,
    exact_match_accuracy,
    grounded_caption_accuracy,
    grounding_accuracy,
    iou,
    normalize_answer,
    ocr_accuracy,
    parse_box,
)


def test_answers_are_normalised_as_the_vqa_evaluation_does():
    assert normalize_answer("Two.") == normalize_answer("2") == "2"
    assert normalize_answer("The Red circle!") == "red circle"
    assert exact_match_accuracy(["Two.", "blue", "a square"], ["2", "red", "Square"]) == pytest.approx(2 / 3)


def test_boxes_are_parsed_from_tags_or_tokens_and_scored_by_iou():
    assert parse_box("<box>(10,20),(300,400)</box>") == (10, 20, 300, 400)
    assert parse_box("<|box_start|>(1, 2),(3, 4)<|box_end|> and (5,6),(7,8)") == (1, 2, 3, 4)
    assert parse_box("no box here") is None
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0 and iou((0, 0, 10, 10), (10, 10, 20, 20)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    truth = [(0, 0, 100, 100)] * 3
    predictions = ["<box>(0,0),(100,90)</box>", "<box>(50,50),(150,150)</box>", "a circle"]
    assert grounding_accuracy(predictions, truth) == pytest.approx(1 / 3)  # IoU 0.9, 0.14, no box


def test_a_grounded_caption_scores_each_true_phrase_with_its_box():
    truth = ("<ref>A red circle</ref><box>(0,0),(100,100)</box> left of "
             "<|object_ref_start|>a blue square<|object_ref_end|><|box_start|>(500,500),(600,600)<|box_end|>.")  # fmt: skip
    both = "<ref>a red  circle</ref><box>(0,0),(100,90)</box> and <ref>A blue square</ref><box>(500,500),(600,600)</box>"
    assert grounded_caption_accuracy([both], [truth]) == 1.0  # case, spaces and tag forms aside
    one_box_off = both.replace("(500,500),(600,600)", "(0,0),(100,100)")
    assert grounded_caption_accuracy([one_box_off], [truth]) == 0.5
    wrong_phrase = both.replace("A blue square", "a green square")
    assert grounded_caption_accuracy([wrong_phrase, "no boxes"], [truth, truth]) == 0.25
    # a phrase grounded once cannot answer for the same phrase twice
    twice = "<ref>x</ref><box>(0,0),(10,10)</box> <ref>x</ref><box>(0,0),(10,10)</box>"
    assert grounded_caption_accuracy(["<ref>x</ref><box>(0,0),(10,10)</box>"], [twice]) == 0.5


def test_ocr_counts_each_true_word_once():
    text = (
        "<ref>STOP</ref><quad>(1,2),(3,4),(5,6),(7,8)</quad><ref>GO</ref><quad>(1,2),(3,4),(5,6),(7,8)</quad>"
    )
    assert (
        ocr_accuracy([text, "<|object_ref_start|>EXIT<|object_ref_end|>"], [["STOP", "GO", "GO"], ["EXIT"]])
        == 0.75
    )


def test_cider_ranks_a_matching_caption_above_a_wrong_one():
    refs = [["a red circle on a white background"], ["two blue squares on a beige background"],
            ["a small green star on a grey background"]]  # fmt: skip
    right = cider([r[0] for r in refs], refs)
    wrong = cider(["two blue squares on a beige background", "a small green star", "a red circle"], refs)
    assert right > 2 * wrong and right > 1.0
    assert cider([], []) == 0.0


def test_answer_types_follow_vqav2():
    assert [answer_type(a) for a in ("Yes.", "no", "3", "three", "red", "a red circle")] == [
        "yes_no", "yes_no", "number", "number", "other", "other"
    ]  # fmt: skip
