"""Translation stages: one string, one payment, however many workers, processes or machines run them.

The run-wide unique-string table (`UniqueStrings`, one per engine) holds every distinct string the
engine must translate: every dataset's and split's segments, the gold set (`[curate] gold`) and, with
`translate.visdial_context`, the VisDial dialog texts keyed by (text, caption).  `TranslatePart` tasks
cut it by hash into `translate.parts` disjoint parts, one Luigi task per (engine, part): a string
belongs to exactly one part, and Luigi runs a task once, so no two workers, processes or machines
(under one `luigid`) can ever send the same string.  `Translate` (per dataset/split) only joins
segments with the memory; it sends nothing.

Memory layout (safe on a shared NFS run root; SQLite WAL is not):

- ``memory/<engine>/part-<i>-of-<n>.sqlite``: written only by TranslatePart i (one writer per file, by
  construction), in SQLite's rollback-journal mode (no shared-memory file); each request's results
  are committed (fsync'd) before the next request goes out, so a killed part loses at most the request
  in flight and its rerun pays only for what is missing.
- ``memory/<engine>/imported.sqlite``: a reference engine's imported Parquet memory.
- ``memory/memory.sqlite``: the run's shared memory, written only by `ptvl memory import` (never by a
  running pipeline); read by every part, so translations imported from elsewhere are never paid again.

A part reads the shared memory and its engine's files from other part counts (a changed
`translate.parts`), never the files of its sibling parts (disjoint keys, and being written right now).
`memory_view` reads all of them together (joins, reports, `ptvl memory export`).

Billing audit: each part attempt appends one line to ``translated/<engine>/_parts/part-<i>-of-<n>.audit.jsonl``
(DeepL's /v2/usage counter before and after, the characters the memory recorded, retries, requests
possibly billed twice); `pipeline.spend.billing_summary` reconciles them.

VisDial context (`translate.visdial_context`, DeepL only; checked when the settings load):

- Off (default): each global VisDial question/answer string is translated once, context-free.
- On: additionally, the text that belongs to a dialog -- each round's question and its ground-truth
  answer as they appear in that dialog's history -- is translated with the dialog's EN caption as
  DeepL `context` (in the same part tasks, partitioned by the caption's hash so a dialog's texts go in
  one request), and `Translate` writes those rows to
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
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import luigi
import polars as pl

from pipeline.io import write_json_atomic, write_parquet_atomic
from pipeline.tasks.acquire import GenerateSample, IngestSegments
from pipeline.tasks.base import PtvlTask, log


def memory_path(root) -> str:
    """The run's shared memory (imports; read by every part)."""
    return str(root / "memory" / "memory.sqlite")


def human_overlay_path(root) -> Path:
    """The run's human-review overlay (`translation.overlay.HumanOverlay`): people's corrections, flag
    verdicts and gold rows, beside the machine memory, never inside it."""
    return Path(root) / "memory" / "human.sqlite"


def engine_memory_dir(root: Path, engine: str) -> Path:
    return root / "memory" / engine


def part_memory_path(root: Path, engine: str, part: int, parts: int) -> Path:
    return engine_memory_dir(root, engine) / f"part-{part:03d}-of-{parts:03d}.sqlite"


def part_stem(engine_root: Path, part: int, parts: int) -> Path:
    return engine_root / "_parts" / f"part-{part:03d}-of-{parts:03d}"


def open_memory(path, *, read_only: bool = False):
    """A pipeline memory file: rollback journal (NFS-safe with one writer at a time)."""
    from translation.memory import TranslationMemory

    return TranslationMemory(path, journal="delete", read_only=read_only)


def memory_view(root: Path, engine: str | None = None, *, writer: Path | None = None,
                skip_part_count: int | None = None):
    """A `MemoryStack` over the run's memory files: `writer` (opened for writing) first, then the shared
    memory and every file under memory/<engine>/ (every engine when None), read-only.  Part files of
    `skip_part_count` parts (a part's siblings) are left out."""
    from translation.memory import MemoryStack

    files = []
    main = Path(memory_path(root))
    if main.exists():
        files.append(main)
    dirs = [engine_memory_dir(root, engine)] if engine is not None else sorted(
        p for p in (root / "memory").glob("*") if p.is_dir())
    for d in dirs:
        for f in sorted(d.glob("*.sqlite")):
            if f == writer or (skip_part_count is not None and f.name.endswith(f"-of-{skip_part_count:03d}.sqlite")):
                continue
            files.append(f)
    w = open_memory(writer) if writer is not None else None
    if w is None and not files:  # nothing stored yet: an empty shared memory, so look-ups work
        w = open_memory(main)
    return MemoryStack(w, [open_memory(f, read_only=True) for f in files])


