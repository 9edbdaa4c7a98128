"""The gold PT-PT set: loads and validates; scores with sacrebleu; precision/recall of two flags on it."""
from __future__ import annotations

import polars as pl
import pytest

from translation.gold import GoldFormatError, load_gold
from translation.quality import QualityThresholds, flag_row, normalise
from translation.scoring import flag_precision_recall, score_against_gold


@pytest.fixture(scope="module")
def gold() -> pl.DataFrame:
    return load_gold()


def test_gold_shape_and_content(gold):
    assert gold.columns == ["id", "style", "en", "pt_pt", "pt_br"]
    assert gold.height >= 220
    counts = dict(gold.group_by("style").len().iter_rows())
    assert counts["cc3m"] >= 100 and counts["coco"] >= 50 and counts["visdial_q"] >= 30 and counts["visdial_a"] >= 30
    differ = (gold["pt_pt"] != gold["pt_br"]).sum()
    assert 150 <= differ < gold.height  # most rows differ between variants, some naturally do not
    assert gold["id"].n_unique() == gold.height
    # PT-PT side uses the PT-PT lexicon the card promises
    ptpt = " ".join(gold["pt_pt"].to_list())
    for word in ("autocarro", "comboio", "telemóvel", "equipa", "pequeno-almoço", "casa de banho", "rapariga",
                 "frigorífico", "ecrã", "fato", "facto", "ficheiro", "vê-se", "está a"):
        assert word in ptpt, word


def test_gold_ratio_calibration(gold):
    # the documented truncation threshold sits at the minimum PT-PT/EN length ratio of the gold set
    th = QualityThresholds()
    ratios = [len(p) / len(e) for e, p in gold.select("en", "pt_pt").iter_rows() if len(e) >= th.min_source_chars]
    assert min(ratios) >= th.min_length_ratio
    assert min(ratios) < th.min_length_ratio + 0.05  # and is not looser than it needs to be
    assert max(ratios) < th.max_length_ratio


def test_no_gold_ptpt_row_is_flagged(gold):
    flagged = {pp: flag_row(en, pp) for en, pp in gold.select("en", "pt_pt").iter_rows() if flag_row(en, pp)}
    assert flagged == {}


def test_flag_precision_recall(gold):
    pr = flag_precision_recall(gold)
    br, un = pr["brazilian"], pr["untranslated"]
    print(f"\nbrazilian: precision {br['precision']:.3f} recall {br['recall']:.3f} "
          f"(tp {br['tp']} fp {br['fp']} fn {br['fn']}; {br['positives']} pos, {br['negatives']} neg)")
    print(f"untranslated: precision {un['precision']:.3f} recall {un['recall']:.3f} "
          f"(tp {un['tp']} fp {un['fp']} fn {un['fn']}; {un['positives']} pos, {un['negatives']} neg)")
    assert br["positives"] == int((gold["pt_pt"] != gold["pt_br"]).sum())
    assert br["precision"] >= 0.9
    # the misses are PT-BR choices that are also valid PT-PT words ('foto', 'tela', 'tem' for 'há',
    # 'em pé', 'arquivo'): not detectable without false positives
    assert br["recall"] >= 0.78
    assert un["precision"] >= 0.9 and un["recall"] >= 0.9
    # rows whose EN and PT-PT coincide ('2', 'about 10' -> no) are excluded from both sets
    same = sum(normalise(e) == normalise(p) for e, p in gold.select("en", "pt_pt").iter_rows())
    assert un["positives"] == gold.height - same


def test_untranslated_recall_on_mixed_outputs(gold):
    # an engine that translates only the first word and copies the rest: 'mostly English'
    long_rows = [(e, p) for e, p in gold.select("en", "pt_pt").iter_rows() if len(e.split()) >= 6]
    caught = sum("untranslated" in flag_row(e, p.split()[0] + " " + " ".join(e.split()[1:])) for e, p in long_rows)
    print(f"\nmixed outputs caught: {caught}/{len(long_rows)}")
    assert caught / len(long_rows) >= 0.9


