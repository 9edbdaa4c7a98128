"""The human-review overlay in the shards: human text replaces the machine text, a corrected row is never
dropped by a machine flag, a false-alarm verdict takes its flag off, the card counts both; captions,
VQA (answers by text_hash) and the folder-level rebuild fingerprint."""
from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.cards import write_dataset_card
from pipeline.contracts import AVAILABILITY, TRANSLATED
from pipeline.human_review import apply_review, load_review, review_fingerprint
from pipeline.readers.vqa import read_vqav2
from pipeline.shards import FilterPolicy, build_caption_shards, build_vqa_shards
from tests.helpers import jpeg, small_sample
from tests.test_vqa_shards import _images, _translated
from training.shards import CAPTION_SHARD, EVAL_CAPTION_SHARD
from translation.overlay import HumanOverlay
from translation.textkey import text_hash

E = "opus:en>pt:beam=4"
OTHER = "madlad:en>pt:beam=4"

# (EN, machine PT, machine flags) of five CC3M captions, one image each.
CAPTIONS = [
    ("a brown dog", "um cão castanho", []),
    ("a red car", "a red car", ["untranslated"]),
    ("a big house", "a big house", ["untranslated"]),
    ("a small boat", "a small boat", ["untranslated"]),
    ("people on the bus", "pessoas no ônibus", ["brazilian"]),
]


@pytest.fixture(scope="module")
def vqa(tmp_path_factory):
    sample = small_sample(tmp_path_factory.mktemp("sample"), n_vqa=4)
    return sample, read_vqav2(sample.vqav2_questions_json, sample.vqav2_annotations_json, "val",
                              image_url_template=sample.vqav2_image_url_template)


def _caption_inputs(tmp_path: Path, image_of=lambda i: i) -> tuple[pl.DataFrame, pl.DataFrame, Path]:
    rows, avail = [], []
    images = tmp_path / "images"
    for i, (en, pt, flags) in enumerate(CAPTIONS):
        item = f"cc3m/train/{image_of(i)}"
        rows.append({"segment_id": f"cc3m/train/{i}", "dataset": "cc3m", "split": "train", "item_id": item,
                     "field": "caption", "text_en": en, "text_hash": text_hash(en), "engine": "opus",
                     "engine_id": E, "text_pt": pt, "score": None, "flags": flags,
                     "flag_reasons": [f"why {f}" for f in flags]})
    for n in sorted({image_of(i) for i in range(len(CAPTIONS))}):
        key = f"{n:09d}"
        dest = images / "shards" / "00000" / f"{key}.jpg"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(jpeg((16, 16), (40 * n, 40 * n, 40 * n)))
        avail.append({"image_id": f"cc3m/train/{n}", "url": f"file:///{n}.jpg", "status": "success", "reason": "ok",
                      "error_message": None, "key": key, "shards_dir": "shards"})
    translated = pl.from_arrow(pa.Table.from_pylist(rows, schema=TRANSLATED))
    return translated, pl.from_arrow(pa.Table.from_pylist(avail, schema=AVAILABILITY)), images


def _review(root: Path) -> Path:
    """Row 0 edited, row 1 (untranslated) corrected, row 2's flag a false alarm, row 3's confirmed,
    row 4's brazilian a false alarm; plus a correction of row 3 for ANOTHER engine id (must not apply)."""
    path = root / "memory" / "human.sqlite"
    with HumanOverlay(path) as ov:
        def fix(i: int, pt: str, engine: str = E) -> None:
            en, machine, _ = CAPTIONS[i]
            ov.record_correction(engine_id=engine, text_hash=text_hash(en), text_en=en, text_pt=pt,
                                 replaces=machine, who="ana")
        fix(0, "um cão acastanhado")
        fix(1, "um carro vermelho")
        fix(3, "um barco pequeno", engine=OTHER)
        for i, flag, verdict in ((2, "untranslated", "false_alarm"), (3, "untranslated", "confirmed"),
                                 (4, "brazilian", "false_alarm")):
            ov.record_verdict(engine_id=E, text_hash=text_hash(CAPTIONS[i][0]), flag=flag, verdict=verdict, who="rui")
    return path


