"""The vectorised shard builders give what the per-row rules give, on random cases with every edge:
empty outputs (Python's whitespace), policy flags in policy order, unavailable images, an image listed but
missing from the bytes, an image in two img2dataset batches, repeated image ids, part files of 7 rows;
for VisDial also the error of the first dialog with a missing string.  The per-row rules live here only, as
the test's oracle: the builders have one (vectorised) implementation."""
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
from pipeline.shards import FilterPolicy, build_caption_shards, build_visdial_shards, build_vqa_shards
from translation.textkey import text_hash


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


def dialog_rounds(d: dict, pt: dict[str, str], context_pt: dict | None, empty_segments: frozenset[str]) -> list[dict]:
    """The per-dialog rule: the PT rounds of one dialog, string by string, raising for the first missing one."""
    base = "visdial/" + d["caption_segment_id"].split("/")[1]

    def text(segment_id: str) -> str:
        if segment_id in pt:
            return pt[segment_id]
        if segment_id in empty_segments:
            return ""
        raise ValueError(f"{segment_id}: no translation (translated/<engine>/visdial/<split>.parquet is "
                         "incomplete, or the string is not in the source's global lists)")

    def history(k: int, field: str, index: int | None) -> str | None:
        if index is None:
            return None
        if context_pt is None:
            return text(f"{base}/{field}/{index}")
        try:
            return context_pt[(d["image_id"], k, field)]
        except KeyError:
            raise ValueError(f"{d['image_id']} round {k} {field}: no translation with caption context "
                             "(translated/<engine>/visdial/<split>.context.parquet is incomplete)") from None

    return [{"question": history(k, "question", r["question"]), "answer": history(k, "answer", r["answer"]),
             "answer_options": [text(f"{base}/answer/{o}") for o in r["answer_options"]], "gt_index": r["gt_index"]}
            for k, r in enumerate(d["rounds"], 1)]


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
                                      "rounds": dialog_rounds(d, pt, ctx, empty), "dense_round": d["dense_round"],
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


def first_dialog_error(dialogs: list[dict], key_of: dict, pt: dict, ctx: dict | None, empty: frozenset[str]):
    """The per-dialog rule's error: that of the first dialog with a downloaded image that fails, for its first
    missing string (rounds in order, then the caption: a KeyError); None when every dialog builds."""
    for d in dialogs:
        if d["image_id"] not in key_of:
            continue
        try:
            dialog_rounds(d, pt, ctx, empty)
            pt[d["caption_segment_id"]]  # noqa: B018 - a caption without translation raises KeyError
        except (KeyError, ValueError) as e:
            return e
    return None