def test_chrf_bleu(gold):
    en, pp, pb = gold["en"].to_list(), gold["pt_pt"].to_list(), gold["pt_br"].to_list()
    same, br, eng = score_against_gold(pp, pp), score_against_gold(pb, pp), score_against_gold(en, pp)
    print(f"\nchrF/BLEU vs pt_pt: pt_pt {same['chrf']}/{same['bleu']}, pt_br {br['chrf']}/{br['bleu']}, "
          f"en {eng['chrf']}/{eng['bleu']}")
    assert same["chrf"] == 100.0 and same["bleu"] == 100.0
    assert 40 < br["chrf"] < 80  # clearly below 100, far above English
    assert eng["chrf"] < 25 and eng["bleu"] < 5
    assert same["chrf_signature"].startswith("nrefs:1|") and same["n"] == gold.height
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        score_against_gold(["a", "b"], ["a"])


def test_truncation_recall_on_cut_outputs(gold):
    # cut the PT-PT reference to its first 40% of words: what a truncating engine produces
    rows = [(e, p) for e, p in gold.select("en", "pt_pt").iter_rows() if len(e) >= 40]
    cut = [(e, " ".join(p.split()[: max(1, int(len(p.split()) * 0.4))])) for e, p in rows]
    caught = sum("truncated" in flag_row(e, c) for e, c in cut)
    print(f"\ntruncated: {caught}/{len(cut)} cut outputs caught")
    assert caught / len(cut) >= 0.9


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("id\tstyle\ten\tpt\n", r":1: header must be"),
        ("id\tstyle\ten\tpt_pt\tpt_br\nx\tcc3m\ta\tb\n", r":2: expected 5 fields, got 4"),
        ("id\tstyle\ten\tpt_pt\tpt_br\nx\tcc3m\ta\t \tc\n", r":2: empty field\(s\) pt_pt"),
        ("id\tstyle\ten\tpt_pt\tpt_br\nx\tflickr\ta\tb\tc\n", r":2: unknown style 'flickr'"),
        ("id\tstyle\ten\tpt_pt\tpt_br\nx\tcoco\ta\tb\tc\nx\tcoco\ta\tb\tc\n", r":3: duplicate id 'x'"),
    ],
)
def test_load_gold_errors(tmp_path, content, message):
    path = tmp_path / "gold.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(GoldFormatError, match=message):
        load_gold(path)


def test_load_gold_keeps_quotes(tmp_path):
    path = tmp_path / "gold.tsv"
    path.write_text('id\tstyle\ten\tpt_pt\tpt_br\nq\tcc3m\tthe "big" apple\to "grande"\to "grande"\n', encoding="utf-8")
    assert load_gold(path)["en"].to_list() == ['the "big" apple']


# --- labelled flag cases: the tuning part and the held-out part ------------------------------------------

def _figures(path=None) -> dict[str, dict]:
    from translation.gold import load_flag_cases
    from translation.scoring import flag_case_precision_recall

    return flag_case_precision_recall(load_flag_cases(path))


def test_flag_case_files_shape():
    from translation.gold import FLAG_CASE_FLAGS, FLAG_TUNING_PATH, load_flag_cases

    held, tune = load_flag_cases(), load_flag_cases(FLAG_TUNING_PATH)
    counts = dict(held.group_by("flag").len().iter_rows())
    assert set(counts) == set(FLAG_CASE_FLAGS) and min(counts.values()) >= 40  # issue #13: >= 40 per flag
    for flag in FLAG_CASE_FLAGS:  # both labels present, so precision and recall are both measured
        assert set(held.filter(pl.col("flag") == flag)["label"].to_list()) == {True, False}
    # no case of the held-out part is in the tuning part (neither the pair nor the output)
    assert not set(zip(held["en"], held["pt"], strict=True)) & set(zip(tune["en"], tune["pt"], strict=True))
    assert not set(held["pt"].to_list()) & set(tune["pt"].to_list())


