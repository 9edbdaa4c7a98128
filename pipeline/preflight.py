"""Before anything is paid for: what a run will send and cost, and whether the paid engines' keys and
quotas allow it.  Raises `PreflightError` (one line for the user) and returns data or text; printing is the
CLI's business.

- `estimate_table`: the characters of a unique-string table still missing from the memory.
- `check_paid_engines`: the key of every paid engine answers, and the run's estimate fits its remaining
  quota (unless allowed to stop part-way); run by `ptvl run` and `ptvl translate` before any request.
- `dry_run`: the per-split table `ptvl translate --dry-run` prints, and the quota line.
- `memory_note`: an engine whose id has nothing in the memory while the memory holds other ids of its
  kind (settings changed, so everything is paid again): said before anything is sent.
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import luigi
import polars as pl
from rich.table import Table

from pipeline.memory_files import memory_view
from pipeline.settings import ConfigError, Settings, load_settings
from pipeline.tasks.acquire import IngestSegments
from pipeline.tasks.scheduling import build_local
from pipeline.tasks.translate import UniqueStrings
from pipeline.translate_plan import context_cost, context_engine_id, unique_strings
from translation.cost import CostEstimate, estimate
from translation.engines.base import Engine
from translation.errors import ConfigurationError, EngineError
from translation.sendable import text_problem


class PreflightError(ConfigError):
    """The run must not start: the message says why and what to do, in one line."""


def estimate_table(table: pl.DataFrame, mem, engine_id: str, context_engine_id: str | None,
                   price: float) -> CostEstimate:
    """The cost of the part of a unique-string table (`pipeline.translate_plan.unique_strings`) missing
    from `mem`: only sendable characters of strings not stored under their engine id count (an engine's
    own limits are checked at send time)."""
    missing_chars = missing = 0
    for kind_ctx, eid in ((False, engine_id), (True, context_engine_id)):
        rows = table.filter((pl.col("kind") == "context") == kind_ctx)
        if eid is None or not rows.height:
            continue
        absent = set(mem.missing(eid, rows["key"].to_list()))
        for k, t in zip(rows["key"].to_list(), rows["text_en"].to_list(), strict=True):
            if k in absent and t.strip() and text_problem(t) is None:
                missing += 1
                missing_chars += len(t)
    return CostEstimate(rows=table.height, unique=table.height, unique_missing=missing, chars=missing_chars,
                        eur=missing_chars * price / 1e6)


def quota_status(engine: Engine, missing_chars: int, *, allow_partial: bool) -> str:
    """The one-line quota status of a paid engine for a run that needs `missing_chars`.

    Raises ConfigurationError (one line) for a rejected key (revoked, or a Free key sent to the Pro URL)
    and, unless `allow_partial`, for an estimate over the remaining quota, naming both numbers."""
    quota = engine.quota()  # ConfigurationError on 403, with the key redacted
    if quota is None:
        return f"no quota to check; this run needs {missing_chars:,} characters"
    if quota.limit is None:
        return f"DeepL quota: {quota.used:,} characters used, no limit; this run needs {missing_chars:,}"
    left = max(quota.limit - quota.used, 0)
    status = f"DeepL quota: {left:,} of {quota.limit:,} characters left; this run needs {missing_chars:,}"
    if missing_chars > left:
        if not allow_partial:
            raise ConfigurationError(
                f"this run needs {missing_chars:,} DeepL characters but the key has {left:,} left "
                f"(limit {quota.limit:,}); raise the limit, or pass --allow-partial to translate what fits and "
                "resume the rest later")
        status += " (--allow-partial: the run stops cleanly at the limit and resumes later)"
    return status


def paid_engines(settings: Settings, names: list[str]) -> list[str]:
    return [n for n in names if settings.engines[n].paid]


def open_engine(settings: Settings, name: str) -> Engine:
    """The engine of `name`, or PreflightError (missing or rejected key, unknown glossary)."""
    try:
        return settings.engines[name].build(name)
    except (ConfigurationError, EngineError) as e:
        raise PreflightError(str(e)) from None


def memory_note(settings: Settings, name: str) -> str | None:
    """One line when engine `name`'s id has nothing in the run's memory but other ids of the same kind do
    (a setting that decides the output changed: a new engine, paid again in full), else None."""
    engine_id = settings.engines[name].engine_id(name)
    kind = engine_id.split(":", 1)[0]
    with memory_view(settings.root) as mem:  # every folder: a renamed table's memory is found too
        ids = mem.engine_ids()
        if engine_id in ids:
            return None
        others = {e: mem.stats(e) for e in ids if e.split(":", 1)[0] == kind}
    if not others:
        return None
    tables = {settings.engines[n].engine_id(n): n for n in settings.engines}
    held = "; ".join(f"{st.billed_chars:,} billed characters ({st.rows:,} texts) under {e}"
                     + (f" (engine {tables[e]})" if e in tables else "") for e, st in sorted(others.items()))
    return (f"engine {name}: new engine id {engine_id}, nothing in memory for it; the memory holds {held}. "
            "A setting that decides the output differs, so every text is paid for again; if that is not "
            "intended, restore the settings of the table that paid")


def spend(settings: Settings, name: str) -> tuple[CostEstimate, CostEstimate]:
    """What `name` still has to send for the whole run: (all of it, the gold set's share).  Needs the
    segments ingested."""
    entry = settings.engines[name]
    table = unique_strings(settings, name)
    engine_id, ctx_id, price = entry.engine_id(name), context_engine_id(settings, name), entry.price_per_million()
    with memory_view(settings.root, engine_id) as mem:
        total = estimate_table(table, mem, engine_id, ctx_id, price)
        gold = estimate_table(table.filter(pl.col("kind") == "gold"), mem, engine_id, None, price)
    return total, gold


def _spend_total(config: str, name: str) -> CostEstimate:
    return spend(load_settings(Path(config)), name)[0]


def spend_in_child(config: str, name: str) -> CostEstimate:
    """`spend(...)[0]` computed in a spawned process: polars' thread pool must never run in a process that
    Luigi forks its workers from afterwards (a forked child then deadlocks in its first polars call)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_spend_total, config, name).result()


