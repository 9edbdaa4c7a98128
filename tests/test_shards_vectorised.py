"""The vectorised shard builders give what the per-row rules give, on random cases with every edge:
empty outputs (Python's whitespace), policy flags in policy order, unavailable images, an image listed but
missing from the bytes, an image in two img2dataset batches, repeated image ids, part files of 7 rows."""
from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.contracts import DIALOGS
from pipeline.human_review import apply_review
from pipeline.shards import FilterPolicy, _dialog_rounds, build_caption_shards, build_visdial_shards


def images(tmp: Path, availability: pl.DataFrame, rng: random.Random) -> Path:
    """Two img2dataset Parquet batches per shards folder, 10 keys in both, ~5% of the images missing."""
    root = tmp / "images"
    for sd in availability["shards_dir"].unique().to_list():
        keys = [k for k in availability.filter(pl.col("shards_dir") == sd)["key"].to_list() if rng.random() < 0.95]
        rng.shuffle(keys)
        (root / sd).mkdir(parents=True)
        half = len(keys) // 2
        for b, ks in enumerate((keys[:half + 5], keys[half - 5:])):
            pq.write_table(pa.table({"key": ks, "jpg": [f"{sd}/{k}".encode() for k in ks]}), root / sd / f"{b:05d}.parquet")
    return root


def availability(n: int, rng: random.Random) -> pl.DataFrame:
    rows = [{"image_id": f"img{i}", "status": "success" if rng.random() < 0.9 else "failed",
             "shards_dir": "shards" if i % 2 else "retry-1/shards", "key": f"{i:06d}"} for i in range(n)]
    rows.append({"image_id": "img5", "status": "success", "shards_dir": "shards", "key": "999999"})  # last wins
    return pl.DataFrame(rows)


def review(rng: random.Random) -> tuple[dict, dict]:
    """Random corrections (about 1 string in 8) and false-alarm verdicts (about 1 in 6) over h0..h699."""
    from datetime import UTC, datetime

    from translation.overlay import HumanRecord

    now = datetime(2026, 12, 2, tzinfo=UTC)
    corrections = {f"h{i}": HumanRecord(id=i, engine_id="e", text_hash=f"h{i}", text_en="en", text_pt=f"humano {i}",
                                        replaces=None, action="edit", source_engine=None, who="t", created_at=now,
                                        superseded=None)
                   for i in range(700) if rng.random() < 0.125}
    verdicts = {(f"h{i}", f): "false_alarm" for i in range(700) for f in ("untranslated", "brazilian", "empty")
                if rng.random() < 0.17}
    return corrections, verdicts


def read(out: Path, files: list[str]) -> list[dict]:
    return [r for f in files for r in pq.read_table(out / f).to_pylist()]


