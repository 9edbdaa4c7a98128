"""`ptvl`: the command line.  `ptvl run` builds the Luigi DAG; the other commands run one stage."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.logging import RichHandler

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


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=False)],
        force=True,
    )
    # Luigi's own INFO lines are noise next to our progress bars.
    logging.getLogger("luigi").setLevel(logging.WARNING)
    logging.getLogger("luigi-interface").setLevel(logging.WARNING)
    # The deepl client logs every request at INFO (~136k lines for CC3M): keep it to real problems.
    logging.getLogger("deepl").setLevel(logging.DEBUG if verbose else logging.WARNING)


def _fail(msg: str) -> None:
    from rich.markup import escape

    console.print(f"[bold red]error:[/] {escape(msg)}")
    raise typer.Exit(2)


def _load(config: Path):
    try:
        return load_settings(config)
    except ConfigError as e:
        _fail(str(e))


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
        help="Use the central `luigid` scheduler on this host (several machines sharing one run root). "
        "Default: a local scheduler in this process.",
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
    import luigi

    from pipeline.tasks import STAGES

    settings = _load(config)
    names = list(STAGES)
    stage = until or names[-1]
    if stage not in STAGES:
        _fail(f"unknown stage {stage!r}; stages are: {', '.join(names)}")
    _check_engines(settings)
    tasks = STAGES[stage][1](str(config.resolve()), settings)
    console.print(f"[bold]ptvl run[/] {config} -> stage [cyan]{stage}[/] ({len(tasks)} target tasks), root {settings.root}")
    # Keep our logging (rich) instead of Luigi's own handler, which would print the summary twice.
    luigi.configuration.get_config().set("core", "no_configure_logging", "true")
    kwargs = {"workers": workers, "detailed_summary": True}
    if scheduler_host:
        kwargs.update(scheduler_host=scheduler_host, scheduler_port=scheduler_port)
    else:
        kwargs["local_scheduler"] = True
    if names.index(stage) >= names.index("translate"):
        _preflight_deepl(settings, str(config.resolve()), settings.translate.engines, allow_partial, kwargs)
    result = luigi.build(tasks, **kwargs)
    console.print(result.summary_text)
    _billing_summary(settings)
    if not result.scheduling_succeeded or result.status.name not in ("SUCCESS", "SUCCESS_WITH_RETRY"):
        _fail(f"run did not finish ({result.status.name}); fix the error above and rerun: finished tasks are kept")
    final = settings.root / "reports" / "README.md"
    if final.exists():
        console.print(f"report: {final}")


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
    engine: str = typer.Option(..., "--engine", "-e", help="Name of an engines.<name> table in the config."),
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
    cfg = str(config.resolve())
    if not retry_failed:
        _build([AvailabilityReport(config=cfg)])
        return
    from pipeline.availability import render_report
    from pipeline.images import manifest_path
    from pipeline.images import retry_failed as retry
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
    all_splits = {
        f"{d}/{sp}": settings.root / "images" / d / sp / "availability.parquet"
        for d, sp in settings.datasets.splits()
    }
    report = render_report({k: v for k, v in all_splits.items() if v.exists()})
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
    try:
        out = convert_model(kind, source, dest, quantization=quantization, force=force)
    except ConversionError as e:
        _fail(str(e))
    console.print(f"converted {source} -> {out}; point [engines.{kind}] model_dir at it")


memory_app = typer.Typer(help="Share translation memories: export and import Parquet files.", no_args_is_help=True)
app.add_typer(memory_app, name="memory")


@memory_app.command("export")
def memory_export(
    out: Path = typer.Argument(..., help="Parquet file to write."),
    config: Path = ConfigOpt,
    engine_id: str = typer.Option(None, "--engine-id", help="Only this engine id (default: all)."),
) -> None:
    """Export the run's translation memory (or one engine's part of it) as Parquet."""
    from pipeline.tasks.translate import memory_view

    settings = _load(config)
    with memory_view(settings.root) as mem:  # the shared memory and every part file, merged
        n = mem.export_parquet(out, engine_id=engine_id)
    console.print(f"exported {n:,} translations to {out}")


@memory_app.command("import")
def memory_import(
    path: Path = typer.Argument(..., help="Parquet export (or a text_hash, text_en, text_pt file)."),
    engine_id: str = typer.Option(..., "--engine-id", help="Engine id the translations belong to."),
    config: Path = ConfigOpt,
) -> None:
    """Import translations into the run's memory; texts already stored are kept as they are."""
    from pipeline.tasks.translate import memory_path, open_memory

    settings = _load(config)
    with open_memory(memory_path(settings.root)) as mem:  # the shared memory, read by every part
        stats = mem.import_parquet(path, engine_id=engine_id)
    console.print(f"{stats.rows:,} rows: {stats.inserted:,} new, {stats.already_present:,} already present")


@app.command()
def compare(config: Path = ConfigOpt, workers: int = typer.Option(1, "--workers", "-w", min=1)) -> None:
    """Translator comparison: examples side by side, Table 5.2 token statistics, flag rates, gold-set
    chrF/BLEU, cost and speed -> reports/compare/comparison.html (+ .md)."""
    from pipeline.tasks.curate import CompareTranslators

    settings = _load(config)
    _check_engines(settings)
    _build([CompareTranslators(config=str(config.resolve()))], workers)
    console.print(f"report: {settings.root / 'reports' / 'compare' / 'comparison.html'}")