def test_visdial_errors_equal_the_per_dialog_rule(tmp_path):
    """A missing string (question, answer, option, caption, or a caption-context text) stops the build with
    the error the per-dialog rule raises first, on random cases where some dialogs lack an image."""
    seen = Counter()
    for seed in range(40):
        rng = random.Random(seed)
        avail = availability(20, rng)
        root = images(tmp_path / str(seed), avail, rng)
        ids = ([f"visdial/val/question/{i}" for i in range(12)] + [f"visdial/val/answer/{i}" for i in range(15)]
               + [f"visdial/val/caption/{d}" for d in range(20)])
        gone = set(rng.sample(ids, rng.choice([0, 1, 2, 3, 8])))
        empty = frozenset(i for i in gone if "caption" not in i and rng.random() < 0.3)  # known empty strings
        translated = pl.DataFrame([{"segment_id": i, "text_en": f"en {i}", "text_pt": rng.choice([f"pt {i}"] * 5 + [None])}
                                   for i in ids if i not in gone])
        dialogs = [{"image_id": f"img{d}", "visdial_image_id": d, "caption_segment_id": f"visdial/val/caption/{d}",
                    "rounds": [{"question": rng.randrange(12), "answer": None if test else rng.randrange(15),
                                "answer_options": [rng.randrange(15) for _ in range(rng.choice([0, 0, 1, 3]))],
                                "gt_index": None if test else 0}
                               for test in (rng.random() < 0.2 for _ in range(rng.randint(0, 4)))],
                    "dense_round": None, "dense_relevance": None} for d in range(20)]
        with_context = rng.random() < 0.5
        # Context rows missing: a round's question, its answer, or both.
        lost = {(d["image_id"], k): rng.choice([(), (), (), (), ("question",), ("answer",), ("question", "answer")])
                for d in dialogs for k in range(1, len(d["rounds"]) + 1) if rng.random() < 0.1}
        context = pl.DataFrame([{"image_id": d["image_id"], "round": k, "field": f, "text_pt": f"{f} {k}"}
                                for d in dialogs for k in range(1, len(d["rounds"]) + 1) for f in ("question", "answer")
                                if f not in lost.get((d["image_id"], k), ())],
                               schema={"image_id": pl.String, "round": pl.Int64, "field": pl.String, "text_pt": pl.String})
        ok = avail.filter(pl.col("status") == "success")
        key_of = dict(zip(ok["image_id"], ok["shards_dir"] + "/" + ok["key"], strict=True))
        pt = dict(zip(translated["segment_id"], translated["text_pt"], strict=True))
        ctx = {(i, k, f): t for i, k, f, t in context.iter_rows()} if with_context else None
        expected = first_dialog_error(dialogs, key_of, pt, ctx, empty)

        args = (translated, pl.from_arrow(pa.Table.from_pylist(dialogs, schema=DIALOGS)), avail, root,
                tmp_path / str(seed) / "out")
        kwargs = dict(engine="e", rows_per_shard=7, empty_segments=empty,
                      context_translated=context if with_context else None)
        if expected is None:
            seen["none"] += 1
            assert build_visdial_shards(*args, **kwargs).kept > 0
            continue
        with pytest.raises(type(expected)) as got:
            build_visdial_shards(*args, **kwargs)
        assert str(got.value) == str(expected)
        seen["caption" if isinstance(expected, KeyError) else "context" if "context" in str(expected)
             else str(expected).split("/")[2]] += 1
    assert set(seen) == {"none", "caption", "context", "question", "answer"}, seen


def test_an_option_before_trailing_option_less_rounds_is_checked(tmp_path):
    """The last round with options, followed only by rounds without options (test-split style), still has
    its last option checked (a reduce over the options' groups must not cut it off)."""
    translated = pl.DataFrame({"segment_id": ["visdial/val/caption/7", "visdial/val/question/0", "visdial/val/answer/0"],
                               "text_en": ["a cat", "is it red?", "yes"], "text_pt": ["um gato", "é vermelho?", "sim"]})
    dialogs = pl.DataFrame({
        "image_id": ["visdial/7"], "caption_segment_id": ["visdial/val/caption/7"],
        "rounds": [[{"question": 0, "answer": 0, "answer_options": [0, 4], "gt_index": 0},
                    {"question": 0, "answer": 0, "answer_options": [], "gt_index": 0}]],
        "dense_round": [None], "dense_relevance": [None]})
    availability = pl.DataFrame({"image_id": ["visdial/7"], "status": ["success"], "shards_dir": ["shards"],
                                 "key": ["000000000"]})
    with pytest.raises(ValueError, match=r"^visdial/val/answer/4: no translation"):
        build_visdial_shards(translated, dialogs, availability, tmp_path, tmp_path, engine="e", rows_per_shard=10)


