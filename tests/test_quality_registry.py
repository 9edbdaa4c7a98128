"""The quality-flag registry: every flag is one declaration, and everything that lists flags derives from it.

Each registered flag must have labelled cases (held-out TSV cases, or declared cases for an exact check), a
badge colour in the report, and a bit in the pre-filter; the registry rejects an inconsistent declaration.
"""
from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

import translation.quality as quality
from pipeline.reports.compare import _CSS
from translation.gold import FLAG_CASE_FLAGS, FLAG_TUNING_PATH, GoldFormatError, load_flag_cases
from translation.quality import FLAG_NAMES, FLAGS, Case, Flag, QualityThresholds, Row, flag_details
from translation.quality.registry import check_registry, flag
from translation.quality.table import _only

TH = QualityThresholds()
HELD_OUT = load_flag_cases()
PACKAGE = Path(quality.__file__).parent


def test_flag_names_come_from_the_registry_in_the_historical_order():
    assert FLAG_NAMES == tuple(f.name for f in FLAGS)
    assert FLAG_NAMES == ("empty", "untranslated", "brazilian", "truncated", "repetitive", "overgeneration",
                          "low_score")
    assert (quality.EMPTY, quality.UNTRANSLATED, quality.BRAZILIAN, quality.TRUNCATED, quality.REPETITIVE,
            quality.OVERGENERATION, quality.LOW_SCORE) == FLAG_NAMES
    assert flag("brazilian") is FLAGS[2]
    with pytest.raises(KeyError, match="no quality flag 'nope'"):
        flag("nope")


@pytest.mark.parametrize("f", FLAGS, ids=FLAG_NAMES)
def test_every_flag_has_labelled_cases(f: Flag):
    """A flag without labelled cases fails here: held-out TSV cases with both labels (at least 40, issue #13),
    or, for an exact check only, declared cases with both labels that its detector agrees with."""
    if f.exact:
        assert {c.fires for c in f.cases} == {True, False}, f"{f.name}: declare cases with both labels"
        for c in f.cases:
            assert (f.detect(Row(c.text_en, c.text_pt, c.score), TH) is not None) == c.fires, c
        assert f.name not in FLAG_CASE_FLAGS  # the TSV loader rejects them: nothing to estimate
        return
    mine = HELD_OUT.filter(pl.col("flag") == f.name)
    assert mine.height >= 40, f"{f.name}: add held-out cases to data_manifests/gold/flags_heldout.tsv"
    assert set(mine["label"].to_list()) == {True, False}, f"{f.name}: held-out cases need both labels"
    assert f.name in FLAG_CASE_FLAGS


def test_case_loader_accepts_exactly_the_measured_flags(tmp_path):
    assert FLAG_CASE_FLAGS == tuple(f.name for f in FLAGS if not f.exact) == (
        "untranslated", "brazilian", "truncated", "repetitive", "overgeneration")
    path = tmp_path / "cases.tsv"
    header = "id\tflag\tlabel\ten\tpt\tkind\n"
    path.write_text(header + "".join(f"c{i}\t{n}\t1\ta\tb\tk\n" for i, n in enumerate(FLAG_CASE_FLAGS)))
    assert load_flag_cases(path)["flag"].to_list() == list(FLAG_CASE_FLAGS)
    for f in FLAGS:
        if f.exact:
            path.write_text(header + f"x\t{f.name}\t1\ta\tb\tk\n")
            with pytest.raises(GoldFormatError, match=f"unknown flag '{f.name}'"):
                load_flag_cases(path)
    assert set(load_flag_cases(FLAG_TUNING_PATH)["flag"].to_list()) <= set(FLAG_CASE_FLAGS)


def test_report_badge_colours_come_from_the_declarations():
    colours = [f.colour for f in FLAGS]
    assert len(set(colours)) == len(colours)  # badges tell the flags apart
    for f in FLAGS:
        assert f".flag-{f.name}{{background:{f.colour}}}" in _CSS
    assert _CSS.count(".flag-") == len(FLAGS)


