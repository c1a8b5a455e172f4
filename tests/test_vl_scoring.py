"""The VL suite's scoring on hand-made cases that pin each normalisation rule and IoU edge case."""

from __future__ import annotations

import pytest

from emtbench.tasks.vl.scoring import (
    box_iou,
    gqa_exact_match,
    normalize_textvqa_answer,
    normalize_vqa_answer,
    normalized_reference_box,
    parse_box,
    process_punctuation,
    refcoco_scores,
    textvqa_soft_accuracy,
    vqa_soft_accuracy,
)


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("Two", "2"),  # number words become digits
        ("none", "0"),
        ("ten dogs", "10 dogs"),
        ("eleven", "eleven"),  # only zero..ten (and none) are mapped
        ("The dog", "dog"),  # articles dropped
        ("a man and an apple", "man and apple"),
        ("dont", "don't"),  # contractions get their apostrophe
        ("Isnt it", "isn't it"),
        ("yes.", "yes"),  # a period not followed by a digit goes
        ("2.5", "2.5"),  # a decimal point stays
        ("black-and-white", "black and white"),  # punctuation inside a word becomes a space
        ("yes !", "yes"),  # punctuation next to a space is deleted
        ("1,000", "1000"),  # digit groups: every mark is deleted
        ("  red\n", "red"),
        ("t-shirt", "t shirt"),
    ],
)
def test_vqa_answer_normalisation(raw: str, normalized: str) -> None:
    assert normalize_vqa_answer(raw) == normalized


def test_punctuation_keeps_apostrophes_and_colons() -> None:
    assert process_punctuation("o'clock") == "o'clock"
    assert process_punctuation("10:30") == "10:30"


def test_textvqa_normalisation_drops_commas_and_splits_possessive() -> None:
    assert normalize_textvqa_answer("Coca-Cola's") == "coca cola 's"
    assert normalize_textvqa_answer("Stop, now?") == "stop now"


def test_vqa_soft_accuracy_is_the_leave_one_out_mean() -> None:
    # 3 of 10 humans said "2": each left-out subset containing all three scores 1, the three subsets
    # missing one of them score 2/3 -> (7*1 + 3*2/3) / 10 = 0.9.
    answers = ["2", "2", "2", "3", "3", "3", "3", "4", "4", "4"]
    assert vqa_soft_accuracy("two", answers) == pytest.approx(0.9)
    assert vqa_soft_accuracy("3", answers) == pytest.approx(1.0)
    assert vqa_soft_accuracy("5", answers) == 0.0
    # one match: 9 subsets hold it (1/3), the one leaving it out holds none -> 0.3
    assert vqa_soft_accuracy("cat", ["cat"] + ["dog"] * 9) == pytest.approx(0.3)


def test_vqa_soft_accuracy_normalises_prediction_fully_but_references_by_punctuation() -> None:
    # The official script trusts the human answers' wording: "the dog" in a reference stays as is.
    assert vqa_soft_accuracy("the dog", ["the dog"] * 10) == 0.0
    assert vqa_soft_accuracy("The dog!", ["dog"] * 10) == 1.0


def test_textvqa_normalises_references_like_predictions() -> None:
    assert textvqa_soft_accuracy("the Dog", ["The dog"] * 10) == 1.0
    assert textvqa_soft_accuracy("pepsi", ["Pepsi"] * 2 + ["coke"] * 8) == pytest.approx(0.6)


def test_gqa_exact_match_strips_punctuation_and_case_only() -> None:
    assert gqa_exact_match("Yes.", "yes") == 1.0
    assert gqa_exact_match(" left\n", "left") == 1.0
    assert gqa_exact_match("the table", "table") == 0.0  # no article removal in GQA
    assert gqa_exact_match("two", "2") == 0.0  # and no number words


@pytest.mark.parametrize(
    ("text", "box"),
    [
        ("[0.1, 0.2, 0.5, 0.6]", (0.1, 0.2, 0.5, 0.6)),
        (" [0, 0, 1, 1]\n", (0.0, 0.0, 1.0, 1.0)),
        ("[0.5, 0.2, 0.1, 0.6]", None),  # swapped x corners
        ("[0.1, 0.6, 0.5, 0.2]", None),  # swapped y corners
        ("[0.1, 0.1, 0.1, 0.5]", None),  # zero width
        ("[10, 20, 200, 240]", None),  # pixel coordinates: out of [0, 1]
        ("[-0.1, 0.2, 0.5, 0.6]", None),
        ("[0.1, 0.2, 0.5]", None),  # three numbers
        ("(0.1, 0.2, 0.5, 0.6)", None),  # a tuple is not the list the reference asks for
        ("[0.1, 0.2, 0.5, 'x']", None),
        ("[True, 0.2, 0.5, 0.6]", None),
        ("The box is [0.1, 0.2, 0.5, 0.6].", None),  # prose around the box
        ("", None),
        ("[1e999, 0, 1, 1]", None),
    ],
)
def test_parse_box(text: str, box) -> None:
    assert parse_box(text) == box


def test_iou_edge_cases() -> None:
    assert box_iou([0, 0, 0.5, 0.5], [0, 0, 0.5, 0.5]) == pytest.approx(1.0)
    assert box_iou([0, 0, 0.5, 0.5], [0.5, 0, 1, 0.5]) == 0.0  # touching along an edge
    assert box_iou([0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]) == 0.0  # touching at a corner
    assert box_iou([0, 0, 0.4, 0.4], [0.6, 0.6, 1, 1]) == 0.0  # apart
    assert box_iou([0, 0, 1, 1], [0.25, 0.25, 0.75, 0.75]) == pytest.approx(0.25)  # contained
    assert box_iou([0, 0, 0.5, 1], [0.25, 0, 0.75, 1]) == pytest.approx(1 / 3)


def test_refcoco_scores_threshold_and_unparseable() -> None:
    reference = [0.0, 0.0, 0.5, 1.0]
    exactly_half = refcoco_scores("[0.0, 0.0, 0.25, 1.0]", reference)  # IoU = 0.5 exactly
    assert exactly_half == {"acc": 1.0, "iou": pytest.approx(0.5), "unparseable": 0.0}
    below = refcoco_scores("[0.0, 0.0, 0.24, 1.0]", reference)
    assert below["acc"] == 0.0 and below["unparseable"] == 0.0
    assert refcoco_scores("a dog on the left", reference) == {"acc": 0.0, "iou": 0.0, "unparseable": 1.0}


def test_reference_box_is_normalised_xyxy_rounded_to_two_places() -> None:
    assert normalized_reference_box([10, 20, 30, 40], 100, 200) == [0.1, 0.1, 0.4, 0.3]
    assert normalized_reference_box([1, 1, 1, 1], 3, 3) == [0.33, 0.33, 0.67, 0.67]