def vqa_rows(translated: pl.DataFrame, questions: pl.DataFrame, avail: pl.DataFrame, root: Path):
    """The per-question rule: the question's PT text by segment id, each answer's by the text_hash of its EN
    text (the empty answer stays empty); then images in batch order (keys sorted), questions in order."""
    from pipeline.images.store import iter_image_batches

    seg = {r["segment_id"]: r for r in translated.iter_rows(named=True)}
    answers = translated.filter(pl.col("field") == "answer")
    answer_pt = dict(zip(answers["text_hash"], answers["text_pt"], strict=True)) | {text_hash(""): ""}
    human = translated.filter(pl.col("text_source") == "human")
    human_q, human_a = set(human["segment_id"]), set(human.filter(pl.col("field") == "answer")["text_hash"])
    ok = avail.filter(pl.col("status") == "success")
    key_of = dict(zip(ok["image_id"], ok["shards_dir"] + "/" + ok["key"], strict=True))
    dropped, by_key = Counter(), {}
    for q in questions.iter_rows(named=True):
        if q["image_id"] not in key_of:
            dropped["image_unavailable"] += 1
            continue
        question = seg.get(q["question_segment_id"])
        pt = [answer_pt.get(text_hash(a)) for a in q["answers"]]
        if question is None or question["text_pt"] is None or None in pt:
            dropped["missing_translation"] += 1
            continue
        by_key.setdefault(key_of[q["image_id"]], []).append({
            "question_id": q["question_id"], "image_id": q["image_id"], "question": question["text_pt"],
            "question_en": question["text_en"], "answers": pt, "answers_en": q["answers"],
            "answer_type": q["answer_type"], "engine": "e",
            "_human": q["question_segment_id"] in human_q or any(text_hash(a) in human_a for a in q["answers"])})
    out, images_written = [], 0
    for batch in iter_image_batches(root):
        for key, jpg in sorted(batch.items()):
            if key in by_key:
                images_written += 1
                out += [{**r, "image": jpg} for r in by_key.pop(key)]
    missing = sum(len(v) for v in by_key.values())
    return out, dropped, missing, images_written


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vqa_shards_equal_the_per_question_rule(tmp_path, seed):
    rng = random.Random(seed)
    avail = availability(80, rng)
    root = images(tmp_path, avail, rng)
    pool = ["yes", "no", "", "a dog", "blue", "x y", "sim"] * 10 + ["2"]
    rows = [{"segment_id": f"vqav2/val/q/{i}", "field": "question", "text_en": f"what {i}?",
             "text_pt": rng.choice([f"o que {i}?"] * 9 + [None])} for i in range(40)]
    rows += [{"segment_id": f"vqav2/val/a/{a}", "field": "answer", "text_en": a, "text_pt": f"pt {a}" if a != "2" else None}
             for a in dict.fromkeys(pool)]  # "2" translated to null, "red" (rare) never; "" translated yet stays ""
    rows.append({"segment_id": "vqav2/val/a/again", "field": "answer", "text_en": "yes", "text_pt": "sim!"})  # last wins
    translated = pl.DataFrame([{**r, "text_hash": text_hash(r["text_en"]),
                                "text_source": "human" if rng.random() < 0.1 else "machine"} for r in rows])
    questions = pl.DataFrame([{
        "question_id": q, "image_id": f"img{rng.randrange(85)}", "question_segment_id": f"vqav2/val/q/{rng.randrange(42)}",
        "answer_type": rng.choice(["yes/no", "number", "other"]),
        "answers": [rng.choice(pool) if rng.random() < 0.99 else "red" for _ in range(rng.choice([10, 10, 10, 0, 3]))],
        "multiple_choice_answer": "yes",
    } for q in range(400)], schema_overrides={"answers": pl.List(pl.String)})
    stats = build_vqa_shards(translated, questions, avail, root, tmp_path / "out", engine="e", rows_per_shard=7)
    rows, dropped, missing, images_written = vqa_rows(translated, questions, avail, root)
    got = read(tmp_path / "out", stats.files)
    assert got == [{k: v for k, v in r.items() if k != "_human"} for r in rows] and len(rows) > 100
    assert stats.dropped == dropped + Counter({"image_bytes_missing": missing}) and stats.total == questions.height
    assert dropped["missing_translation"] > 0 and dropped["image_unavailable"] > 0 and missing > 0
    assert (stats.kept, stats.images) == (len(rows), images_written)
    assert stats.human_corrected == sum(r["_human"] for r in rows) > 0
    assert all(pq.read_metadata(tmp_path / "out" / f).num_rows == 7 for f in stats.files[:-1])
