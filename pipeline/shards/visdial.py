"""VisDial shards: one row per dialog, rebuilt in PT from the translated global question/answer lists.

123k dialogs x 10 rounds x 100 options are 123M strings, so nothing here goes dialog by dialog: the
rounds are flattened once into Arrow index arrays (`_Rounds`), each global list becomes a table by index
(`_GlobalList`), every index is checked up front with numpy, and the PT rounds are gathered with Arrow
one image batch at a time, so only the dialogs of the part file being filled hold strings.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.shards.common import (
    RollingWriter,
    ShardStats,
    human_ids,
    keep_rows,
    ranges,
    with_address,
    write_parts,
)
from training.shards import VISDIAL_ROUND, VISDIAL_SHARD


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
    comparison report instead.  Of several dialogs of one image, the last is written.

    Errors: the first dialog (in `dialogs` order, among those with a downloaded image) with a missing
    string raises for its first missing string, in dialog order: round by round the question, the
    answer, then the options in order; the caption last (KeyError naming its segment id).
    """
    stats = ShardStats(total=dialogs.height)
    segments = translated.select("segment_id", "text_pt", "text_en").unique("segment_id", keep="last")
    available = _available_dialogs(stats, dialogs, segments, availability)
    if not available.height:
        return stats  # nothing to write: no part file
    base = _split_base(available)
    human = human_ids(translated, "segment_id")
    rounds = _Rounds.of(dialogs)
    questions = _GlobalList.of(segments, f"{base}/question/", [rounds.question], empty_segments, human)
    answers = _GlobalList.of(segments, f"{base}/answer/", [rounds.answer, rounds.options], empty_segments, human)
    with_context = context_translated is not None
    turns = (_Turns.in_context(rounds, dialogs, context_translated) if with_context
             else _Turns.context_free(rounds, questions, answers))
    _raise_first_missing(available, rounds, turns, questions, answers, with_context)
    uses_human = _uses_human(available, rounds, questions, answers, with_context, human)
    # One dialog per image address (the last one, as a dict by address would keep), sorted by address.
    kept = available.with_columns(pl.Series("_human", uses_human)).unique(
        "_address", keep="last", maintain_order=True).sort("_address")
    return write_parts(kept, images_dir, RollingWriter(out_dir, VISDIAL_SHARD, rows_per_shard), stats,
                       partial(_table, rounds=rounds, turns=turns, answers=answers, engine=engine))


def _available_dialogs(stats: ShardStats, dialogs: pl.DataFrame, segments: pl.DataFrame,
                       availability: pl.DataFrame) -> pl.DataFrame:
    """The dialogs with a downloaded image (the others counted as image_unavailable) as a narrow frame:
    `_src` (the dialog's row in `dialogs`), `_address`, the PT/EN caption and `_caption_found`.  The
    rounds (123M option indices at full size) stay in `dialogs`, never copied by a join, filter or sort."""
    narrow = dialogs.select("image_id", "caption_segment_id", "dense_round", "dense_relevance").with_row_index("_src")
    available = keep_rows(stats, with_address(narrow, "image_id", availability),
                          pl.when(pl.col("_address").is_null()).then(pl.lit("image_unavailable")))
    captions = segments.rename({"segment_id": "caption_segment_id", "text_pt": "caption", "text_en": "caption_en"})
    return available.join(captions, on="caption_segment_id", how="left", maintain_order="left").with_columns(
        _caption_found=pl.col("caption_segment_id").is_in(segments["segment_id"].implode()))


def _split_base(available: pl.DataFrame) -> str:
    """``visdial/<split>``, the prefix of the dialogs' segment ids."""
    bases = ("visdial/" + available["caption_segment_id"].str.split("/").list.get(1, null_on_oob=True)).unique().to_list()
    if len(bases) > 1:  # one dialogs file is one split; never seen otherwise, so kept simple
        raise ValueError(f"dialogs of several splits in one shard build: {bases}")
    return bases[0]


@dataclass(frozen=True)
class _Rounds:
    """Every dialog's rounds flattened (Arrow index arrays, no strings): per dialog (rows of `dialogs`)
    where its rounds start and how many; per round its indices; all rounds' options in one array."""

    start: np.ndarray  # per dialog: its first round
    count: np.ndarray  # per dialog: its number of rounds
    question: pa.Array  # per round: index into the global question list (null: none)
    answer: pa.Array  # per round: index into the global answer list (null in the test split)
    gt_index: pa.Array
    options: pa.Array  # every round's answer options, flattened (int32 indices into the answer list)
    options_start: np.ndarray  # per round: its first option in `options`
    options_count: np.ndarray

    @classmethod
    def of(cls, dialogs: pl.DataFrame) -> _Rounds:
        rounds = _one_chunk(dialogs["rounds"].to_arrow())
        flat = pc.list_flatten(rounds)
        options = _one_chunk(pc.struct_field(flat, "answer_options"))
        count, options_count = _lengths(rounds), _lengths(options)
        return cls(start=_starts(count), count=count, question=pc.struct_field(flat, "question"),
                   answer=pc.struct_field(flat, "answer"), gt_index=pc.struct_field(flat, "gt_index"),
                   options=pc.list_flatten(options), options_start=_starts(options_count),
                   options_count=options_count)