def test_caption_shards_carry_human_text_and_overruled_flags(tmp_path):
    translated, availability, images = _caption_inputs(tmp_path)
    _review(tmp_path)
    applied = apply_review(translated, *load_review(tmp_path, E))
    out = tmp_path / "shards"
    out.mkdir()
    policy = FilterPolicy()  # drops empty and untranslated
    stats = build_caption_shards(applied, availability, images, out, engine="opus", policy=policy,
                                 rows_per_shard=100, group_by_image=False)
    table = pq.read_table(out / "part-00000.parquet")
    assert table.schema.equals(CAPTION_SHARD, check_metadata=False)
    rows = {r["sample_id"]: r for r in table.to_pylist()}
    assert sorted(rows) == ["cc3m/train/0", "cc3m/train/1", "cc3m/train/2", "cc3m/train/4"]
    r0, r1, r2, r4 = (rows[f"cc3m/train/{i}"] for i in (0, 1, 2, 4))
    assert (r0["caption"], r0["text_source"], r0["caption_machine"]) == ("um cão acastanhado", "human",
                                                                        "um cão castanho")
    # corrected: the person's text, no flag on it, the machine text and its flag kept for provenance
    assert (r1["caption"], r1["text_source"], r1["flags"]) == ("um carro vermelho", "human", [])
    assert (r1["caption_machine"], r1["flags_machine"]) == ("a red car", ["untranslated"])
    # false alarm: machine text kept, the flag taken off before the drop policy
    assert (r2["caption"], r2["text_source"], r2["flags"], r2["flags_machine"]) == (
        "a big house", "machine", [], ["untranslated"])
    assert (r4["flags"], r4["flags_machine"]) == ([], ["brazilian"])
    # row 3: the flag confirmed and the other engine's correction ignored -> dropped
    assert stats.as_dict() | {"files": []} == {
        "total": 5, "kept": 4, "dropped_flag_untranslated": 1, "images": 4, "files": [],
        "human_corrected": 2, "kept_by_human_text": 1, "kept_by_false_alarm": 1}

    card = write_dataset_card(out, dataset="cc3m", split="train", engine="opus", engine_id=E, layout="x",
                              policy=policy.drop, stats=stats.as_dict(), availability_md=None).read_text()
    assert "| human-corrected rows | 2 (" in card
    assert "| kept by review | 1 rows whose machine text" in card and "; 1 rows whose dropping flags" in card
    assert "`text_source`" in card and "`caption_machine`" in card


def test_an_accept_after_an_edit_the_shard_and_the_gold_row_agree(tmp_path):
    """Edit, add to gold, then accept the engine's output on purpose (naming the edit it replaces): the shard
    ships the accepted text as the human text, and the gold row holds that same text."""
    translated, availability, images = _caption_inputs(tmp_path)
    en, machine, _ = CAPTIONS[0]
    with HumanOverlay(tmp_path / "memory" / "human.sqlite") as ov:
        edit = ov.record_correction(engine_id=E, text_hash=text_hash(en), text_en=en, text_pt="um cão editado",
                                    replaces=machine, who="ana", seen=None)
        ov.add_gold(text_hash=text_hash(en), text_en=en, text_pt=edit.text_pt, style="cc3m", who="ana",
                    from_engine=E)
        ov.record_correction(engine_id=E, text_hash=text_hash(en), text_en=en, text_pt=machine,
                             replaces=edit.text_pt, who="ana", action="accept", source_engine=E, seen=edit.id,
                             strict=True)
        gold = {g.text_hash: g.text_pt for g in ov.gold()}
    out = tmp_path / "shards"
    out.mkdir()
    build_caption_shards(apply_review(translated, *load_review(tmp_path, E)), availability, images, out,
                         engine="opus", policy=FilterPolicy(drop=[]), rows_per_shard=100, group_by_image=False)
    row = next(r for r in pq.read_table(out / "part-00000.parquet").to_pylist() if r["caption_en"] == en)
    assert (row["caption"], row["text_source"], row["caption_machine"]) == (machine, "human", machine)
    assert gold == {text_hash(en): row["caption"]}


def test_without_review_every_text_is_the_machines(tmp_path):
    translated, availability, images = _caption_inputs(tmp_path)
    applied = apply_review(translated, *load_review(tmp_path, E))  # no overlay file at all
    assert applied["text_pt"].to_list() == translated["text_pt"].to_list()
    assert set(applied["text_source"]) == {"machine"}
    out = tmp_path / "shards"
    out.mkdir()
    stats = build_caption_shards(applied, availability, images, out, engine="opus", policy=FilterPolicy(),
                                 rows_per_shard=100, group_by_image=False)
    assert (stats.kept, stats.dropped["flag_untranslated"], stats.human_corrected) == (2, 3, 0)


