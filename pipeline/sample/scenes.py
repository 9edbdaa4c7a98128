"""Scene model, renderer and parallel EN / PT-PT caption templates for the synthetic sample.

Every English template has exactly one PT-PT counterpart, so an English string always maps to the
same Portuguese string: the PT side can seed a `reference` translation memory keyed by the English
text.  PT-PT grammar is honoured (noun-adjective agreement in gender and number, "cinzento" not
"cinza", "fotografia" not "foto", "há" for "there is/are").
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

# (english, pt masculine singular, rgb)
COLOURS: list[tuple[str, str, tuple[int, int, int]]] = [
    ("red", "vermelho", (215, 40, 40)),
    ("green", "verde", (40, 160, 60)),
    ("blue", "azul", (40, 80, 215)),
    ("yellow", "amarelo", (235, 205, 30)),
    ("purple", "roxo", (130, 50, 170)),
    ("orange", "laranja", (245, 135, 20)),
]
# (english, english plural, pt singular, pt plural, pt gender)
SHAPES: list[tuple[str, str, str, str, str]] = [
    ("circle", "circles", "círculo", "círculos", "m"),
    ("square", "squares", "quadrado", "quadrados", "m"),
    ("triangle", "triangles", "triângulo", "triângulos", "m"),
    ("star", "stars", "estrela", "estrelas", "f"),
]
SIZES: list[tuple[str, str]] = [("small", "pequeno"), ("large", "grande")]
# (english phrase, pt phrase, centre as a fraction of the image side)
POSITIONS: list[tuple[str, str, tuple[float, float]]] = [
    ("in the top left corner", "no canto superior esquerdo", (0.27, 0.27)),
    ("in the top right corner", "no canto superior direito", (0.73, 0.27)),
    ("in the bottom left corner", "no canto inferior esquerdo", (0.27, 0.73)),
    ("in the bottom right corner", "no canto inferior direito", (0.73, 0.73)),
    ("in the center", "no centro", (0.5, 0.5)),
]
NUMBERS_EN = {1: "one", 2: "two", 3: "three"}
NUMBERS_PT = {(1, "m"): "um", (1, "f"): "uma", (2, "m"): "dois", (2, "f"): "duas", (3, "m"): "três", (3, "f"): "três"}


def inflect_pt(adjective: str, gender: str, plural: bool) -> str:
    """Agree a PT adjective (given in masculine singular) with its noun."""
    if adjective == "laranja":  # colour nouns used as adjectives stay invariable in PT-PT
        return adjective
    if adjective.endswith("o"):
        stem = adjective[:-1] + ("a" if gender == "f" else "o")
        return stem + ("s" if plural else "")
    if adjective.endswith("l"):  # azul -> azuis
        return adjective[:-1] + "is" if plural else adjective
    return adjective + ("s" if plural else "")  # verde, grande


def _article_en(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


@dataclass(frozen=True)
class Scene:
    """One image: `count` copies of the same shape, colour and size.  `position` is where the single
    shape is (count == 1); several shapes take distinct `slots`."""

    shape: int
    colour: int
    size: int
    count: int
    position: int
    slots: tuple[int, ...]
    background: int  # grey level
    jitter: tuple[tuple[float, float], ...]

    @property
    def words_en(self) -> dict[str, str]:
        return {"colour": COLOURS[self.colour][0], "shape": SHAPES[self.shape][0], "size": SIZES[self.size][0]}

    @property
    def words_pt(self) -> dict[str, str]:
        g = SHAPES[self.shape][4]
        plural = self.count > 1
        return {
            "colour": inflect_pt(COLOURS[self.colour][1], g, plural),
            "shape": SHAPES[self.shape][3 if plural else 2],
            "size": inflect_pt(SIZES[self.size][1], g, plural),
        }


def sample_scene(rng: random.Random) -> Scene:
    count = rng.choices([1, 2, 3], weights=[0.6, 0.25, 0.15])[0]
    slots = tuple(sorted(rng.sample(range(len(POSITIONS)), count)))
    return Scene(
        shape=rng.randrange(len(SHAPES)),
        colour=rng.randrange(len(COLOURS)),
        size=rng.randrange(len(SIZES)),
        count=count,
        position=slots[0],
        slots=slots,
        background=rng.randrange(190, 240),
        jitter=tuple((rng.uniform(-0.04, 0.04), rng.uniform(-0.04, 0.04)) for _ in slots),
    )


def _shape_points(kind: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if kind == "triangle":
        return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    if kind == "star":
        pts = []
        for i in range(10):
            a = -math.pi / 2 + i * math.pi / 5
            rr = r if i % 2 == 0 else r * 0.45
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        return pts
    raise ValueError(kind)


def render(scene: Scene, size: int = 64) -> Image.Image:
    """Draw the scene as an RGB image of `size` x `size` pixels."""
    bg = scene.background
    img = Image.new("RGB", (size, size), (bg, bg, bg))
    draw = ImageDraw.Draw(img)
    rgb = COLOURS[scene.colour][2]
    kind = SHAPES[scene.shape][0]
    # Several shapes must not overlap, so large ones shrink a little when count > 1.
    r = size * (0.11 if scene.size == 0 else (0.2 if scene.count == 1 else 0.16))
    for slot, (jx, jy) in zip(scene.slots, scene.jitter, strict=True):
        fx, fy = POSITIONS[slot][2]
        cx, cy = (fx + jx) * size, (fy + jy) * size
        if kind == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=rgb)
        elif kind == "square":
            s = r * 0.9
            draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=rgb)
        else:
            draw.polygon(_shape_points(kind, cx, cy, r * 1.1), fill=rgb)
    return img


def captions(scene: Scene) -> list[tuple[str, str]]:
    """Five parallel (english, pt-pt) captions for the scene, one per template, in a fixed order."""
    en, pt = scene.words_en, scene.words_pt
    g = SHAPES[scene.shape][4]
    if scene.count == 1:
        pos_en, pos_pt = POSITIONS[scene.position][0], POSITIONS[scene.position][1]
        un = NUMBERS_PT[(1, g)]
        a_size, a_col = _article_en(en["size"]), _article_en(en["colour"])
        return [
            (f"{a_size} {en['size']} {en['colour']} {en['shape']} {pos_en}", f"{un} {pt['shape']} {pt['colour']} {pt['size']} {pos_pt}"),
            (f"{a_col} {en['colour']} {en['shape']}", f"{un} {pt['shape']} {pt['colour']}"),
            (f"there is {a_size} {en['size']} {en['colour']} {en['shape']} {pos_en}", f"há {un} {pt['shape']} {pt['colour']} {pt['size']} {pos_pt}"),
            (f"a picture of {a_col} {en['colour']} {en['shape']} {pos_en}", f"uma fotografia de {un} {pt['shape']} {pt['colour']} {pos_pt}"),
            (f"{a_col} {en['colour']} {en['shape']} on a grey background", f"{un} {pt['shape']} {pt['colour']} sobre um fundo cinzento"),
        ]
    n_en, n_pt = NUMBERS_EN[scene.count], NUMBERS_PT[(scene.count, g)]
    shapes_en = SHAPES[scene.shape][1]
    return [
        (f"{n_en} {en['size']} {en['colour']} {shapes_en}", f"{n_pt} {pt['shape']} {pt['colour']} {pt['size']}"),
        (f"{n_en} {en['colour']} {shapes_en}", f"{n_pt} {pt['shape']} {pt['colour']}"),
        (f"there are {n_en} {en['size']} {en['colour']} {shapes_en}", f"há {n_pt} {pt['shape']} {pt['colour']} {pt['size']}"),
        (f"a picture of {n_en} {en['colour']} {shapes_en}", f"uma fotografia de {n_pt} {pt['shape']} {pt['colour']}"),
        (f"{n_en} {en['colour']} {shapes_en} on a grey background", f"{n_pt} {pt['shape']} {pt['colour']} sobre um fundo cinzento"),
    ]
