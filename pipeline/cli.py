"""`ptvl`: the command line.  `ptvl run` builds the Luigi DAG; the other commands run one stage."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from pipeline.settings import ConfigError, load_settings

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

DEFAULT_CONFIG = Path("configs/sample.toml")
# Wide when not a terminal (CI logs, files), so tracebacks and paths are not wrapped mid-word.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
app = typer.Typer(
    help=(
        "ptvl: European-Portuguese (PT-PT) vision-and-language datasets, translator comparison and "
        "V-Glória training.\n\n"
        "Start with `ptvl run` (the whole DAG on the embedded offline sample), then point "
        "`--config` at configs/full.toml for the real datasets."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

ConfigOpt = typer.Option(DEFAULT_CONFIG, "--config", "-c", help="TOML run profile (configs/*.toml).")

# Our own loggers; INFO from anything else (open_clip logs on the root logger, matplotlib, tensorboard)
# is detail for `-v`, not console output.
OWN_LOGGERS = ("ptvl", "pipeline", "translation", "training", "eval")


class _QuietThirdParty(logging.Filter):
    """Without -v: our INFO lines and everyone's warnings; third-party INFO/DEBUG only with -v."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        return record.name.split(".")[0] in OWN_LOGGERS


def _setup_logging(verbose: bool) -> None:
    handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
    if not verbose:
        handler.addFilter(_QuietThirdParty())
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[handler], force=True)
    # Luigi's own INFO lines are noise next to our progress bars.
    logging.getLogger("luigi").setLevel(logging.WARNING)
    logging.getLogger("luigi-interface").setLevel(logging.WARNING)
    # The Java tools' stderr (PTBTokenizer's "tokenized N tokens", "Untokenizable: ...", METEOR's start-up)
    # is relayed by eval.metrics.caption at DEBUG: shown with -v only.
    if not verbose:  # transformers' "Loading weights" / "Writing model shards" bars (read at its import)
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # The deepl client logs every request at INFO (~136k lines for CC3M): keep it to real problems.
    logging.getLogger("deepl").setLevel(logging.DEBUG if verbose else logging.WARNING)


def _fail(msg: str) -> None:
    console.print(f"[bold red]error:[/] {escape(msg)}", soft_wrap=True)  # one line, however long
    raise typer.Exit(2)


def _load(config: Path):
    try:
        return load_settings(config)
    except ConfigError as e:
        _fail(str(e))


def _check_writable(folder: Path, what: str = "run root") -> None:
    """Fail in one line, before any work, when outputs could not be written under `folder` (a read-only
    disk, a folder without write permission, a file in the way).  Nothing is created: the probe file
    goes into the nearest folder that exists, and is removed at once."""
    from ptvl_io import temp_beside

    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        _fail(f"{what} {folder} cannot be created: {probe} is a file, not a folder")
    try:
        fd, tmp = temp_beside(probe / ".ptvl-write-check")
        os.close(fd)
        tmp.unlink()
    except OSError as e:
        _fail(f"{what} {folder} is not writable ({probe}: {e.strerror or e})")


def _check_model(settings) -> None:
    """The bridge name and its settings, checked before any stage runs (not after every upstream stage)."""
    from training.bridges import BRIDGES

    m = settings.model
    if m.bridge not in BRIDGES:
        _fail(f"unknown bridge {m.bridge!r} ([model] bridge or --bridge); known: {', '.join(sorted(BRIDGES))}")
    unknown = sorted(set(m.bridge_kwargs) - set(BRIDGES[m.bridge].settings))
    if unknown:
        _fail(f"bridge {m.bridge!r} has no setting(s) {', '.join(unknown)} ([model] bridge_kwargs); "
              f"it accepts: {', '.join(BRIDGES[m.bridge].settings) or 'none'}")


def _check_engines(settings) -> None:
    """Every configured engine must be able to start (key present, model folder converted) before any
    task runs: failing here costs nothing, failing hours into a run costs a lot."""
    from pipeline.engines import check_engine
    from translation.errors import ConfigurationError

    for name in settings.translate.engines:
        try:
            check_engine(name, settings.engines[name], settings.root / "sources", sample=settings.sample.enabled)
        except ConfigurationError as e:
            _fail(str(e))


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    _setup_logging(verbose)


