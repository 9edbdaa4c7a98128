"""The VisDial context of a review row: the dialog around a caption, question or answer.

Every VisDial string has one: a caption opens its dialog; a question is asked in some round; an answer is
either a round's ground-truth answer or only one of the 100 options offered in a round (most of the
answer list is never a ground truth, and those rows must show their dialog too).
"""
from __future__ import annotations

import threading
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from pipeline.layout import RunLayout
from pipeline.review.tables import RunTables
from translation.overlay import HumanOverlay

MAX_DIALOGS = 2
CAPTION_ROUNDS = 3  # a caption's context: its dialog's first rounds
_OPTION_BATCH = 2_000  # dialogs per batch while the option index is built (100 options x 10 rounds each)


class DialogIndex:
    """VisDial rounds of a split, one row per (dialog, round), read from sources/visdial/<split>/dialogs.parquet
    the first time a split is asked for; and, for answers that are only options, where each option is
    first offered (built the first time such a row is opened, in batches: VisDial train offers 120M)."""

    def __init__(self, root: Path):
        self.root = root
        self._lock = threading.Lock()
        self._rounds: dict[str, pl.DataFrame] = {}
        self._options: dict[str, pl.DataFrame] = {}

    def _path(self, split: str) -> Path:
        return RunLayout(self.root).source_split("visdial", split) / "dialogs.parquet"

    def rounds(self, split: str) -> pl.DataFrame:
        with self._lock:
            if split not in self._rounds:
                path = self._path(split)
                if not path.is_file():
                    self._rounds[split] = pl.DataFrame()
                else:
                    d = pl.read_parquet(path, columns=["image_id", "caption_segment_id", "rounds"])
                    self._rounds[split] = (
                        d.explode("rounds")
                        .with_columns((pl.int_range(pl.len()).over("image_id") + 1).alias("round"))
                        .with_columns(pl.col("rounds").struct.field("question"),
                                      pl.col("rounds").struct.field("answer"))
                        .drop("rounds"))
            return self._rounds[split]

    def options(self, split: str) -> pl.DataFrame:
        """option (answer index) -> the first (image_id, round) that offers it."""
        with self._lock:
            if split not in self._options:
                path = self._path(split)
                parts: list[pl.DataFrame] = []
                if path.is_file():
                    for batch in pq.ParquetFile(path).iter_batches(batch_size=_OPTION_BATCH,
                                                                   columns=["image_id", "rounds"]):
                        parts.append(
                            pl.from_arrow(batch).explode("rounds")
                            .with_columns((pl.int_range(pl.len()).over("image_id") + 1).alias("round"),
                                          pl.col("rounds").struct.field("answer_options").alias("option"))
                            .select("image_id", "round", "option").explode("option").drop_nulls("option")
                            .unique("option", keep="first", maintain_order=True))
                found = (pl.concat(parts).unique("option", keep="first", maintain_order=True) if parts else
                         pl.DataFrame(schema={"image_id": pl.String, "round": pl.Int64, "option": pl.Int32}))
                self._options[split] = found
            return self._options[split]


def dialog_context(tables: RunTables, overlay: HumanOverlay | None, dialogs: DialogIndex, occurrence: dict,
                   limit: int = MAX_DIALOGS) -> list[dict]:
    """Dialogs where a VisDial string occurs: the caption and the rounds up to the one that uses it (that
    round marked; `option` when the string is only one of its answer options), or the first rounds for
    a caption."""
    split, field = occurrence["split"], occurrence["field"]
    rounds = dialogs.rounds(split)
    if not rounds.height:
        return []
    option = False
    if field == "caption":
        hits = rounds.filter((pl.col("image_id") == occurrence["item_id"]) & (pl.col("round") <= CAPTION_ROUNDS))
        at = {occurrence["item_id"]: 0}
    else:
        index = int(occurrence["segment_id"].rsplit("/", 1)[1])
        first = (rounds.filter(pl.col(field) == index).group_by("image_id", maintain_order=True)
                 .agg(pl.col("round").min()).head(limit))
        if not first.height and field == "answer":
            option = True
            first = dialogs.options(split).filter(pl.col("option") == index).select("image_id", "round").head(1)
        at = dict(first.iter_rows())
        hits = (rounds.join(first.rename({"round": "_at"}), on="image_id")
                .filter(pl.col("round") <= pl.col("_at")).drop("_at"))
    if not hits.height:
        return []
    ids = set(hits["caption_segment_id"].to_list())
    for f in ("question", "answer"):
        ids |= {f"visdial/{split}/{f}/{i}" for i in hits[f].drop_nulls().to_list()}
    if option:
        ids.add(occurrence["segment_id"])
    texts = tables.by_segment(tables.chosen.name, "visdial", split, sorted(ids))
    human = overlay.corrections(tables.chosen.engine_id, [t["text_hash"] for t in texts.values()]) if overlay else {}

    def text(segment_id: str) -> dict:
        t = texts.get(segment_id)
        if t is None:
            return {"en": "", "pt": ""}
        h = human.get(t["text_hash"])
        return {"en": t["text_en"], "pt": h.text_pt if h else t["text_pt"], "human": h is not None}

    out = []
    for image_id, group in hits.group_by("image_id", maintain_order=True):
        image_id = image_id[0]
        group = group.sort("round")
        out.append({
            "image_id": image_id,
            "split": split,
            "caption": text(group["caption_segment_id"][0]),
            "option": text(occurrence["segment_id"]) if option else None,
            "rounds": [{"round": r["round"], "marked": r["round"] == at.get(image_id),
                        "question": text(f"visdial/{split}/question/{r['question']}"),
                        "answer": text(f"visdial/{split}/answer/{r['answer']}") if r["answer"] is not None else None}
                       for r in group.iter_rows(named=True)],
        })
    return out[:limit]