class ImportReferenceMemory(PtvlTask):
    """Import a reference engine's Parquet memory (the sample's hand-made PT-PT side, or a shared export)."""

    engine = luigi.Parameter()

    def requires(self):
        return GenerateSample(config=self.config) if self.settings.sample.enabled else []

    def output(self) -> luigi.LocalTarget:
        return self.target("memory", f"_IMPORTED_{self.engine}.json")

    def run(self) -> None:
        from pipeline.engines import reference_memory_path

        entry = self.settings.engines[str(self.engine)]
        path = reference_memory_path(entry, self.root / "sources")
        with open_memory(engine_memory_dir(self.root, str(self.engine)) / "imported.sqlite") as mem:
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


def unique_strings(settings, engine_name: str) -> pl.DataFrame:
    """Every distinct string `engine_name` must translate in this run: the unique-string table.

    Columns: key (the memory key), text_en, context (null unless a VisDial dialog text with its caption),
    part_key (the hash that picks the part: text_hash, or for dialog texts the caption's hash, so a
    dialog's texts share one request), kind (segment | gold | context).  Segments of every enabled
    dataset/split come first, then gold-set sentences found in no segment (`[curate] gold`, engines
    that translate), then dialog texts (`translate.visdial_context`).  Needs the segments ingested.
    """
    from pipeline.engines import ReferenceEntry
    from translation.textkey import text_hash

    schema = {"key": pl.String, "text_en": pl.String, "context": pl.String, "part_key": pl.String, "kind": pl.String}
    frames = []
    for d, sp in settings.datasets.splits():
        seg = pl.read_parquet(settings.root / "segments" / d / f"{sp}.parquet", columns=["text_en", "text_hash"])
        frames.append(seg.select(pl.col("text_hash").alias("key"), "text_en", pl.lit(None, pl.String).alias("context"),
                                 pl.col("text_hash").alias("part_key"), pl.lit("segment").alias("kind")))
    if settings.curate.gold and not isinstance(settings.engines[engine_name], ReferenceEntry):
        from translation.gold import load_gold

        en = load_gold()["en"].to_list()
        keys = [text_hash(t) for t in en]
        frames.append(pl.DataFrame({"key": keys, "text_en": en, "context": [None] * len(en), "part_key": keys,
                                    "kind": ["gold"] * len(en)}, schema=schema))
    if context_entry(settings, engine_name) is not None:
        for sp in (sp for d, sp in settings.datasets.splits() if d == "visdial"):
            rows = dialog_context_rows(settings.root, sp)
            frames.append(rows.select(pl.col("text_hash").alias("key"), "text_en", "context",
                                      pl.col("context_hash").alias("part_key"), pl.lit("context").alias("kind")))
    if not frames:
        return pl.DataFrame(schema=schema)
    return pl.concat([f.cast(schema) for f in frames]).unique("key", keep="first", maintain_order=True)


def table_fingerprint(settings, engine_name: str) -> str:
    """8 hex digits naming what goes into the engine's unique-string table (the enabled splits, the gold
    set, the VisDial context policy): enabling a dataset or an option makes a new table and new part
    outputs, so the parts run again (memory hits for everything already paid) instead of being stale."""
    import hashlib

    from pipeline.engines import ReferenceEntry

    spec = json.dumps([settings.datasets.splits(),
                       settings.curate.gold and not isinstance(settings.engines[engine_name], ReferenceEntry),
                       context_entry(settings, engine_name) is not None])
    return hashlib.sha256(spec.encode()).hexdigest()[:8]


def unique_path(settings, engine: str) -> Path:
    return settings.root / "translated" / engine / f"_unique-{table_fingerprint(settings, engine)}.parquet"


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


def latest_parts(root: Path, engine: str, parts: int) -> list[dict]:
    """The newest stats of each of the engine's `parts` parts, whatever table fingerprint made them (a
    finished join needs no rerun when, say, `[curate] gold` changes; its parts' stats are still these)."""
    out = []
    for i in range(parts):
        found = sorted(part_stem(root / "translated" / engine, i, parts).parent.glob(
            f"part-{i:03d}-of-{parts:03d}-*.json"), key=lambda p: p.stat().st_mtime_ns)
        if not found:
            raise FileNotFoundError(f"{engine}: part {i + 1}/{parts} has not run; run `ptvl translate`")
        out.append(json.loads(found[-1].read_text()))
    return out


def part_of(hashes: pl.Series, part: int, parts: int) -> pl.Series:
    """Stable split by hash: the same string always lands in the same part, whatever else changes."""
    return hashes.str.slice(0, 8).str.to_integer(base=16) % parts == part


