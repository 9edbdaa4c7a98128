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

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from pipeline.images.store import image_address, iter_image_batches
from pipeline.io import atomic_path
from training.shards import CAPTION_SHARD, EVAL_CAPTION_SHARD, VISDIAL_ROUND, VISDIAL_SHARD, VQA_SHARD
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
    """Parquet part files of exactly `rows_per_shard` rows (the last one fewer), each renamed into place
    when complete.  Rows come one dict at a time (`add`) or as Arrow tables (`add_table`, the vectorised
    caption builder); a writer takes one kind only, and both cut the same files."""

    def __init__(self, out_dir: Path, schema: pa.Schema, rows_per_shard: int):
        self.out_dir, self.schema, self.rows_per_shard = out_dir, schema, rows_per_shard
        self.buffer: list[dict] = []
        self.tables: list[pa.Table] = []
        self.buffered = 0
        self.files: list[str] = []

    def add(self, row: dict) -> None:
        self.buffer.append(row)
        if len(self.buffer) >= self.rows_per_shard:
            self.flush()

    def add_table(self, table: pa.Table) -> None:
        self.tables.append(table.select(self.schema.names).cast(self.schema))
        self.buffered += table.num_rows
        while self.buffered >= self.rows_per_shard:
            whole = pa.concat_tables(self.tables)
            self._write(whole.slice(0, self.rows_per_shard))
            rest = whole.slice(self.rows_per_shard)
            self.tables, self.buffered = ([rest] if rest.num_rows else []), rest.num_rows

    def flush(self) -> None:
        if self.buffer:
            self._write(pa.Table.from_pylist(self.buffer, schema=self.schema))
            self.buffer = []
        if self.buffered:
            self._write(pa.concat_tables(self.tables))
            self.tables, self.buffered = [], 0

    def _write(self, table: pa.Table) -> None:
        dest = self.out_dir / f"part-{len(self.files):05d}.parquet"
        with atomic_path(dest) as tmp:
            pq.write_table(table, tmp, compression="zstd")
        self.files.append(dest.name)


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


def _human_ids(translated: pl.DataFrame, key: str) -> frozenset[str]:
    """Values of `key` (segment_id or text_hash) of the rows carrying a human text (see apply_review)."""
    if "text_source" not in translated.columns:
        return frozenset()
    return frozenset(translated.filter(pl.col("text_source") == "human")[key].to_list())


def _policy_reason_expr(text: str, flags: str, policy: FilterPolicy) -> pl.Expr:
    """`_policy_reason` of `flags` (and an empty `text` when the policy drops "empty") as a polars
    expression: the first reason in policy order, empty first; null when the policy keeps the row."""
    reason = pl.lit(None, pl.String)
    for flag in reversed(policy.drop):  # built inside out: the first flag of the policy wins
        reason = pl.when(pl.col(flags).list.contains(flag)).then(pl.lit(f"flag_{flag}")).otherwise(reason)
    if "empty" in policy.drop:
        empty = pl.col(text).fill_null("").str.strip_chars(_PY_WHITESPACE) == ""
        reason = pl.when(empty).then(pl.lit("flag_empty")).otherwise(reason)
    return reason


def _available(availability: pl.DataFrame) -> dict[str, str]:
    """image_id -> image address (shards_dir/key) of every downloaded image."""
    ok = availability.filter(pl.col("status") == "success")
    return {
        i: image_address(d, k)
        for i, d, k in zip(ok["image_id"].to_list(), ok["shards_dir"].to_list(), ok["key"].to_list(), strict=False)
    }


# What Python's str.strip() removes (str.isspace), so "empty" means the same here as in the per-row rule
# `not text_pt.strip()`; polars' own whitespace set leaves out \x1c-\x1f.
_PY_WHITESPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace())


