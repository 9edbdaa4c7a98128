"""`ptvl`: the command line.  Each command parses its arguments, calls one library function and prints:
the work lives in `pipeline.*` (the DAG, pre-flight, training runs, review), `translation`, `training` and
`eval`.  Modules that load torch are imported inside the commands that need them, so `ptvl --help`, the
data stages and the review server never load it."""
from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path

import typer
from rich.markup import escape

from pipeline import preflight
from pipeline.billing import EXIT_BILLING_DIFFERENCE, engine_ids, report_billing
from pipeline.checks import check_engines, check_source_checkpoint, check_writable
from pipeline.console import console, escape_help, setup_logging
from pipeline.llm_preflight import check_llm_report, report_table
from pipeline.memory_files import export_memory, import_memory
from pipeline.retry_downloads import retry_downloads
from pipeline.review.launch import ReviewOptions, check_options, launch
from pipeline.run_stage import Scheduler, outcome_error, outcome_lines, plan_run, preflight_run
from pipeline.sample.write import write_sample
from pipeline.settings import ConfigError, load_settings
from pipeline.source_import import import_sources
from pipeline.status import run_status
from pipeline.tasks import STAGES
from pipeline.tasks.curate import CompareTranslators
from pipeline.tasks.model import Train
from pipeline.tasks.scheduling import build_local, run_dag
from pipeline.train_runs import read_profile, train_profile
from pipeline.translate_plan import context_entry
from pipeline.translate_run import translate_engine, translate_targets
from ptvl_io.formatting import format_metric
from ptvl_io.progress import stage_progress
from translation.convert import KINDS, ConversionError, convert_model
from translation.errors import ConfigurationError

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

DEFAULT_CONFIG = Path("configs/sample.toml")
app = typer.Typer(help=(
    "ptvl: European-Portuguese (PT-PT) vision-and-language datasets, translator comparison and V-Glória "
    "training.\n\nStart with `ptvl run` (the whole DAG on the embedded offline sample), then point "
    "`--config` at configs/full.toml for the real datasets."), no_args_is_help=True, pretty_exceptions_show_locals=False)
memory_app = typer.Typer(help="Share translation memories and the human-review overlay (people's corrections, "
                         "flag verdicts, gold rows): export and import Parquet files.", no_args_is_help=True)
app.add_typer(memory_app, name="memory")
sources_app = typer.Typer(help="The official source files: use the ones you already have.", no_args_is_help=True)
app.add_typer(sources_app, name="sources")

ConfigOpt = typer.Option(DEFAULT_CONFIG, "--config", "-c", help="TOML run profile (configs/*.toml).")


def _fail(msg: str) -> None:
    console.print(f"[bold red]error:[/] {escape(msg)}", soft_wrap=True)  # one line, however long
    raise typer.Exit(2)


def command(*args, target: typer.Typer = app, **kwargs) -> Callable:
    """`target.command`, with the library's one-line errors (settings, pre-flight, engines) printed as
    `error: ...` with exit code 2 instead of a traceback."""

    def register(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*a, **kw):
            try:
                return fn(*a, **kw)
            except (ConfigError, ConfigurationError) as e:  # PreflightError is a ConfigError
                _fail(str(e))
        target.command(*args, **kwargs)(wrapper)
        return fn
    return register


def _say(*texts: str) -> None:
    for text in texts:
        console.print(escape(text), soft_wrap=True)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    setup_logging(verbose)


def _build(tasks: list, workers: int = 1) -> None:
    result = build_local(tasks, workers)
    console.print(result.summary_text)
    if not result.ok:
        _fail(f"did not finish ({result.status}); rerun to resume: finished work is kept")


