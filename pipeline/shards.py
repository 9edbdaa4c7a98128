"""BuildShards: join translations, quality flags and downloaded images into the trainer's Parquet shards.

Contracts are training/shards.py (CAPTION_SHARD, EVAL_CAPTION_SHARD, VISDIAL_SHARD, VQA_SHARD).
Rows leave the training set for a recorded reason only (datatrove style: `total`, `kept`,
`dropped_<reason>`), and those counts go into the dataset card beside the shards.

Human review: the builders take the translated table with the review applied
(`pipeline.human_review.apply_review`: ``text_source``, ``text_pt_machine``, ``flags_machine`` columns)
and count the kept rows that carry a person's text (`human_corrected`) and the rows the filter policy
would have dropped but the review kept (`kept_by_human_text`, `kept_by_false_alarm`).  Without those
columns every text is the machine's.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from pipeline.image_store import image_address, iter_image_batches
from pipeline.io import atomic_path
from training.shards import CAPTION_SHARD, EVAL_CAPTION_SHARD, VISDIAL_SHARD, VQA_SHARD
from translation.textkey import text_hash


class FilterPolicy(BaseModel):
    """Which quality flags keep a caption out of the shards.  The default drops empty and untranslated
    rows: this reproduces the thesis' Narrativa sample drop (SPEC Table 5.2)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    drop: list[str] = ["empty", "untranslated"]


class ShardSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # ~40k rows of 256-px JPEGs is about 1 GB: large enough for fast sequential reads, small enough to
    # shuffle at shard granularity and to resume a failed copy.
    rows_per_shard: int = 40_000
    default_policy: FilterPolicy = FilterPolicy()
    # engine name -> policy overriding the default (e.g. madlad = {drop = ["empty", "untranslated", "brazilian"]})
    policy: dict[str, FilterPolicy] = {}

    def policy_for(self, engine: str) -> FilterPolicy:
        return self.policy.get(engine, self.default_policy)


@dataclass
class ShardStats:
    total: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    files: list[str] = field(default_factory=list)
    images: int = 0
    human_corrected: int = 0  # kept rows carrying at least one human-corrected text
    kept_by_review: Counter = field(default_factory=Counter)  # "human_text" | "false_alarm" -> kept rows

    def as_dict(self) -> dict:
        return {
            "total": self.total,
            "kept": self.kept,
            **{f"dropped_{k}": v for k, v in sorted(self.dropped.items())},
            "images": self.images,
            "files": self.files,
            "human_corrected": self.human_corrected,
            "kept_by_human_text": self.kept_by_review["human_text"],
            "kept_by_false_alarm": self.kept_by_review["false_alarm"],
        }


class _RollingWriter:
    """Parquet part files of at most `rows_per_shard` rows, each renamed into place when complete."""

    def __init__(self, out_dir: Path, schema: pa.Schema, rows_per_shard: int):
        self.out_dir, self.schema, self.rows_per_shard = out_dir, schema, rows_per_shard
        self.buffer: list[dict] = []
        self.files: list[str] = []

    def add(self, row: dict) -> None:
        self.buffer.append(row)
        if len(self.buffer) >= self.rows_per_shard:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        dest = self.out_dir / f"part-{len(self.files):05d}.parquet"
        table = pa.Table.from_pylist(self.buffer, schema=self.schema)
        with atomic_path(dest) as tmp:
            pq.write_table(table, tmp, compression="zstd")
        self.files.append(dest.name)
        self.buffer = []


def _finish(writer: _RollingWriter, stats: ShardStats, missing_bytes: int) -> ShardStats:
    """Flush the last part and count rows whose image was listed as downloaded but whose bytes are not
    in the img2dataset output (a deleted shard, say)."""
    if missing_bytes:
        stats.dropped["image_bytes_missing"] += missing_bytes
    writer.flush()
    stats.files = writer.files
    return stats


