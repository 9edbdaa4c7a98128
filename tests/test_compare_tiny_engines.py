"""The comparison report of a real pipeline run with tiny, untrained CTranslate2 engines next to `reference`.

Two random-weight models (mBART-50-like "narrativa" and T5/MADLAD-like "madlad", tests/tinymodels.py) are
converted with `translation.convert.convert_model` (the `ptvl convert-model` code), configured as
`[engines.<name>]` tables and run with `ptvl run --until curate` on a small CC3M-validation sample:
ingest -> translate (memory, flags) -> token statistics -> comparison report, gold set included.

What an untrained seq2seq model produces under greedy decoding is a degenerate loop: one or a few
pieces repeated until the length limit ("vermelha vermelha vermelha ..."). The report must show that:
the repetitive flag (and, where the model is unsure, low_score) on most rows of each tiny engine, none
on the hand-made reference, and near-zero chrF/BLEU on the gold set.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import polars as pl
import pyarrow.parquet as pq
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pipeline.contracts import TRANSLATED  # noqa: E402
from pipeline.tasks.curate import GOLD_PT_BR_ROW  # noqa: E402
from tests.tinymodels import build_tiny_madlad, build_tiny_mbart50  # noqa: E402
from translation.convert import convert_model  # noqa: E402
from translation.gold import load_gold  # noqa: E402
from translation.quality import FLAG_NAMES, QualityThresholds, detect_repetitive  # noqa: E402
from translation.scoring import score_against_gold  # noqa: E402

TINY = {"narrativa": build_tiny_mbart50, "madlad": build_tiny_madlad}
ENGINES = ["madlad", "narrativa", "reference"]  # the report sorts engines by name
N_VAL = 24  # CC3M-style validation captions: the run's only split

CONFIG = """
[run]
name = "tiny-engines"
root = "{root}"

[sample]
enabled = true
n_train = 2
n_val = {n_val}
n_coco = 2
n_dialogs = 1
n_vqa = 1
image_size = 16

[datasets.cc3m]
splits = ["validation"]
[datasets.coco]
enabled = false
[datasets.visdial]
enabled = false
[datasets.vqav2]
enabled = false

[translate]
engines = ["reference", "narrativa", "madlad"]

# Local engines: one thread each (a shared 2-core box); a short decoding cap bounds the degenerate loops.
[engines.narrativa]
engine = "narrativa"
model_dir = "{narrativa}"
compute_type = "int8"
intra_threads = 1
max_decoding_length = 48
max_input_length = 12    # cuts the longer sample captions: truncation is counted in stats and report

[engines.madlad]
engine = "madlad"
model_dir = "{madlad}"
compute_type = "int8"
intra_threads = 1
max_decoding_length = 48

[curate]
gold = true
seed = 1

[training]
data = ["cc3m/validation"]
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """Build and convert the tiny models, then run the real DAG up to the comparison report."""
    import torch

    tmp = tmp_path_factory.mktemp("tiny-compare")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    try:
        # Untrained (train_steps=0): the builders' peaked random logits make greedy decoding loop.
        ct2 = {kind: convert_model(kind, str(build(tmp / f"hf-{kind}")), tmp / f"ct2-{kind}", quantization="int8")
               for kind, build in TINY.items()}
    finally:
        torch.set_num_threads(threads)
    t1 = time.perf_counter()
    cfg = tmp / "tiny.toml"
    cfg.write_text(CONFIG.format(root=tmp / "run", n_val=N_VAL, **ct2))
    res = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "--config", str(cfg), "--until", "curate"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "200"},
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-4000:]
    print(f"\nbuild+convert {t1 - t0:.1f}s, ptvl run --until curate {time.perf_counter() - t1:.1f}s")
    root = tmp / "run"
    report = root / "reports" / "compare"
    return {"root": root, "md": (report / "comparison.md").read_text(encoding="utf-8"),
            "html": (report / "comparison.html").read_text(encoding="utf-8")}


