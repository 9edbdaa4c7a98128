"""bench/full_size.py scaled down (~20k CC3M rows, VisDial and Karpathy files in their official layouts):
the text half of the DAG through Luigi loses no row between stages."""
from __future__ import annotations

import json

import polars as pl

from bench.full_size import CC3M_TRAIN_ROWS, bench, sizes

SCALE = 20_000 / CC3M_TRAIN_ROWS


def test_scaled_down_full_size_run_keeps_every_row(tmp_path):
    res = bench(tmp_path, SCALE, parts=2, in_process=True)
    s = sizes(SCALE)
    assert s.cc3m == 20_000 and s.dialogs == 743 and s.coco == 743
    acc = {a["split"]: a for a in res["accounting"]}
    assert sorted(acc) == ["cc3m/train", "coco/test", "coco/train", "coco/val", "visdial/train"]
    # Every generated row is a segment: the TSV has no broken row, Karpathy has 5 captions per image.
    assert acc["cc3m/train"]["segments"] == s.cc3m
    assert sum(acc[k]["segments"] for k in acc if k.startswith("coco/")) == 5 * s.coco
    assert acc["visdial/train"]["segments"] > s.dialogs  # captions + the questions and answers used
    for a in acc.values():  # segments = translated = flagged, nothing set aside, stats agree
        assert a["segments"] == a["translated"] == a["flagged"] == a["stats_rows"], a
        assert a["set_aside"] == 0
    # One translation per distinct string across every split: the unique table, the imported memory
    # and the parts' hits all agree.
    run = tmp_path / "run"
    seg = pl.read_parquet(run / "segments" / "*" / "*.parquet", columns=["text_hash"])
    distinct = seg["text_hash"].n_unique()
    stages = {st["stage"]: st for st in res["stages"]}
    assert stages["reference memory"]["rows"] == distinct
    (unique_file,) = (run / "translated" / "reference").glob("_unique-*.parquet")
    assert pl.read_parquet(unique_file).height == distinct
    parts = [json.loads(p.read_text()) for p in (run / "translated" / "reference" / "_parts").glob("part-*.json")]
    assert len(parts) == 2 and sum(p["unique"] for p in parts) == sum(p["hits"] for p in parts) == distinct
    assert sum(p["sent"] for p in parts) == 0  # all memory hits: nothing translated twice
    # CC3M repeats (~3%) are joined, not lost: more rows than distinct captions.
    cc3m = pl.read_parquet(run / "translated" / "reference" / "cc3m" / "train.parquet", columns=["text_en", "text_pt"])
    assert 0.01 < 1 - cc3m["text_en"].n_unique() / cc3m.height < 0.06
    assert (cc3m["text_pt"] == "[pt] " + cc3m["text_en"]).all()