def _in_order(batch: dict[str, bytes]) -> list[tuple[str, bytes]]:
    """One img2dataset shard's images in key order.  Inside a shard img2dataset stores images in the
    order its threads finish them, which changes from run to run; its keys follow the URL list's order
    (shard number, then position), so sorting by them makes every shard file, and everything trained
    on it, the same on every run.  Batches themselves come in shard-file name order."""
    return sorted(batch.items())


def _policy_reason(flags: list[str] | None, policy: FilterPolicy) -> str | None:
    for flag in policy.drop:
        if flags and flag in flags:
            return f"flag_{flag}"
    return None


def _drop_reason(text_pt: str | None, flags: list[str] | None, policy: FilterPolicy) -> str | None:
    if not (text_pt or "").strip():
        return "flag_empty" if "empty" in policy.drop else None
    return _policy_reason(flags, policy)


def _human(row: dict) -> bool:
    return row.get("text_source") == "human"


def _human_ids(translated: pl.DataFrame, key: str) -> frozenset[str]:
    """Values of `key` (segment_id or text_hash) of the rows carrying a human text (see apply_review)."""
    if "text_source" not in translated.columns:
        return frozenset()
    return frozenset(translated.filter(pl.col("text_source") == "human")[key].to_list())


def _available(availability: pl.DataFrame) -> dict[str, str]:
    """image_id -> image address (shards_dir/key) of every downloaded image."""
    ok = availability.filter(pl.col("status") == "success")
    return {
        i: image_address(d, k)
        for i, d, k in zip(ok["image_id"].to_list(), ok["shards_dir"].to_list(), ok["key"].to_list(), strict=False)
    }


def build_caption_shards(
    translated: pl.DataFrame,
    availability: pl.DataFrame,
    images_dir: Path,
    out_dir: Path,
    *,
    engine: str,
    policy: FilterPolicy,
    rows_per_shard: int,
    group_by_image: bool,
) -> ShardStats:
    """Write caption shards for one (engine, dataset, split).

    group_by_image=False: training layout, one row per (image, caption) (CAPTION_SHARD).
    group_by_image=True: evaluation layout, one row per image with all its kept references
    (EVAL_CAPTION_SHARD; COCO keeps 5).
    """
    stats = ShardStats()
    captions = translated.filter(pl.col("field") == "caption")
    stats.total = captions.height
    key_of = _available(availability)
    by_key: dict[str, list[dict]] = {}
    for row in captions.iter_rows(named=True):
        reason = _drop_reason(row["text_pt"], row.get("flags"), policy)
        if reason is None and row["item_id"] not in key_of:
            reason = "image_unavailable"
        if reason:
            stats.dropped[reason] += 1
            continue
        # What the policy would have done to the machine text alone: a row it would drop is kept by review.
        if "text_pt_machine" in row and _drop_reason(row["text_pt_machine"], row["flags_machine"], policy):
            row["_kept_by"] = "human_text" if _human(row) else "false_alarm"
        by_key.setdefault(key_of[row["item_id"]], []).append(row)

    schema = EVAL_CAPTION_SHARD if group_by_image else CAPTION_SHARD
    writer = _RollingWriter(out_dir, schema, rows_per_shard)
    seen: set[str] = set()
    for batch in iter_image_batches(images_dir):
        for key, jpg in _in_order(batch):
            rows = by_key.get(key)
            if not rows or key in seen:
                continue
            seen.add(key)
            stats.images += 1
            stats.human_corrected += sum(_human(r) for r in rows)
            stats.kept_by_review.update(r["_kept_by"] for r in rows if r.get("_kept_by"))
            if group_by_image:
                stats.kept += len(rows)
                writer.add(
                    {
                        "image_id": rows[0]["item_id"],
                        "image": jpg,
                        "captions": [r["text_pt"] for r in rows],
                        "captions_en": [r["text_en"] for r in rows],
                        "dataset": rows[0]["dataset"],
                        "split": rows[0]["split"],
                        "engine": engine,
                    }
                )
                continue
            for r in rows:
                stats.kept += 1
                writer.add(
                    {
                        "sample_id": r["segment_id"],
                        "image_id": r["item_id"],
                        "image": jpg,
                        "caption": r["text_pt"],
                        "caption_en": r["text_en"],
                        "dataset": r["dataset"],
                        "split": r["split"],
                        "engine": engine,
                        "flags": list(r.get("flags") or []),
                        "text_source": r.get("text_source") or "machine",
                        "caption_machine": r.get("text_pt_machine", r["text_pt"]),
                        "flags_machine": list(r.get("flags_machine", r.get("flags")) or []),
                    }
                )
    return _finish(writer, stats, sum(len(rows) for key, rows in by_key.items() if key not in seen))