@app.command("train")
def train_cmd(
    config: Path = ConfigOpt,
    llm: str = typer.Option(None, "--llm", help="Any Hugging Face causal LM id or folder (overrides [model] llm)."),
    bridge: str = typer.Option(None, "--bridge", help="cls, l4l, l2l, l2lx2, comp, grouped, regions, wavg, crossattn, mlp."),
    k: int = typer.Option(None, "--k", help="Visual tokens (bridges that take k)."),
    layer: int = typer.Option(None, "--layer", help="ViT layer: -1 = last (L), -2 = L-1, ..."),
    steps: int = typer.Option(None, "--steps", help="Optimizer steps."),
    run_name: str = typer.Option(None, "--run-name", help="Folder under train/ (default: [training] run_name)."),
) -> None:
    """Train V-Glória (the `train` stage and what it needs), with command-line overrides of the profile.

    The run folder gets run.toml (reproduces it), a model card, TensorBoard logs and checkpoints; rerunning
    resumes from the newest checkpoint.  Several GPUs: `torchrun --nproc_per_node N -m pipeline.cli train ...`."""
    import tomllib

    from pipeline.tasks.model import Train

    _load(config)
    data = tomllib.loads(config.read_text())
    model = data.setdefault("model", {})
    for key, value in (("llm", llm), ("bridge", bridge), ("k", k), ("layer", layer)):
        if value is not None:
            model[key] = value
    if steps is not None:
        data.setdefault("train", {})["steps"] = steps
    if run_name is not None or any(v is not None for v in (llm, bridge, k, layer)):
        name = run_name or "-".join(str(x) for x in (Path(model.get("llm", "llm")).name, model.get("bridge", "cls"),
                                                      f"k{model.get('k', 1)}", f"l{model.get('layer', -1)}"))
        data.setdefault("training", {})["run_name"] = name
    resolved = config.resolve().with_name(f".{config.stem}.train.toml")
    from training.config import to_toml

    resolved.write_text(to_toml(data, header=f"{config} with the overrides of `ptvl train`"))
    settings = _load(resolved)
    _build([Train(config=str(resolved))])
    console.print(f"run: {settings.root / 'train' / settings.training.run_name}")


@app.command("eval")
def eval_cmd(
    run: Path = typer.Option(..., "--run", help="A run folder (train/<run>) with run.toml and checkpoints."),
    benchmark: str = typer.Option(..., "--benchmark", help="cc3m-val, coco, visdial or vqav2."),
    config: Path = ConfigOpt,
    engine: str = typer.Option(None, "--engine", help="Whose translated shards (default: [training] engine)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
) -> None:
    """Evaluate a trained run on one benchmark: metrics.json, qualitative HTML pages (run/eval/<benchmark>/)."""
    from eval.benchmarks import BENCHMARKS, evaluate, shard_folder

    settings = _load(config)
    if benchmark not in BENCHMARKS:
        _fail(f"unknown benchmark {benchmark!r}; choose from {', '.join(BENCHMARKS)}")
    engine = engine or settings.training.engine
    try:
        shards = shard_folder(settings.root / "shards", engine, benchmark)
    except FileNotFoundError as e:
        _fail(str(e))
    out = run / "eval" / benchmark
    result = evaluate(run, benchmark, shards, out, engine=engine, settings=settings.eval.settings, device=device)
    for key, value in result["metrics"].items():
        console.print(f"{key:>12} {value:.4f}" if isinstance(value, float) else f"{key:>12} {value}")
    console.print(f"written: {out / 'metrics.json'}")


@app.command()
def table(
    runs: list[Path] = typer.Argument(..., help="Run folders whose eval/<benchmark>/metrics.json to compare."),
    out: Path = typer.Option(None, "--out", help="Also write the Markdown here."),
) -> None:
    """Thesis-layout tables (5.3 retrieval, 5.4 captioning, 5.5 VisDial, and the ablation layout) over
    several runs: retrain with a new LLM and get the comparison with the old ones in one command."""
    from eval.benchmarks import collect_runs
    from eval.tables import ablation_table, table_5_3, table_5_4, table_5_5

    try:
        rows = collect_runs(runs)
    except FileNotFoundError as e:
        _fail(str(e))
    parts = []
    for render in (table_5_3, table_5_4, table_5_5):
        try:
            parts.append(render(rows))
        except (KeyError, ValueError) as e:
            parts.append(f"<!-- {render.__name__}: {e} -->")
    if any("coco" in r["metrics"] for r in rows):
        parts.append(ablation_table(rows, "coco", "captioning"))
    text = "\n\n".join(parts) + "\n"
    print(text)
    if out:
        from pipeline.io import write_text_atomic

        write_text_atomic(out, text)


def main() -> None:
    """Console-script entry point (`ptvl`).  img2dataset starts workers with spawn, which re-imports the
    main module: this function is only called under the console script's own __main__ guard."""
    try:
        app()
    except ConfigError as e:
        from rich.markup import escape

        console.print(f"[bold red]error:[/] {escape(str(e))}")
        sys.exit(2)


if __name__ == "__main__":
    main()