@app.command()
def run(
    config: Path = ConfigOpt,
    until: str = typer.Option(
        None, "--until", help="Stop after this stage (default: the last). See `ptvl stages`."
    ),
    workers: int = typer.Option(1, "--workers", "-w", min=1, help="Luigi workers running tasks in parallel."),
    scheduler_host: str = typer.Option(
        None,
        "--scheduler-host",
        help="Share the DAG through the central `luigid` on this host: start `ptvl run` with the same "
        "profile on as many machines as wanted (sharing the run root); each runs its share of the tasks, "
        "none runs a task twice, and each exits 0 once the whole DAG is complete. Default: a local "
        "scheduler in this process.",
    ),
    scheduler_port: int = typer.Option(8082, "--scheduler-port", help="Port of `luigid`."),
    allow_partial: bool = typer.Option(
        False, "--allow-partial",
        help="Start DeepL even if the estimate exceeds the key's remaining quota: it stops cleanly at the "
        "limit, and a rerun resumes with what is missing.",
    ),
) -> None:
    """Build the DAG up to STAGE: sources -> segments -> images -> translate -> curate -> shards ->
    features -> train -> eval -> report.  Finished tasks are skipped, so a rerun resumes."""
    from pipeline.tasks import STAGES
    from pipeline.tasks.scheduling import run_dag

    settings = _load(config)
    names = list(STAGES)
    stage = until or names[-1]
    if stage not in STAGES:
        _fail(f"unknown stage {stage!r}; stages are: {', '.join(names)}")
    if names.index(stage) >= names.index("translate"):  # stages before translate need no engine
        _check_engines(settings)
    if names.index(stage) >= names.index("train"):
        _check_model(settings)
    _check_writable(settings.root)
    if scheduler_host:
        _check_luigid(scheduler_host, scheduler_port)
    tasks = STAGES[stage][1](str(config.resolve()), settings)
    where = f"luigid {scheduler_host}:{scheduler_port}" if scheduler_host else "local scheduler"
    console.print(f"[bold]ptvl run[/] {config} -> stage [cyan]{stage}[/] ({len(tasks)} target tasks), root "
                  f"{settings.root}, profile {settings.fingerprint()}, {where}")
    if names.index(stage) >= names.index("translate"):  # the DeepL key and quota, before any request
        where_kw = ({"scheduler_host": scheduler_host, "scheduler_port": scheduler_port} if scheduler_host
                    else {"local_scheduler": True})
        _preflight_deepl(settings, str(config.resolve()), settings.translate.engines, allow_partial,
                         {"workers": workers, **where_kw})
    outcome = run_dag(tasks, workers=workers, scheduler_host=scheduler_host, scheduler_port=scheduler_port)
    if not scheduler_host or not outcome.complete:
        # Under luigid, Luigi's summary calls the tasks other machines ran "not granted run permission";
        # once the DAG is complete the line below says what happened instead.
        console.print(outcome.summary_text)
    _billing_summary(settings)
    if not outcome.complete:
        if outcome.failed_here:
            _fail(f"run did not finish: {', '.join(outcome.failed_here)} failed (error above); fix it and "
                  "rerun: finished tasks are kept")
        _fail(f"run did not finish: {', '.join(outcome.incomplete)} incomplete"
              + (f"; a task failed on another machine (see luigid at http://{scheduler_host}:{scheduler_port})"
                 if scheduler_host else "") + "; rerun to resume: finished tasks are kept")
    console.print(f"stage {stage} complete: {len(outcome.ran_here)} tasks run by this process, "
                  f"{outcome.already_done} already done"
                  + (", the rest by other workers of the same luigid" if scheduler_host else ""))
    for task_id in outcome.ran_here if scheduler_host else []:
        console.print(f"  ran {task_id}")
    final = settings.root / "reports" / "README.md"
    if final.exists():
        console.print(f"report: {final}")


def _check_luigid(host: str, port: int) -> None:
    """A scheduler that cannot be reached is a one-line error before any task, not Luigi's RPC retries
    (minutes) ending in a traceback."""
    import urllib.request

    url = f"http://{host}:{port}/api/task_list?data=%7B%7D"
    try:
        urllib.request.urlopen(url, timeout=10).read()
    except OSError as e:
        _fail(f"cannot reach luigid at {host}:{port} ({getattr(e, 'reason', e)}); start it first "
              "(README, Scale-out) or drop --scheduler-host to use a local scheduler")


@app.command()
def stages() -> None:
    """List the stages `ptvl run --until` accepts, in order."""
    from pipeline.tasks import STAGES

    for name, (what, _) in STAGES.items():
        console.print(f"[cyan]{name:10}[/] {what}")


@app.command()
def sample(
    out: Path = typer.Option(Path("runs/sample/sources"), "--out", help="Folder to write the sample into."),
    seed: int = typer.Option(0, help="Random seed (same seed -> identical files)."),
) -> None:
    """Write the embedded bilingual synthetic sample (CC3M TSV, COCO Karpathy JSON, VisDial JSON,
    reference memory) without running anything else."""
    from pipeline.sample.write import write_sample

    layout = write_sample(out, seed=seed)
    console.print(f"sample written to {out}: {layout}")


def _build(tasks: list, workers: int = 1) -> None:
    import luigi

    luigi.configuration.get_config().set("core", "no_configure_logging", "true")
    result = luigi.build(tasks, workers=workers, local_scheduler=True, detailed_summary=True)
    console.print(result.summary_text)
    if result.status.name not in ("SUCCESS", "SUCCESS_WITH_RETRY"):
        _fail(f"did not finish ({result.status.name}); rerun to resume: finished work is kept")


def _deepl_engines(settings, names) -> list[str]:
    from pipeline.engines import DeepLEntry

    return [n for n in names if isinstance(settings.engines[n], DeepLEntry)]


def _open_deepl(settings, name: str):
    """The DeepL engine of `name`, or a one-line error (missing or rejected key, unknown glossary)."""
    from pipeline.engines import build_engine
    from translation.errors import ConfigurationError, EngineError

    try:
        return build_engine(name, settings.engines[name])
    except (ConfigurationError, EngineError) as e:
        _fail(str(e))


def _spend(settings, name: str):
    """What `name` still has to send for the whole run: (CostEstimate, per-kind rows for the dry run)."""
    import polars as pl

    from pipeline.engines import price_per_million
    from pipeline.spend import estimate_table
    from pipeline.tasks.translate import context_engine_id, memory_view, unique_strings

    table = unique_strings(settings, name)
    engine_id = _engine_id_without_key(name, settings.engines[name])
    ctx_id = context_engine_id(settings, name)
    price = price_per_million(settings.engines[name])
    with memory_view(settings.root, name) as mem:
        total = estimate_table(table, mem, engine_id, ctx_id, price)
        gold = estimate_table(table.filter(pl.col("kind") == "gold"), mem, engine_id, None, price)
    return total, gold


def _spend_total(cfg: str, name: str):
    return _spend(load_settings(Path(cfg)), name)[0]


