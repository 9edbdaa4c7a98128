"""Translation stages: fill the shared translation memory, then write translated/<engine>/<dataset>/<split>.parquet.

The memory (memory/memory.sqlite) is the cost and resume guarantee: each stored batch is durable
before the next request goes out, so a killed task loses at most one batch and a rerun pays for
nothing it already has.  `TranslatePart` tasks let several workers fill disjoint parts of a split;
`Translate` then only joins (all memory hits).

VisDial context (`translate.visdial_context`, DeepL only; checked when the settings load):

- Off (default): each global VisDial question/answer string is translated once, context-free.
- On: additionally, the text that belongs to a dialog -- each round's question and its ground-truth
  answer as they appear in that dialog's history -- is translated with the dialog's EN caption as
  DeepL `context` by `TranslateContextPart`, and `Translate` writes those rows to
  translated/<engine>/visdial/<split>.context.parquet (VISDIAL_CONTEXT_TRANSLATED).  The 100 answer
  options stay context-free: they are shared global strings, and translating 100 options x 10 rounds
  per dialog with context would multiply the cost ~100x.
- Memory: context-free rows stay under the configured engine's id (``...:context=off``) keyed by
  `text_hash(text)`, so switching the option on re-uses them and pays only for the dialog texts;
  context rows go under the context engine's id (``...:context=on``) keyed by
  `memory_key(text, caption)`.  Both the id and the key differ, so a context look-up never returns a
  context-free translation or the reverse.  Context is not billed: only the text's characters count.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import luigi
import polars as pl

from pipeline.io import write_json_atomic, write_parquet_atomic
from pipeline.tasks.acquire import GenerateSample, IngestSegments
from pipeline.tasks.base import PtvlTask, log


def memory_path(root) -> str:
    return str(root / "memory" / "memory.sqlite")


class ImportReferenceMemory(PtvlTask):
    """Import a reference engine's Parquet memory (the sample's hand-made PT-PT side, or a shared export)."""

    engine = luigi.Parameter()

    def requires(self):
        return GenerateSample(config=self.config) if self.settings.sample.enabled else []

    def output(self) -> luigi.LocalTarget:
        return self.target("memory", f"_IMPORTED_{self.engine}.json")

    def run(self) -> None:
        from pipeline.engines import reference_memory_path
        from translation.memory import TranslationMemory

        entry = self.settings.engines[str(self.engine)]
        path = reference_memory_path(entry, self.root / "sources")
        with TranslationMemory(memory_path(self.root)) as mem:
            stats = mem.import_parquet(path, engine_id=str(self.engine))
        write_json_atomic(self.output().path, {"source": str(path), **vars(stats)})


def _segments(task: PtvlTask, dataset: str, split: str) -> pl.DataFrame:
    return pl.read_parquet(task.root / "segments" / dataset / f"{split}.parquet")


def _engine_requires(task: PtvlTask, engine: str):
    from pipeline.engines import ReferenceEntry

    entry = task.settings.engines[engine]
    return [ImportReferenceMemory(config=task.config, engine=engine)] if isinstance(entry, ReferenceEntry) else []


def context_entry(settings, engine_name: str):
    """The engine entry that translates VisDial dialog text with caption context (the configured DeepL
    entry with `use_context` on), or None when `translate.visdial_context` is off.

    Raises ConfigurationError when the option is on and `engine_name` cannot take a context (the
    settings validator already refuses that for `translate.engines`; this covers `ptvl translate
    --engine` with any other configured engine).
    """
    from pipeline.engines import DeepLEntry
    from translation.errors import ConfigurationError

    if not settings.translate.visdial_context:
        return None
    entry = settings.engines[engine_name]
    if not isinstance(entry, DeepLEntry):
        raise ConfigurationError(
            f"engine {engine_name!r} ({entry.engine}) cannot take a translation context, but "
            "translate.visdial_context = true; translate VisDial with it from a profile with "
            "visdial_context = false"
        )
    return entry.model_copy(update={"use_context": True})


def context_engine_id(settings, engine_name: str) -> str | None:
    """The memory id of the caption-context engine (no key needed), or None when the option is off."""
    from translation.engines.deepl_api import DeepLSettings, engine_id_for

    entry = context_entry(settings, engine_name)
    if entry is None:
        return None
    return engine_id_for(DeepLSettings(**entry.model_dump(exclude={"engine"})))


def context_path(root: Path, engine: str, split: str) -> Path:
    return root / "translated" / engine / "visdial" / f"{split}.context.parquet"


def dialog_context_rows(root: Path, split: str) -> pl.DataFrame:
    """The VisDial texts translated with context: one row per (dialog, round, field) of the split.

    Columns: image_id, round (1-based), field (question | answer), segment_id, text_en, context (the
    dialog's EN caption), text_hash (`memory_key(text_en, context)`) and context_hash (the caption's
    `text_hash`, which picks the part: a dialog's texts, and every dialog with the same caption, land
    in one part, so one request carries them and no two workers pay for the same key).  A test-split
    round without an answer has no answer row.  A global string that was empty has no segment; its
    row has text_en "" (stored as "" without a request).
    """
    from translation.memory import memory_key
    from translation.textkey import text_hash

    seg = pl.read_parquet(root / "segments" / "visdial" / f"{split}.parquet")
    en = dict(zip(seg["segment_id"].to_list(), seg["text_en"].to_list(), strict=True))
    dialogs = pl.read_parquet(root / "sources" / "visdial" / split / "dialogs.parquet")
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


def context_cost(settings, engine_name: str, targets: list[tuple[str, str]], memory):
    """Dry-run prices of the VisDial dialog texts translated with caption context, for `ptvl translate
    --dry-run`: ([(label, CostEstimate) per VisDial split], their total or None when there is none).

    Only (text, caption) keys missing from the memory under the context engine id count, and only the
    text's characters (DeepL does not bill context).  Needs the splits' segments and dialogs ingested.
    """
    from translation.cost import estimate

    engine_id = context_engine_id(settings, engine_name)
    splits = [sp for d, sp in targets if d == "visdial"] if engine_id is not None else []
    if not splits:
        return [], None
    price = settings.engines[engine_name].price_per_million_chars
    out, texts, contexts = [], [], []
    for sp in splits:
        rows = dialog_context_rows(settings.root, sp)
        t, c = rows["text_en"].to_list(), rows["context"].to_list()
        out.append((f"visdial/{sp} dialogs, caption context", estimate(t, memory, engine_id, price, contexts=c)))
        texts += t
        contexts += c
    return out, estimate(texts, memory, engine_id, price, contexts=contexts)


def fill_memory(task: PtvlTask, engine_name: str, texts: list[str], label: str, *,
                contexts: list[str] | None = None, entry=None) -> dict:
    """Translate what the memory lacks for `texts` (with per-text `contexts`, using `entry` instead of
    the configured one when given), with a progress bar; returns the run's counts."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from pipeline.engines import build_engine
    from translation.memory import TranslationMemory
    from translation.runner import translate_missing

    with TranslationMemory(memory_path(task.root)) as mem:
        engine = build_engine(engine_name, entry if entry is not None else task.settings.engines[engine_name])
        t0 = time.perf_counter()
        with Progress(
            TextColumn(f"translate {label} [{engine_name}]"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[chars]} chars billed"), TimeRemainingColumn(), transient=True,
        ) as bar:
            pid = bar.add_task("t", total=None, chars=0)

            def progress(stats) -> None:
                bar.update(pid, total=stats.unique - stats.hits, completed=stats.sent, chars=stats.billed_chars)

            stats = translate_missing(texts, engine, mem, contexts=contexts,
                                      batch_size=task.settings.translate.batch_size, progress=progress)
        seconds = time.perf_counter() - t0
        close = getattr(engine, "close", None)
        if close:
            close()
    return {
        "engine_id": engine.engine_id, "rows": stats.rows, "unique": stats.unique, "hits": stats.hits,
        "sent": stats.sent, "billed_chars": stats.billed_chars, "requests": stats.requests, "seconds": seconds,
    }


