"""Parallel EN / PT-PT questions and answers about a synthetic scene, for the VisDial-style sample.

Same contract as the captions in scenes.py: an English string always maps to one PT-PT string.
That rules out PT forms that would need the (English-invisible) gender of the shape, so questions
name "a forma" / "as formas" (always feminine), colours are answered with the colour noun
("qual é a cor da forma?" - "vermelho") and counts agree with "formas" ("duas", not "dois").
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import combinations

from pipeline.sample.scenes import (
    COLOURS,
    NUMBERS_EN,
    NUMBERS_PT,
    POSITIONS,
    SHAPES,
    Scene,
    captions,
    inflect_pt,
)

Pair = tuple[str, str]  # (english, pt-pt)
YES: Pair = ("yes", "sim")
NO: Pair = ("no", "não")
DRAWING: Pair = ("no, it is a drawing", "não, é um desenho")
GREY: Pair = ("grey", "cinzento")
# Answers that mean the same as yes / no / "a drawing": relevance 0.5 in the dense annotations.
SAME_AS: dict[Pair, list[Pair]] = {
    YES: [("i think so", "acho que sim"), ("yes, definitely", "sim, sem dúvida")],
    NO: [("i don't think so", "acho que não"), ("no, not at all", "não, de todo")],
    DRAWING: [("it is a drawing", "é um desenho"), ("a drawing", "um desenho")],
}
# Plausible answers that are never right: they fill the 100 options as real VisDial's do.
FILLERS: list[Pair] = [
    ("i can't tell", "não sei dizer"),
    ("i'm not sure", "não tenho a certeza"),
    ("maybe", "talvez"),
    ("probably", "provavelmente"),
    ("it's hard to say", "é difícil dizer"),
    ("i can't see it", "não consigo ver"),
    ("i don't know", "não sei"),
    ("sorry, i can't tell", "desculpe, não sei dizer"),
]


def yes_no(flag: bool) -> Pair:
    return YES if flag else NO


def hedged(answer: Pair) -> Pair:
    """The same answer, less sure: semantically equal for the dense relevance scores."""
    return (f"{answer[0]}, i think", f"{answer[1]}, acho eu")


def colour_answer(colour: int) -> Pair:
    """The colour noun (masculine in PT whatever the shape's gender)."""
    return COLOURS[colour][0], COLOURS[colour][1]


def shape_answer(shape: int, plural: bool) -> Pair:
    en, en_pl, pt, pt_pl, g = SHAPES[shape]
    if plural:
        return en_pl, pt_pl
    return f"a {en}", f"{NUMBERS_PT[(1, g)]} {pt}"


def count_answer(count: int) -> Pair:
    return NUMBERS_EN[count], NUMBERS_PT[(count, "f")]  # agrees with "formas"


def positions_answer(slots: tuple[int, ...]) -> Pair:
    """'in the top left corner and in the center' / 'no canto superior esquerdo e no centro'."""
    en = [POSITIONS[s][0] for s in slots]
    pt = [POSITIONS[s][1] for s in slots]
    if len(slots) == 1:
        return en[0], pt[0]
    return ", ".join(en[:-1]) + " and " + en[-1], ", ".join(pt[:-1]) + " e " + pt[-1]


def answer_universe() -> list[Pair]:
    """Every answer string the sample can use, in a fixed order: data.answers of the VisDial sample."""
    base: list[Pair] = [colour_answer(c) for c in range(len(COLOURS))] + [GREY]
    base += [shape_answer(s, p) for p in (False, True) for s in range(len(SHAPES))]
    base += [count_answer(n) for n in sorted(NUMBERS_EN)]
    base += [positions_answer(c) for k in (1, 2, 3) for c in combinations(range(len(POSITIONS)), k)]
    out = base + [hedged(a) for a in base] + [YES, NO, DRAWING]
    out += [p for group in SAME_AS.values() for p in group] + FILLERS
    assert len(set(out)) == len(out)
    return out


def relevance(answer: Pair, option: Pair) -> float:
    """Dense relevance of `option` when `answer` is right: 1 for it, 0.5 for the same meaning, else 0."""
    if option == answer:
        return 1.0
    return 0.5 if option in SAME_AS.get(answer, [hedged(answer)]) else 0.0


@dataclass(frozen=True)
class QA:
    question: Pair
    answer: Pair


def question_groups(scene: Scene) -> list[list[QA]]:
    """The questions one can ask about `scene`, grouped by topic; a group holds every variant (e.g. one
    colour check per colour), so a dialog asks at most one question per topic."""
    plural = scene.count > 1
    pos = set(scene.slots)
    left, centre = {0, 2}, {4}
    any_shape = [
        QA((f"are there any {SHAPES[s][1]}?", f"há {SHAPES[s][3]}?"), yes_no(s == scene.shape))
        for s in range(len(SHAPES))
    ]
    common = [
        [QA(("how many shapes are there?", "quantas formas há?"), count_answer(scene.count))],
        [QA(("is the background grey?", "o fundo é cinzento?"), YES)],
        [QA(("what colour is the background?", "qual é a cor do fundo?"), GREY)],
        any_shape,
        [QA(("is there anything else in the picture?", "há mais alguma coisa na imagem?"), NO)],
        [QA(("is it a photo?", "é uma fotografia?"), DRAWING)],
        [QA(("is the image in colour?", "a imagem é a cores?"), YES)],
    ]
    if not plural:
        en, _, pt, _, g = SHAPES[scene.shape]
        return common + [
            [QA(("what colour is the shape?", "qual é a cor da forma?"), colour_answer(scene.colour))],
            [QA(("what shape is it?", "que forma tem?"), shape_answer(scene.shape, False))],
            [QA(("is it large?", "é grande?"), yes_no(scene.size == 1))],
            [QA(("where is it?", "onde está?"), positions_answer(scene.slots))],
            [
                QA((f"is the shape {c_en}?", f"a forma é {inflect_pt(c_pt, 'f', False)}?"), yes_no(c == scene.colour))
                for c, (c_en, c_pt, _) in enumerate(COLOURS)
            ],
            [
                QA((f"is it a {s_en}?", f"é {NUMBERS_PT[(1, s_g)]} {s_pt}?"), yes_no(s == scene.shape))
                for s, (s_en, _, s_pt, _, s_g) in enumerate(SHAPES)
            ],
            [QA(("is it in the center?", "está no centro?"), yes_no(bool(pos & centre)))],
            [QA(("is it on the left?", "está à esquerda?"), yes_no(bool(pos & left)))],
        ]
    return common + [
        [QA(("what colour are the shapes?", "qual é a cor das formas?"), colour_answer(scene.colour))],
        [QA(("what shape are they?", "que forma têm?"), shape_answer(scene.shape, True))],
        [QA(("are they large?", "são grandes?"), yes_no(scene.size == 1))],
        [QA(("where are they?", "onde estão?"), positions_answer(scene.slots))],
        [
            QA((f"are the shapes {c_en}?", f"as formas são {inflect_pt(c_pt, 'f', True)}?"), yes_no(c == scene.colour))
            for c, (c_en, c_pt, _) in enumerate(COLOURS)
        ],
        [
            QA((f"are they {s_en_pl}?", f"são {s_pt_pl}?"), yes_no(s == scene.shape))
            for s, (_, s_en_pl, _, s_pt_pl, _) in enumerate(SHAPES)
        ],
        [QA(("is any shape in the center?", "alguma forma está no centro?"), yes_no(bool(pos & centre)))],
        [QA(("are the shapes the same colour?", "as formas são da mesma cor?"), YES)],
    ]


def sample_dialog(scene: Scene, rng: random.Random, rounds: int = 10) -> list[QA]:
    """`rounds` questions on distinct topics, one variant each, in random order."""
    groups = question_groups(scene)
    return [rng.choice(group) for group in rng.sample(groups, rounds)]


def all_pairs(scene: Scene) -> list[Pair]:
    """Every (english, pt) pair a scene can contribute: for checks of the one-to-one mapping."""
    pairs = list(captions(scene))
    for group in question_groups(scene):
        for qa in group:
            pairs += [qa.question, qa.answer]
    return pairs