def caption_rows(translated: pl.DataFrame, avail: pl.DataFrame, root: Path, policy: list[str], group: bool):
    """The per-row rule: reasons row by row, then images in batch order (keys sorted), captions in order."""
    from pipeline.images.store import iter_image_batches

    ok = avail.filter(pl.col("status") == "success")
    key_of = dict(zip(ok["image_id"], ok["shards_dir"] + "/" + ok["key"], strict=True))
    dropped, by_key, review = Counter(), {}, Counter()
    caps = translated.filter(pl.col("field") == "caption")

    def drop_reason(text, flags):
        reason = "flag_empty" if "empty" in policy and not (text or "").strip() else None
        return reason or next((f"flag_{f}" for f in policy if flags and f in flags), None)

    for r in caps.iter_rows(named=True):
        r.setdefault("text_source", "machine")
        r.setdefault("text_pt_machine", r["text_pt"])
        r.setdefault("flags_machine", r["flags"])
        reason = drop_reason(r["text_pt"], r["flags"])
        if reason is None and r["item_id"] not in key_of:
            reason = "image_unavailable"
        if reason:
            dropped[reason] += 1
        else:
            if drop_reason(r["text_pt_machine"], r["flags_machine"]):  # the review kept what the policy drops
                r["_kept_by"] = "human_text" if r["text_source"] == "human" else "false_alarm"
            by_key.setdefault(key_of[r["item_id"]], []).append(r)
    out, seen = [], set()
    for batch in iter_image_batches(root):
        for key, jpg in sorted(batch.items()):
            rows = by_key.get(key)
            if not rows or key in seen:
                continue
            seen.add(key)
            review["human_corrected"] += sum(r["text_source"] == "human" for r in rows)
            review.update(r["_kept_by"] for r in rows if r.get("_kept_by"))
            if group:
                out.append({"image_id": rows[0]["item_id"], "image": jpg, "captions": [r["text_pt"] for r in rows],
                            "captions_en": [r["text_en"] for r in rows], "dataset": rows[0]["dataset"],
                            "split": rows[0]["split"], "engine": "e"})
            else:
                out += [{"sample_id": r["segment_id"], "image_id": r["item_id"], "image": jpg, "caption": r["text_pt"],
                         "caption_en": r["text_en"], "dataset": r["dataset"], "split": r["split"], "engine": "e",
                         "flags": list(r["flags"] or []), "text_source": r["text_source"],
                         "caption_machine": r["text_pt_machine"], "flags_machine": list(r["flags_machine"] or [])}
                        for r in rows]
    missing = sum(len(v) for k, v in by_key.items() if k not in seen)
    return out, dropped, missing, caps.height, review


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("group", [False, True])
@pytest.mark.parametrize("policy", [["empty", "untranslated"], ["brazilian", "empty", "untranslated"], []])
def test_caption_shards_equal_the_per_row_rule(tmp_path, seed, group, policy):
    rng = random.Random(seed)
    avail = availability(300, rng)
    root = images(tmp_path, avail, rng)
    translated = pl.DataFrame([{
        "segment_id": f"s{j}", "dataset": "cc3m", "split": rng.choice(["train", "val"]),
        "item_id": rng.choice([f"img{i}" for i in range(300)] + ["ghost"]),
        "field": rng.choice(["caption"] * 9 + ["question"]), "text_en": f"en {j}",
        "text_pt": rng.choice(["um cão", "", "  ", "\x1c", "\u3000", None, "uma casa"]),
        "flags": rng.choice([None, [], ["empty"], ["untranslated"], ["brazilian"], ["brazilian", "untranslated"]]),
        "text_hash": f"h{j % 700}",
    } for j in range(1500)], schema_overrides={"flags": pl.List(pl.String), "text_pt": pl.String})
    if seed == 1:  # a human review: corrections (some of dropped rows) and false-alarm verdicts
        translated = apply_review(translated, *review(rng))
    stats = build_caption_shards(translated, avail, root, tmp_path / "out", engine="e", policy=FilterPolicy(drop=policy),
                                 rows_per_shard=7, group_by_image=group)
    rows, dropped, missing, total, reviewed = caption_rows(translated, avail, root, policy, group)
    assert read(tmp_path / "out", stats.files) == rows and len(rows) > 50
    assert stats.human_corrected == reviewed["human_corrected"]
    assert stats.kept_by_review == Counter({k: v for k, v in reviewed.items() if k != "human_corrected"})
    if seed == 1 and policy:
        assert stats.human_corrected > 10 and stats.kept_by_review["human_text"] > 0
        assert stats.kept_by_review["false_alarm"] > 0
    assert stats.dropped == dropped + Counter({"image_bytes_missing": missing}) and stats.total == total
    assert stats.kept == sum(len(r["captions"]) for r in rows) if group else stats.kept == len(rows)
    assert all(pq.read_metadata(tmp_path / "out" / f).num_rows == 7 for f in stats.files[:-1])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("with_context", [False, True])
