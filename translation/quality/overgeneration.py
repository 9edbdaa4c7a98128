"""The `overgeneration` flag: output that runs on past the translation.

An LLM translator that misses its end token goes on: a second line (another answer, the next example), a new
prompt block ("English: ...", "Tradução: ...") or a new chat turn (`<|im_start|>user`). The `llm` engine keeps
what it generated (after cutting at the profile's stop strings), so this flag sees it and the drop policy can
keep it out of the shards. A line break, label or marker the source has too is faithful.
"""
from __future__ import annotations

import re

import polars as pl

from translation.quality.base import Columns, Flag, Row
from translation.quality.thresholds import QualityThresholds

OVERGENERATION = "overgeneration"

# A prompt label followed by a colon, in English or Portuguese, and what it stands for (so "English:" in the source
# and "Inglês:" in the output are the same label).
_LABEL = re.compile(
    r"(?<![\w-])(english|ingl[eê]s|(?:european\s+|brazilian\s+)?portugu(?:ese|[eê]s)|translation|tradu[cç][aã]o|"
    r"source|target|user|assistant|en|pt(?:-pt|-br)?)\s*:", re.IGNORECASE)
_CANONICAL = (("ingl", "en"), ("english", "en"), ("portugu", "pt"), ("pt", "pt"), ("tradu", "translation"),
              ("translation", "translation"), ("en", "en"))
# Chat-turn and instruction markers of common chat templates (ChatML, Llama 2/3, Gemma, Zephyr).
MARKERS = ("<|im_start|>", "<|im_end|>", "<|user|>", "<|assistant|>", "<|eot_id|>", "<|start_header_id|>",
           "[INST]", "[/INST]", "<start_of_turn>", "<end_of_turn>")


def _labels(text: str) -> set[str]:
    found = set()
    for m in _LABEL.finditer(text):
        word = m.group(1).casefold().split()[-1]  # "european portuguese" is a "portuguese" label
        found.add(next((c for prefix, c in _CANONICAL if word.startswith(prefix)), word))
    return found


def _lines(text: str) -> list[str]:
    return [line for line in text.strip().splitlines() if line.strip()]


def detect_overgeneration(text_en: str, text_pt: str) -> str | None:
    """More lines than the source, a prompt label the source lacks ("English:", "Tradução:") or a chat marker
    the source lacks (`<|im_start|>`); the reason quotes what ran on."""
    reasons = []
    src, out = _lines(text_en), _lines(text_pt)
    if len(out) > max(1, len(src)):
        reasons.append(f"{len(out)} lines for a {max(1, len(src))}-line source (then {out[max(1, len(src))][:40]!r})")
    labels = sorted(_labels(text_pt) - _labels(text_en))
    if labels:
        reasons.append("a new prompt block (" + ", ".join(f"{label}:" for label in labels) + ")")
    low_en, low_pt = text_en.casefold(), text_pt.casefold()
    markers = [m for m in MARKERS if m.casefold() in low_pt and m.casefold() not in low_en]
    if markers:
        reasons.append("a chat marker (" + ", ".join(markers) + ")")
    return f"{OVERGENERATION}: " + "; ".join(reasons) if reasons else None


def _detect(row: Row, th: QualityThresholds) -> str | None:
    return detect_overgeneration(row.text_en, row.text_pt)


def _candidates(c: Columns, th: QualityThresholds) -> pl.Expr:
    # Every reason needs one of these characters in the output: a line break (on safe text only \n and \r break
    # lines), a label's colon, a marker's '<' or '['.
    return c.pt.str.contains(r"[\n\r:<\[]").fill_null(True)


FLAG = Flag(OVERGENERATION, _detect, _candidates, doc="the output runs on past the translation (a second line, "
            "a new prompt block or chat turn)", colour="#117a65")