@command()
def run(
    config: Path = ConfigOpt,
    until: str = typer.Option(None, "--until", help="Stop after this stage (default: the last). See `ptvl stages`."),
    workers: int = typer.Option(1, "--workers", "-w", min=1, help="Luigi workers running tasks in parallel."),
    scheduler_host: str = typer.Option(
        None, "--scheduler-host",
        help="Share the DAG through the central `luigid` on this host: start `ptvl run` with the same "
        "profile on as many machines as wanted (sharing the run root); each runs its share of the tasks, "
        "none runs a task twice, and each exits 0 once the whole DAG is complete. Default: a local "
        "scheduler in this process."),
    scheduler_port: int = typer.Option(8082, "--scheduler-port", help="Port of `luigid`."),
    allow_partial: bool = typer.Option(
        False, "--allow-partial",
        help="Start DeepL even if the estimate exceeds the key's remaining quota: it stops cleanly at the "
        "limit, and a rerun resumes with what is missing."),
) -> None:
    """Build the DAG up to STAGE: sources -> segments -> images -> translate -> curate -> shards ->
    features -> train -> eval -> report.  Finished tasks are skipped, so a rerun resumes."""
    settings, cfg = load_settings(config), str(config.resolve())
    sched = Scheduler(scheduler_host, scheduler_port)
    plan = plan_run(settings, cfg, until, sched)
    console.print(f"[bold]ptvl run[/] {config} -> stage [cyan]{plan.stage}[/] ({len(plan.tasks)} target tasks), "
                  f"root {settings.root}, profile {settings.fingerprint()}, {sched.where()}")
    _say(*preflight_run(settings, cfg, plan, workers=workers, scheduler=sched, allow_partial=allow_partial))
    outcome = run_dag(plan.tasks, workers=workers, scheduler_host=scheduler_host, scheduler_port=scheduler_port)
    if not scheduler_host or not outcome.complete:
        # Under luigid, Luigi's summary calls the tasks other machines ran "not granted run permission";
        # once the DAG is complete the lines below say what happened instead.
        console.print(outcome.summary_text)
    report_billing(settings.root, engine_ids(settings, list(settings.translate.engines)), _say)
    error = outcome_error(outcome, sched)
    if error:
        _fail(error)
    for line in outcome_lines(outcome, plan.stage, sched):
        console.print(line)
    if settings.layout.final_report.exists():
        console.print(f"report: {settings.layout.final_report}")


@command()
def stages() -> None:
    """List the stages `ptvl run --until` accepts, in order."""
    for name, (what, _) in STAGES.items():
        console.print(f"[cyan]{name:10}[/] {what}")


@command()
def sample(
    out: Path = typer.Option(Path("runs/sample/sources"), "--out", help="Folder to write the sample into."),
    seed: int = typer.Option(0, help="Random seed (same seed -> identical files)."),
) -> None:
    """Write the embedded bilingual synthetic sample (CC3M TSV, COCO Karpathy JSON, VisDial JSON,
    reference memory) without running anything else."""
    console.print(f"sample written to {out}: {write_sample(out, seed=seed)}")