def build_visdial_shards(
    translated: pl.DataFrame,
    dialogs: pl.DataFrame,
    availability: pl.DataFrame,
    images_dir: Path,
    out_dir: Path,
    *,
    engine: str,
    rows_per_shard: int,
    context_translated: pl.DataFrame | None = None,
    empty_segments: frozenset[str] = frozenset(),
) -> ShardStats:
    """Rebuild VisDial dialogs in PT from the translated global question/answer lists.

    empty_segments: ids (``visdial/<split>/<question|answer>/<i>``) of global strings that are empty in
    the source, so never segments: a dialog may still point at them, and they rebuild as "". Any other
    id missing from `translated` is an error naming it (an incomplete translation, never a guess).

    context_translated: None (translate.visdial_context off) rebuilds every string from the
    context-free global lists.  Given (VISDIAL_CONTEXT_TRANSLATED rows), each round's question and
    answer -- the dialog's history -- come from the translations made with the dialog's caption as
    context, while the 100 answer options stay the context-free translations of the global answer
    list.  `gt_index` is unchanged: it points at the option whose EN string is the ground-truth answer,
    and that option's PT text is its context-free translation, which may differ from the round's
    context-translated `answer`.  That is deliberate: replacing only the right option by its context
    translation would make it the one option translated differently from the other 99, a cue a model
    could rank by; every option is translated the same way, so ranking stays fair, and the history
    reads as the dialog's own text.  A dialog text missing from `context_translated` is an error,
    never a silent fall back to the context-free string.

    No quality filter: every round needs its 100 options for the benchmark; flags are counted in the
    comparison report instead.
    """
    stats = ShardStats(total=dialogs.height)
    pt = dict(zip(translated["segment_id"].to_list(), translated["text_pt"].to_list(), strict=False))
    en = dict(zip(translated["segment_id"].to_list(), translated["text_en"].to_list(), strict=False))
    human = _human_ids(translated, "segment_id")
    used_human = False  # whether the dialog being rebuilt uses a human-corrected string
    context_pt: dict[tuple[str, int, str], str] | None = None
    if context_translated is not None:
        context_pt = {
            (i, k, f): t
            for i, k, f, t in context_translated.select("image_id", "round", "field", "text_pt").iter_rows()
        }

    def text(segment_id: str) -> str:
        nonlocal used_human
        if segment_id in pt:
            used_human = used_human or segment_id in human
            return pt[segment_id]
        if segment_id in empty_segments:
            return ""
        raise ValueError(f"{segment_id}: no translation (translated/<engine>/visdial/<split>.parquet is "
                         "incomplete, or the string is not in the source's global lists)")

    def history(image_id: str, k: int, field: str, index: int | None, base: str) -> str | None:
        if index is None:
            return None
        if context_pt is None:
            return text(f"{base}/{field}/{index}")
        try:
            return context_pt[(image_id, k, field)]
        except KeyError:
            raise ValueError(f"{image_id} round {k} {field}: no translation with caption context "
                             "(translated/<engine>/visdial/<split>.context.parquet is incomplete)") from None

    key_of = _available(availability)
    by_key: dict[str, dict] = {}
    for d in dialogs.iter_rows(named=True):
        if d["image_id"] not in key_of:
            stats.dropped["image_unavailable"] += 1
            continue
        base = "visdial/" + d["caption_segment_id"].split("/")[1]
        used_human = False
        caption = text(d["caption_segment_id"])
        rounds = [
            {
                "question": history(d["image_id"], k, "question", r["question"], base),
                "answer": history(d["image_id"], k, "answer", r["answer"], base),
                "answer_options": [text(f"{base}/answer/{o}") for o in r["answer_options"]],
                "gt_index": r["gt_index"],
            }
            for k, r in enumerate(d["rounds"], 1)
        ]
        by_key[key_of[d["image_id"]]] = {
            "image_id": d["image_id"],
            "caption": caption,
            "_human": used_human,
            "caption_en": en[d["caption_segment_id"]],
            "rounds": rounds,
            "dense_round": d["dense_round"],
            "dense_relevance": d["dense_relevance"],
            "engine": engine,
        }
    writer = _RollingWriter(out_dir, VISDIAL_SHARD, rows_per_shard)
    for batch in iter_image_batches(images_dir):
        for key, jpg in _in_order(batch):
            row = by_key.pop(key, None)
            if row is not None:
                stats.kept += 1
                stats.images += 1
                stats.human_corrected += row.pop("_human")
                writer.add({**row, "image": jpg})
    return _finish(writer, stats, len(by_key))


