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
console = Console(stderr=True)
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


def _fail(msg: str) -> None:
    console.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(2)


def _load(config: Path):
    try:
        return load_settings(config)
    except ConfigError as e:
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
    tasks = STAGES[stage][1](str(config.resolve()), settings)
    console.print(f"[bold]ptvl run[/] {config} -> stage [cyan]{stage}[/] ({len(tasks)} target tasks), root {settings.root}")
    # Keep our logging (rich) instead of Luigi's own handler, which would print the summary twice.
    luigi.configuration.get_config().set("core", "no_configure_logging", "true")
    kwargs = {"workers": workers, "detailed_summary": True}
    if scheduler_host:
        kwargs.update(scheduler_host=scheduler_host, scheduler_port=scheduler_port)
    else:
        kwargs["local_scheduler"] = True
    result = luigi.build(tasks, **kwargs)
    console.print(result.summary_text)
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


def main() -> None:
    """Console-script entry point (`ptvl`).  img2dataset starts workers with spawn, which re-imports the
    main module: this function is only called under the console script's own __main__ guard."""
    try:
        app()
    except ConfigError as e:
        console.print(f"[bold red]error:[/] {e}")
        sys.exit(2)


if __name__ == "__main__":
    main()