@command()
def translate(
    engine: str = typer.Option(..., "--engine", "-e", help="Name of an [engines.<name>] table in the config."),
    config: Path = ConfigOpt,
    dataset: list[str] = typer.Option(None, "--dataset", "-d", help="Only these datasets (repeatable)."),
    split: list[str] = typer.Option(None, "--split", "-s", help="Only these splits (repeatable)."),
    dry_run: bool = typer.Option(
        False, "--dry-run",
        help="Print what would be billed (only texts missing from the memory, the gold set included), check "
        "the DeepL key and quota, and stop."),
    workers: int = typer.Option(1, "--workers", "-w", min=1),
    allow_partial: bool = typer.Option(False, "--allow-partial",
                                       help="Start even if the estimate exceeds the remaining DeepL quota."),
    accept_billing_difference: bool = typer.Option(False, "--accept-billing-difference", help=(
        "Acknowledge the engine's unexplained billing difference (recorded in the billing ledger, so later runs "
        f"stop warning for it); without it, exit code {EXIT_BILLING_DIFFERENCE}.")),
) -> None:
    """Translate the configured datasets with one engine (memory first, engine for misses).

    Every distinct string of the run (all datasets and splits, the gold set, VisDial dialog texts with
    context) is sent at most once, in `translate.parts` hash parts, each leased to one sender at a time.
    Safe to interrupt: a rerun pays only for what is still missing.  Exit codes: 0 done; 2 did not finish
    (rerun to resume); 3 done, but DeepL's counter differs from what the memory explains."""
    settings = load_settings(config)
    targets = translate_targets(settings, engine, config, dataset, split)
    cfg = str(config.resolve())
    context_entry(settings, engine)  # translate.visdial_context: the engine must take a context
    check_writable(settings.root)
    if dry_run:
        result = preflight.dry_run(settings, cfg, engine, targets, allow_partial=allow_partial)
        console.print(result.table(engine))
        _say(*result.lines())
        return
    outcome = translate_engine(settings, cfg, engine, targets, workers=workers, allow_partial=allow_partial,
                               accept_difference=accept_billing_difference, say=_say)
    if outcome.exit_code == 2:
        _fail(f"did not finish ({outcome.build.status}); rerun to resume: finished work is kept")
    raise typer.Exit(outcome.exit_code)


@command()
def status(config: Path = ConfigOpt) -> None:
    """What the run root holds: each stage's targets, the memory per engine id, the part leases held now, and
    the billing per engine.  Exit code 3 when a billing difference is unexplained."""
    result = run_status(load_settings(config), str(config.resolve()))
    _say(*result.lines)
    raise typer.Exit(EXIT_BILLING_DIFFERENCE if result.warnings else 0)


@command()
def download(
    config: Path = ConfigOpt,
    retry_failed: bool = typer.Option(
        False, "--retry-failed",
        help="Download again only the URLs that failed for a transient reason (timeouts, 5xx, 429, "
        "connection resets, resolver overload), then rebuild the availability table."),
    dataset: list[str] = typer.Option(None, "--dataset", "-d", help="Only these datasets (repeatable)."),
    timeout: int = typer.Option(None, "--timeout", help="With --retry-failed: a longer per-image timeout (s)."),
) -> None:
    """Download the images of the configured datasets (img2dataset) and write the availability table.
    Without --retry-failed this is `ptvl run --until images`."""
    settings = load_settings(config)
    if not retry_failed:  # the checks of `ptvl run --until images`, the unreachable sources included
        return _build(plan_run(settings, str(config.resolve()), "images", Scheduler()).tasks)
    check_writable(settings.root)
    console.print(retry_downloads(settings, dataset, timeout, _say))


@command("import", target=sources_app)
def sources_import(dataset: str = typer.Argument(..., help="cc3m, coco, visdial or vqav2."),
                   files: list[Path] = typer.Argument(..., help="Official files of that dataset, from any folder."),
                   config: Path = ConfigOpt, accept_checksum: bool = typer.Option(
                       False, "--accept-checksum", help="Use a file whose sha256 is not the manifest's.")) -> None:
    """Use official files you already have: each is checked against the manifest (size, sha256; a mismatch
    names both hashes and the likely cause), hard-linked (or, across filesystems, copied) into the run root,
    never modified; `ptvl run` then fetches nothing for them and the dataset cards record their hashes."""
    _say(*import_sources(load_settings(config), dataset, files, accept_checksum=accept_checksum))


