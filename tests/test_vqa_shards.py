"""VQAv2 shards: PT questions and the 10 PT answers rebuilt from the once-translated answer segments,
images joined through availability, and the official accuracy computed on the PT answers."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eval.metrics.vqa import vqa_metrics
from pipeline.contracts import AVAILABILITY, TRANSLATED
from pipeline.readers.vqa import read_vqav2
from pipeline.shards import build_vqa_shards
from tests.helpers import small_sample
from training.shards import VQA_SHARD

N_VQA = 8


@pytest.fixture(scope="module")
def read(tmp_path_factory):
    sample = small_sample(tmp_path_factory.mktemp("sample"), n_vqa=N_VQA)
    result = read_vqav2(sample.vqav2_questions_json, sample.vqav2_annotations_json, "val",
                        image_url_template=sample.vqav2_image_url_template)
    return sample, result


def _translated(segments: pa.Table, memory_path: Path) -> pl.DataFrame:
    """The `reference` engine's output: every segment with its PT text from the sample's memory."""
    memory = pl.read_parquet(memory_path).select("text_hash", "text_pt")
    df = pl.from_arrow(segments).join(memory, on="text_hash", how="left")
    df = df.with_columns(
        engine=pl.lit("reference"), engine_id=pl.lit("reference:sample"), score=pl.lit(None, pl.Float32),
        flags=pl.lit([], pl.List(pl.String)), flag_reasons=pl.lit([], pl.List(pl.String)),
    )
    return pl.from_arrow(df.select(TRANSLATED.names).to_arrow().cast(TRANSLATED))


def _images(items: pa.Table, images_dir: Path, failed: set[str]) -> pl.DataFrame:
    """img2dataset's output_format="files" layout (shards/00000/<key>.jpg) and its availability rows."""
    rows = []
    for n, item in enumerate(items.to_pylist()):
        key = f"{n:09d}"
        ok = item["image_id"] not in failed
        if ok:
            dest = images_dir / "shards" / "00000" / f"{key}.jpg"
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(Path(url2pathname(urlparse(item["url"]).path)).read_bytes())
        rows.append({"image_id": item["image_id"], "url": item["url"], "status": "success" if ok else "failed",
                     "reason": "ok" if ok else "http_404", "error_message": None if ok else "404",
                     "key": key if ok else None, "shards_dir": "shards" if ok else None})
    return pl.from_arrow(pa.Table.from_pylist(rows, schema=AVAILABILITY))


def _build(tmp_path, read, translated=None, rows_per_shard=1000, failed=()):
    sample, result = read
    translated = translated if translated is not None else _translated(result.segments, sample.reference_memory)
    availability = _images(result.items, tmp_path / "images", set(failed))
    out = tmp_path / "shards"
    stats = build_vqa_shards(translated, pl.from_arrow(result.extra), availability, tmp_path / "images", out,
                             engine="reference", rows_per_shard=rows_per_shard)
    table = pa.concat_tables([pq.read_table(out / f) for f in stats.files]) if stats.files else None
    return stats, table


def test_pt_answers_are_rebuilt_from_answer_segments(tmp_path, read):
    sample, result = read
    failed = result.items["image_id"][0].as_py()
    stats, table = _build(tmp_path, read, rows_per_shard=5, failed={failed})
    assert table.schema == VQA_SHARD
    assert stats.total == 3 * N_VQA and stats.kept == 3 * (N_VQA - 1) == table.num_rows
    assert dict(stats.dropped) == {"image_unavailable": 3} and stats.images == N_VQA - 1
    assert stats.files == [f"part-{i:05d}.parquet" for i in range(5)]  # 21 rows, 5 per part
    memory = {r["text_en"]: r["text_pt"] for r in pq.read_table(sample.reference_memory).to_pylist()}
    questions = {r["question_id"]: r for r in result.extra.to_pylist()}
    urls = dict(zip(result.items["image_id"].to_pylist(), result.items["url"].to_pylist(), strict=True))
    assert failed not in set(table["image_id"].to_pylist())
    for row in table.to_pylist():
        src = questions[row["question_id"]]
        assert row["answers_en"] == src["answers"] and row["answer_type"] == src["answer_type"]
        assert row["answers"] == [memory[a] for a in src["answers"]]
        assert row["question"] == memory[row["question_en"]] and row["engine"] == "reference"
        assert row["image"] == Path(url2pathname(urlparse(urls[row["image_id"]]).path)).read_bytes()
    pairs = {(en, pt) for row in table.to_pylist() for en, pt in zip(row["answers_en"], row["answers"], strict=True)}
    assert ("yes", "sim") in pairs or ("no", "não") in pairs
    assert all(en == pt for en, pt in pairs if en.isdigit())


def test_accuracy_on_pt_answers(tmp_path, read):
    _, table = _build(tmp_path, read)
    rows = table.to_pylist()
    refs = {str(r["question_id"]): r["answers"] for r in rows}
    types = {str(r["question_id"]): r["answer_type"] for r in rows}
    majority = {q: Counter(a).most_common(1)[0][0] for q, a in refs.items()}
    metrics, scored = vqa_metrics(majority, refs, types)
    assert metrics["n"] == 3 * N_VQA
    assert metrics["overall"] == metrics["yes/no"] == metrics["number"] == metrics["other"] == 1.0
    # A lone dissenting annotator's answer: 0 in the subset without it, 1/3 in the other 9 -> 0.3.
    lone = {q: a for q, refs_q in refs.items() for a, c in Counter(refs_q).items() if c == 1}
    assert lone, "the sample should have questions with a single dissenting annotator"
    m, _ = vqa_metrics(lone, {q: refs[q] for q in lone}, {q: types[q] for q in lone})
    assert m["overall"] == pytest.approx(0.3)
    never = {q: "talvez" for q in refs}
    assert vqa_metrics(never, refs, types)[0]["overall"] == 0.0


def test_missing_answer_translation_drops_only_its_questions(tmp_path, read):
    sample, result = read
    translated = _translated(result.segments, sample.reference_memory)
    translated = translated.filter(~((pl.col("field") == "answer") & (pl.col("text_en") == "yes")))
    stats, table = _build(tmp_path, read, translated=translated)
    with_yes = sum("yes" in a for a in result.extra["answers"].to_pylist())
    assert with_yes > 0
    assert dict(stats.dropped) == {"missing_translation": with_yes}
    assert stats.kept == table.num_rows == 3 * N_VQA - with_yes
    assert all("yes" not in r["answers_en"] for r in table.to_pylist())