def _section(md: str, title: str) -> dict[str, list[str]]:
    """Rows of the Markdown table under `## <title>...`, keyed by their first cell."""
    body = md.split(f"## {title}")[1].split("\n## ")[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in body.splitlines()
            if line.startswith("|") and not line.startswith("|---")]
    return {r[0]: r[1:] for r in rows[1:]}


def _translated(run: dict, engine: str) -> pl.DataFrame:
    return pl.read_parquet(run["root"] / "translated" / engine / "cc3m" / "validation.parquet")


def _pct(cell: str) -> float:
    assert cell.endswith("%"), cell
    return float(cell[:-1]) / 100


def test_tiny_engines_are_flagged_and_reference_is_clean(run):
    rates = _section(run["md"], "Flag rates per engine")
    assert sorted(rates) == ENGINES
    table = {e: dict(zip([*FLAG_NAMES, "any flag", "kept"], map(_pct, rates[e][1:]), strict=True)) for e in ENGINES}
    for engine in ENGINES:
        print(f"{engine:>10}: " + ", ".join(f"{f} {100 * r:.1f}%" for f, r in table[engine].items()))
        assert rates[engine][0] == str(N_VAL)
    kept = {e: table[e].pop("kept") for e in ENGINES}  # rows the default drop policy keeps in the shards
    # The hand-made PT-PT reference trips no detector.
    assert all(r == 0.0 for r in table["reference"].values()) and kept["reference"] == 1.0
    for engine in ("narrativa", "madlad"):
        t = table[engine]
        # Looping output: most rows repeat an n-gram (or run past 2.5x the source length), and nearly
        # every row carries some flag. Nothing is blank or copied English.
        assert t["repetitive"] >= 0.6, (engine, t)
        assert t["any flag"] >= 0.9, (engine, t)
        assert t["empty"] == t["untranslated"] == 0.0
    # The report's rates are the ones the translate stage stored per row (and low_score follows the
    # engine's real mean log-probabilities against the documented -1.5 threshold).
    min_score = QualityThresholds().min_score
    for engine in ENGINES:
        df = _translated(run, engine)
        for flag in FLAG_NAMES:
            stored = df["flags"].list.contains(flag).mean()
            assert table[engine][flag] == pytest.approx(stored, abs=0.00051), (engine, flag)
        low = (df["score"] < min_score).mean() if df["score"].null_count() < df.height else 0.0
        assert table[engine]["low_score"] == pytest.approx(low, abs=0.00051)
        dropped = df["flags"].list.eval(pl.element().is_in(["empty", "untranslated", "overgeneration"])).list.any()
        assert kept[engine] == pytest.approx(1 - dropped.mean(), abs=0.00051)


def test_worst_cases_show_the_tiny_engines_flags(run):
    worst = _section(run["md"], "Worst cases")
    assert worst, "no worst cases although the tiny engines are flagged"
    header = run["md"].split("## Worst cases")[1].split("\n## ")[0]
    assert "| segment | source (EN) | madlad | narrativa | reference |" in header
    for segment, (_, madlad, narrativa, reference) in worst.items():
        assert segment.startswith("cc3m/validation/")
        assert "**⚑ " in madlad + narrativa and "⚑" not in reference