@command("convert-model")
def convert_model_cmd(
    kind: str = typer.Argument(None, help="madlad (google/madlad400-3b-mt), narrativa (mBART-50 EN->PT) or llm "
                               "(a causal LM for engine = \"llm\"); or give it as --kind."),
    kind_option: str = typer.Option(None, "--kind", help="The same as KIND: madlad, narrativa or llm."),
    source: str = typer.Option(..., "--from", help="Hugging Face id or local folder of the checkpoint."),
    dest: Path = typer.Option(..., "--to", help="Folder to write the CTranslate2 model (+ tokenizer) into."),
    quantization: str = typer.Option(
        None, "--quantization", "-q",
        help="int8 (CPU), int8_bfloat16 or bfloat16 (GPU); never float16 for MADLAD (T5 overflows). "
        "Default: keep the checkpoint's weights."),
    force: bool = typer.Option(False, "--force", help="Replace an existing folder."),
) -> None:
    """Convert a MADLAD-400, Narrativa or causal-LM checkpoint to CTranslate2, with the fixes each needs."""
    if (kind := kind or kind_option) not in KINDS:
        _fail(f"kind must be one of {', '.join(KINDS)} (KIND or --kind), not {kind!r}")
    check_source_checkpoint(source)
    check_writable(dest.parent, "--to folder")
    try:
        out = convert_model(kind, source, dest, quantization=quantization, force=force)
    except ConversionError as e:
        _fail(str(e))
    _say(f"converted {source} -> {out}; point an [engines.<name>] table with engine = \"{kind}\" at it")


@command("export", target=memory_app)
def memory_export(
    out: Path = typer.Argument(..., help="Parquet file to write."),
    config: Path = ConfigOpt,
    engine_id: str = typer.Option(None, "--engine-id", help="Only this engine id (default: all)."),
    human: bool = typer.Option(
        True, "--human/--no-human",
        help="Also write the run's human-review overlay (memory/human.sqlite: corrections, flag verdicts, "
        "gold rows of every engine, with who and when) to OUT's name with .human.parquet "
        "(mem.parquet -> mem.human.parquet), when the run has one."),
) -> None:
    """Export the run's translation memory (or one engine's part of it) as Parquet, and beside it the human
    review overlay (`--no-human` leaves it out)."""
    settings = load_settings(config)
    check_writable(out.parent, "output folder")
    try:
        lines = export_memory(settings.layout, out, engine_id=engine_id, human=human)
    except FileNotFoundError as e:
        _fail(str(e))
    _say(*lines)


@command("import", target=memory_app)
def memory_import(
    path: Path = typer.Argument(..., help="Parquet export (or a text_hash, text_en, text_pt file), or a "
                                "human-review overlay export (*.human.parquet)."),
    engine_id: str = typer.Option(None, "--engine-id", help="Engine id the translations belong to (required for "
                                  "a translation memory file; an overlay export names its engines itself)."),
    config: Path = ConfigOpt,
    human: bool = typer.Option(
        True, "--human/--no-human",
        help="Also import the human-review overlay export beside PATH (PATH's name with .human.parquet), "
        "when there is one, into the run's memory/human.sqlite."),
) -> None:
    """Import translations into the run's memory; texts already stored are kept as they are.  The human
    review overlay beside the file (or given as PATH) is appended to the run's overlay: rows already there
    are skipped, and for each row the latest correction or verdict wins, by time."""
    settings = load_settings(config)
    if not path.is_file():
        _fail(f"{path}: no such file" if not path.exists() else f"{path} is a folder, not a Parquet file")
    check_writable(settings.layout.memory_dir, "memory folder")
    try:
        lines = import_memory(settings.layout, path, engine_id=engine_id, human=human)
    except ValueError as e:
        _fail(str(e))
    _say(*lines)


@command()
def compare(config: Path = ConfigOpt, workers: int = typer.Option(1, "--workers", "-w", min=1)) -> None:
    """Translator comparison: examples side by side, Table 5.2 token statistics, flag rates, gold-set
    chrF/BLEU, cost and speed -> reports/compare/comparison.html (+ .md)."""
    settings = load_settings(config)
    check_engines(settings)
    check_writable(settings.root)
    _build([CompareTranslators(config=str(config.resolve()))], workers)
    console.print(f"report: {settings.layout.comparison_html}")