def _spend_in_child(cfg: str, name: str):
    """`_spend(...)[0]` computed in a spawned process: polars' thread pool must never run in a process
    that Luigi forks its workers from afterwards (a forked child then deadlocks in its first polars call)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_spend_total, cfg, name).result()


def _preflight_deepl(settings, cfg: str, engines: list[str], allow_partial: bool, build_kwargs: dict) -> None:
    """Before any DeepL request: the key works (usage() answers) and the run's estimate fits the
    remaining quota (unless --allow-partial).  Ingests the segments first (they are needed anyway)."""
    import luigi

    from pipeline.spend import preflight
    from pipeline.tasks.translate import UniqueStrings
    from translation.errors import ConfigurationError

    names = _deepl_engines(settings, engines)
    if not names:
        return
    for name in names:  # the key first: a revoked key fails before anything else runs
        eng = _open_deepl(settings, name)
        try:
            eng.usage()
        except ConfigurationError as e:
            _fail(str(e))
        finally:
            eng.close()
    luigi.configuration.get_config().set("core", "no_configure_logging", "true")
    result = luigi.build([UniqueStrings(config=cfg, engine=n) for n in names],
                         **{**build_kwargs, "detailed_summary": True})
    if result.status.name not in ("SUCCESS", "SUCCESS_WITH_RETRY"):
        console.print(result.summary_text)
        _fail(f"could not read the segments ({result.status.name}); fix the error above and rerun")
    for name in names:
        total = _spend_in_child(cfg, name)
        eng = _open_deepl(settings, name)
        try:
            console.print(f"{name}: {preflight(eng, total.chars, allow_partial=allow_partial)}")
        except ConfigurationError as e:
            _fail(f"{name}: {e}")
        finally:
            eng.close()


def _billing_summary(settings) -> None:
    """The run's spending per engine: the memory's count beside DeepL's own, loud when they differ."""
    from pipeline.spend import report_billing

    report_billing(settings.root, list(settings.translate.engines), console.print)


@app.command()
def translate(
    engine: str = typer.Option(..., "--engine", "-e", help="Name of an [engines.<name>] table in the config."),
    config: Path = ConfigOpt,
    dataset: list[str] = typer.Option(None, "--dataset", "-d", help="Only these datasets (repeatable).",),
    split: list[str] = typer.Option(None, "--split", "-s", help="Only these splits (repeatable)."),
    dry_run: bool = typer.Option(
        False, "--dry-run",
        help="Print what would be billed (only texts missing from the memory, the gold set included), check "
        "the DeepL key and quota, and stop.",
    ),
    workers: int = typer.Option(1, "--workers", "-w", min=1),
    allow_partial: bool = typer.Option(
        False, "--allow-partial", help="Start even if the estimate exceeds the remaining DeepL quota."),
) -> None:
    """Translate the configured datasets with one engine (memory first, engine for misses).

    Every distinct string of the run (all datasets and splits, the gold set, VisDial dialog texts with
    context) is sent at most once, in `translate.parts` hash parts.  Safe to interrupt: every stored
    request is durable, and a rerun pays only for what is still missing."""
    from pipeline.engines import check_engine
    from pipeline.tasks.translate import Translate
    from translation.errors import ConfigurationError

    settings = _load(config)
    if engine not in settings.engines:
        _fail(f"no [engines.{engine}] table in {config}; configured: {', '.join(settings.engines)}")
    targets = [
        (d, sp) for d, sp in settings.datasets.splits()
        if (not dataset or d in dataset) and (not split or sp in split)
    ]
    if not targets:
        _fail("no dataset/split matches the filters")
    cfg = str(config.resolve())
    from pipeline.tasks.translate import context_entry

    try:  # translate.visdial_context on: the engine must take a context (DeepL); fail before any task
        context_entry(settings, engine)
    except ConfigurationError as e:
        _fail(str(e))
    _check_writable(settings.root)
    if dry_run:
        _dry_run(settings, cfg, engine, targets, allow_partial)
        return
    try:
        check_engine(engine, settings.engines[engine], settings.root / "sources", sample=settings.sample.enabled)
    except ConfigurationError as e:
        _fail(str(e))
    _preflight_deepl(settings, cfg, [engine], allow_partial, {"workers": workers, "local_scheduler": True})
    # The parts translate every string of the run (all splits: one payment per string); the joins are
    # written for the chosen splits.
    _build([Translate(config=cfg, dataset=d, split=sp, engine=engine) for d, sp in targets], workers)
    from pipeline.spend import report_billing

    report_billing(settings.root, [engine], console.print)


def _dry_run(settings, cfg: str, engine: str, targets: list[tuple[str, str]], allow_partial: bool) -> None:
    import polars as pl
    from rich.table import Table

    from pipeline.engines import price_per_million
    from pipeline.tasks.acquire import IngestSegments
    from pipeline.tasks.translate import context_cost, memory_view
    from translation.cost import estimate
    from translation.errors import ConfigurationError
    from translation.secrets import load_secret

    _build([IngestSegments(config=cfg, dataset=d, split=sp) for d, sp in settings.datasets.splits()])
    entry = settings.engines[engine]
    engine_id = _engine_id_without_key(engine, entry)
    table = Table(title=f"dry run: {engine} ({engine_id})")
    for col in ("dataset/split", "rows", "unique", "missing", "chars", "EUR"):
        table.add_column(col, justify="right")

    def row(label, est) -> None:
        table.add_row(label, f"{est.rows:,}", f"{est.unique:,}", f"{est.unique_missing:,}", f"{est.chars:,}",
                      f"{est.eur:.2f}")

    with memory_view(settings.root, engine) as mem:
        for d, sp in targets:
            texts = pl.read_parquet(settings.root / "segments" / d / f"{sp}.parquet")["text_en"].to_list()
            row(f"{d}/{sp}", estimate(texts, mem, engine_id, price_per_million(entry)))
        # translate.visdial_context: the dialogs' Q/A with their caption as context (other memory keys).
        ctx_rows, _ = context_cost(settings, engine, targets, mem)
        for label, est in ctx_rows:
            row(label, est)
    total, gold = _spend(settings, engine)
    if gold.rows:
        row("gold set (curate), not in any split", gold)
    row("all (shared strings once)", total)
    console.print(table)
    if not _deepl_engines(settings, [engine]):
        return
    try:
        load_secret(env=entry.auth_key_env, file=entry.auth_key_file, what=f"DeepL key for engine {engine!r}")
    except ConfigurationError as e:
        console.print(f"quota not checked: {e}")
        return
    from pipeline.spend import preflight

    eng = _open_deepl(settings, engine)
    try:
        console.print(preflight(eng, total.chars, allow_partial=allow_partial))
    except ConfigurationError as e:
        _fail(str(e))
    finally:
        eng.close()