def test_gold_scores_of_the_tiny_engines_are_near_zero(run):
    gold_table = _section(run["md"], "chrF and BLEU")
    gold = load_gold()
    # A reference memory holds no translation of the gold set, so only engines that translate are scored,
    # next to the yardstick row: a fluent translator in the wrong variety (the gold set's own PT-BR side).
    assert sorted(gold_table) == sorted(["madlad", "narrativa", GOLD_PT_BR_ROW])
    brazilian = score_against_gold(gold["pt_br"].to_list(), gold["pt_pt"].to_list())
    # engine: chrF, its 95% CI, vs best, BLEU, its 95% CI, vs best, sentences
    gold_table = {e: [r[0], r[3], r[6]] for e, r in gold_table.items()}
    yard_chrf, yard_bleu, yard_n = gold_table.pop(GOLD_PT_BR_ROW)
    assert float(yard_chrf) == pytest.approx(brazilian["chrf"], abs=0.01) and int(yard_n) == gold.height
    assert float(yard_bleu) == pytest.approx(brazilian["bleu"], abs=0.01)
    for engine, (chrf, bleu, n) in gold_table.items():
        print(f"{engine:>10}: gold chrF {chrf}, BLEU {bleu} over {n} sentences "
              f"(PT-BR variant as a translator: chrF {yard_chrf}, BLEU {yard_bleu})")
        assert int(n) == gold.height
        assert float(chrf) < 15 and float(bleu) < 2
        assert float(chrf) < brazilian["chrf"] / 4 and float(bleu) < brazilian["bleu"] / 10
    assert "sacrebleu signatures: `nrefs:1|" in run["md"]


def test_cost_and_throughput_come_from_the_run(run):
    root = run["root"]
    billing = _section(run["md"], "Characters billed and estimated cost")
    throughput = _section(run["md"], "Throughput")
    segments = pl.read_parquet(root / "segments" / "cc3m" / "validation.parquet")
    from pipeline.memory_files import memory_view

    for engine in ("narrativa", "madlad"):
        # The engine's translation parts (one per hash part of the run's unique strings) did the sending.
        parts = [json.loads(p.read_text()) for p in (root / "translated" / engine / "_parts").glob("part-*.json")]
        sent, seconds = sum(p["sent"] for p in parts), sum(p["seconds"] for p in parts)
        assert sent == sum(p["unique"] for p in parts) > 0 and sum(p["billed_chars"] for p in parts) == 0
        with memory_view(root) as mem:  # every engine id's folder
            memory = mem.stats(parts[0]["engine_id"])
        # Exactly the sample's texts and the gold set are in the memory; local models bill nothing.
        assert memory.rows == len(set(segments["text_en"]) | set(load_gold()["en"]))
        assert billing[engine] == [f"{memory.billed_chars:,}", "n/a", "0", "0", "0.00"] == ["0", "n/a", "0", "0", "0.00"]
        speed = sent / seconds
        print(f"{engine:>10}: {sent} texts in {seconds:.2f}s -> {throughput[engine][0]} /s")
        assert float(throughput[engine][0]) == pytest.approx(speed, abs=0.051)
        assert speed > 0
    # The reference is an imported memory: nothing was sent, so it has no throughput to report.
    assert "reference" not in throughput and billing["reference"] == ["0", "n/a", "0", "0", "0.00"]


def test_translated_parquet_names_the_ct2_engine(run):
    for engine in ("narrativa", "madlad"):
        path = run["root"] / "translated" / engine / "cc3m" / "validation.parquet"
        assert pq.read_schema(path).equals(TRANSLATED, check_metadata=False)
        df = pl.read_parquet(path)
        assert df.height == N_VAL and set(df["engine"]) == {engine}
        (engine_id,) = set(df["engine_id"])
        limit = 12 if engine == "narrativa" else 256
        assert engine_id.startswith(f"ct2-{engine}:ct2-{engine}@") and engine_id.endswith(f":int8:beam1:in{limit}:dec48")
        assert df["text_pt"].str.len_chars().min() > 0 and df["score"].null_count() == 0
        # Untrained: the outputs have nothing to do with the sources (reference's PT-PT side).
        reference = _translated(run, "reference").select("segment_id", pl.col("text_pt").alias("ref"))
        joined = df.join(reference, on="segment_id")
        assert joined.height == N_VAL and (joined["text_pt"] != joined["ref"]).all()
    assert set(_translated(run, "reference")["engine_id"]) == {"reference"}