@command()
def review(
    config: Path = ConfigOpt,
    engine: str = typer.Option(None, "--engine", "-e",
                               help="Engine whose translations you correct (default: [training] engine)."),
    port: int = typer.Option(8765, "--port", "-p", min=1, max=65535, help="Port to serve on."),
    host: str = typer.Option("127.0.0.1", "--host",
                             help="Address to bind. The default serves this machine only; 0.0.0.0 lets other "
                             "machines in (with the token, over plain HTTP: a trusted network or an HTTPS proxy)."),
    allow_host: list[str] = typer.Option([], "--allow-host", help="Another Host name to answer to (a proxy's, "
                                         "this machine's DNS name); any other name is refused (DNS rebinding)."),
    token_file: Path = typer.Option(None, "--token-file", help="Read the token from this file (first line) "
                                    "instead of $PTVL_REVIEW_TOKEN or a random one per start."),
    reviewer: str = typer.Option(None, "--reviewer",
                                 help="Name stored with every correction (default: your login name)."),
    queue_size: int = typer.Option(500, "--queue-size", min=1,
                                   help="Rows in the worst, disagree and sample queues (flag queues hold all)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random-sample queue (the same seed, the same rows)."),
) -> None:
    """Correct translations in the browser: a local web app over the run root's translated tables.

    Open the link it prints, http://127.0.0.1:8765/?token=... (a random token per start; set your own in
    $PTVL_REVIEW_TOKEN or --token-file): it logs the browser in. Queues, each with reviewed / total:
    flag:<name> (every row raising that quality flag), worst (lowest engine scores), disagree (lowest chrF
    between the engines' outputs for the same source string; needs two engines), sample (random rows, a
    fixed seed). A row shows the EN source, every engine's PT side by side with the flags and their
    evidence, the image (CC3M, COCO), the dialog around it (VisDial) or the question and its answers (VQAv2).

    Keys: j/k next/previous row, a accept the engine's output, 1-9 accept engine N's output (both ask first
    on a row with a human text), e edit (Ctrl+Enter saves), f/c mark the first open flag a false
    alarm/confirmed, g add to the gold set, ? help.

    Corrections never overwrite the machine output: they are appended to memory/human.sqlite as a human
    overlay (who, when, the text they replace; two tabs on one row: the last write wins, both are kept and
    the override is logged). Rebuild the shards afterwards with `ptvl run --config ... --until shards`:
    they use the human text, and each dataset card counts the human-corrected rows. Share the overlay
    with `ptvl memory export` / `ptvl memory import`."""
    options = ReviewOptions(config, engine, host, port, reviewer, queue_size, seed, tuple(allow_host), token_file)
    launch(check_options(load_settings(config), options))  # the server: a lighter process of its own


def _overrides(**values) -> dict:
    return {k: v for k, v in values.items() if v is not None}


@command("train")
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
    from pipeline.train_runs import train_from_run_toml  # deferred: imports torch (the trainer)

    overrides = _overrides(llm=llm, bridge=bridge, k=k, layer=layer, recipe=recipe)
    if "inputs" in read_profile(config):  # a run.toml
        run_dir = train_from_run_toml(config, overrides, steps, run_name)
        if int(os.environ.get("RANK", "0")) == 0:
            console.print(f"run: {run_dir}")
        return
    profile = train_profile(config, overrides, steps, run_name)  # checks the bridge, the root and the LLM
    settings = load_settings(profile)
    _build([Train(config=str(profile))])
    console.print(f"run: {settings.layout.train_run(settings.training.run_name)}")


@command("check-llm")
def check_llm_cmd(
    llm: str = typer.Argument(..., help="A Hugging Face causal LM: a local folder or a hub id."),
    config: Path = typer.Option(None, "--config", "-c", help="Take [model] and [training] device from this profile."),
    device: str = typer.Option(None, "--device", help="cpu, cuda or cuda:N (default: the profile's, else the GPU)."),
    dtype: str = typer.Option(None, "--dtype", help="bf16 or fp32 (default: the profile's, else bf16)."),
) -> None:
    """Pre-flight an LLM: load, a forward with [RET] and visual rows, a training step, cached against uncached
    decoding, VisDial scoring; each check's result, reason and seconds, exit code 2 if one fails. `ptvl run`,
    `train` and `retrain` run it before training."""
    console.print(report_table(report := check_llm_report(llm, config, device=device, dtype=dtype)))
    if not report.ok:
        _fail(report.failure())