def test_flag_precision_recall_held_out():
    from translation.gold import FLAG_CASE_FLAGS

    figures = _figures()
    for flag, r in figures.items():
        print(f"\nheld-out {flag}: precision {r['precision']:.2f} recall {r['recall']:.2f} "
              f"(tp {r['tp']} fp {r['fp']} fn {r['fn']} tn {r['tn']})")
    # Issue #27: every flag, brazilian included (0.73 before its rules were fixed on the tuning part), reaches
    # precision 0.9 on the held-out file, read afresh here.
    assert set(figures) == set(FLAG_CASE_FLAGS)
    for flag, r in figures.items():
        assert r["precision"] >= 0.9 and r["recall"] >= 0.8, (flag, r)


def test_flag_precision_recall_tuning_part():
    from translation.gold import FLAG_TUNING_PATH

    figures = _figures(FLAG_TUNING_PATH)
    assert all(r["precision"] == 1.0 for r in figures.values())
    assert all(r["recall"] >= 0.9 for r in figures.values())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("id\tflag\tlabel\ten\tpt\n", r":1: header must be"),
        ("id\tflag\tlabel\ten\tpt\tkind\nx\tbrazilian\t1\ta\tb\n", r":2: expected 6 fields, got 5"),
        ("id\tflag\tlabel\ten\tpt\tkind\nx\tbrazilian\t1\ta\t\tk\n", r":2: empty field\(s\) pt"),
        ("id\tflag\tlabel\ten\tpt\tkind\nx\tempty\t1\ta\tb\tk\n", r":2: unknown flag 'empty'"),
        ("id\tflag\tlabel\ten\tpt\tkind\nx\ttruncated\tyes\ta\tb\tk\n", r":2: label must be 0 or 1"),
        ("id\tflag\tlabel\ten\tpt\tkind\nx\ttruncated\t1\ta\tb\tk\nx\ttruncated\t0\ta\tc\tk\n",
         r":3: duplicate id 'x'"),
    ],
)
def test_load_flag_cases_errors(tmp_path, content, message):
    from translation.gold import load_flag_cases

    path = tmp_path / "cases.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(GoldFormatError, match=message):
        load_flag_cases(path)


def test_comparison_report_shows_held_out_figures():
    from pipeline.reports.compare import _flag_heldout_table, _markdown
    from translation.gold import load_flag_cases

    figures = _figures()
    table = _flag_heldout_table(QualityThresholds())
    assert [c[:4] for c in table.cells] == [
        [f, f"{r['precision']:.2f}", f"{r['recall']:.2f}", str(r["positives"] + r["negatives"])]
        for f, r in figures.items()]
    assert "| brazilian | 1.00 | 0.85 | 55 |" in _markdown(table)
    # What limits a flag is shown: its first false alarms (label 0 cases it flags) and misses (label 1 it
    # does not), as "en -> pt"; a flag without any shows "-".
    cases = load_flag_cases()
    row = next(c for c in table.cells if c[0] == "brazilian")
    positives = cases.filter((pl.col("flag") == "brazilian") & pl.col("label"))
    shown = row[5].split("; ")
    assert len(shown) == 3 and all(x.split(" -> ")[1] in {p[:40] for p in positives["pt"].to_list()} for x in shown)
    assert row[4] == "-"  # precision 1.00: no false alarm
    # the run's thresholds are the ones measured: no wordfreq margin makes 'frisbee'-like answers English
    strict = _flag_heldout_table(QualityThresholds(portuguese_zipf_margin=0.0, portuguese_zipf=9.0))
    assert strict.cells[0][0] == "untranslated" and float(strict.cells[0][1]) < float(table.cells[0][1])
