"""Parallel EN / PT-PT VQAv2-style questions about a synthetic scene, with 10 annotator answers each.

Same contract as scenes.py and dialogs.py: an English string always maps to one PT-PT string, so the
questions reuse the VisDial sample's wording ("a forma" / "as formas", always feminine) and the
answers are VQA-style short answers: "yes"/"sim", digits for counts ("2" in both languages, as the
VQAv2 annotations write numbers), the colour noun ("vermelho") and the bare shape noun ("círculo").
Some questions get 1 or 2 dissenting annotators, so the metric's leave-one-out path and its
"normalise only when the answers disagree" rule both run on the sample.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from pipeline.sample.dialogs import NO, YES, Pair, colour_answer, yes_no
from pipeline.sample.scenes import COLOURS, NUMBERS_PT, SHAPES, Scene, inflect_pt

ANSWERS = 10  # annotators per question, as in VQAv2
DISSENT_WEIGHTS = (0.6, 0.25, 0.15)  # P(0, 1, 2 annotators give another answer)
MAX_COUNT = 3  # scenes hold 1..3 shapes; a dissenting count stays in 1..MAX_COUNT + 1


@dataclass(frozen=True)
class VQAQuestion:
    """One question with its right answer and the answers a careless annotator could give instead."""

    question: Pair
    answer_type: str  # yes/no | number | other
    question_type: str  # VQAv2's question_type: the question's opening words
    answer: Pair
    wrong: tuple[Pair, ...]


def count_pair(n: int) -> Pair:
    return str(n), str(n)


def shape_noun(shape: int, plural: bool) -> Pair:
    """The bare shape noun, VQA style ("circle" / "círculo"), unlike VisDial's "a circle" / "um círculo"."""
    en, en_pl, pt, pt_pl, _ = SHAPES[shape]
    return (en_pl, pt_pl) if plural else (en, pt)


def _colour_check(scene: Scene, colour: int) -> Pair:
    c_en, c_pt, _ = COLOURS[colour]
    if scene.count > 1:
        return f"are the shapes {c_en}?", f"as formas são {inflect_pt(c_pt, 'f', True)}?"
    return f"is the shape {c_en}?", f"a forma é {inflect_pt(c_pt, 'f', False)}?"


def _shape_check(scene: Scene, shape: int) -> Pair:
    _, s_en_pl, s_pt, s_pt_pl, s_g = SHAPES[shape]
    if scene.count > 1:
        return f"are they {s_en_pl}?", f"são {s_pt_pl}?"
    return f"is it a {SHAPES[shape][0]}?", f"é {NUMBERS_PT[(1, s_g)]} {s_pt}?"


def yes_no_questions(scene: Scene) -> list[VQAQuestion]:
    """Every yes/no question about the scene's colour and shape (one per colour, one per shape)."""
    plural = scene.count > 1
    out = []
    for c in range(len(COLOURS)):
        right = yes_no(c == scene.colour)
        out.append(VQAQuestion(_colour_check(scene, c), "yes/no", "are the" if plural else "is the",
                               right, (NO if right == YES else YES,)))
    for s in range(len(SHAPES)):
        right = yes_no(s == scene.shape)
        out.append(VQAQuestion(_shape_check(scene, s), "yes/no", "are they" if plural else "is it",
                               right, (NO if right == YES else YES,)))
    return out


def number_question(scene: Scene) -> VQAQuestion:
    wrong = tuple(count_pair(n) for n in (scene.count - 1, scene.count + 1) if 1 <= n <= MAX_COUNT + 1)
    return VQAQuestion(("how many shapes are there?", "quantas formas há?"), "number", "how many",
                       count_pair(scene.count), wrong)


def other_questions(scene: Scene) -> list[VQAQuestion]:
    """What colour / what shape, answered with the colour noun and the bare shape noun."""
    plural = scene.count > 1
    colour_q = ("what colour are the shapes?", "qual é a cor das formas?") if plural else (
        "what colour is the shape?", "qual é a cor da forma?")
    shape_q = ("what shape are they?", "que forma têm?") if plural else ("what shape is it?", "que forma tem?")
    return [
        VQAQuestion(colour_q, "other", "what color are the" if plural else "what color is the",
                    colour_answer(scene.colour),
                    tuple(colour_answer(c) for c in range(len(COLOURS)) if c != scene.colour)),
        VQAQuestion(shape_q, "other", "what", shape_noun(scene.shape, plural),
                    tuple(shape_noun(s, plural) for s in range(len(SHAPES)) if s != scene.shape)),
    ]


def sample_questions(scene: Scene, rng: random.Random) -> list[VQAQuestion]:
    """Three questions per image, one per answer type; yes/no is 'yes' about half the time."""
    yn = yes_no_questions(scene)
    pool = [q for q in yn if q.answer == YES] if rng.random() < 0.5 else [q for q in yn if q.answer == NO]
    return [rng.choice(pool), number_question(scene), rng.choice(other_questions(scene))]


def sample_answers(question: VQAQuestion, rng: random.Random) -> list[tuple[Pair, bool]]:
    """Ten (answer, is_right) pairs: all right, or 1-2 annotators picking a wrong answer."""
    answers = [(question.answer, True)] * ANSWERS
    dissent = rng.choices(range(len(DISSENT_WEIGHTS)), weights=DISSENT_WEIGHTS)[0]
    for pos in rng.sample(range(ANSWERS), dissent):
        answers[pos] = (rng.choice(question.wrong), False)
    return answers


def vqa_pairs(scene: Scene) -> list[Pair]:
    """Every (english, pt) pair the scene's VQA questions can contribute: for one-to-one checks."""
    pairs: list[Pair] = []
    for q in [*yes_no_questions(scene), number_question(scene), *other_questions(scene)]:
        pairs += [q.question, q.answer, *q.wrong]
    return pairs