def test_eval_layout_uses_the_human_references(tmp_path):
    translated, availability, images = _caption_inputs(tmp_path, image_of=lambda i: i // 3)  # images 0, 1
    _review(tmp_path)
    applied = apply_review(translated, *load_review(tmp_path, E))
    out = tmp_path / "shards"
    out.mkdir()
    stats = build_caption_shards(applied, availability, images, out, engine="opus", policy=FilterPolicy(),
                                 rows_per_shard=100, group_by_image=True)
    table = pq.read_table(out / "part-00000.parquet")
    assert table.schema.equals(EVAL_CAPTION_SHARD, check_metadata=False)
    by_image = {r["image_id"]: r["captions"] for r in table.to_pylist()}
    assert by_image == {"cc3m/train/0": ["um cão acastanhado", "um carro vermelho", "a big house"],
                        "cc3m/train/1": ["pessoas no ônibus"]}
    assert (stats.kept, stats.human_corrected, stats.as_dict()["kept_by_false_alarm"]) == (4, 2, 1)


def test_vqa_answers_take_the_human_text_by_hash(tmp_path, vqa):
    sample, result = vqa
    translated = _translated(result.segments, sample.reference_memory)
    engine_id = translated["engine_id"][0]
    yes = translated.filter((pl.col("field") == "answer") & (pl.col("text_en") == "yes"))
    assert yes.height == 1
    question = translated.filter(pl.col("field") == "question").row(0, named=True)
    with HumanOverlay(tmp_path / "memory" / "human.sqlite") as ov:
        ov.record_correction(engine_id=engine_id, text_hash=text_hash("yes"), text_en="yes", text_pt="sim, sim",
                             replaces=yes["text_pt"][0], who="ana")
        ov.record_correction(engine_id=engine_id, text_hash=question["text_hash"], text_en=question["text_en"],
                             text_pt="PERGUNTA REVISTA", replaces=question["text_pt"], who="ana")
    applied = apply_review(translated, *load_review(tmp_path, engine_id))
    availability = _images(result.items, tmp_path / "images", set())
    stats = build_vqa_shards(applied, pl.from_arrow(result.extra), availability, tmp_path / "images",
                             tmp_path / "shards", engine="reference", rows_per_shard=1000)
    rows = pq.read_table(tmp_path / "shards" / stats.files[0]).to_pylist()
    with_yes = [r for r in rows if "yes" in r["answers_en"]]
    assert with_yes and all(pt == "sim, sim" for r in with_yes
                            for en, pt in zip(r["answers_en"], r["answers"], strict=True) if en == "yes")
    # every question with the same EN text (segments keyed by text_hash) carries the revised question
    revised = [r for r in rows if r["question_en"] == question["text_en"]]
    assert revised and all(r["question"] == "PERGUNTA REVISTA" for r in revised)
    expected = len({r["question_id"] for r in with_yes} | {r["question_id"] for r in revised})
    assert stats.human_corrected == expected and expected < stats.kept


def test_fingerprint_changes_only_for_the_folders_strings(tmp_path):
    translated, _, _ = _caption_inputs(tmp_path)
    hashes = translated["text_hash"].to_list()
    before = review_fingerprint(*load_review(tmp_path, E), hashes)
    _review(tmp_path)
    after = review_fingerprint(*load_review(tmp_path, E), hashes)
    assert after != before
    with HumanOverlay(tmp_path / "memory" / "human.sqlite") as ov:
        ov.record_correction(engine_id=E, text_hash=text_hash("elsewhere"), text_en="elsewhere", text_pt="noutro sítio",
                             replaces="em outro lugar", who="ana")  # not one of this folder's strings
        ov.record_verdict(engine_id=E, text_hash=text_hash("a big house"), flag="untranslated",
                          verdict="false_alarm", who="ana")  # the same verdict again: nothing changes
    assert review_fingerprint(*load_review(tmp_path, E), hashes) == after
    with HumanOverlay(tmp_path / "memory" / "human.sqlite") as ov:
        ov.record_verdict(engine_id=E, text_hash=text_hash("a big house"), flag="untranslated",
                          verdict="confirmed", who="ana")
    assert review_fingerprint(*load_review(tmp_path, E), hashes) != after


def test_rows_with_null_flags_apply_cleanly(tmp_path):
    translated, _, _ = _caption_inputs(tmp_path)
    translated = translated.with_columns(pl.lit(None, pl.List(pl.String)).alias("flags"))
    applied = apply_review(translated, {}, {})
    assert applied["flags"].to_list() == [[]] * len(CAPTIONS)
