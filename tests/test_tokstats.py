"""Token statistics (thesis Table 5.2): word-level counts, per-engine columns, flag drops, HF tokenizers."""
from __future__ import annotations

import os

import polars as pl
import pytest

from translation.tokstats import ENGLISH, render_table_5_2, token_stats


def _rows(engine: str, dataset: str, split: str, pairs: list[tuple[str, str | None]], flags=None) -> pl.DataFrame:
    n = len(pairs)
    df = pl.DataFrame({
        "segment_id": [f"{dataset}/{split}/{i}" for i in range(n)],
        "dataset": [dataset] * n, "split": [split] * n,
        "item_id": [f"{dataset}/{split}/{i}" for i in range(n)], "field": ["caption"] * n,
        "text_en": [e for e, _ in pairs], "text_hash": ["h"] * n,
        "engine": [engine] * n, "engine_id": [engine + ":v1"] * n,
        "text_pt": pl.Series([p for _, p in pairs], dtype=pl.String),
        "score": pl.Series([None] * n, dtype=pl.Float32),
    })
    if flags is not None:
        df = df.with_columns(pl.Series("flags", flags, dtype=pl.List(pl.String)))
    return df


CC3M = [("plenty of space : at square feet", "muito espaço : em metros quadrados"),  # 7 / 6 tokens
        ("people waiting for the bus", "pessoas à espera do autocarro"),  # 5 / 5
        ("a  city\tskyline at night ", "o horizonte de uma cidade à noite")]  # 5 (any whitespace) / 7


def test_word_level_per_engine_and_english(tmp_path):
    deepl = tmp_path / "deepl.parquet"
    _rows("deepl", "cc3m", "train", CC3M).write_parquet(deepl)
    narr = _rows("narrativa", "cc3m", "train", [(e, e if i == 1 else p) for i, (e, p) in enumerate(CC3M)],
                 flags=[[], ["untranslated"], []])
    coco = _rows("deepl", "coco", "test", [("A man riding a bicycle.", "Um homem a andar de bicicleta."),
                                             ("Two dogs.", None)])  # a missing output is not a sample
    stats = token_stats([deepl, narr.lazy(), coco.lazy()], drop_flags=("untranslated",))
    got = {(r["dataset"], r["column"]): (r["samples"], r["tokens"]) for r in stats.iter_rows(named=True)}
    assert got[("cc3m", ENGLISH)] == (3, 17)  # counted once although two engines carry the segments
    assert got[("cc3m", "deepl")] == (3, 18)
    assert got[("cc3m", "narrativa")] == (2, 13)  # the untranslated row is dropped, as in the thesis
    assert got[("coco", ENGLISH)] == (2, 7)
    assert got[("coco", "deepl")] == (1, 6)
    assert stats.filter(pl.col("column") == "deepl", pl.col("dataset") == "cc3m")["tokens_per_sample"][0] == 6.0
    assert stats["column"].to_list()[:3] == [ENGLISH, "deepl", "narrativa"]  # English first, as in the thesis
    # without drop_flags the untranslated row counts
    kept = token_stats([narr.lazy()])
    assert kept.filter(pl.col("column") == "narrativa")["samples"][0] == 3


def test_render_table_5_2_layout():
    stats = token_stats([_rows("deepl", "cc3m", "train", CC3M).lazy(),
                         _rows("deepl", "cc3m", "validation", CC3M[:1]).lazy()])
    md = render_table_5_2(stats)
    lines = md.splitlines()
    assert lines[0] == "| | statistic | English | deepl |"
    assert "| cc3m / train | samples | 3 | 3 |" in lines
    assert "|  | tokens/sample | 5.67 | 6.00 |" in lines
    merged = render_table_5_2(stats, merge_splits=True).splitlines()
    assert "| cc3m | samples | 4 | 4 |" in merged and "|  | tokens | 24 | 24 |" in merged
    big = pl.DataFrame({"dataset": ["cc3m"], "split": ["train"], "column": [ENGLISH], "samples": [2_709_383],
                        "tokens": [27_919_393], "tokens_per_sample": [27_919_393 / 2_709_383]})
    assert "| cc3m / train | samples | 2,709,383 |" in render_table_5_2(big)
    assert "|  | tokens/sample | 10.30 |" in render_table_5_2(big)


def test_missing_columns_is_a_clear_error():
    with pytest.raises(ValueError, match=r"lacks columns \['engine'"):
        token_stats([pl.LazyFrame({"segment_id": ["a"], "dataset": ["x"], "split": ["y"], "text_en": ["a"],
                                   "text_pt": ["b"]})])
    with pytest.raises(ValueError, match="no sources"):
        token_stats([])


def test_hf_tokenizer_by_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # A character-level tokenizer: token counts are the non-space character counts, easy to check.
    chars = sorted({c for e, p in CC3M for c in e + p if not c.isspace()})
    tok = Tokenizer(models.WordLevel({c: i + 1 for i, c in enumerate(chars)} | {"[UNK]": 0}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Split(pattern="", behavior="isolated")])
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(tmp_path / "tok")
    assert os.path.exists(tmp_path / "tok" / "tokenizer.json")
    stats = token_stats([_rows("deepl", "cc3m", "train", CC3M).lazy()], tokenizer=tmp_path / "tok", batch_size=2)
    got = {r["column"]: r["tokens"] for r in stats.iter_rows(named=True)}
    assert got[ENGLISH] == sum(len("".join(e.split())) for e, _ in CC3M)
    assert got["deepl"] == sum(len("".join(p.split())) for _, p in CC3M)
