"""Translation stages: one string, one payment, however many workers, processes or machines run them.

`UniqueStrings` writes the engine's run-wide unique-string table (`pipeline.translate_plan`);
`TranslatePart` tasks translate its disjoint hash parts, one Luigi task per (engine, part), each into its
own memory file (`pipeline.memory_files`) under the part's lease, every request journalled in the billing
ledger (`pipeline.part_attempt`);
`Translate` (per dataset/split) only joins segments with the memory and flags them: it sends nothing.
`ImportReferenceMemory` imports a reference engine's Parquet memory instead of translating.
"""
from __future__ import annotations

import json

import luigi
import polars as pl

from pipeline.contracts import SET_ASIDE, TRANSLATED, VISDIAL_CONTEXT_TRANSLATED
from pipeline.io import write_json_atomic, write_parquet_atomic
from pipeline.memory_files import engine_folder, memory_view, open_memory
from pipeline.part_attempt import COUNTER_KEYS, PartWork, run_part
from pipeline.tasks.acquire import GenerateSample, IngestSegments
from pipeline.tasks.base import PtvlTask, log
from pipeline.tasks.sample_translators import PrepareSampleTranslators, builds_model
from pipeline.translate_plan import (
    context_engine_id,
    context_entry,
    dialog_context_rows,
    part_of,
    table_fingerprint,
    unique_path,
    unique_strings,
)
from translation.errors import MemoryIntegrityError
from translation.quality import flag_table
from translation.variety import VarietyClassifier, add_variety_evidence


class ImportReferenceMemory(PtvlTask):
    """Import a reference engine's Parquet memory (the sample's hand-made PT-PT side, or a shared export)."""

    engine = luigi.Parameter()

    def requires(self):
        return GenerateSample(config=self.config) if self.settings.sample.enabled else []

    def output(self) -> luigi.LocalTarget:
        return self.target("memory", f"_IMPORTED_{self.engine}.json")

    def run(self) -> None:
        entry = self.settings.engines[str(self.engine)]
        path = entry.memory_path(self.layout.sources)
        engine_id = entry.engine_id(str(self.engine))
        engine_folder(self.layout, engine_id)
        with open_memory(self.layout.imported_memory(engine_id)) as mem:
            stats = mem.import_parquet(path, engine_id=str(self.engine))
        write_json_atomic(self.output().path, {"source": str(path), **vars(stats)})


def _engine_requires(task: PtvlTask, engine: str) -> list[luigi.Task]:
    # An engine that only serves imports (reference) needs its memory imported; the others translate, the
    # sample's own tiny models once the DAG has built them.
    if not task.settings.engines[engine].translates:
        return [ImportReferenceMemory(config=task.config, engine=engine)]
    return [PrepareSampleTranslators(config=task.config)] if builds_model(task, engine) else []


class UniqueStrings(PtvlTask):
    """The run-wide unique-string table of one engine (see `unique_strings`)."""

    engine = luigi.Parameter()

    def requires(self):
        return [IngestSegments(config=self.config, dataset=d, split=sp) for d, sp in self.settings.datasets.splits()]

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(unique_path(self.settings, str(self.engine))))

    def run(self) -> None:
        table = unique_strings(self.settings, str(self.engine))
        write_parquet_atomic(self.output().path, table.to_arrow())


class TranslatePart(PtvlTask):
    """Translate one hash part of the engine's unique-string table into the part's own memory file, under
    the part's lease, every request journalled (`pipeline.part_attempt.run_part`).

    A paid engine's own billing counter (DeepL's /v2/usage) is read before and after, and both it and the
    memory's own count go into the part's stats and its ledger journal (`pipeline.billing` reconciles them)."""

    engine = luigi.Parameter()
    part = luigi.IntParameter()

    @property
    def preload(self) -> tuple[str, ...]:
        entry = self.settings.engines.get(str(self.engine))
        return entry.preload if entry is not None else ()

    def requires(self):
        return [UniqueStrings(config=self.config, engine=self.engine), *_engine_requires(self, str(self.engine))]

    def output(self) -> luigi.LocalTarget:
        stem = self.layout.part_stem(str(self.engine), int(self.part), self.settings.translate.parts)
        return luigi.LocalTarget(f"{stem}-{table_fingerprint(self.settings, str(self.engine))}.json")

    def run(self) -> None:
        name, n, i = str(self.engine), self.settings.translate.parts, int(self.part)
        table = pl.read_parquet(unique_path(self.settings, name))
        mine = table.filter(part_of(table["part_key"], i, n))
        plain, ctx = mine.filter(pl.col("kind") != "context"), mine.filter(pl.col("kind") == "context")
        r = run_part(self.settings, PartWork(name, i, n, plain["text_en"].to_list(), ctx["text_en"].to_list(),
                                             ctx["context"].to_list()))
        stats = [s for s in (r.plain, r.context) if s is not None]
        set_aside = [(h, why, "segment") for h, why in r.plain.set_aside.items()]
        if r.context is not None:
            set_aside += [(h, why, "context") for h, why in r.context.set_aside.items()]
        out = {
            "engine_id": r.engine_id,
            # The built engine's id (a glossary name resolved to its id); from the settings when this part
            # holds no dialog text at all.
            "context_engine_id": r.context_engine_id or context_engine_id(self.settings, name),
            "context_rows": ctx.height,
            "part": i, "parts": n,
            "unique": mine.height,
            "hits": sum(s.hits for s in stats),
            "sent": sum(s.sent for s in stats),
            "requests": sum(s.requests for s in stats),
            "billed_chars": r.memory_billed,
            "deepl_billed_chars": r.deepl_billed,
            "set_aside": set_aside,
            "seconds": r.seconds,
            **{k: r.counters[k] for k in COUNTER_KEYS},
        }
        log.info("%s part %d/%d: %d unique, %d sent, %d chars billed (memory), %s (DeepL), %d set aside", name,
                 i + 1, n, out["unique"], out["sent"], out["billed_chars"], out["deepl_billed_chars"], len(set_aside))
        write_json_atomic(self.output().path, out)


