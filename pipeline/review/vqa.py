"""The VQAv2 context of a review row: the image, the question and its 10 human answers (EN and the
current PT), whether the row is the question or one of the answers.

A question segment belongs to one question; an answer string is one segment shared by every question
that got it (pipeline/contracts.py VQA_QUESTIONS), so an answer row shows the first questions answered
with it, the answer marked among the ten.
"""
from __future__ import annotations

import threading
from pathlib import Path

import polars as pl

from pipeline.layout import RunLayout
from pipeline.review.tables import RunTables
from translation.overlay import HumanOverlay
from translation.textkey import text_hash

MAX_QUESTIONS = 2


class QuestionIndex:
    """sources/vqav2/<split>/questions.parquet, read the first time a split's context is asked for."""

    def __init__(self, root: Path):
        self.root = root
        self._lock = threading.Lock()
        self._questions: dict[str, pl.DataFrame] = {}

    def questions(self, split: str) -> pl.DataFrame:
        with self._lock:
            if split not in self._questions:
                path = RunLayout(self.root).source_split("vqav2", split) / "questions.parquet"
                self._questions[split] = (
                    pl.read_parquet(path, columns=["image_id", "question_segment_id", "answers"])
                    if path.is_file() else pl.DataFrame())
            return self._questions[split]


def vqa_context(tables: RunTables, overlay: HumanOverlay | None, index: QuestionIndex, occurrence: dict,
                text_en: str, limit: int = MAX_QUESTIONS) -> list[dict]:
    """The questions a VQAv2 string belongs to: [{image_id, split, question {en, pt, human}, answers
    [{en, pt, human, marked}] (the 10, in file order)}]."""
    split = occurrence["split"]
    questions = index.questions(split)
    if not questions.height:
        return []
    if occurrence["field"] == "question":
        hits = questions.filter(pl.col("question_segment_id") == occurrence["segment_id"]).head(1)
    else:
        hits = questions.filter(pl.col("answers").list.contains(text_en)).head(limit)
    if not hits.height:
        return []
    question_texts = tables.by_segment(tables.chosen.name, "vqav2", split, hits["question_segment_id"].to_list())
    answers = {a for row in hits["answers"].to_list() for a in (row or [])}
    hashes = {a: text_hash(a) for a in answers}
    machine = dict(tables.chosen.rows.filter(pl.col("text_hash").is_in(list(hashes.values())))
                   .select("text_hash", "text_pt").iter_rows())
    wanted = list(hashes.values()) + [t["text_hash"] for t in question_texts.values()]
    human = overlay.corrections(tables.chosen.engine_id, wanted) if overlay else {}

    def current(h: str, machine_pt: str | None) -> dict:
        fix = human.get(h)
        return {"pt": fix.text_pt if fix else (machine_pt or ""), "human": fix is not None}

    out = []
    for image_id, segment_id, row_answers in hits.iter_rows():
        q = question_texts.get(segment_id)
        out.append({
            "image_id": image_id,
            "split": split,
            "question": ({"en": q["text_en"], **current(q["text_hash"], q["text_pt"])} if q else
                         {"en": "", "pt": "", "human": False}),
            "answers": [{"en": a, **current(hashes[a], machine.get(hashes[a])),
                         "marked": occurrence["field"] == "answer" and a == text_en} for a in (row_answers or [])],
        })
    return out