def _addresses(availability: pl.DataFrame) -> pl.DataFrame:
    """item_id -> _address (image_address) of every downloaded image; the last row wins when an id
    repeats, as `_available`'s dict does."""
    return availability.filter(pl.col("status") == "success").select(
        pl.col("image_id").alias("item_id"), (pl.col("shards_dir") + "/" + pl.col("key")).alias("_address"),
    ).unique("item_id", keep="last", maintain_order=True)


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

    Rows are decided and gathered with polars/Arrow, never one Python dict per caption (3.3M CC3M rows):
    a caption is dropped for the first of: empty output (when the policy drops "empty"), the policy's
    flags in policy order, no downloaded image.  Kept rows go out in image order (img2dataset shards in
    name order, keys sorted inside each), an image's captions in their order in `translated`; an
    image met twice is written once.
    """
    stats = ShardStats()
    # Only the columns the shards use, selected before the filter copies them (3.3M rows: flag_reasons,
    # text_hash and engine_id would be ~0.5 GB for nothing).
    cols = translated.columns
    no_flags = pl.lit(None, pl.List(pl.String))
    flags = pl.col("flags") if "flags" in cols else no_flags.alias("flags")
    captions = translated.select(
        "segment_id", "item_id", "text_pt", "text_en", "dataset", "split", "field", flags,
        # provenance of the human review (apply_review); without it every text is the machine's
        pl.col("text_source") if "text_source" in cols else pl.lit("machine").alias("text_source"),
        pl.col("text_pt_machine") if "text_pt_machine" in cols else pl.col("text_pt").alias("text_pt_machine"),
        pl.col("flags_machine") if "flags_machine" in cols else flags.alias("flags_machine"),
    ).filter(pl.col("field") == "caption").drop("field").with_row_index("_row")
    stats.total = captions.height
    address = _addresses(availability)
    reason = _policy_reason_expr("text_pt", "flags", policy)
    reason = pl.when(reason.is_null() & pl.col("_address").is_null()).then(pl.lit("image_unavailable")).otherwise(reason)
    # What the policy would have done to the machine text alone: a kept row it would drop is kept by review.
    kept_by = (pl.when(_policy_reason_expr("text_pt_machine", "flags_machine", policy).is_not_null())
               .then(pl.when(pl.col("text_source") == "human").then(pl.lit("human_text"))
                     .otherwise(pl.lit("false_alarm"))).otherwise(pl.lit(None, pl.String)))
    decided = captions.join(address, on="item_id", how="left", maintain_order="left").with_columns(
        reason.alias("_reason"), kept_by.alias("_kept_by"))
    for r, n in decided.filter(pl.col("_reason").is_not_null()).group_by("_reason").len().iter_rows():
        stats.dropped[r] += n
    # Kept rows sorted by (address, row): an image's captions are one contiguous run, found by binary search.
    kept = decided.filter(pl.col("_reason").is_null()).sort("_address", "_row").select(
        "_address", "segment_id", "item_id", "text_pt", "text_en", "dataset", "split",
        pl.col("flags").fill_null(pl.lit([], pl.List(pl.String))), "text_source", "text_pt_machine",
        pl.col("flags_machine").fill_null(pl.lit([], pl.List(pl.String))), "_kept_by")
    addresses = kept["_address"]
    written = np.zeros(kept.height, dtype=bool)  # rows of an image already written (an image met twice)

    schema = EVAL_CAPTION_SHARD if group_by_image else CAPTION_SHARD
    writer = _RollingWriter(out_dir, schema, rows_per_shard)
    for batch in iter_image_batches(images_dir):
        if not batch or not kept.height:
            continue
        keys, jpgs = zip(*_in_order(batch), strict=True)
        wanted = pl.Series(keys, dtype=pl.String)
        lo = addresses.search_sorted(wanted, "left").to_numpy().astype(np.int64)
        hi = addresses.search_sorted(wanted, "right").to_numpy().astype(np.int64)
        use = (hi > lo) & ~written[np.minimum(lo, kept.height - 1)]
        if not use.any():
            continue
        lo, hi, image = lo[use], hi[use], np.flatnonzero(use)
        lengths = hi - lo
        rows_idx = np.repeat(lo - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths) + np.arange(lengths.sum())
        written[rows_idx] = True
        rows = kept[rows_idx].with_columns(pl.Series("_image", np.repeat(np.arange(len(image)), lengths)))
        images = pa.array(jpgs, pa.binary()).take(pa.array(image))
        stats.images += len(image)
        stats.kept += rows.height
        stats.human_corrected += int((rows["text_source"] == "human").sum())
        stats.kept_by_review.update(dict(rows["_kept_by"].drop_nulls().value_counts().rows()))
        if group_by_image:
            per_image = rows.group_by("_image", maintain_order=True).agg(
                pl.col("item_id").first().alias("image_id"), pl.col("text_pt").alias("captions"),
                pl.col("text_en").alias("captions_en"), pl.col("dataset").first(), pl.col("split").first())
            table = per_image.with_columns(pl.lit(engine).alias("engine")).to_arrow().append_column("image", images)
        else:
            table = rows.select(
                pl.col("segment_id").alias("sample_id"), pl.col("item_id").alias("image_id"),
                pl.col("text_pt").alias("caption"), pl.col("text_en").alias("caption_en"), "dataset", "split",
                pl.lit(engine).alias("engine"), "flags", "text_source",
                pl.col("text_pt_machine").alias("caption_machine"), "flags_machine",
            ).to_arrow().append_column("image", images.take(pa.array(rows["_image"].to_numpy())))
        writer.add_table(table)
    return _finish(writer, stats, int((~written).sum()))


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

    Vectorised (123k dialogs x 10 rounds x 100 options are 123M strings): every index is checked up front
    with numpy, and the PT rounds are gathered with Arrow one image batch at a time, so only the dialogs
    of the part file being filled hold strings.  A check that fails re-runs the per-dialog rule
    (`_dialog_rounds`) on the first failing dialog, so the error names the same string in the same order.
    """
    import pyarrow.compute as pc

    stats = ShardStats(total=dialogs.height)
    # The rounds (123M option indices at full size) stay in `dialogs`, never copied by a join, filter or
    # sort: the available dialogs are rows of a narrow frame pointing at them by `_src`.
    d = dialogs.select("image_id", "caption_segment_id", "dense_round", "dense_relevance").with_row_index("_src").join(
        _addresses(availability).rename({"item_id": "image_id"}), on="image_id", how="left", maintain_order="left")
    if (n := int(d["_address"].is_null().sum())):
        stats.dropped["image_unavailable"] += n
    d = d.filter(pl.col("_address").is_not_null())
    seg = translated.select("segment_id", "text_pt", "text_en").unique("segment_id", keep="last")
    d = d.join(seg.rename({"segment_id": "caption_segment_id", "text_pt": "caption", "text_en": "caption_en"}),
               on="caption_segment_id", how="left", maintain_order="left").with_columns(
        seg_has=pl.col("caption_segment_id").is_in(seg["segment_id"].implode()))
    bases = ("visdial/" + d["caption_segment_id"].str.split("/").list.get(1, null_on_oob=True)).unique().to_list()
    if len(bases) > 1:  # one dialogs file is one split; never seen otherwise, so kept simple
        raise ValueError(f"dialogs of several splits in one shard build: {bases}")
    writer = _RollingWriter(out_dir, VISDIAL_SHARD, rows_per_shard)
    if not d.height:
        return _finish(writer, stats, 0)
    base = bases[0]

    # Flattened rounds of every dialog (Arrow, int indices only; checks below count the available ones).
    rounds = _one_chunk(dialogs["rounds"].to_arrow())
    r_len = pc.fill_null(pc.list_value_length(rounds), 0).to_numpy().astype(np.int64)
    r_start = np.concatenate(([0], np.cumsum(r_len)))
    flat = pc.list_flatten(rounds)
    q_idx, a_idx = pc.struct_field(flat, "question"), pc.struct_field(flat, "answer")
    gt = pc.struct_field(flat, "gt_index")
    opts = _one_chunk(pc.struct_field(flat, "answer_options"))
    o_len = pc.fill_null(pc.list_value_length(opts), 0).to_numpy().astype(np.int64)
    o_start = np.concatenate(([0], np.cumsum(o_len)))
    o_idx = pc.list_flatten(opts)
    round_dialog = np.repeat(np.arange(dialogs.height), r_len)

    def lookup(field: str, refs: list) -> pa.Array:
        """PT text per index of the global `field` list (null: neither translated nor a known empty string)."""
        size = 1 + max([int(pc.max(r).as_py() or 0) for r in refs if len(r)] + [0])
        prefix = f"{base}/{field}/"
        known = seg.filter(pl.col("segment_id").str.starts_with(prefix)).select(
            pl.col("segment_id").str.slice(len(prefix)).cast(pl.Int64, strict=False).alias("i"), "text_pt"
        ).filter(pl.col("i").is_not_null() & pl.col("i").is_between(0, size - 1))
        empty = [int(x.removeprefix(prefix)) for x in empty_segments
                 if x.startswith(prefix) and x.removeprefix(prefix).isdigit() and int(x.removeprefix(prefix)) < size]
        out = pl.Series([None] * size, dtype=pl.String)
        out = out.scatter(empty, "") if empty else out
        present = pl.Series([False] * size).scatter(known["i"], True) if known.height else pl.Series([False] * size)
        out = out.scatter(known["i"], known["text_pt"]) if known.height else out
        return pl.DataFrame({"t": out, "p": present | out.is_not_null()}).to_arrow()

    questions, answers = lookup("question", [q_idx]), lookup("answer", [a_idx, o_idx])
    q_text, a_text = questions.column("t").combine_chunks(), answers.column("t").combine_chunks()
    q_ok, a_ok = questions.column("p").to_numpy(), answers.column("p").to_numpy()

    def ok(idx: pa.Array, table: np.ndarray) -> np.ndarray:
        """Per index: its string is known (a null index has nothing to look up).  No int64 copy: the
        123M option indices stay int32."""
        if not idx.null_count:
            return table[idx.to_numpy(zero_copy_only=False)]
        return table[pc.fill_null(idx, 0).to_numpy(zero_copy_only=False)] | pc.is_null(idx).to_numpy(
            zero_copy_only=False)

    bad_option = ~ok(o_idx, a_ok)
    bad_round = np.zeros(len(o_len), dtype=bool)
    if len(bad_option):  # any bad option per round (reduceat: an empty round would read its neighbour)
        bad_round = np.logical_or.reduceat(bad_option, np.minimum(o_start[:-1], len(bad_option) - 1)) & (o_len > 0)
    del bad_option
    if context_translated is None:
        hist_q = hist_a = None
        bad_round |= ~ok(q_idx, q_ok) | ~ok(a_idx, a_ok)
    else:  # each round's question and answer from the caption-context translations
        keyed = pl.DataFrame({"image_id": dialogs["image_id"].gather(round_dialog),
                              "round": np.arange(len(round_dialog)) - r_start[round_dialog] + 1}).cast(
            {"round": pl.Int64})
        ctx = context_translated.select("image_id", pl.col("round").cast(pl.Int64), "field", "text_pt",
                                        pl.lit(True).alias("_has")).unique(["image_id", "round", "field"], keep="last")
        hist = {}
        for field, idx in (("question", q_idx), ("answer", a_idx)):
            got = keyed.join(ctx.filter(pl.col("field") == field).drop("field"), on=["image_id", "round"], how="left",
                             maintain_order="left")
            hist[field] = pc.if_else(pc.is_valid(idx), got["text_pt"].to_arrow(), None)  # no index: None
            bad_round |= pc.is_valid(idx).to_numpy(zero_copy_only=False) & got["_has"].is_null().to_numpy()
        hist_q, hist_a = hist["question"], hist["answer"]
    # Dialogs that use a human-corrected string (caption, context-free history, or an option), counted in
    # the card; with no review (the usual case) nothing is computed.
    human = _human_ids(translated, "segment_id")
    dialog_human = np.zeros(dialogs.height, dtype=bool)
    if human:
        def corrected(field: str, size: int) -> np.ndarray:
            prefix = f"{base}/{field}/"
            out = np.zeros(size, dtype=bool)
            idx = [int(s.removeprefix(prefix)) for s in human if s.startswith(prefix) and s.removeprefix(prefix).isdigit()]
            out[[i for i in idx if i < size]] = True
            return out

        q_h, a_h = corrected("question", len(q_ok)), corrected("answer", len(a_ok))
        human_option = ok(o_idx, a_h) & pc.is_valid(o_idx).to_numpy(zero_copy_only=False)
        human_round = np.zeros(len(o_len), dtype=bool)
        if len(human_option):
            human_round = np.logical_or.reduceat(human_option, np.minimum(o_start[:-1], len(human_option) - 1)) & (o_len > 0)
        if context_translated is None:
            for idx, table in ((q_idx, q_h), (a_idx, a_h)):
                human_round |= ok(idx, table) & pc.is_valid(idx).to_numpy(zero_copy_only=False)
        dialog_human = np.bincount(round_dialog, weights=human_round, minlength=dialogs.height) > 0
        dialog_human[d["_src"].to_numpy()[d["caption_segment_id"].is_in(list(human)).to_numpy()]] = True
    src = d["_src"].to_numpy()
    bad = (np.bincount(round_dialog, weights=bad_round, minlength=dialogs.height) > 0)[src] | ~d["seg_has"].to_numpy()
    if bad.any():
        _raise_first(dialogs.row(int(src[np.argmax(bad)]), named=True), translated, context_translated,
                     empty_segments)

    # One dialog per image address (the last one, as a dict by address would keep), sorted by address.
    kept = d.unique("_address", keep="last", maintain_order=True).sort("_address")
    addresses, written = kept["_address"], np.zeros(kept.height, dtype=bool)
    for batch in iter_image_batches(images_dir):
        if not batch:
            continue
        keys, jpgs = zip(*_in_order(batch), strict=True)
        pos = addresses.search_sorted(pl.Series(keys, dtype=pl.String), "left").to_numpy().astype(np.int64)
        found = pos < kept.height
        found[found] = (addresses.gather(pos[found]).to_numpy() == np.asarray(keys, dtype=object)[found])
        found[found] &= ~written[pos[found]]
        if not found.any():
            continue
        pick, image = pos[found], np.flatnonzero(found)
        written[pick] = True
        rows = kept[pick]
        dpos = rows["_src"].to_numpy().astype(np.int64)
        picked = _ranges(r_start[dpos], r_len[dpos])  # the picked dialogs' rounds, in order
        options = pa.ListArray.from_arrays(
            pa.array(np.concatenate(([0], np.cumsum(o_len[picked]))), pa.int32()),
            a_text.take(o_idx.take(pa.array(_ranges(o_start[picked], o_len[picked])))))
        r = pa.array(picked)
        fields = [
            (hist_q.take(r) if hist_q is not None else q_text.take(q_idx.take(r))).cast(pa.string()),
            (hist_a.take(r) if hist_a is not None else a_text.take(a_idx.take(r))).cast(pa.string()),
            options.cast(pa.list_(pa.string())), gt.take(r).cast(pa.int32()),
        ]
        per_dialog = pa.ListArray.from_arrays(pa.array(np.concatenate(([0], np.cumsum(r_len[dpos]))), pa.int32()),
                                              pa.StructArray.from_arrays(fields, fields=list(VISDIAL_ROUND)))
        table = rows.select("image_id", "caption", "caption_en", "dense_round", "dense_relevance",
                            pl.lit(engine).alias("engine")).to_arrow()
        table = table.append_column("rounds", per_dialog).append_column(
            "image", pa.array(jpgs, pa.binary()).take(pa.array(image)))
        stats.kept += len(pick)
        stats.images += len(pick)
        stats.human_corrected += int(dialog_human[dpos].sum())
        writer.add_table(table)
    return _finish(writer, stats, int((~written).sum()))


