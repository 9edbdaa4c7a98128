"""bench/full_size.py scaled down (~20k CC3M rows, VisDial and Karpathy files in their official layouts):
the text half of the DAG through Luigi, then token statistics and shards (placeholder JPEGs), loses no row
between stages."""
from __future__ import annotations

import json

import polars as pl

from bench.full_size import CC3M_TRAIN_ROWS, bench, pt_expr, sizes

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
        # Token statistics cover every split: English counts every row, the engine every row the default
        # policy keeps (not flagged empty or untranslated).
        assert a["token_samples"] == {"English": a["segments"], "reference": a["segments"] - a["policy_drops"]}, a
        # Shards: every row is kept or dropped for a recorded reason, and the files hold what is kept.
        sh = a["shards"]
        dropped = {k: v for k, v in sh.items() if k.startswith("dropped_")}
        assert sh["total"] == sh["kept"] + sum(dropped.values()), a
        assert set(dropped) <= {"dropped_image_unavailable", "dropped_flag_empty", "dropped_flag_untranslated"}, a
    # Caption splits: one shard row per kept caption (train) or per kept image (eval layout); the rows
    # of the unavailable images (each 100th of the items) and those flagged untranslated are dropped.
    run = tmp_path / "run"
    tr = pl.read_parquet(run / "translated" / "reference" / "cc3m" / "train.parquet")
    untranslated = tr["flags"].list.contains("untranslated")
    unavailable = tr["item_id"].str.extract(r"(\d+)$").cast(pl.Int64) % 100 == 99
    cc3m = acc["cc3m/train"]["shards"]
    assert cc3m["total"] == s.cc3m and cc3m["rows_in_files"] == cc3m["kept"] == cc3m["images"]
    assert cc3m.get("dropped_flag_untranslated", 0) == untranslated.sum() == acc["cc3m/train"]["policy_drops"]
    assert cc3m["dropped_image_unavailable"] == (unavailable & ~untranslated).sum() > 0
    for split in ("coco/train", "coco/val", "coco/test"):
        sh = acc[split]["shards"]
        assert sh["total"] == acc[split]["segments"]
    assert acc["coco/val"]["shards"]["rows_in_files"] == acc["coco/val"]["shards"]["images"]  # one row per image
    vd = acc["visdial/train"]["shards"]
    assert vd["total"] == s.dialogs and vd["rows_in_files"] == vd["kept"] == s.dialogs - s.dialogs // 100
    # One translation per distinct string across every split: the unique table, the imported memory
    # and the parts' hits all agree.
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
    assert 0.01 < 1 - tr["text_en"].n_unique() / tr.height < 0.06
    assert tr["text_pt"].to_list() == tr.select(pt_expr(pl.col("text_en")))["text_en"].to_list()
    assert tr["text_pt"].str.contains("cão").any()  # really the word-for-word PT
    shard = pl.read_parquet(run / "shards" / "reference" / "cc3m" / "train" / "part-00000.parquet")
    assert shard.height > 0 and shard["image"].bin.starts_with(b"\xff\xd8").all()
    assert (shard["caption"] == shard.select(pt_expr(pl.col("caption_en")))["caption_en"]).all()
    assert {st["stage"] for st in res["stages"]} >= {"curate (token stats)", "images (placeholders)", "shards"}