@dataclass(frozen=True)
class _GlobalList:
    """One VisDial global string list (questions or answers) by index, up to the largest index the
    dialogs use: index i is the segment `prefix` + str(i)."""

    prefix: str
    text: pa.Array  # the PT text; null when neither translated nor a known empty string
    found: np.ndarray  # translated (even to a null text) or a known empty string
    human: np.ndarray  # a person's text (apply_review)

    @classmethod
    def of(cls, segments: pl.DataFrame, prefix: str, refs: list[pa.Array], empty_segments: frozenset[str],
           human: frozenset[str]) -> _GlobalList:
        size = 1 + max([int(pc.max(r).as_py() or 0) for r in refs if len(r)] + [0])
        ids = pl.select((pl.lit(prefix) + pl.int_range(size, dtype=pl.Int64).cast(pl.String)).alias("segment_id"))
        translated = pl.col("segment_id").is_in(segments["segment_id"].implode())  # even to a null text
        empty = pl.col("segment_id").is_in(pl.Series(list(empty_segments), dtype=pl.String).implode())
        table = ids.join(segments.select("segment_id", "text_pt"), on="segment_id", how="left",
                         maintain_order="left").select(
            pl.when(translated).then(pl.col("text_pt")).when(empty).then(pl.lit("")).alias("text"),
            (translated | empty).alias("found"),
            pl.col("segment_id").is_in(pl.Series(list(human), dtype=pl.String).implode()).alias("human"),
        )
        return cls(prefix=prefix, text=_one_chunk(table["text"].to_arrow()), found=table["found"].to_numpy(),
                   human=table["human"].to_numpy())


@dataclass(frozen=True)
class _Turns:
    """Per round, the question and answer the shard writes (the dialog's history), and whether each
    was found (a round without a question or answer index needs none)."""

    question: pa.Array
    answer: pa.Array
    question_found: np.ndarray
    answer_found: np.ndarray

    @classmethod
    def context_free(cls, rounds: _Rounds, questions: _GlobalList, answers: _GlobalList) -> _Turns:
        return cls(question=questions.text.take(rounds.question), answer=answers.text.take(rounds.answer),
                   question_found=_at(questions.found, rounds.question, null=True),
                   answer_found=_at(answers.found, rounds.answer, null=True))

    @classmethod
    def in_context(cls, rounds: _Rounds, dialogs: pl.DataFrame, context_translated: pl.DataFrame) -> _Turns:
        """From the caption-context translations, keyed by (image_id, 1-based round, field)."""
        round_dialog = np.repeat(np.arange(len(rounds.count)), rounds.count)
        keyed = pl.DataFrame({"image_id": dialogs["image_id"].gather(round_dialog),
                              "round": np.arange(len(round_dialog)) - rounds.start[round_dialog] + 1}).cast(
            {"round": pl.Int64})
        context = context_translated.select(
            "image_id", pl.col("round").cast(pl.Int64), "field", "text_pt", pl.lit(True).alias("_has"),
        ).unique(["image_id", "round", "field"], keep="last")
        texts, found = {}, {}
        for field, index in (("question", rounds.question), ("answer", rounds.answer)):
            got = keyed.join(context.filter(pl.col("field") == field).drop("field"), on=["image_id", "round"],
                             how="left", maintain_order="left")
            valid = pc.is_valid(index)
            texts[field] = pc.if_else(valid, got["text_pt"].to_arrow(), None)  # no index: no text
            found[field] = ~valid.to_numpy(zero_copy_only=False) | got["_has"].is_not_null().to_numpy()
        return cls(question=texts["question"], answer=texts["answer"], question_found=found["question"],
                   answer_found=found["answer"])


def _raise_first_missing(available: pl.DataFrame, rounds: _Rounds, turns: _Turns, questions: _GlobalList,
                         answers: _GlobalList, with_context: bool) -> None:
    """Raise for the first available dialog with a missing string (see build_visdial_shards)."""
    missing_option = _at(~answers.found, rounds.options, null=False)
    round_ok = turns.question_found & turns.answer_found & ~_any_per(
        missing_option, rounds.options_start, rounds.options_count)
    del missing_option  # 123M booleans at full size
    src = available["_src"].to_numpy()
    bad = _any_per(~round_ok, rounds.start, rounds.count)[src] | ~available["_caption_found"].to_numpy()
    if bad.any():
        raise _missing_error(available.row(int(np.argmax(bad)), named=True), rounds, turns, questions, answers,
                             with_context)