def test_bits_map_to_flags_in_registry_order():
    assert _only(0) == frozenset()
    assert _only((1 << len(FLAGS)) - 1) == frozenset(FLAG_NAMES)
    for i, f in enumerate(FLAGS):
        assert _only(1 << i) == {f.name}


def test_exclusive_and_suppression_rules_are_generic():
    exclusive = [f.name for f in FLAGS if f.exclusive]
    assert exclusive == ["empty"]
    assert {f.name: f.suppresses for f in FLAGS if f.suppresses} == {"untranslated": ("brazilian", "truncated")}
    # an exclusive flag runs whatever `only` says, and alone
    assert flag_details("a dog", "  ", -9.0, only=set()) == {"empty": "empty: output is blank"}
    assert flag_details("a dog", None, only={"low_score"}) == {"empty": "empty: output is null"}
    # a suppressed flag is not reported, but is when its suppressor is skipped
    en, pt = "a man rides a bike down the street", "A man is riding his bike on the street with a"
    assert list(flag_details(en, pt)) == ["untranslated"]
    assert flag_details(en, pt, only={"truncated", "brazilian"}) == {"truncated": "truncated: ends on 'a'"}


def _flag(name: str, **kw) -> Flag:
    return Flag(name, lambda row, th: None, lambda cols, th: pl.lit(False), doc="test", colour="#123", **kw)


def test_registry_rejects_inconsistent_declarations():
    assert check_registry((_flag("a", exclusive=True), _flag("b", suppresses=("c",)), _flag("c"))) == {
        "a": frozenset(), "b": frozenset(), "c": frozenset({"b"})}
    with pytest.raises(ValueError, match="duplicate flag names"):
        check_registry((_flag("a"), _flag("a")))
    with pytest.raises(ValueError, match="exclusive flags must come before"):
        check_registry((_flag("a"), _flag("b", exclusive=True)))
    with pytest.raises(ValueError, match="'b' suppresses 'a', which is not a flag registered after it"):
        check_registry((_flag("a"), _flag("b", suppresses=("a",))))
    with pytest.raises(ValueError, match="suppresses 'zzz'"):
        check_registry((_flag("a", suppresses=("zzz",)),))
    with pytest.raises(ValueError, match="lower-case letters"):
        _flag("Bad-Name")
    with pytest.raises(ValueError, match="badge colour and a doc line"):
        Flag("x", lambda row, th: None, lambda cols, th: pl.lit(False), doc="", colour="#000")
    assert Case("a", None, None, True).fires


def test_package_layout_and_public_api():
    # no module over 700 lines; the docstring says which files a new flag touches
    sizes = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in PACKAGE.glob("*.py")}
    assert max(sizes.values()) <= 700, sizes
    for f in FLAGS:
        assert f"{f.name}.py" in sizes, f"flag {f.name!r} lives in a module of its own name"
    doc = quality.__doc__ or ""
    assert "How to add a flag" in doc and "registry.py" in doc and "flags_heldout.tsv" in doc
    for name in ("FLAG_NAMES", "QualityThresholds", "flag_rates", "flag_table", "flag_details", "flag_row",
                 "flag_table_reference", "detect_empty", "detect_untranslated", "detect_brazilian",
                 "detect_truncated", "detect_repetitive", "detect_low_score", "brazilian_markers",
                 "missing_source_numbers", "normalise", "words", "english_probability", "is_portuguese_word",
                 "zipf", "EMPTY", "UNTRANSLATED", "BRAZILIAN", "TRUNCATED", "REPETITIVE", "LOW_SCORE",
                 "DEFAULT_THRESHOLDS", "PARALLEL_MIN_ROWS", "BRAZILIAN_LEXICON", "Marker", "GERUND_STOP",
                 "IDENTICAL_OK", "FLAGS", "Flag"):
        assert hasattr(quality, name), name
    assert sorted(quality.__all__) == sorted(set(quality.__all__))
