"""VQAv2 accuracy with the official normalisation, on hand-checkable cases."""
from __future__ import annotations

import pytest

from eval.metrics.vqa import (
    VQAInputError,
    normalize_answer,
    process_punctuation,
    truncate_to_references,
    vqa_accuracy,
    vqa_metrics,
)


def test_leave_one_out_min_matches_over_three():
    # 2 of 10 say "red": held-out "red" -> 1 match /3; held-out other -> 2/3.  (2*1/3 + 8*2/3) / 10
    assert vqa_accuracy("red", ["red"] * 2 + ["blue"] * 8) == pytest.approx(0.6)
    # 3 of 10: held-out "red" -> 2/3, otherwise 3 matches -> 1.  (3*2/3 + 7) / 10
    assert vqa_accuracy("red", ["red"] * 3 + ["blue"] * 7) == pytest.approx(0.9)
    assert vqa_accuracy("red", ["red"] * 4 + ["blue"] * 6) == pytest.approx(1.0)
    assert vqa_accuracy("green", ["red"] * 4 + ["blue"] * 6) == 0.0


def test_unanimous_references_skip_normalisation():
    # The generated answer is always normalised ("yes." -> "yes"); unanimous references are not.
    assert vqa_accuracy("yes.", ["yes."] * 10) == 0.0
    # One dissenting reference makes the references go through the punctuation rules too.
    assert vqa_accuracy("yes.", ["yes."] * 9 + ["yes"]) == pytest.approx(1.0)
    assert vqa_accuracy("Yes", ["yes"] * 10) == pytest.approx(1.0)  # lowercasing is on the answer side


def test_number_words_articles_and_contractions():
    assert normalize_answer("Two") == "2" and normalize_answer("none") == "0"
    assert normalize_answer("the Dog") == "dog" and normalize_answer("an apple") == "apple"
    assert normalize_answer("dont know") == "don't know" and normalize_answer("Isnt") == "isn't"
    # references "two" are NOT mapped to digits (only punctuation touches them): 5 of 10 match "2".
    assert vqa_accuracy("two", ["2"] * 5 + ["two"] * 5) == pytest.approx(1.0)
    assert vqa_accuracy("two", ["2"] * 1 + ["two"] * 9) == pytest.approx(0.3)  # only the one "2": 9*(1/3)/10
    assert vqa_accuracy("a dog", ["dog"] * 3 + ["puppy"] * 7) == pytest.approx(0.9)
    assert vqa_accuracy("dont know", ["don't know"] * 4 + ["no idea"] * 6) == pytest.approx(1.0)


def test_punctuation_rules():
    assert process_punctuation("t-shirt") == "t shirt"  # not touching a space: replaced by a space
    assert process_punctuation("red, white") == "red white"  # touching a space: deleted
    assert process_punctuation("1,000") == "1000"  # comma between digits: every mark deleted
    assert process_punctuation("1,000-2") == "10002"
    assert process_punctuation("3.5") == "3.5"  # a period before a digit stays
    assert process_punctuation("yes.") == "yes"
    assert normalize_answer("What?!") == "what"
    assert vqa_accuracy("1,000", ["1000"] * 10) == pytest.approx(1.0)


def test_answers_are_cut_to_the_longest_reference():
    refs = ["fire hydrant"] * 6 + ["hydrant"] * 4
    assert truncate_to_references("fire hydrant on the street", refs) == "fire hydrant"
    assert vqa_accuracy("fire hydrant on the street", refs) == pytest.approx(1.0)
    assert vqa_accuracy("fire hydrant on the street", refs, truncate=False) == 0.0
    assert vqa_accuracy("yes it is", ["yes"] * 10) == pytest.approx(1.0)
    # The cut follows normalisation: the article goes first, the answer word survives.
    assert vqa_accuracy("a dog", ["dog"] * 10) == pytest.approx(1.0)


def test_per_answer_type_and_overall():
    refs = {"q1": ["yes"] * 10, "q2": ["2"] * 3 + ["3"] * 7, "q3": ["red"] * 10, "q4": ["no"] * 10}
    types = {"q1": "yes/no", "q2": "number", "q3": "other", "q4": "yes/no"}
    preds = {"q1": "Yes", "q2": "two", "q3": "blue", "q4": "no, it is not"}
    m, scored = vqa_metrics(preds, refs, types)
    # q1 1.0; q2 "2" matches 3 refs -> 0.9; q3 0.0; q4 "no it is not" cut to "no" -> 1.0
    assert m["yes/no"] == pytest.approx(1.0)
    assert m["number"] == pytest.approx(0.9)
    assert m["other"] == 0.0
    assert m["overall"] == pytest.approx((1.0 + 0.9 + 0.0 + 1.0) / 4)
    assert m["n"] == 4
    assert [s.scored_as for s in scored] == ["yes", "2", "blue", "no"]
    assert scored[3].answer == "no, it is not"


def test_bad_inputs_are_reported():
    with pytest.raises(VQAInputError, match="no prediction"):
        vqa_metrics({}, {"q": ["a"]}, {"q": "other"})
    with pytest.raises(VQAInputError, match="answer type"):
        vqa_metrics({"q": "a"}, {"q": ["a"]}, {"q": "colour"})
    with pytest.raises(VQAInputError, match="at least one"):
        vqa_accuracy("a", [])