def _part_of(hashes: pl.Series, part: int, parts: int) -> pl.Series:
    # Stable split by hash: the same string always lands in the same part, whatever else changes.
    return hashes.str.slice(0, 8).str.to_integer(base=16) % parts == part


class TranslatePart(PtvlTask):
    """Fill the memory for one hash-range part of a split (a shard group)."""

    dataset = luigi.Parameter()
    split = luigi.Parameter()
    engine = luigi.Parameter()
    part = luigi.IntParameter()

    def requires(self):
        return [IngestSegments(config=self.config, dataset=self.dataset, split=self.split),
                *_engine_requires(self, str(self.engine))]

    def output(self) -> luigi.LocalTarget:
        n = self.settings.translate.parts
        return self.target("translated", str(self.engine), str(self.dataset), f"_{self.split}.part{self.part}of{n}.json")

    def run(self) -> None:
        seg = _segments(self, str(self.dataset), str(self.split))
        n = self.settings.translate.parts
        texts = seg.filter(_part_of(seg["text_hash"], int(self.part), n))["text_en"].to_list()
        stats = fill_memory(self, str(self.engine), texts, f"{self.dataset}/{self.split} {self.part + 1}/{n}")
        write_json_atomic(self.output().path, stats)


class TranslateContextPart(PtvlTask):
    """Fill the memory with one part of a VisDial split's dialog text, translated with each dialog's
    caption as context (translate.visdial_context; see the module docstring)."""

    dataset = luigi.Parameter()
    split = luigi.Parameter()
    engine = luigi.Parameter()
    part = luigi.IntParameter()

    def requires(self):
        return IngestSegments(config=self.config, dataset=self.dataset, split=self.split)

    def output(self) -> luigi.LocalTarget:
        n = self.settings.translate.parts
        return self.target("translated", str(self.engine), str(self.dataset),
                           f"_{self.split}.context.part{self.part}of{n}.json")

    def run(self) -> None:
        entry = context_entry(self.settings, str(self.engine))
        if entry is None or self.dataset != "visdial":
            raise RuntimeError("TranslateContextPart runs only for VisDial with translate.visdial_context = true")
        rows = dialog_context_rows(self.root, str(self.split))
        n = self.settings.translate.parts
        rows = rows.filter(_part_of(rows["context_hash"], int(self.part), n))
        stats = fill_memory(self, str(self.engine), rows["text_en"].to_list(),
                            f"{self.dataset}/{self.split} with context {self.part + 1}/{n}",
                            contexts=rows["context"].to_list(), entry=entry)
        write_json_atomic(self.output().path, stats)