def _fill(engine, mem, texts: list[str], label: str, name: str, batch_size: int,
          contexts: list[str] | None = None):
    """`translate_missing` with a progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from translation.runner import translate_missing

    with Progress(
        TextColumn(f"translate {label} [{name}]"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[chars]} chars billed"), TimeRemainingColumn(), transient=True,
    ) as bar:
        pid = bar.add_task("t", total=None, chars=0)

        def progress(stats) -> None:
            bar.update(pid, total=stats.unique - stats.hits - len(stats.set_aside), completed=stats.sent,
                       chars=stats.billed_chars)

        return translate_missing(texts, engine, mem, contexts=contexts, batch_size=batch_size, progress=progress)


def _append_line(path: Path, record: dict) -> None:
    """Append one JSON line and fsync it (the audit survives a kill right after)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _safe(fn):
    """`fn()`, or None when it fails (a usage read after a failed attempt must not hide its error)."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - the attempt's own error is the one to raise
        log.warning("could not read DeepL usage after the part: %s", e)
        return None


_COUNTER_KEYS = ("retries_429", "waited_429_s", "retries_other", "possibly_billed_twice_requests",
                 "possibly_billed_twice_chars")


class TranslatePart(PtvlTask):
    """Translate one hash part of the engine's unique-string table into the part's own memory file.

    DeepL: the account's /v2/usage counter is read before and after, and both it and the memory's own
    count go into the part's stats and audit line (`pipeline.spend` reconciles them)."""

    engine = luigi.Parameter()
    part = luigi.IntParameter()

    def requires(self):
        return [UniqueStrings(config=self.config, engine=self.engine), *_engine_requires(self, str(self.engine))]

    def output(self) -> luigi.LocalTarget:
        stem = part_stem(self.root / "translated" / str(self.engine), int(self.part), self.settings.translate.parts)
        return luigi.LocalTarget(f"{stem}-{table_fingerprint(self.settings, str(self.engine))}.json")

    def run(self) -> None:
        from pipeline.engines import build_engine

        name, n, i = str(self.engine), self.settings.translate.parts, int(self.part)
        table = pl.read_parquet(unique_path(self.settings, name))
        mine = table.filter(part_of(table["part_key"], i, n))
        plain, ctx = mine.filter(pl.col("kind") != "context"), mine.filter(pl.col("kind") == "context")
        stem = part_stem(self.root / "translated" / name, i, n)
        batch = self.settings.translate.batch_size
        label = f"part {i + 1}/{n}"
        audit = Path(str(stem) + ".audit.jsonl")
        engines = []
        stats_plain = stats_ctx = None
        t0 = time.perf_counter()
        with memory_view(self.root, name, writer=part_memory_path(self.root, name, i, n), skip_part_count=n) as mem:
            engine = build_engine(name, self.settings.engines[name])
            engines.append(engine)
            usage = getattr(engine, "billed_so_far", None)
            deepl_before = usage() if usage else None
            billed_before = mem.writer.total_billed()
            _append_line(audit, {"event": "start", "at": datetime.now(UTC).isoformat(), "deepl_before": deepl_before,
                                 "memory_before": billed_before})
            end: dict = {"event": "end", "outcome": "running"}
            try:
                stats_plain = _fill(engine, mem, plain["text_en"].to_list(), label, name, batch)
                if ctx.height:
                    ctx_engine = build_engine(name, context_entry(self.settings, name))
                    engines.append(ctx_engine)
                    stats_ctx = _fill(ctx_engine, mem, ctx["text_en"].to_list(), f"{label} with context", name,
                                      batch, contexts=ctx["context"].to_list())
                end["outcome"] = "done"
            except Exception as e:
                end["outcome"] = f"{type(e).__name__}: {e}"
                raise
            finally:
                end["at"] = datetime.now(UTC).isoformat()
                end["deepl_after"] = _safe(usage) if usage else None
                end["seconds"] = time.perf_counter() - t0
                # What the memory recorded as billed in this attempt (also when it failed half-way).
                end["memory_billed"] = mem.writer.total_billed() - billed_before
                counters = [e.counters.as_dict() for e in engines if hasattr(e, "counters")]
                end["requests"] = sum(c["requests"] for c in counters)
                for k in _COUNTER_KEYS:
                    end[k] = sum(c[k] for c in counters)
                _append_line(audit, end)
                for e in engines:
                    close = getattr(e, "close", None)
                    if close:
                        close()
        record = {"deepl_before": deepl_before, **end}
        set_aside = [(h, r, "segment") for h, r in stats_plain.set_aside.items()]
        if stats_ctx is not None:
            set_aside += [(h, r, "context") for h, r in stats_ctx.set_aside.items()]
        out = {
            "engine_id": engines[0].engine_id,
            # The built engine's id (a glossary name resolved to its id); from the settings when this part
            # holds no dialog text at all.
            "context_engine_id": engines[1].engine_id if len(engines) > 1 else context_engine_id(self.settings, name),
            "context_rows": ctx.height,
            "part": i, "parts": n,
            "unique": mine.height,
            "hits": stats_plain.hits + (stats_ctx.hits if stats_ctx else 0),
            "sent": stats_plain.sent + (stats_ctx.sent if stats_ctx else 0),
            "requests": stats_plain.requests + (stats_ctx.requests if stats_ctx else 0),
            "billed_chars": record["memory_billed"],
            "deepl_billed_chars": (record["deepl_after"] - record["deepl_before"]
                                   if record["deepl_before"] is not None else None),
            "set_aside": set_aside,
            "seconds": record["seconds"],
            **{k: record[k] for k in _COUNTER_KEYS},
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
        return self.target("translated", str(self.engine), str(self.dataset), f"{self.split}.parquet")

    def complete(self) -> bool:
        # Switching visdial_context on in a run that already translated VisDial makes this task (and so
        # its parts) run again: the joins are memory hits, only the dialog texts are sent.
        if not super().complete():
            return False
        return not self.with_context or context_path(self.root, str(self.engine), str(self.split)).exists()

    def run(self) -> None:
        from pipeline.contracts import SET_ASIDE, TRANSLATED

        parts = [json.loads(open(t.output().path).read()) for t in self.requires()]
        set_aside = {h: r for p in parts for h, r, _ in p["set_aside"]}
        seg = _segments(self, str(self.dataset), str(self.split))
        out_dir = self.root / "translated" / str(self.engine) / str(self.dataset)
        aside = seg.filter(pl.col("text_hash").is_in(list(set_aside)))
        write_parquet_atomic(out_dir / f"{self.split}.set_aside.parquet", aside.with_columns(
            pl.col("text_en").str.len_chars().alias("chars"),
            pl.col("text_hash").replace_strict(set_aside, default=None, return_dtype=pl.String).alias("reason"),
        ).select(SET_ASIDE.names).to_arrow(), SET_ASIDE)
        with memory_view(self.root, str(self.engine)) as mem:
            flagged, stats = self._join(mem, seg.filter(~pl.col("text_hash").is_in(list(set_aside))),
                                        parts[0]["engine_id"], "segments", "")
            stats["set_aside"] = dict(aside["text_hash"].replace_strict(set_aside, return_dtype=pl.String)
                                      .value_counts().rows()) if aside.height else {}
            if self.with_context:
                ctx_id = next((p["context_engine_id"] for p in parts if p.get("context_rows")),
                              parts[0]["context_engine_id"])
                stats["context"] = self._write_context(mem, ctx_id, set_aside)
        write_json_atomic(out_dir / f"_{self.split}.stats.json", stats)
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
        from translation.errors import MemoryIntegrityError
        from translation.quality import flag_table

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
        from pipeline.contracts import VISDIAL_CONTEXT_TRANSLATED

        rows = dialog_context_rows(self.root, str(self.split)).with_row_index("_order")
        # The key hashes text and context together; `check` re-checks both anyway, so a context-free row
        # can never stand in for a context one, whatever happened to the memory file.  A text set aside
        # has no memory row to check (it is "" below).
        flagged, stats = self._join(mem, rows.filter(~pl.col("text_hash").is_in(list(set_aside))), engine_id,
                                    "VisDial dialog texts", " with their caption as context",
                                    check=("text_en", "context"))
        aside = rows.filter(pl.col("text_hash").is_in(list(set_aside)))
        if aside.height:
            from translation.quality import flag_table

            blank = flag_table(aside.with_columns(pl.lit(str(self.engine)).alias("engine"),
                                                  pl.lit(engine_id).alias("engine_id"), pl.lit("").alias("text_pt"),
                                                  pl.lit(None, pl.Float32).alias("score")), self.settings.quality)
            flagged = pl.concat([flagged, blank.select(flagged.columns)]).sort("_order")
            stats["set_aside"] = aside.height
        write_parquet_atomic(context_path(self.root, str(self.engine), str(self.split)), flagged.to_arrow(),
                             VISDIAL_CONTEXT_TRANSLATED)
        return stats


def _flag_counts(flagged: pl.DataFrame) -> list:
    return (flagged.select(pl.col("flags").explode().drop_nulls().value_counts()).unnest("flags").rows()
            if flagged.height else [])