def test_html_is_self_contained_and_shows_every_engine(run):
    page = run["html"]
    assert "<th>madlad</th><th>narrativa</th><th>reference</th>" in page
    for engine in ENGINES:
        assert re.search(rf"<tr><td>{engine}</td><td>{N_VAL}</td>", page), engine  # its flag-rate row
    assert re.search(r'<td class="flagged">[^<]*<br><span class="flag flag-repetitive" title="repetitive: ', page)
    assert page.count('src="data:image/png;base64,') == 3
    assert "<script" not in page and not re.search(r"(src|href)=\"(?!data:)", page)


# --- detector gaps this run exposed (translation/quality/), each with the clean cases next to it ---------

def test_runaway_output_of_a_short_source_is_repetitive():
    # Untrained MADLAD turned 'a red star' into 187 chars of pieces; the ratio check used to skip every
    # source under 40 chars, so short captions and VisDial answers could run away unflagged.
    reason = detect_repetitive("yes", "sim, há um homem de pé ao lado de uma mulher que está sentada num banco "
                                      "perto de uma árvore grande no parque da cidade")
    assert reason is not None and "chars for a 3-char source (> 2.5 x 20)" in reason
    assert detect_repetitive("ok", "está bem") is None
    assert detect_repetitive("is there any juice?", "há sumo?") is None
    assert detect_repetitive("a red star", "uma estrela vermelha") is None


def test_subword_loop_inside_one_word_is_repetitive():
    # Decoder loops on pieces without a word boundary glue into one long 'word' the n-gram checks miss.
    reason = detect_repetitive("two purple triangles on a grey background",
                               "roxasiaerisrqjqjqjqjqjqjqjqjqjq grande centgraqjqjqjqjq vermelhaq tntootgraq")
    assert reason is not None and "x3+ in a row inside a word" in reason
    assert detect_repetitive("a red car on the road", "um carro vermelho na estradaradaradarada") is not None
    assert detect_repetitive("a pineapple on a table", "um ananás numa mesa") is None  # 'anan': 2 copies
    assert detect_repetitive("the number 121212 on the door", "o número 121212 na porta") is None


def test_gold_set_stays_clean_under_the_repetitive_detector():
    gold = load_gold()
    for column in ("pt_pt", "pt_br"):
        flagged = [(en, pt) for en, pt in gold.select("en", column).iter_rows() if detect_repetitive(en, pt)]
        assert flagged == [], column


def test_truncated_inputs_are_stored_counted_and_reported(run):
    """Sources cut at max_input_length are a memory column, summed in _<split>.stats.json and shown in
    the report, and the count equals an independent tokenization of the segments."""
    from pipeline.memory_files import memory_view
    from translation.engines.seq2seq import encode, load_tokenizer

    root = run["root"]
    table = _section(run["md"], "Inputs cut at max_input_length")
    assert "reference" not in table
    for engine, limit in (("narrativa", 12), ("madlad", 256)):
        seg = pl.read_parquet(root / "segments" / "cc3m" / "validation.parquet")
        model_dir = root.parent / f"ct2-{engine}"
        lengths = [len(i) for i in encode(load_tokenizer(model_dir, engine), engine, seg["text_en"].to_list(),
                                          max_input_length=10_000).ids]
        expected = sum(n > limit for n in lengths)
        stats = json.loads((root / "translated" / engine / "cc3m" / "_validation.stats.json").read_text())
        assert stats["input_truncated"] == {
            "rows": expected, "unique": len({t for t, n in zip(seg["text_en"], lengths, strict=True) if n > limit})}
        with memory_view(root) as mem:
            rows = mem.lookup(stats["engine_id"], seg["text_hash"].to_list())
        assert sum(rows[h].input_truncated for h in seg["text_hash"]) == expected
        assert all(r.input_truncated is not None for r in rows.values())
        assert table[engine][:2] == [f"{N_VAL:,}", f"{expected:,}"]
    assert 0 < int(table["narrativa"][1].replace(",", "")) < N_VAL and table["madlad"][1] == "0"