_STAT_KEYS = ("rows", "unique", "hits", "sent", "billed_chars", "requests", "seconds")


class Translate(PtvlTask):
    """Segments joined with their translation, score, engine id and quality flags (and, for VisDial with
    translate.visdial_context, the dialogs' caption-context translations beside them)."""

    dataset = luigi.Parameter()
    split = luigi.Parameter()
    engine = luigi.Parameter()

    @property
    def with_context(self) -> bool:
        return self.dataset == "visdial" and context_entry(self.settings, str(self.engine)) is not None

    def requires(self):
        n = self.settings.translate.parts
        args = dict(config=self.config, dataset=self.dataset, split=self.split, engine=self.engine)
        return [TranslatePart(**args, part=i) for i in range(n)] + (
            [TranslateContextPart(**args, part=i) for i in range(n)] if self.with_context else []
        )

    def output(self) -> luigi.LocalTarget:
        return self.target("translated", str(self.engine), str(self.dataset), f"{self.split}.parquet")

    def complete(self) -> bool:
        # Switching visdial_context on in a run that already translated VisDial makes this task (and so
        # its context parts) run again: the joins are memory hits, only the dialog texts are sent.
        if not super().complete():
            return False
        return not self.with_context or context_path(self.root, str(self.engine), str(self.split)).exists()

    def run(self) -> None:
        from pipeline.contracts import TRANSLATED

        requires = self.requires()
        done = [(t, json.loads(open(t.output().path).read())) for t in requires]
        parts = [p for t, p in done if isinstance(t, TranslatePart)]
        context_parts = [p for t, p in done if isinstance(t, TranslateContextPart)]
        seg = _segments(self, str(self.dataset), str(self.split))
        # A gap is only possible if the memory file was replaced between tasks.
        flagged, stats, _ = self._join(seg, parts, "segments", "")
        if context_parts:
            stats["context"] = self._write_context(context_parts)
        write_json_atomic(self.root / "translated" / str(self.engine) / str(self.dataset) / f"_{self.split}.stats.json",
                          stats)
        # The segments table is the target, so it is written last (after the context table).
        write_parquet_atomic(self.output().path, flagged.to_arrow(), TRANSLATED)

    def _join(self, rows: pl.DataFrame, parts: list[dict], what: str, how: str) -> tuple[pl.DataFrame, dict, dict]:
        """`rows` (with text_hash) joined with their memory translations under the parts' engine id and
        flagged; the parts' summed stats; the memory rows found (by text_hash). `how` qualifies messages."""
        from translation.memory import TranslationMemory
        from translation.quality import flag_table

        engine_id = parts[0]["engine_id"]
        with TranslationMemory(memory_path(self.root)) as mem:
            found = mem.lookup(engine_id, rows["text_hash"].unique().to_list())
        missing = rows.filter(~pl.col("text_hash").is_in(list(found)))
        if missing.height:
            raise RuntimeError(f"{missing.height} {what} lack a {engine_id} translation{how}; rerun to fill them")
        table = rows.with_columns(
            pl.lit(str(self.engine)).alias("engine"),
            pl.lit(engine_id).alias("engine_id"),
            pl.col("text_hash").replace_strict({h: r.text_pt for h, r in found.items()}, return_dtype=pl.String)
            .alias("text_pt"),
            pl.col("text_hash").replace_strict({h: r.score for h, r in found.items()}, return_dtype=pl.Float32)
            .alias("score"),
        )
        flagged = flag_table(table, self.settings.quality)
        stats = {k: sum(p[k] for p in parts) for k in _STAT_KEYS}
        stats["engine_id"] = engine_id
        stats["flag_counts"] = _flag_counts(flagged)
        log.info("%s/%s [%s] %s%s: %d rows, %d unique, %d sent, %d chars billed", self.dataset, self.split,
                 self.engine, what, how, stats["rows"], stats["unique"], stats["sent"], stats["billed_chars"])
        return flagged, stats, found

    def _write_context(self, parts: list[dict]) -> dict:
        """Join the dialog texts with their caption-context translations; write the context table."""
        from pipeline.contracts import VISDIAL_CONTEXT_TRANSLATED
        from translation.errors import MemoryIntegrityError

        rows = dialog_context_rows(self.root, str(self.split))
        flagged, stats, found = self._join(rows, parts, "VisDial dialog texts", " with their caption as context")
        # The key hashes text and context together; re-check both anyway, so a context-free row can
        # never stand in for a context one, whatever happened to the memory file.
        for h, en, ctx in rows.select("text_hash", "text_en", "context").unique().iter_rows():
            r = found[h]
            if (r.text_en, r.context) != (en, ctx):
                raise MemoryIntegrityError(f"memory row {h} of {stats['engine_id']} holds {(r.text_en, r.context)!r}, "
                                           f"not {(en, ctx)!r}")
        write_parquet_atomic(context_path(self.root, str(self.engine), str(self.split)), flagged.to_arrow(),
                             VISDIAL_CONTEXT_TRANSLATED)
        return stats


def _flag_counts(flagged: pl.DataFrame) -> list:
    return (flagged.select(pl.col("flags").explode().drop_nulls().value_counts()).unnest("flags").rows()
            if flagged.height else [])