@command()
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
    same root (train/*), with steps and status; a failed step shows its error (exit code 1).

    Finished steps are kept: rerunning resumes training and skips finished evaluations."""
    from pipeline.train_runs import retrain as retrain_run  # deferred: imports torch (train and evaluate)

    done = retrain_run(config, _overrides(llm=llm, bridge=bridge, k=k, layer=layer), steps, run_name, workers, out)
    console.print(f"run: {done.run_dir}, {done.status} ({done.earlier} earlier run(s) under {done.run_dir.parent})")
    print(done.tables)
    if done.status != "finished":  # the tables say what failed; scripts see it in the exit code
        raise typer.Exit(1)


@command("eval")
def eval_cmd(
    run: Path = typer.Option(..., "--run", help="A run folder (train/<run>) with run.toml and checkpoints."),
    benchmark: str = typer.Option(..., "--benchmark", help="cc3m-val, coco, visdial, vqav2, or all."),
    config: Path = ConfigOpt,
    engine: str = typer.Option(None, "--engine", help="Whose translated shards (default: [training] engine)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
) -> None:
    """Evaluate a trained run on one benchmark (or all): metrics.json, qualitative HTML pages
    (run/eval/<benchmark>/), and the run's model card rewritten with the results."""
    from eval.benchmarks import BENCHMARKS, evaluate, shard_folder  # deferred: imports torch

    settings = load_settings(config)
    if benchmark != "all" and benchmark not in BENCHMARKS:
        _fail(f"unknown benchmark {benchmark!r}; choose from {', '.join(BENCHMARKS)} or all")
    if not (run / "run.toml").is_file():
        _fail(f"--run {run}: no run.toml there, so it is not a trained run folder")
    check_writable(run / "eval", "eval folder")
    engine = engine or settings.training.engine
    chosen = list(settings.eval.benchmarks) if benchmark == "all" else [benchmark]
    try:
        shards = {b: shard_folder(settings.layout.shards_root, engine, b) for b in chosen}
    except FileNotFoundError as e:
        _fail(str(e))
    for b in chosen:
        out = run / "eval" / b
        with stage_progress(f"eval {b}", console=console) as progress:
            result = evaluate(run, b, shards[b], out, engine=engine, settings=settings.eval.settings,
                              device=device, progress=progress)
        for key, value in result["metrics"].items():
            console.print(f"{key:>16} {format_metric(key, value, 4)}")
        console.print(f"written: {out / 'metrics.json'}")


@command()
def table(
    runs: list[Path] = typer.Argument(..., help="Run folders whose eval/<benchmark>/metrics.json to compare."),
    out: Path = typer.Option(None, "--out", help="Also write the Markdown here."),
) -> None:
    """Thesis-layout tables (5.3 retrieval, 5.4 captioning, 5.5 VisDial, VQAv2, and the ablation layout) over
    several runs: retrain with a new LLM and get the comparison with the old ones in one command. Every table
    names its tie rule and VQA mode. Runs of different translation engines are also re-scored on the
    common subset of evaluation items they all have, in a second, labelled set of tables."""
    from eval.benchmarks import collect_runs  # deferred: imports torch
    from eval.report_tables import render_run_tables, write_run_tables

    try:
        rows = collect_runs(runs)
    except FileNotFoundError as e:
        _fail(str(e))
    print(write_run_tables(rows, out) if out else render_run_tables(rows))


escape_help(app)


def main() -> None:
    """The `ptvl` command (started through pipeline/__main__.py, which says why)."""
    try:
        app()
    except ConfigError as e:
        console.print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