def _engine_id_without_key(name: str, entry) -> str:
    """The engine id a dry run prices against, computed without opening the engine (no key needed)."""
    from pipeline.engines import DeepLEntry, ReferenceEntry

    if isinstance(entry, ReferenceEntry):
        return name
    if isinstance(entry, DeepLEntry):
        from translation.engines.deepl_api import DeepLSettings, engine_id_for

        return engine_id_for(DeepLSettings(**entry.model_dump(exclude={"engine"})))
    from pipeline.engines import build_engine

    return build_engine(name, entry).engine_id


@app.command()
def download(
    config: Path = ConfigOpt,
    retry_failed: bool = typer.Option(
        False, "--retry-failed",
        help="Download again only the URLs that failed for a transient reason (timeouts, 5xx, 429, "
        "connection resets, resolver overload), then rebuild the availability table.",
    ),
    dataset: list[str] = typer.Option(None, "--dataset", "-d", help="Only these datasets (repeatable)."),
    timeout: int = typer.Option(None, "--timeout", help="With --retry-failed: a longer per-image timeout (s)."),
) -> None:
    """Download the images of the configured datasets (img2dataset) and write the availability table.

    Without --retry-failed this is `ptvl run --until images`."""
    from pipeline.tasks.acquire import AvailabilityReport

    settings = _load(config)
    _check_writable(settings.root)
    cfg = str(config.resolve())
    if not retry_failed:
        _build([AvailabilityReport(config=cfg)])
        return
    from pipeline.availability import run_report
    from pipeline.images.download import retry_failed as retry
    from pipeline.images.layout import manifest_path
    from pipeline.io import write_text_atomic

    splits = [
        (d, sp) for d, sp in settings.datasets.splits() if not dataset or d in dataset
    ]
    for d, sp in splits:
        out = settings.root / "images" / d / sp
        if not manifest_path(out).exists():
            _fail(f"{d}/{sp} has not been downloaded yet; run `ptvl download` first")
        s = settings.download.model_copy(update={"timeout": timeout}) if timeout else None
        m = retry(out, s, progress=lambda msg, label=f"{d}/{sp}": console.print(f"{label}: {msg}"))
        console.print(f"{d}/{sp}: {m.available:,} of {m.urls:,} available after {len(m.attempts)} attempt(s)")
    done = [f"{d}/{sp}" for d, sp in settings.datasets.splits()
            if (settings.root / "images" / d / sp / "availability.parquet").exists()]
    report = run_report(settings.root, done)
    write_text_atomic(settings.root / "reports" / "availability.md", report)
    console.print(report)