class Translate(PtvlTask):
    """Segments joined with their translation, score, engine id and quality flags (and, for VisDial with
    translate.visdial_context, the dialogs' caption-context translations beside them).  Sends nothing:
    the engine's parts filled the memory.  Segments set aside (never sent) go to
    ``<split>.set_aside.parquet`` with their reason instead."""

    dataset = luigi.Parameter()
    split = luigi.Parameter()
    engine = luigi.Parameter()

    @property
    def with_context(self) -> bool:
        return self.dataset == "visdial" and context_entry(self.settings, str(self.engine)) is not None

    def requires(self):
        return [TranslatePart(config=self.config, engine=self.engine, part=i)
                for i in range(self.settings.translate.parts)]

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(self.layout.translated(str(self.engine), str(self.dataset), str(self.split))))

    def complete(self) -> bool:
        # Switching visdial_context on in a run that already translated VisDial makes this task (and so
        # its parts) run again: the joins are memory hits, only the dialog texts are sent.
        if not super().complete():
            return False
        # The flags of a table joined under another [curate] variety_model are redone (a memory hit each).
        stats = self.layout.split_stats(str(self.engine), str(self.dataset), str(self.split))
        if stats.exists() and json.loads(stats.read_text()).get("variety_model") != self.settings.curate.variety_model:
            return False
        return not self.with_context or self.layout.context_translated(str(self.engine), str(self.split)).exists()

    def run(self) -> None:
        parts = [json.loads(open(t.output().path).read()) for t in self.requires()]
        set_aside = {h: r for p in parts for h, r, _ in p["set_aside"]}
        engine, dataset, split = str(self.engine), str(self.dataset), str(self.split)
        seg = pl.read_parquet(self.layout.segments(dataset, split))
        aside = seg.filter(pl.col("text_hash").is_in(list(set_aside)))
        write_parquet_atomic(self.layout.set_aside(engine, dataset, split), aside.with_columns(
            pl.col("text_en").str.len_chars().alias("chars"),
            pl.col("text_hash").replace_strict(set_aside, default=None, return_dtype=pl.String).alias("reason"),
        ).select(SET_ASIDE.names).to_arrow(), SET_ASIDE)
        with memory_view(self.root, self.settings.engines[engine].engine_id(engine)) as mem:
            flagged, stats = self._join(mem, seg.filter(~pl.col("text_hash").is_in(list(set_aside))),
                                        parts[0]["engine_id"], "segments", "")
            stats["set_aside"] = dict(aside["text_hash"].replace_strict(set_aside, return_dtype=pl.String)
                                      .value_counts().rows()) if aside.height else {}
            if self.with_context:
                ctx_id = next((p["context_engine_id"] for p in parts if p.get("context_rows")),
                              parts[0]["context_engine_id"])
                stats["context"] = self._write_context(mem, ctx_id, set_aside)
        c = self.settings.curate
        if c.variety_model:  # a PT-PT/PT-BR classifier as evidence for `brazilian` (translation/variety.py)
            classifier = VarietyClassifier(c.variety_model, c.variety_label, c.neural_device)
            flagged = add_variety_evidence(flagged, classifier.probabilities, c.variety_threshold)
        stats["variety_model"] = c.variety_model
        write_json_atomic(self.layout.split_stats(engine, dataset, split), stats)
        # The segments table is the target, so it is written last (after the context table).
        write_parquet_atomic(self.output().path, flagged.to_arrow(), TRANSLATED)

    def _join(self, mem, rows: pl.DataFrame, engine_id: str, what: str, how: str,
              check: tuple[str, ...] = ()) -> tuple[pl.DataFrame, dict]:
        """`rows` (with text_hash) joined with their memory translations under `engine_id` and flagged;
        the rows' stats (billed_chars: the memory's billed characters of their distinct strings; a string
        shared with another split counts in both).  `how` qualifies messages.  `check`: text columns
        (text_en, context) re-checked against the memory row's own, so a row stored under the key of
        another text can never stand in for it.

        One polars frame of the memory rows wanted (`MemoryStack.lookup_frame`) and a polars join: no
        Python object per row, and text_en is read from the memory only when `check` asks for it."""
        found = mem.lookup_frame(
            engine_id, rows["text_hash"].unique(),
            ("text_hash", "text_pt", "score", "billed_chars", "input_truncated", *check))
        # Only the new columns are built (a join of `rows` itself would copy every column of 3.3M rows).
        looked = rows.select("text_hash").join(found.select("text_hash", "text_pt", "score", "input_truncated"),
                                               on="text_hash", how="left", maintain_order="left")
        joined = rows.hstack(looked.select("text_pt", "score", "input_truncated"))
        missing = joined.filter(pl.col("text_pt").is_null())
        if missing.height:
            raise RuntimeError(f"{missing.height} {what} lack a {engine_id} translation{how}; rerun to fill them "
                               f"(first: {missing['text_en'][0]!r})")
        if check:
            mine = rows.select("text_hash", *check).unique().join(
                found.select("text_hash", *(pl.col(c).alias(f"{c}_stored") for c in check)), on="text_hash")
            bad = mine.filter(pl.any_horizontal(pl.col(c).ne_missing(pl.col(f"{c}_stored")) for c in check))
            if bad.height:
                r = bad.row(0, named=True)
                raise MemoryIntegrityError(
                    f"memory row {r['text_hash']} of {engine_id} holds "
                    f"{tuple(r[f'{c}_stored'] for c in check)!r}, not {tuple(r[c] for c in check)!r}")
        stats = {"rows": rows.height, "unique": found.height, "billed_chars": int(found["billed_chars"].sum()),
                 "engine_id": engine_id,
                 # sources cut at the engine's max_input_length: rows (duplicates counted) and distinct strings
                 "input_truncated": {"rows": int(joined["input_truncated"].fill_null(False).sum()),
                                     "unique": int(found["input_truncated"].fill_null(False).sum())}}
        del found, looked  # before the flags, the stage's memory peak
        table = joined.drop("input_truncated").with_columns(
            pl.lit(str(self.engine)).alias("engine"),
            pl.lit(engine_id).alias("engine_id"),
        )
        del joined
        flagged = flag_table(table, self.settings.quality)
        stats["flag_counts"] = _flag_counts(flagged)
        log.info("%s/%s [%s] %s%s: %d rows, %d unique, %d chars billed", self.dataset, self.split,
                 self.engine, what, how, stats["rows"], stats["unique"], stats["billed_chars"])
        return flagged, stats

    def _write_context(self, mem, engine_id: str, set_aside: dict[str, str]) -> dict:
        """Join the dialog texts with their caption-context translations; write the context table.  A
        dialog text set aside (never sent) becomes "" here, as its context-free string does in the shards."""
        rows = dialog_context_rows(self.root, str(self.split)).with_row_index("_order")
        # The key hashes text and context together; `check` re-checks both anyway, so a context-free row
        # can never stand in for a context one, whatever happened to the memory file.  A text set aside
        # has no memory row to check (it is "" below).
        flagged, stats = self._join(mem, rows.filter(~pl.col("text_hash").is_in(list(set_aside))), engine_id,
                                    "VisDial dialog texts", " with their caption as context",
                                    check=("text_en", "context"))
        aside = rows.filter(pl.col("text_hash").is_in(list(set_aside)))
        if aside.height:
            blank = flag_table(aside.with_columns(pl.lit(str(self.engine)).alias("engine"),
                                                  pl.lit(engine_id).alias("engine_id"), pl.lit("").alias("text_pt"),
                                                  pl.lit(None, pl.Float32).alias("score")), self.settings.quality)
            flagged = pl.concat([flagged, blank.select(flagged.columns)]).sort("_order")
            stats["set_aside"] = aside.height
        write_parquet_atomic(self.layout.context_translated(str(self.engine), str(self.split)), flagged.to_arrow(),
                             VISDIAL_CONTEXT_TRANSLATED)
        return stats


def _flag_counts(flagged: pl.DataFrame) -> list:
    return (flagged.select(pl.col("flags").explode().drop_nulls().value_counts()).unnest("flags").rows()
            if flagged.height else [])