def build_vqa_shards(
    translated: pl.DataFrame,
    questions: pl.DataFrame,
    availability: pl.DataFrame,
    images_dir: Path,
    out_dir: Path,
    *,
    engine: str,
    rows_per_shard: int,
) -> ShardStats:
    """VQAv2 questions in PT, one row per question (VQA_SHARD), from the VQA_QUESTIONS table.

    The question's PT text comes from its segment; each of the 10 answers' PT text from the answer
    segment with the English answer's text_hash (distinct answers are translated once).  An empty
    answer stays empty.  No quality filter, as for VisDial: a benchmark keeps every question it can;
    a question whose question or answer has no translation is dropped as `missing_translation`.
    """
    stats = ShardStats(total=questions.height)
    seg_pt = dict(zip(translated["segment_id"].to_list(), translated["text_pt"].to_list(), strict=False))
    seg_en = dict(zip(translated["segment_id"].to_list(), translated["text_en"].to_list(), strict=False))
    answers = translated.filter(pl.col("field") == "answer")
    answer_pt = dict(zip(answers["text_hash"].to_list(), answers["text_pt"].to_list(), strict=False))
    answer_pt[text_hash("")] = ""
    human_questions = _human_ids(translated, "segment_id")
    human_answers = _human_ids(answers, "text_hash")
    key_of = _available(availability)
    by_key: dict[str, list[dict]] = {}
    for q in questions.iter_rows(named=True):
        if q["image_id"] not in key_of:
            stats.dropped["image_unavailable"] += 1
            continue
        pt_answers = [answer_pt.get(text_hash(a)) for a in q["answers"]]
        if seg_pt.get(q["question_segment_id"]) is None or any(a is None for a in pt_answers):
            stats.dropped["missing_translation"] += 1
            continue
        by_key.setdefault(key_of[q["image_id"]], []).append(
            {
                "question_id": q["question_id"],
                "image_id": q["image_id"],
                "question": seg_pt[q["question_segment_id"]],
                "question_en": seg_en[q["question_segment_id"]],
                "answers": pt_answers,
                "answers_en": list(q["answers"]),
                "answer_type": q["answer_type"],
                "engine": engine,
                "_human": q["question_segment_id"] in human_questions
                or any(text_hash(a) in human_answers for a in q["answers"]),
            }
        )
    writer = _RollingWriter(out_dir, VQA_SHARD, rows_per_shard)
    for batch in iter_image_batches(images_dir):
        for key, jpg in _in_order(batch):
            rows = by_key.pop(key, None)
            if rows is None:
                continue
            stats.images += 1
            for row in rows:
                stats.kept += 1
                stats.human_corrected += row.pop("_human")
                writer.add({**row, "image": jpg})
    return _finish(writer, stats, sum(len(rows) for rows in by_key.values()))