def check_keys(settings: Settings, names: list[str]) -> None:
    """Every paid engine's key answers (a revoked key fails before anything else runs)."""
    for name in paid_engines(settings, names):
        eng = open_engine(settings, name)
        try:
            eng.quota()
        except ConfigurationError as e:
            raise PreflightError(str(e)) from None
        finally:
            eng.close()


def check_quotas(settings: Settings, config: str, names: list[str], *, allow_partial: bool) -> list[str]:
    """The run's estimate against each paid engine's remaining quota: one status line per engine, or
    PreflightError.  The segments must be ingested (the unique-string tables exist)."""
    lines = []
    for name in paid_engines(settings, names):
        note = memory_note(settings, name)
        if note:
            lines.append(f"WARNING: {note}")
        total = spend_in_child(config, name)
        eng = open_engine(settings, name)
        try:
            lines.append(f"{name}: {quota_status(eng, total.chars, allow_partial=allow_partial)}")
        except ConfigurationError as e:
            raise PreflightError(f"{name}: {e}") from None
        finally:
            eng.close()
    return lines


def preflight_paid_engines(settings: Settings, config: str, names: list[str], *, allow_partial: bool,
                           build_kwargs: dict) -> list[str]:
    """Before any request of a run: every paid engine's key works, then (segments ingested, with the run's
    own scheduler and workers) its estimate fits the remaining quota.  The status lines, or PreflightError."""
    paid = paid_engines(settings, names)
    if not paid:
        return []
    check_keys(settings, paid)  # a revoked key fails before anything else runs
    luigi.configuration.get_config().set("core", "no_configure_logging", "true")
    result = luigi.build([UniqueStrings(config=config, engine=n) for n in paid], detailed_summary=True,
                         **build_kwargs)
    if result.status.name not in ("SUCCESS", "SUCCESS_WITH_RETRY"):
        raise PreflightError(f"could not read the segments ({result.status.name}); fix the error above and rerun"
                             f"\n{result.summary_text}")
    return check_quotas(settings, config, paid, allow_partial=allow_partial)


DRY_RUN_HEADER = ("dataset/split", "rows", "unique", "missing", "chars", "EUR")


@dataclass
class DryRun:
    """What `ptvl translate --dry-run` shows: rows of (label, estimate) and the quota line (or why the
    quota was not checked; None for an engine that bills nothing)."""

    engine_id: str
    rows: list[tuple[str, CostEstimate]]
    quota: str | None
    note: str | None = None  # `memory_note`

    def lines(self) -> list[str]:
        """What follows the table: the memory note (as a warning) and the quota line."""
        return [f"WARNING: {self.note}"] * bool(self.note) + [self.quota] * bool(self.quota)

    def cells(self) -> list[list[str]]:
        """The rows as printed, under `DRY_RUN_HEADER`."""
        return [[label, f"{e.rows:,}", f"{e.unique:,}", f"{e.unique_missing:,}", f"{e.chars:,}", f"{e.eur:.2f}"]
                for label, e in self.rows]

    def table(self, engine: str) -> Table:
        """The estimate per dataset/split, as the console prints it."""
        table = Table(title=f"dry run: {engine} ({self.engine_id})")
        for col in DRY_RUN_HEADER:
            table.add_column(col, justify="right")
        for cells in self.cells():
            table.add_row(*cells)
        return table


def dry_run(settings: Settings, config: str, engine: str, targets: list[tuple[str, str]], *,
            allow_partial: bool) -> DryRun:
    """Price `engine` on the `targets` splits without sending anything (the segments are ingested first)."""
    built = build_local([IngestSegments(config=config, dataset=d, split=sp) for d, sp in settings.datasets.splits()])
    if not built.ok:
        raise PreflightError(f"could not read the segments ({built.status}); fix the error above and rerun"
                             f"\n{built.summary_text}")
    entry = settings.engines[engine]
    engine_id = entry.engine_id(engine)
    rows: list[tuple[str, CostEstimate]] = []
    with memory_view(settings.root, engine_id) as mem:
        for d, sp in targets:
            texts = pl.read_parquet(settings.layout.segments(d, sp))["text_en"].to_list()
            rows.append((f"{d}/{sp}", estimate(texts, mem, engine_id, entry.price_per_million())))
        ctx_rows, _ = context_cost(settings, engine, targets, mem)
        rows += ctx_rows
    total, gold = spend(settings, engine)
    if gold.rows:
        rows.append(("gold set (curate), not in any split", gold))
    rows.append(("all (shared strings once)", total))
    if not entry.paid:
        return DryRun(engine_id, rows, None)
    note = memory_note(settings, engine)
    try:
        entry.check(engine, settings.layout.sources, sample=settings.sample.enabled)
    except ConfigurationError as e:
        return DryRun(engine_id, rows, f"quota not checked: {e}", note)
    eng = open_engine(settings, engine)
    try:
        return DryRun(engine_id, rows, quota_status(eng, total.chars, allow_partial=allow_partial), note)
    except ConfigurationError as e:
        raise PreflightError(str(e)) from None
    finally:
        eng.close()