@app.command("convert-model")
def convert_model_cmd(
    kind: str = typer.Argument(..., help="madlad (google/madlad400-3b-mt) or narrativa (mBART-50 EN->PT)."),
    source: str = typer.Option(..., "--from", help="Hugging Face id or local folder of the checkpoint."),
    dest: Path = typer.Option(..., "--to", help="Folder to write the CTranslate2 model (+ tokenizer) into."),
    quantization: str = typer.Option(
        None, "--quantization", "-q",
        help="int8 (CPU), int8_bfloat16 or bfloat16 (GPU); never float16 for MADLAD (T5 overflows). "
        "Default: keep the checkpoint's weights.",
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing folder."),
) -> None:
    """Convert a MADLAD-400 or Narrativa checkpoint to CTranslate2, with the config fixes each needs."""
    from translation.convert import ConversionError, convert_model

    if kind not in ("madlad", "narrativa"):
        _fail(f"kind must be madlad or narrativa, not {kind!r}")
    _check_source_checkpoint(source)
    _check_writable(dest.parent, "--to folder")
    try:
        out = convert_model(kind, source, dest, quantization=quantization, force=force)
    except ConversionError as e:
        _fail(str(e))
    console.print(escape(f"converted {source} -> {out}; point [engines.{kind}] model_dir at it"))


def _check_source_checkpoint(source: str) -> None:
    """`convert-model --from`: a local folder must exist and hold a config.json; a hub id must be
    reachable (or cached, offline).  One line now instead of a long trace from inside the converter."""
    path = Path(source).expanduser()
    looks_local = path.is_absolute() or source.startswith((".", "~")) or source.count("/") > 1 or path.exists()
    if looks_local:
        if not path.is_dir():
            _fail(f"--from {source}: no such folder (give a local checkpoint folder or a Hugging Face id)")
        if not (path / "config.json").is_file():
            _fail(f"--from {source}: the folder has no config.json, so it is not a Hugging Face checkpoint")
        return
    import huggingface_hub
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        cached = huggingface_hub.try_to_load_from_cache(source, "config.json")
        if not isinstance(cached, str):
            _fail(f"--from {source}: not in the local Hugging Face cache, and HF_HUB_OFFLINE=1 forbids "
                  "downloading it (unset it, or pass a local folder)")
        return
    try:
        huggingface_hub.HfApi().model_info(source, timeout=15)
    except huggingface_hub.errors.RepositoryNotFoundError:
        _fail(f"--from {source}: no such model on the Hugging Face hub (or it is private: log in with `hf auth login`)")
    except huggingface_hub.errors.GatedRepoError:
        _fail(f"--from {source}: a gated model; accept its terms on the hub and log in with `hf auth login`")
    except Exception as e:  # noqa: BLE001  connection refused, DNS, timeout, proxy: all mean "unreachable"
        reason = " ".join(str(e).split())[:200]
        _fail(f"--from {source}: the Hugging Face hub cannot be reached ({type(e).__name__}: {reason})")


memory_app = typer.Typer(
    help="Share translation memories and the human-review overlay (people's corrections, flag verdicts, "
    "gold rows): export and import Parquet files.",
    no_args_is_help=True,
)
app.add_typer(memory_app, name="memory")


@memory_app.command("export")
def memory_export(
    out: Path = typer.Argument(..., help="Parquet file to write."),
    config: Path = ConfigOpt,
    engine_id: str = typer.Option(None, "--engine-id", help="Only this engine id (default: all)."),
    human: bool = typer.Option(
        True, "--human/--no-human",
        help="Also write the run's human-review overlay (memory/human.sqlite: corrections, flag verdicts, "
        "gold rows of every engine, with who and when) to OUT's name with .human.parquet "
        "(mem.parquet -> mem.human.parquet), when the run has one.",
    ),
) -> None:
    """Export the run's translation memory (or one engine's part of it) as Parquet, and beside it the human
    review overlay (`--no-human` leaves it out)."""
    from pipeline.human_review import human_export_path
    from pipeline.tasks.translate import human_overlay_path, memory_view
    from translation.overlay import HumanOverlay

    settings = _load(config)
    if not (settings.root / "memory").is_dir():
        _fail(f"no translation memory under {settings.root / 'memory'}: nothing to export (run `ptvl translate` first)")
    _check_writable(out.parent, "output folder")
    with memory_view(settings.root) as mem:  # the shared memory and every part file, merged
        n = mem.export_parquet(out, engine_id=engine_id)
    console.print(f"exported {n:,} translations to {out}")
    if human and human_overlay_path(settings.root).exists():
        dest = human_export_path(out)
        with HumanOverlay(human_overlay_path(settings.root), read_only=True) as ov:
            k = ov.export_parquet(dest)
        console.print(f"exported {k:,} human-review rows (corrections, flag verdicts, gold) to {dest}")


@memory_app.command("import")
def memory_import(
    path: Path = typer.Argument(..., help="Parquet export (or a text_hash, text_en, text_pt file), or a "
                                "human-review overlay export (*.human.parquet)."),
    engine_id: str = typer.Option(None, "--engine-id", help="Engine id the translations belong to (required for "
                                  "a translation memory file; an overlay export names its engines itself)."),
    config: Path = ConfigOpt,
    human: bool = typer.Option(
        True, "--human/--no-human",
        help="Also import the human-review overlay export beside PATH (PATH's name with .human.parquet), "
        "when there is one, into the run's memory/human.sqlite.",
    ),
) -> None:
    """Import translations into the run's memory; texts already stored are kept as they are.  The human
    review overlay beside the file (or given as PATH) is appended to the run's overlay: rows already there
    are skipped, and for each row the latest correction or verdict wins, by time."""
    from pipeline.human_review import human_export_path, is_overlay_export
    from pipeline.tasks.translate import human_overlay_path, memory_path, open_memory
    from translation.overlay import HumanOverlay

    settings = _load(config)
    if not path.is_file():
        _fail(f"{path}: no such file" if not path.exists() else f"{path} is a folder, not a Parquet file")
    _check_writable(Path(memory_path(settings.root)).parent, "memory folder")
    overlays = [path] if is_overlay_export(path) else []
    if not overlays:
        if not engine_id:
            _fail(f"{path} is a translation memory: --engine-id is required (the engine id its translations "
                  "belong to)")
        with open_memory(memory_path(settings.root)) as mem:  # the shared memory, read by every part
            stats = mem.import_parquet(path, engine_id=engine_id)
        console.print(f"{stats.rows:,} rows: {stats.inserted:,} new, {stats.already_present:,} already present")
        beside = human_export_path(path)
        if human and beside.is_file():
            overlays.append(beside)
    for f in overlays:
        try:
            with HumanOverlay(human_overlay_path(settings.root)) as ov:
                st = ov.import_parquet(f)
        except ValueError as e:
            _fail(f"human-review overlay not imported: {e}")
        console.print(f"{f}: {st.rows:,} human-review rows: {st.inserted:,} new, {st.already_present:,} already "
                      f"present (memory/human.sqlite)")


@app.command()
def compare(config: Path = ConfigOpt, workers: int = typer.Option(1, "--workers", "-w", min=1)) -> None:
    """Translator comparison: examples side by side, Table 5.2 token statistics, flag rates, gold-set
    chrF/BLEU, cost and speed -> reports/compare/comparison.html (+ .md)."""
    from pipeline.tasks.curate import CompareTranslators

    settings = _load(config)
    _check_engines(settings)
    _check_writable(settings.root)
    _build([CompareTranslators(config=str(config.resolve()))], workers)
    console.print(f"report: {settings.root / 'reports' / 'compare' / 'comparison.html'}")


@app.command()
def review(
    config: Path = ConfigOpt,
    engine: str = typer.Option(None, "--engine", "-e",
                               help="Engine whose translations you correct (default: [training] engine)."),
    port: int = typer.Option(8765, "--port", "-p", min=1, max=65535, help="Port to serve on."),
    host: str = typer.Option("127.0.0.1", "--host",
                             help="Address to bind. The default serves this machine only; anything else (0.0.0.0) "
                             "lets anyone who can reach the port write corrections: there is no login."),
    reviewer: str = typer.Option(None, "--reviewer",
                                 help="Name stored with every correction (default: your login name)."),
    queue_size: int = typer.Option(500, "--queue-size", min=1,
                                   help="Rows in the worst, disagree and sample queues (flag queues hold all)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random-sample queue (the same seed, the same rows)."),
) -> None:
    """Correct translations in the browser: a local web app over the run root's translated tables.

    Open http://127.0.0.1:8765/ (the port you chose). Queues, each with reviewed / total:
    flag:<name> (every row raising that quality flag), worst (lowest engine scores), disagree (lowest chrF
    between the engines' outputs for the same source string; needs two engines), sample (random rows, a
    fixed seed). A row shows the EN source, every engine's PT side by side with the flags and their
    evidence, the image (CC3M, COCO) or the dialog around it (VisDial).

    Keys: j/k next/previous row, a accept the engine's output, 1-9 accept engine N's output, e edit
    (Ctrl+Enter saves), f/c mark the first open flag a false alarm/confirmed, g add to the gold set,
    ? help.

    Corrections never overwrite the machine output: they are appended to memory/human.sqlite as a human
    overlay (who, when, the text they replace; two tabs on one row: the last write wins, both are kept and
    the override is logged). Rebuild the shards afterwards with `ptvl run --config ... --until shards`:
    they use the human text, and each dataset card counts the human-corrected rows. Share the overlay
    with `ptvl memory export` / `ptvl memory import`."""
    import getpass

    import uvicorn

    from pipeline.review.app import create_app
    from pipeline.review.tables import NoTranslations, RunTables
    from pipeline.tasks.translate import human_overlay_path
    from translation.overlay import HumanOverlay

    settings = _load(config)
    engine = engine or settings.training.engine
    if engine not in settings.engines:
        _fail(f"no [engines.{engine}] table in {config}; configured: {', '.join(settings.engines)}")
    engines = list(dict.fromkeys([engine, *settings.translate.engines]))
    try:
        tables = RunTables(settings.root, engines, settings.datasets.splits(), engine)
    except NoTranslations as e:
        _fail(str(e))
    _check_writable(settings.root / "memory", "memory folder")
    who = reviewer or os.environ.get("USER") or getpass.getuser()
    overlay = HumanOverlay(human_overlay_path(settings.root))
    loopback = host in ("127.0.0.1", "localhost", "::1")
    web = create_app(settings.root, tables, overlay, who=who, queue_size=queue_size, seed=seed,
                     allowed_hosts=["127.0.0.1", "localhost", "::1", "[::1]"] if loopback else None)
    shown = f"[{host}]" if ":" in host else host
    console.print(f"[bold]ptvl review[/] {escape(str(settings.root))}: engine {engine} "
                  f"({tables.chosen.rows.height:,} distinct strings; also {', '.join(n for n in tables.engines if n != engine) or 'no other engine'}), "
                  f"reviewer {escape(who)}\n  open http://{shown}:{port}/  (Ctrl+C stops; every action is saved as it is made)")
    if not loopback:
        console.print(f"[yellow]warning:[/] bound to {host}: anyone who can reach this port can write corrections")
    try:
        uvicorn.run(web, host=host, port=port, log_level="warning", access_log=False)
    finally:
        overlay.close()


@app.command("train")
def train_cmd(
    config: Path = ConfigOpt,
    llm: str = typer.Option(None, "--llm", help="Any Hugging Face causal LM id or folder (overrides [model] llm)."),
    bridge: str = typer.Option(None, "--bridge", help="cls, l4l, l2l, l2lx2, comp, grouped, regions, wavg, crossattn, mlp."),
    k: int = typer.Option(None, "--k", help="Visual tokens (bridges that take k)."),
    layer: int = typer.Option(None, "--layer", help="ViT layer: -1 = last (L), -2 = L-1, ..."),
    recipe: str = typer.Option(None, "--recipe", help="thesis-eq or fromage (README: training recipes); with a "
                               "run.toml, the recipe's preset replaces the recorded loss weights and lengths."),
    steps: int = typer.Option(None, "--steps", help="Optimizer steps."),
    run_name: str = typer.Option(None, "--run-name", help="Folder under train/ (default: [training] run_name)."),
) -> None:
    """Train V-Glória (the `train` stage and what it needs), with command-line overrides of the profile.

    The run folder gets run.toml, a model card, TensorBoard logs and checkpoints; rerunning resumes from the
    newest checkpoint.  `--config <run>/run.toml` reruns a finished run from that file alone (its shards,
    features, seed and resolved settings), into the folder `--run-name` names beside it (default: the same
    folder, i.e. resume).  Several GPUs: `torchrun --nproc_per_node N -m pipeline.cli train ...`."""
    import tomllib

    overrides = {"llm": llm, "bridge": bridge, "k": k, "layer": layer, "recipe": recipe}
    overrides = {key: v for key, v in overrides.items() if v is not None}
    try:
        data = tomllib.loads(config.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        _fail(f"{config}: {e}")
    if "inputs" in data:  # a run.toml
        _train_from_run_toml(config, overrides, steps, run_name)
        return
    from pipeline.tasks.model import Train

    _load(config)
    profile = train_profile(config, data, overrides, steps, run_name)
    settings = _load(profile)
    _check_model(settings)
    _check_writable(settings.root)
    _build([Train(config=str(profile))])
    console.print(f"run: {settings.root / 'train' / settings.training.run_name}")


def train_profile(config: Path, data: dict, overrides: dict, steps: int | None, run_name: str | None) -> Path:
    """The profile `ptvl train` runs: the user's file itself when nothing is overridden, else the profile with
    the overrides written into the run folder it names (train/<run>/profile.toml), never beside the user's
    file: two runs with different overrides must not overwrite each other, and a read-only config folder
    must work."""
    import tomllib

    from pydantic import ValidationError

    from pipeline.io import write_text_atomic
    from pipeline.settings import Settings
    from training.config import to_toml

    if not overrides and steps is None and run_name is None:
        return config.resolve()
    model = data.setdefault("model", {})
    model.update(overrides)
    if steps is not None:
        data.setdefault("train", {})["steps"] = steps
    if run_name is not None or {"llm", "bridge", "k", "layer"} & set(overrides):
        name = run_name or "-".join(str(x) for x in (Path(model.get("llm", "llm")).name, model.get("bridge", "cls"),
                                                      f"k{model.get('k', 1)}", f"l{model.get('layer', -1)}"))
        data.setdefault("training", {})["run_name"] = name
    # The profile's own root, made absolute: the copy lives in the run folder, not where the user ran from.
    data.setdefault("run", {})["root"] = str(_load(config).root)
    text = to_toml(data, header=f"{config.resolve()} with the overrides of `ptvl train`")
    try:  # validated in memory: where it goes depends on the settings (root, run name)
        settings = Settings.model_validate({**tomllib.loads(text), "config_path": config.resolve()})
    except ValidationError as e:
        _fail(f"{config} with the command-line overrides: " + "; ".join(
            f"[{'.'.join(map(str, x['loc']))}] {x['msg']}" for x in e.errors()))
    _check_model(settings)  # before anything is written: a typo in --bridge leaves no trace
    _check_writable(settings.root)
    dest = settings.root / "train" / settings.training.run_name / "profile.toml"
    write_text_atomic(dest, text)
    return dest


def _train_from_run_toml(path: Path, overrides: dict, steps: int | None, run_name: str | None) -> None:
    """Rerun (or resume) a run from its run.toml alone: no profile, no DAG; the shards must be as they were."""
    from pydantic import ValidationError

    from pipeline.io import write_json_atomic
    from training.config import read_run_toml
    from training.train import train

    try:
        cfg = read_run_toml(path)
    except ValidationError as e:
        _fail(f"{path}: not a valid run.toml: {e}")
    inp = cfg.inputs
    for i, shard in enumerate(inp.shards):
        p = Path(shard)
        if not p.is_file():
            _fail(f"{path}: shard file {shard} is missing")
        if inp.shard_bytes and p.stat().st_size != inp.shard_bytes[i]:
            _fail(f"{path}: shard file {shard} has changed since the run ({p.stat().st_size:,} bytes, "
                  f"recorded {inp.shard_bytes[i]:,}): a rerun would not reproduce it")
    if inp.features is not None and not Path(inp.features).is_dir():
        _fail(f"{path}: feature cache {inp.features} is missing")
    model_cfg = cfg.model
    if overrides:
        from training.config import RECIPES, ModelConfig

        resolved = cfg.model.model_dump(mode="json")
        if "recipe" in overrides:  # run.toml holds the old recipe's values: take the new recipe's preset
            resolved = {key: v for key, v in resolved.items() if key not in RECIPES.get(overrides["recipe"], {})}
        try:
            model_cfg = ModelConfig.model_validate({**resolved, **overrides})
        except ValueError as e:
            _fail(f"{path} with the command-line overrides: {e}")
    train_cfg = cfg.train if steps is None else cfg.train.model_copy(update={"steps": steps})
    run_dir = Path(inp.run_dir) if run_name is None else Path(inp.run_dir).parent / run_name
    try:
        res = train(model_cfg, train_cfg, [Path(s) for s in inp.shards], run_dir,
                    features_dir=Path(inp.features) if inp.features else None, progress=True, device=inp.device,
                    root=Path(inp.root) if inp.root else None, profile=path.resolve())
    except ValueError as e:
        _fail(str(e))
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 writes
        return
    losses = res.losses
    first, last = (losses[min(losses)], losses[max(losses)]) if losses else (None, None)
    write_json_atomic(run_dir / "_DONE.json", {"steps": res.step, "trainable_params": res.trainable_params,
                                               "loss_first": first, "loss_last": last,
                                               "checkpoint": str(res.checkpoint), "from": str(path.resolve())})
    console.print(f"run: {run_dir}")


@app.command()
def retrain(
    llm: str = typer.Option(..., "--llm", help="Hugging Face causal LM id or folder to train the bridge on."),
    config: Path = ConfigOpt,
    bridge: str = typer.Option(None, "--bridge", help="Bridge (default: the profile's [model] bridge)."),
    k: int = typer.Option(None, "--k", help="Visual tokens (bridges that take k)."),
    layer: int = typer.Option(None, "--layer", help="ViT layer: -1 = last (L), -2 = L-1, ..."),
    steps: int = typer.Option(None, "--steps", help="Optimizer steps (default: the profile's [train] steps)."),
    run_name: str = typer.Option(None, "--run-name", help="Folder under train/ (default: <llm>-<bridge>-k<k>-l<layer>)."),
    workers: int = typer.Option(1, "--workers", "-w", min=1),
    out: Path = typer.Option(None, "--out", help="Also write the tables (Markdown) here."),
) -> None:
    """Retrain with a new LLM in one command: train, evaluate every benchmark of the profile's [eval]
    benchmarks, and print the thesis-layout tables with this run beside every earlier run under the
    same root (train/*), rows labelled by LLM, bridge and layer.

    Finished steps are kept: rerunning resumes training and skips finished evaluations."""
    import tomllib

    from eval.benchmarks import collect_runs
    from pipeline.tasks.model import Evaluate, Train

    _load(config)
    data = tomllib.loads(config.read_text(encoding="utf-8"))
    overrides = {key: v for key, v in {"llm": llm, "bridge": bridge, "k": k, "layer": layer}.items() if v is not None}
    resolved = train_profile(config, data, overrides, steps, run_name)
    settings = _load(resolved)
    _check_model(settings)
    _check_writable(settings.root)
    run_dir = Train(config=str(resolved)).run_dir()
    _build([Evaluate(config=str(resolved), benchmark=b) for b in settings.eval.benchmarks], workers)
    from training.modelcard import refresh_model_card

    refresh_model_card(run_dir)  # with every benchmark, also when evaluations ran side by side
    runs = [d for d in sorted((settings.root / "train").iterdir()) if any(d.glob("eval/*/metrics.json"))]
    runs = [d for d in runs if d != run_dir] + [run_dir]  # this run last, under the earlier ones
    console.print(f"run: {run_dir} ({len(runs) - 1} earlier run(s) under {settings.root / 'train'})")
    _print_tables(collect_runs(runs), out, labels=("bridge", "layer"))


@app.command("eval")
def eval_cmd(
    run: Path = typer.Option(..., "--run", help="A run folder (train/<run>) with run.toml and checkpoints."),
    benchmark: str = typer.Option(..., "--benchmark", help="cc3m-val, coco, visdial, vqav2, or all."),
    config: Path = ConfigOpt,
    engine: str = typer.Option(None, "--engine", help="Whose translated shards (default: [training] engine)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
) -> None:
    """Evaluate a trained run on one benchmark (or all): metrics.json, qualitative HTML pages
    (run/eval/<benchmark>/), and the run's model card rewritten with the results."""
    from eval.benchmarks import BENCHMARKS, evaluate, shard_folder
    from eval.tables import format_metric

    settings = _load(config)
    if benchmark != "all" and benchmark not in BENCHMARKS:
        _fail(f"unknown benchmark {benchmark!r}; choose from {', '.join(BENCHMARKS)} or all")
    if not (run / "run.toml").is_file():
        _fail(f"--run {run}: no run.toml there, so it is not a trained run folder")
    _check_writable(run / "eval", "eval folder")
    engine = engine or settings.training.engine
    chosen = list(settings.eval.benchmarks) if benchmark == "all" else [benchmark]
    try:
        shards = {b: shard_folder(settings.root / "shards", engine, b) for b in chosen}
    except FileNotFoundError as e:
        _fail(str(e))
    for b in chosen:
        out = run / "eval" / b
        with _progress_bar(f"eval {b}") as progress:
            result = evaluate(run, b, shards[b], out, engine=engine, settings=settings.eval.settings,
                              device=device, progress=progress)
        for key, value in result["metrics"].items():
            console.print(f"{key:>16} {format_metric(key, value, 4)}")
        console.print(f"written: {out / 'metrics.json'}")


@app.command()
def table(
    runs: list[Path] = typer.Argument(..., help="Run folders whose eval/<benchmark>/metrics.json to compare."),
    out: Path = typer.Option(None, "--out", help="Also write the Markdown here."),
) -> None:
    """Thesis-layout tables (5.3 retrieval, 5.4 captioning, 5.5 VisDial, VQAv2, and the ablation layout) over
    several runs: retrain with a new LLM and get the comparison with the old ones in one command. Every table
    names its tie rule and VQA mode. Runs of different translation engines are also re-scored on the
    common subset of evaluation items they all have, in a second, labelled set of tables."""
    from eval.benchmarks import collect_runs

    try:
        rows = collect_runs(runs)
    except FileNotFoundError as e:
        _fail(str(e))
    _print_tables(rows, out)


def _print_tables(rows: list[dict], out: Path | None, labels: tuple[str, ...] = ()) -> None:
    """Tables 5.3-5.5 and the COCO ablation layout, on stdout (and in `out`).  Rows are labelled by
    LLM and engine, plus `labels` and whichever of bridge, layer and k differ between the runs."""
    from eval.common_subset import CommonSubsetError, common_subset_runs
    from eval.tables import ablation_table, table_5_3, table_5_4, table_5_5, table_vqa

    parts = []
    renders = (table_5_3, table_5_4, table_5_5, table_vqa)
    for render in renders:
        try:
            parts.append(render(rows, labels=labels))
        except (KeyError, ValueError) as e:
            parts.append(f"<!-- {render.__name__}: {e} -->")
    if any("coco" in r["metrics"] for r in rows):
        parts.append(ablation_table(rows, "coco", "captioning"))
    try:
        common = common_subset_runs(rows)
    except CommonSubsetError as e:
        common = []
        parts.append(f"<!-- common subset: {e} -->")
    if common:
        parts.append("## Common subset of all engines")
        present = {b for r in common for b in r["metrics"]}
        for render, needs in ((table_5_3, {"cc3m-val", "coco"}), (table_5_5, {"visdial"}), (table_vqa, {"vqav2"})):
            if present & needs:
                parts.append(render(common))
    text = "\n\n".join(parts) + "\n"
    print(text)
    if out:
        from pipeline.io import write_text_atomic

        write_text_atomic(out, text)


def _progress_bar(label: str):
    from ptvl_io.progress import stage_progress

    return stage_progress(label, console=console)


def _escape_help(typer_app: typer.Typer, seen: set[int] | None = None) -> None:
    """Help texts name config tables ("[engines.<name>]", "[model] llm"); typer renders help as Rich
    markup, which would eat every [...] as a style tag.  Escape every command's and option's help once,
    here, instead of in each string (a new option cannot forget it)."""
    import inspect

    seen = set() if seen is None else seen  # an option object shared by commands (ConfigOpt): once
    for info in typer_app.registered_commands:
        cb = info.callback
        if info.help:
            info.help = escape(info.help)
        elif cb is not None and cb.__doc__:
            cb.__doc__ = escape(inspect.cleandoc(cb.__doc__))
        for param in inspect.signature(cb).parameters.values() if cb is not None else ():
            default = param.default
            if isinstance(default, typer.models.ParameterInfo) and default.help and id(default) not in seen:
                seen.add(id(default))
                default.help = escape(default.help)
    for group in typer_app.registered_groups:
        _escape_help(group.typer_instance, seen)


_escape_help(app)


def main() -> None:
    """Console-script entry point (`ptvl`).  img2dataset starts workers with spawn, which re-imports the
    main module: this function is only called under the console script's own __main__ guard."""
    try:
        app()
    except ConfigError as e:
        console.print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
