"""What an engine must translate in a run, and how it is cut: one string, one payment.

The run-wide unique-string table (`unique_strings`, one per engine) holds every distinct string the
engine must translate: every dataset's and split's segments, the gold set (`[curate] gold`) and, with
`translate.visdial_context`, the VisDial dialog texts keyed by (text, caption).  `part_of` cuts it by
hash into `translate.parts` disjoint parts: a string belongs to exactly one part, so no two workers,
processes or machines can ever send the same string (`pipeline.tasks.translate`).

VisDial context (`translate.visdial_context`, engines that take a context; checked when the settings load):

- Off (default): each global VisDial question/answer string is translated once, context-free.
- On: additionally, the text that belongs to a dialog -- each round's question and its ground-truth
  answer as they appear in that dialog's history -- is translated with the dialog's EN caption as
  context (in the same parts, partitioned by the caption's hash so a dialog's texts go in one request),
  and the Translate task writes those rows to translated/<engine>/visdial/<split>.context.parquet.  The
  100 answer options stay context-free: they are shared global strings, and translating 100 options x 10
  rounds per dialog with context would multiply the cost ~100x.
- Memory: context-free rows stay under the configured engine's id (``...:context=off``) keyed by
  `text_hash(text)`, so switching the option on re-uses them and pays only for the dialog texts;
  context rows go under the context engine's id (``...:context=on``) keyed by `memory_key(text, caption)`.
  Both the id and the key differ, so a context look-up never returns a context-free translation or the
  reverse.  Context is not billed: only the text's characters count.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl

from pipeline.engines import EngineEntry
from pipeline.layout import RunLayout
from pipeline.settings import Settings
from translation.cost import CostEstimate, estimate
from translation.gold import load_gold
from translation.memory import memory_key
from translation.textkey import text_hash

UNIQUE_SCHEMA = {"key": pl.String, "text_en": pl.String, "context": pl.String, "part_key": pl.String,
                 "kind": pl.String}


def context_entry(settings: Settings, engine_name: str) -> EngineEntry | None:
    """The entry that translates VisDial dialog text with caption context, or None when
    `translate.visdial_context` is off.  Raises ConfigurationError when the option is on and the engine
    takes no context (the settings validator refuses that for `translate.engines`; this covers
    `ptvl translate --engine` with any other configured engine)."""
    if not settings.translate.visdial_context:
        return None
    return settings.engines[engine_name].context_variant(engine_name)


def context_engine_id(settings: Settings, engine_name: str) -> str | None:
    """The memory id of the caption-context engine (no key needed), or None when the option is off."""
    entry = context_entry(settings, engine_name)
    return None if entry is None else entry.engine_id(engine_name)


def dialog_context_rows(root: Path, split: str) -> pl.DataFrame:
    """The VisDial texts translated with context: one row per (dialog, round, field) of the split.

    Columns: image_id, round (1-based), field (question | answer), segment_id, text_en, context (the
    dialog's EN caption), text_hash (`memory_key(text_en, context)`) and context_hash (the caption's
    `text_hash`, which picks the part: a dialog's texts, and every dialog with the same caption, land
    in one part, so one request carries them and no two workers pay for the same key).  A test-split
    round without an answer has no answer row.  A global string that was empty has no segment; its
    row has text_en "" (stored as "" without a request).
    """
    layout = RunLayout(root)
    seg = pl.read_parquet(layout.segments("visdial", split))
    en = dict(zip(seg["segment_id"].to_list(), seg["text_en"].to_list(), strict=True))
    dialogs = pl.read_parquet(layout.source_split("visdial", split) / "dialogs.parquet")
    cols: dict[str, list] = {k: [] for k in ("image_id", "round", "field", "segment_id", "text_en", "context")}
    for d in dialogs.iter_rows(named=True):
        caption = en[d["caption_segment_id"]]
        for k, r in enumerate(d["rounds"], 1):
            for field, index in (("question", r["question"]), ("answer", r["answer"])):
                if index is None:
                    continue
                sid = f"visdial/{split}/{field}/{index}"
                for c, v in zip(cols, (d["image_id"], k, field, sid, en.get(sid, ""), caption), strict=True):
                    cols[c].append(v)
    return pl.DataFrame(cols, schema={"image_id": pl.String, "round": pl.Int32, "field": pl.String,
                                      "segment_id": pl.String, "text_en": pl.String, "context": pl.String}
                        ).with_columns(
        pl.Series("text_hash", [memory_key(t, c) for t, c in zip(cols["text_en"], cols["context"], strict=True)],
                  dtype=pl.String),
        pl.Series("context_hash", [text_hash(c) for c in cols["context"]], dtype=pl.String),
    )


def context_cost(settings: Settings, engine_name: str, targets: list[tuple[str, str]],
                 memory) -> tuple[list[tuple[str, CostEstimate]], CostEstimate | None]:
    """Dry-run prices of the VisDial dialog texts translated with caption context: ([(label, CostEstimate)
    per VisDial split], their total or None when there is none).

    Only (text, caption) keys missing from the memory under the context engine id count, and only the
    text's characters (context is not billed).  Needs the splits' segments and dialogs ingested.
    """
    engine_id = context_engine_id(settings, engine_name)
    splits = [sp for d, sp in targets if d == "visdial"] if engine_id is not None else []
    if not splits:
        return [], None
    price = settings.engines[engine_name].price_per_million()
    out, texts, contexts = [], [], []
    for sp in splits:
        rows = dialog_context_rows(settings.root, sp)
        t, c = rows["text_en"].to_list(), rows["context"].to_list()
        out.append((f"visdial/{sp} dialogs, caption context", estimate(t, memory, engine_id, price, contexts=c)))
        texts += t
        contexts += c
    return out, estimate(texts, memory, engine_id, price, contexts=contexts)


def _with_gold(settings: Settings, engine_name: str) -> bool:
    # The gold set is scored for every engine that translates; a reference engine only serves imports.
    return settings.curate.gold and settings.engines[engine_name].translates


def unique_strings(settings: Settings, engine_name: str) -> pl.DataFrame:
    """Every distinct string `engine_name` must translate in this run: the unique-string table.

    Columns: key (the memory key), text_en, context (null unless a VisDial dialog text with its caption),
    part_key (the hash that picks the part: text_hash, or for dialog texts the caption's hash, so a
    dialog's texts share one request), kind (segment | gold | context).  Segments of every enabled
    dataset/split come first, then gold-set sentences found in no segment (`[curate] gold`, engines
    that translate), then dialog texts (`translate.visdial_context`).  Needs the segments ingested.
    """
    layout = settings.layout
    frames = []
    for d, sp in settings.datasets.splits():
        seg = pl.read_parquet(layout.segments(d, sp), columns=["text_en", "text_hash"])
        frames.append(seg.select(pl.col("text_hash").alias("key"), "text_en", pl.lit(None, pl.String).alias("context"),
                                 pl.col("text_hash").alias("part_key"), pl.lit("segment").alias("kind")))
    if _with_gold(settings, engine_name):
        en = load_gold()["en"].to_list()
        keys = [text_hash(t) for t in en]
        frames.append(pl.DataFrame({"key": keys, "text_en": en, "context": [None] * len(en), "part_key": keys,
                                    "kind": ["gold"] * len(en)}, schema=UNIQUE_SCHEMA))
    if context_entry(settings, engine_name) is not None:
        for sp in (sp for d, sp in settings.datasets.splits() if d == "visdial"):
            rows = dialog_context_rows(settings.root, sp)
            frames.append(rows.select(pl.col("text_hash").alias("key"), "text_en", "context",
                                      pl.col("context_hash").alias("part_key"), pl.lit("context").alias("kind")))
    if not frames:
        return pl.DataFrame(schema=UNIQUE_SCHEMA)
    return pl.concat([f.cast(UNIQUE_SCHEMA) for f in frames]).unique("key", keep="first", maintain_order=True)


def table_fingerprint(settings: Settings, engine_name: str) -> str:
    """8 hex digits naming what goes into the engine's unique-string table (the enabled splits, the gold
    set, the VisDial context policy): enabling a dataset or an option makes a new table and new part
    outputs, so the parts run again (memory hits for everything already paid) instead of being stale."""
    spec = json.dumps([settings.datasets.splits(), _with_gold(settings, engine_name),
                       context_entry(settings, engine_name) is not None])
    return hashlib.sha256(spec.encode()).hexdigest()[:8]


def unique_path(settings: Settings, engine: str) -> Path:
    return settings.layout.unique_strings(engine, table_fingerprint(settings, engine))


def part_of(hashes: pl.Series, part: int, parts: int) -> pl.Series:
    """Stable split by hash: the same string always lands in the same part, whatever else changes."""
    return hashes.str.slice(0, 8).str.to_integer(base=16) % parts == part


def latest_parts(root: Path, engine: str, parts: int) -> list[dict]:
    """The newest stats of each of the engine's `parts` parts, whatever table fingerprint made them (a
    finished join needs no rerun when, say, `[curate] gold` changes; its parts' stats are still these)."""
    layout = RunLayout(root)
    out = []
    for i in range(parts):
        stem = layout.part_stem(engine, i, parts)
        found = sorted(stem.parent.glob(f"{stem.name}-*.json"), key=lambda p: p.stat().st_mtime_ns)
        if not found:
            raise FileNotFoundError(f"{engine}: part {i + 1}/{parts} has not run; run `ptvl translate`")
        out.append(json.loads(found[-1].read_text()))
    return out