def test_visdial_shards_equal_the_per_dialog_rule(tmp_path, seed, with_context):
    rng = random.Random(seed)
    avail = availability(55, rng)
    root = images(tmp_path, avail, rng)
    translated = pl.DataFrame(
        [{"segment_id": f"visdial/val/question/{i}", "text_en": f"q{i}?", "text_pt": f"pq{i}?"} for i in range(30) if i != 7]
        + [{"segment_id": f"visdial/val/answer/{i}", "text_en": f"a{i}", "text_pt": f"pa{i}"} for i in range(40) if i != 5]
        + [{"segment_id": f"visdial/val/caption/{d}", "text_en": f"c{d}", "text_pt": f"pc{d}"} for d in range(60)])
    # Strings a person corrected (apply_review's text_source): a dialog using one counts as human_corrected.
    human = {"visdial/val/question/3", "visdial/val/answer/11", "visdial/val/answer/22", "visdial/val/caption/4"}
    translated = translated.with_columns(
        pl.when(pl.col("segment_id").is_in(list(human))).then(pl.lit("human")).otherwise(pl.lit("machine"))
        .alias("text_source"))
    empty = frozenset({"visdial/val/question/7", "visdial/val/answer/5"})
    dialogs = [{"image_id": f"img{d % 50}", "visdial_image_id": d, "caption_segment_id": f"visdial/val/caption/{d}",
                "rounds": [{"question": rng.randrange(30), "answer": None if test else rng.randrange(40),
                            "answer_options": [rng.randrange(40) for _ in range(rng.randint(0, 5))],
                            "gt_index": None if test else 0}
                           for test in (rng.random() < 0.2 for _ in range(rng.randint(0, 4)))],
                "dense_round": rng.choice([None, 1]), "dense_relevance": rng.choice([None, [0.5, 1.0]])} for d in range(60)]
    context = pl.DataFrame([{"image_id": d["image_id"], "round": k, "field": f, "text_pt": f"{f} {d['image_id']} {k}"}
                            for d in dialogs for k in range(1, len(d["rounds"]) + 1) for f in ("question", "answer")])
    stats = build_visdial_shards(translated, pl.from_arrow(pa.Table.from_pylist(dialogs, schema=DIALOGS)), avail, root,
                                 tmp_path / "out", engine="e", rows_per_shard=7, empty_segments=empty,
                                 context_translated=context if with_context else None)
    # The per-dialog rule: the last dialog of an image address wins; images in batch order, keys sorted.
    from pipeline.images.store import iter_image_batches

    pt = dict(zip(translated["segment_id"], translated["text_pt"], strict=True))
    ctx = {(i, k, f): t for i, k, f, t in context.iter_rows()} if with_context else None
    ok = avail.filter(pl.col("status") == "success")
    key_of = dict(zip(ok["image_id"], ok["shards_dir"] + "/" + ok["key"], strict=True))
    by_key = {key_of[d["image_id"]]: {"image_id": d["image_id"], "caption": pt[d["caption_segment_id"]],
                                      "caption_en": f"c{d['visdial_image_id']}",
                                      "rounds": _dialog_rounds(d, pt, ctx, empty), "dense_round": d["dense_round"],
                                      "dense_relevance": d["dense_relevance"], "engine": "e"}
              for d in dialogs if d["image_id"] in key_of}
    unavailable = sum(d["image_id"] not in key_of for d in dialogs)
    last = {d["image_id"]: d for d in dialogs}  # the dialog written for each image

    def uses_human(d: dict) -> bool:
        base = "visdial/val"
        ids = [d["caption_segment_id"]] + [f"{base}/answer/{o}" for r in d["rounds"] for o in r["answer_options"]]
        if not with_context:
            ids += [f"{base}/{f}/{r[f]}" for r in d["rounds"] for f in ("question", "answer") if r[f] is not None]
        return any(i in human for i in ids)

    expected = [{**by_key.pop(k), "image": jpg} for batch in iter_image_batches(root) for k, jpg in sorted(batch.items())
                if k in by_key]
    got = read(tmp_path / "out", stats.files)
    assert [{k: r[k] for k in expected[0]} for r in got] == expected and len(expected) > 30
    assert stats.kept == len(expected) and stats.dropped["image_unavailable"] == unavailable
    assert stats.human_corrected == sum(uses_human(last[e["image_id"]]) for e in expected) > 0
    assert stats.dropped["image_bytes_missing"] == len(by_key)
    if with_context:
        assert got[0]["rounds"] == [] or got[0]["rounds"][0]["question"].startswith("question ")