def _missing_error(dialog: dict, rounds: _Rounds, turns: _Turns, questions: _GlobalList, answers: _GlobalList,
                   with_context: bool) -> Exception:
    """The error for `dialog`'s first missing string, read off the checks' own arrays: round by round
    its question, its answer, then its options in order; the caption last."""
    first = int(rounds.start[dialog["_src"]])
    for k in range(1, int(rounds.count[dialog["_src"]]) + 1):
        r = first + k - 1
        for field, found, index, strings in (("question", turns.question_found, rounds.question, questions),
                                             ("answer", turns.answer_found, rounds.answer, answers)):
            if not found[r]:
                if with_context:
                    return ValueError(f"{dialog['image_id']} round {k} {field}: no translation with caption "
                                      "context (translated/<engine>/visdial/<split>.context.parquet is incomplete)")
                return _no_translation(f"{strings.prefix}{index[r].as_py()}")
        options = rounds.options.slice(rounds.options_start[r], rounds.options_count[r])
        missing = _at(~answers.found, options, null=False)
        if missing.any():
            return _no_translation(f"{answers.prefix}{options[int(np.argmax(missing))].as_py()}")
    return KeyError(dialog["caption_segment_id"])  # a caption without translation: a KeyError, as it always was


def _no_translation(segment_id: str) -> ValueError:
    return ValueError(f"{segment_id}: no translation (translated/<engine>/visdial/<split>.parquet is "
                      "incomplete, or the string is not in the source's global lists)")


def _uses_human(available: pl.DataFrame, rounds: _Rounds, questions: _GlobalList, answers: _GlobalList,
                with_context: bool, human: frozenset[str]) -> np.ndarray:
    """Per available dialog: it uses a human-corrected string (its caption, an option, or its
    context-free history), counted in the card.  With no review (the usual case) nothing is computed."""
    if not human:
        return np.zeros(available.height, dtype=bool)
    per_round = _any_per(_at(answers.human, rounds.options, null=False), rounds.options_start, rounds.options_count)
    if not with_context:
        per_round |= _at(questions.human, rounds.question, null=False) | _at(answers.human, rounds.answer, null=False)
    per_dialog = _any_per(per_round, rounds.start, rounds.count)
    return per_dialog[available["_src"].to_numpy()] | available["caption_segment_id"].is_in(list(human)).to_numpy()


def _table(rows: pl.DataFrame, images: pa.Array, *, rounds: _Rounds, turns: _Turns, answers: _GlobalList,
           engine: str) -> pa.Table:
    """VISDIAL_SHARD rows: one per dialog (one dialog per image, so `images` is row by row), its rounds
    gathered from the flattened indices."""
    dialog = rows["_src"].to_numpy().astype(np.int64)
    picked = ranges(rounds.start[dialog], rounds.count[dialog])  # the dialogs' rounds, in order
    option_index = rounds.options.take(pa.array(ranges(rounds.options_start[picked], rounds.options_count[picked])))
    options = pa.ListArray.from_arrays(_offsets(rounds.options_count[picked]), answers.text.take(option_index))
    r = pa.array(picked)
    fields = [turns.question.take(r).cast(pa.string()), turns.answer.take(r).cast(pa.string()),
              options.cast(pa.list_(pa.string())), rounds.gt_index.take(r).cast(pa.int32())]
    per_dialog = pa.ListArray.from_arrays(_offsets(rounds.count[dialog]),
                                          pa.StructArray.from_arrays(fields, fields=list(VISDIAL_ROUND)))
    table = rows.select("image_id", "caption", "caption_en", "dense_round", "dense_relevance",
                        pl.lit(engine).alias("engine")).to_arrow()
    return table.append_column("rounds", per_dialog).append_column("image", images)


def _one_chunk(a: pa.Array | pa.ChunkedArray) -> pa.Array:
    return a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a


def _lengths(lists: pa.Array) -> np.ndarray:
    """Per list, its length (a null list has none)."""
    return pc.fill_null(pc.list_value_length(lists), 0).to_numpy().astype(np.int64)


def _starts(lengths: np.ndarray) -> np.ndarray:
    """Where each list starts in the flattened values."""
    return np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)


def _offsets(lengths: np.ndarray) -> pa.Array:
    """Arrow list offsets of lists of `lengths`."""
    return pa.array(np.concatenate(([0], np.cumsum(lengths))), pa.int32())


def _at(table: np.ndarray, index: pa.Array, *, null: bool) -> np.ndarray:
    """table[i] for each i of `index`, `null` where the index is null.  No int64 copy: the 123M option
    indices stay int32."""
    if not index.null_count:
        return table[index.to_numpy(zero_copy_only=False)]
    valid = pc.is_valid(index).to_numpy(zero_copy_only=False)
    return np.where(valid, table[pc.fill_null(index, 0).to_numpy(zero_copy_only=False)], null)


def _any_per(flags: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Per group [start, start + length) of `flags` (groups tiling `flags` in order): any set; False for
    an empty group."""
    out = np.zeros(len(lengths), dtype=bool)
    nonempty = lengths > 0
    if nonempty.any():  # reduceat over the non-empty groups' starts: each runs to the next one's start
        out[nonempty] = np.logical_or.reduceat(flags, starts[nonempty])
    return out
