"""VQAv2 accuracy: the official rule (vqaEval.py, 2021 revision) and the Portuguese mode, on hand-checked cases."""
from __future__ import annotations

import pytest

from eval.metrics.vqa import (
    VQAInputError,
    normalize_answer,
    normalize_answer_pt,
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


def test_official_2021_rule_normalises_neither_side_when_annotators_agree():
    # Agreeing references: verbatim comparison on both sides (the 2016 code normalised the answer only).
    assert vqa_accuracy("yes.", ["yes."] * 10) == pytest.approx(1.0)
    assert vqa_accuracy("Yes", ["yes"] * 10) == 0.0  # no lowercasing either
    # One dissenting reference: both sides go through punctuation, digits, articles, contractions.
    assert vqa_accuracy("yes.", ["yes."] * 9 + ["yes"]) == pytest.approx(1.0)
    assert vqa_accuracy("Yes", ["yes"] * 9 + ["no"]) == pytest.approx(1.0)


def test_number_words_articles_and_contractions():
    assert normalize_answer("Two") == "2" and normalize_answer("none") == "0"
    assert normalize_answer("the Dog") == "dog" and normalize_answer("an apple") == "apple"
    assert normalize_answer("dont know") == "don't know" and normalize_answer("Isnt") == "isn't"
    # Disagreeing references are normalised like the answer: "two" and "2" are one answer.
    assert vqa_accuracy("two", ["2"] * 1 + ["two"] * 9) == pytest.approx(1.0)
    assert vqa_accuracy("two", ["2"] * 1 + ["three"] * 9) == pytest.approx(0.3)  # 9 * (1/3) / 10
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
    assert vqa_accuracy("1,000", ["1000"] * 9 + ["1"]) == pytest.approx(1.0)
    assert vqa_accuracy("1,000", ["1000"] * 10) == 0.0  # agreeing references: verbatim


def test_answers_are_cut_to_the_longest_reference():
    refs = ["fire hydrant"] * 6 + ["hydrant"] * 4
    assert truncate_to_references("fire hydrant on the street", refs) == "fire hydrant"
    assert vqa_accuracy("fire hydrant on the street", refs) == pytest.approx(1.0)
    assert vqa_accuracy("fire hydrant on the street", refs, truncate=False) == 0.0
    assert vqa_accuracy("yes it is", ["yes"] * 10) == pytest.approx(1.0)
    # Official rule, agreeing references: nothing is normalised, so the cut keeps the article.
    assert vqa_accuracy("a dog", ["dog"] * 10) == 0.0
    # Portuguese mode: the cut follows normalisation, the article goes first and the answer word survives.
    assert vqa_accuracy("um cão", ["cão"] * 10, mode="pt") == pytest.approx(1.0)
    assert vqa_accuracy("sim, está", ["sim"] * 10, mode="pt") == pytest.approx(1.0)


def test_per_answer_type_and_overall():
    refs = {"q1": ["yes"] * 10, "q2": ["2"] * 3 + ["3"] * 7, "q3": ["red"] * 10, "q4": ["no"] * 10}
    types = {"q1": "yes/no", "q2": "number", "q3": "other", "q4": "yes/no"}
    preds = {"q1": "yes", "q2": "two", "q3": "blue", "q4": "no, it is not"}
    m, scored = vqa_metrics(preds, refs, types)
    # q1 1.0; q2 "2" matches 3 refs -> 0.9; q3 0.0; q4 agreeing refs, not normalised: cut to "no," -> 0.0
    assert m["yes/no"] == pytest.approx(0.5)
    assert m["number"] == pytest.approx(0.9)
    assert m["other"] == 0.0
    assert m["overall"] == pytest.approx((1.0 + 0.9 + 0.0 + 0.0) / 4)
    assert m["n"] == 4
    assert [s.scored_as for s in scored] == ["yes", "2", "blue", "no,"]
    assert scored[3].answer == "no, it is not"
    # The Portuguese mode normalises both sides always: q4 scores 1 (and, English being read as Portuguese,
    # "no" is read as the contraction no = em + o, on both sides alike).
    m, scored = vqa_metrics(preds, refs, types, mode="pt")
    assert m["yes/no"] == pytest.approx(1.0) and scored[3].scored_as == "em"


def test_bad_inputs_are_reported():
    with pytest.raises(VQAInputError, match="no prediction"):
        vqa_metrics({}, {"q": ["a"]}, {"q": "other"})
    with pytest.raises(VQAInputError, match="answer type"):
        vqa_metrics({"q": "a"}, {"q": ["a"]}, {"q": "colour"})
    with pytest.raises(VQAInputError, match="at least one"):
        vqa_accuracy("a", [])
    with pytest.raises(VQAInputError, match="VQA mode 'en'"):
        vqa_accuracy("a", ["a"], mode="en")  # type: ignore[arg-type]


# The issue's table: exact copies of unanimous, never-normalised PT references. The 2016 rule (answer always
# normalised, agreeing references never) scored each 0; the official rule today and the PT mode give 1.
ISSUE_TABLE = ["guarda-chuva", "a comer", "Sim", "1,5"]


@pytest.mark.parametrize("answer", ISSUE_TABLE)
def test_issue_table_exact_copies_of_unanimous_references_score_one(answer):
    assert vqa_accuracy(answer, [answer] * 10) == 1.0
    assert vqa_accuracy(answer, [answer] * 10, mode="pt") == 1.0
    assert normalize_answer(answer) != answer  # the 2016 rule would have compared a changed answer: 0


# (prediction, 10 references, expected accuracy in the Portuguese mode). With m matching references the
# leave-one-out accuracy is 0, 0.3, 0.6, 0.9 for m = 0..3 and 1 from m = 4.
PT_PAIRS = [
    ("Sim", ["sim"] * 10, 1.0),  # case
    ("sim.", ["Sim"] * 10, 1.0),  # case and final period
    ("Não!", ["não"] * 7 + ["nao"] * 3, 1.0),  # accents are kept: "nao" is another word
    ("nao", ["não"] * 7 + ["nao"] * 3, 0.9),
    ("guarda-chuva", ["guarda-chuva"] * 10, 1.0),  # a hyphenated word stays whole...
    ("guarda-chuva", ["guarda chuva"] * 10, 0.0),  # ...so it is not the two words
    ("t-shirt", ["t-shirt"] * 3 + ["camisola"] * 7, 0.9),
    ("azul-claro", ["azul claro"] * 8 + ["azul-claro"] * 2, 0.6),
    ("O cão", ["cão"] * 10, 1.0),  # articles
    ("um gato", ["gato"] * 10, 1.0),
    ("As bananas", ["bananas"] * 2 + ["fruta"] * 8, 0.6),
    ("a comer", ["comer"] * 10, 1.0),
    ("A comer.", ["a comer"] * 10, 1.0),
    ("Um", ["1"] * 10, 1.0),  # a lone um/uma is the number
    ("uma", ["1"] * 4 + ["2"] * 6, 1.0),
    ("dois", ["2"] * 10, 1.0),  # number words
    ("Duas", ["2"] * 2 + ["3"] * 8, 0.6),
    ("três", ["3"] * 3 + ["4"] * 7, 0.9),
    ("dez", ["10"] * 10, 1.0),
    ("cinquenta", ["50"] * 10, 1.0),
    ("cem", ["100"] * 10, 1.0),
    ("vinte e dois", ["22"] * 10, 1.0),
    ("quarenta e dois", ["42"] * 1 + ["40"] * 9, 0.3),
    ("Os dois", ["2"] * 10, 1.0),
    ("nenhum", ["0"] * 10, 1.0),
    ("zero", ["nenhuma"] * 10, 1.0),
    ("3 pessoas", ["três pessoas"] * 4 + ["3"] * 6, 1.0),
    ("1,5", ["1.5"] * 10, 1.0),  # the decimal comma
    ("2,50 €", ["2.50"] * 10, 1.0),
    ("1,5", ["15"] * 10, 0.0),
    ("à esquerda", ["a esquerda"] * 10, 1.0),  # contractions: à = a + a
    ("Às vezes", ["vezes"] * 10, 1.0),
    ("na mesa", ["Na mesa."] * 10, 1.0),
    ("no chão", ["chão"] * 10, 0.0),  # the preposition stays, as "on floor" is not "floor"
    ("pela janela", ["pela janela"] * 5 + ["janela"] * 5, 1.0),
    ("Sim!", ["sim"] * 1 + ["não"] * 9, 0.3),
    ("vermelho e branco", ["vermelho e branco"] * 10, 1.0),
    ("vermelho, branco", ["vermelho branco"] * 10, 1.0),  # punctuation separates words
    ("sim, está", ["sim"] * 10, 1.0),  # cut to the longest reference after normalisation
    ("10h30", ["10:30"] * 10, 0.0),
    ("d'água", ["d\u2019água"] * 10, 1.0),  # typographic apostrophe
]


def test_portuguese_answer_pairs():
    assert len(PT_PAIRS) >= 30
    got = [vqa_accuracy(p, refs, mode="pt") for p, refs, _ in PT_PAIRS]
    wrong = [(p, refs[0], g, e) for (p, refs, e), g in zip(PT_PAIRS, got, strict=True) if g != pytest.approx(e)]
    assert not wrong


def test_portuguese_normalisation_steps():
    assert normalize_answer_pt(" À esquerda, do lado  direito. ") == "esquerda de lado direito"
    assert normalize_answer_pt("Uma mesa") == "mesa" and normalize_answer_pt("uma") == "1"
    assert normalize_answer_pt("vinte e um") == "21" and normalize_answer_pt("vinte e tal") == "20 e tal"
    assert normalize_answer_pt("3,25 m") == "3.25 m" and normalize_answer_pt("fim.") == "fim"
    assert normalize_answer_pt("guarda-chuva_azul") == "guarda-chuva azul"