def _one_chunk(a: pa.Array | pa.ChunkedArray) -> pa.Array:
    return a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The concatenated ranges [start, start + length) (numpy, no Python loop)."""
    total = int(lengths.sum())
    if not total:
        return np.zeros(0, dtype=np.int64)
    return np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths) + np.arange(total)


def _raise_first(d: dict, translated: pl.DataFrame, context_translated: pl.DataFrame | None,
                 empty_segments: frozenset[str]) -> None:
    """Build dialog `d` the per-row way, which raises the error its first missing string gives."""
    seg = translated.filter(pl.col("segment_id").str.starts_with("visdial/"))
    pt = dict(zip(seg["segment_id"].to_list(), seg["text_pt"].to_list(), strict=False))
    context_pt = None if context_translated is None else {
        (i, k, f): t for i, k, f, t in context_translated.select("image_id", "round", "field", "text_pt").iter_rows()}
    _dialog_rounds(d, pt, context_pt, empty_segments)
    pt[d["caption_segment_id"]]  # noqa: B018 - a caption without translation raises KeyError, as it always did
    raise RuntimeError(f"{d['image_id']}: the vectorised check found a missing translation the per-row rule does not")


def _dialog_rounds(d: dict, pt: dict[str, str], context_pt: dict | None, empty_segments: frozenset[str]) -> list[dict]:
    """The PT rounds of one dialog, string by string (the rule the vectorised builder reproduces)."""
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
