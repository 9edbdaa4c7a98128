"""`Translate._join`: segments joined with the memory in one Arrow table (no per-row Python), with every
check of the row-by-row version: a missing translation raises, context rows are re-checked against the
memory's own text and context, truncation and billed characters are counted per split."""
from __future__ import annotations

import types

import polars as pl
import pytest

from pipeline.tasks.translate import Translate
from translation.errors import MemoryIntegrityError
from translation.memory import MemoryRow, MemoryStack, TranslationMemory, memory_key
from translation.quality import QualityThresholds
from translation.textkey import text_hash

E = "tiny:en>pt"


def task() -> types.SimpleNamespace:
    """What `_join` reads of its task (the method itself is the pipeline's)."""
    return types.SimpleNamespace(engine="tiny", dataset="cc3m", split="train",
                                 settings=types.SimpleNamespace(quality=QualityThresholds()))


def segments(texts: list[str]) -> pl.DataFrame:
    return pl.DataFrame({"segment_id": [f"cc3m/train/{i}" for i in range(len(texts))], "text_en": texts,
                         "text_hash": [text_hash(t) for t in texts]})


@pytest.fixture()
def mem(tmp_path):
    with TranslationMemory(tmp_path / "part.sqlite", journal="delete") as m:
        m.put_batch(E, [MemoryRow(text_hash("a red car"), "a red car", "um carro vermelho", -0.25, 9, input_truncated=True),
                        MemoryRow(text_hash("a dog"), "a dog", "um cão", -0.5, 5, input_truncated=False),
                        MemoryRow(text_hash("a cat"), "a cat", "um gato", None, 5)])
    with MemoryStack(None, [TranslationMemory(tmp_path / "part.sqlite", read_only=True)]) as stack:
        yield stack


def test_join_keeps_row_order_duplicates_and_counts(mem):
    rows = segments(["a dog", "a red car", "a dog", "a cat", "a red car"])
    flagged, stats = Translate._join(task(), mem, rows, E, "segments", "")
    assert flagged["segment_id"].to_list() == rows["segment_id"].to_list()
    assert flagged["text_pt"].to_list() == ["um cão", "um carro vermelho", "um cão", "um gato", "um carro vermelho"]
    assert flagged["score"].dtype == pl.Float64 and flagged["score"].to_list() == [-0.5, -0.25, -0.5, None, -0.25]
    assert set(flagged["engine"]) == {"tiny"} and set(flagged["engine_id"]) == {E}
    assert flagged["flags"].is_not_null().all()
    assert stats["rows"] == 5 and stats["unique"] == 3
    assert stats["billed_chars"] == 9 + 5 + 5  # distinct strings, not rows
    assert stats["input_truncated"] == {"rows": 2, "unique": 1}


def test_join_refuses_a_missing_translation(mem):
    with pytest.raises(RuntimeError, match=r"2 segments lack a tiny:en>pt translation; rerun.*'a bird'"):
        Translate._join(task(), mem, segments(["a dog", "a bird", "a bird"]), E, "segments", "")


def test_context_rows_are_rechecked_against_the_memory(tmp_path):
    """A row stored under the key of (text, caption) but holding another text or caption is refused."""
    good = MemoryRow(memory_key("yes", "a dog"), "yes", "sim", context="a dog")
    forged = ("ctx", memory_key("no", "a cat"), "no", "a dog", "não", None, 0, None, 0)  # wrong context
    with TranslationMemory(tmp_path / "m.sqlite", journal="delete") as m:
        m.put_batch("ctx", [good])
        m._insert([forged])  # what a damaged file could hold (put_batch would refuse it)
    rows = pl.DataFrame({"text_en": ["yes", "no"], "context": ["a dog", "a cat"],
                         "text_hash": [memory_key("yes", "a dog"), memory_key("no", "a cat")]})
    with MemoryStack(None, [TranslationMemory(tmp_path / "m.sqlite", read_only=True)]) as stack:
        flagged, stats = Translate._join(task(), stack, rows.head(1), "ctx", "dialog texts", "",
                                         check=("text_en", "context"))
        assert flagged["text_pt"].to_list() == ["sim"] and stats["input_truncated"] == {"rows": 0, "unique": 0}
        with pytest.raises(MemoryIntegrityError, match=r"holds \('no', 'a dog'\), not \('no', 'a cat'\)"):
            Translate._join(task(), stack, rows, "ctx", "dialog texts", "", check=("text_en", "context"))
