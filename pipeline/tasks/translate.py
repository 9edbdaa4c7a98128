"""Translation stages: fill the shared translation memory, then write translated/<engine>/<dataset>/<split>.parquet.

The memory (memory/memory.sqlite) is the cost and resume guarantee: each stored batch is durable
before the next request goes out, so a killed task loses at most one batch and a rerun pays for
nothing it already has.  `TranslatePart` tasks let several workers fill disjoint parts of a split;
`Translate` then only joins (all memory hits).
"""
from __future__ import annotations

import json
import time

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


def fill_memory(task: PtvlTask, engine_name: str, texts: list[str], label: str) -> dict:
    """Translate what the memory lacks for `texts`, with a progress bar; returns the run's counts."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from pipeline.engines import build_engine
    from translation.memory import TranslationMemory
    from translation.runner import translate_missing

    with TranslationMemory(memory_path(task.root)) as mem:
        engine = build_engine(engine_name, task.settings.engines[engine_name])
        t0 = time.perf_counter()
        with Progress(
            TextColumn(f"translate {label} [{engine_name}]"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[chars]} chars billed"), TimeRemainingColumn(), transient=True,
        ) as bar:
            pid = bar.add_task("t", total=None, chars=0)

            def progress(stats) -> None:
                bar.update(pid, total=stats.unique - stats.hits, completed=stats.sent, chars=stats.billed_chars)

            stats = translate_missing(texts, engine, mem, batch_size=task.settings.translate.batch_size,
                                      progress=progress)
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


class Translate(PtvlTask):
    """Segments joined with their translation, score, engine id and quality flags."""

    dataset = luigi.Parameter()
    split = luigi.Parameter()
    engine = luigi.Parameter()

    def requires(self):
        n = self.settings.translate.parts
        return [
            TranslatePart(config=self.config, dataset=self.dataset, split=self.split, engine=self.engine, part=i)
            for i in range(n)
        ]

    def output(self) -> luigi.LocalTarget:
        return self.target("translated", str(self.engine), str(self.dataset), f"{self.split}.parquet")

    def run(self) -> None:
        from pipeline.contracts import TRANSLATED
        from translation.memory import TranslationMemory
        from translation.quality import flag_table

        parts = [json.loads(open(t.output().path).read()) for t in self.requires()]
        engine_id = parts[0]["engine_id"]
        seg = _segments(self, str(self.dataset), str(self.split))
        with TranslationMemory(memory_path(self.root)) as mem:
            found = mem.lookup(engine_id, seg["text_hash"].unique().to_list())
        missing = seg.filter(~pl.col("text_hash").is_in(list(found)))
        if missing.height:  # only possible if the memory file was replaced between tasks
            raise RuntimeError(f"{missing.height} segments lack a {engine_id} translation; rerun to fill them")
        table = seg.with_columns(
            pl.lit(str(self.engine)).alias("engine"),
            pl.lit(engine_id).alias("engine_id"),
            pl.col("text_hash").replace_strict({h: r.text_pt for h, r in found.items()}).alias("text_pt"),
            pl.col("text_hash")
            .replace_strict({h: r.score for h, r in found.items()}, return_dtype=pl.Float32)
            .alias("score"),
        )
        flagged = flag_table(table, self.settings.quality)
        stats = {
            k: sum(p[k] for p in parts) for k in ("rows", "unique", "hits", "sent", "billed_chars", "requests", "seconds")
        }
        stats["engine_id"] = engine_id
        stats["flag_counts"] = (
            flagged.select(pl.col("flags").explode().drop_nulls().value_counts()).unnest("flags").rows()
            if flagged.height else []
        )
        log.info("%s/%s [%s]: %d rows, %d unique, %d sent, %d chars billed", self.dataset, self.split,
                 self.engine, stats["rows"], stats["unique"], stats["sent"], stats["billed_chars"])
        write_json_atomic(self.root / "translated" / str(self.engine) / str(self.dataset) / f"_{self.split}.stats.json",
                          stats)
        write_parquet_atomic(self.output().path, flagged.to_arrow(), TRANSLATED)

