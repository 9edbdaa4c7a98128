"""The LLM pre-flight (training/llm_check.py) where the pipeline is about to train: `ptvl run` when the stage
reaches train, `ptvl train`, `ptvl retrain`, `ptvl check-llm`. A refused LLM is a `ConfigError` (one line,
exit code 2) raised before anything is trained or written: a deterministic failure, so never "rerun to
resume".

One load of the LLM, not two: when the training is the next thing this process runs (its inputs are
built, and one Luigi worker runs tasks in this process), the pre-flight hands the loaded LLM to it
(`training.model.hand_over`). Otherwise the training loads it again (from the page cache: seconds for a 7B
model, against hours of training). With several Luigi workers the pre-flight runs in a spawned process:
Luigi forks its workers from this process, and a fork after torch has run is unsafe on any device (a
CUDA context is unusable in the child; on CPU the child's first parallel op waits for ever on the OpenMP
pool's lock, which is how `ptvl run --workers 2` hung in CacheFeatures).
"""
from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import TYPE_CHECKING

import luigi
from rich.markup import escape
from rich.table import Table

from pipeline.settings import ConfigError, Settings, load_settings
from pipeline.tasks.model import PrepareSampleModels, Train
from training.config import ModelConfig

if TYPE_CHECKING:
    from training.llm_check import LLMReport

MODELS = "{models}"  # the run's own models folder (the sample's tiny LM is built there by the DAG)


def llm_config(settings: Settings) -> ModelConfig:
    """The [model] settings with the LLM path as the Train task resolves it."""
    m = settings.model
    return m.model_copy(update={"llm": m.llm.replace(MODELS, str(settings.root / "models"))})


def _report(cfg: ModelConfig, device: str | None, keep: bool) -> LLMReport:
    from training.llm_check import check_llm  # deferred: imports torch and transformers

    return check_llm(cfg, device, keep=keep)


def run_check(cfg: ModelConfig, device: str | None, *, keep: bool = False, spawn: bool = False) -> LLMReport:
    """The pre-flight's report, in this process or (spawn) in a fresh one."""
    if not spawn:
        return _report(cfg, device, keep)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_report, (cfg, device, False))


def _inputs_done(config: Path) -> bool:
    return all(t.complete() for t in luigi.task.flatten(Train(config=str(config)).requires()))


def preflight_training(settings: Settings, config: Path | None = None, *, workers: int = 1,
                       local: bool = True) -> LLMReport | None:
    """Check the LLM before the training of `settings` runs: None when that run is already trained, or when
    its LLM is built by this run and does not exist yet (the sample; then `sample_llm_tasks` builds it
    first). `config` (the profile Train reads, when it exists) lets the loaded LLM be handed to the
    training, when it runs here (`local`: not one of several machines sharing a luigid). Raises ConfigError
    (one line) when the LLM is refused."""
    if (settings.layout.train_run(settings.training.run_name) / "_DONE.json").is_file():
        return None
    cfg = llm_config(settings)
    if MODELS in settings.model.llm and not Path(cfg.llm).is_dir():
        return None
    device = settings.training.device
    spawn = workers > 1  # Luigi forks the workers from this process after the check (module docstring)
    keep = local and workers == 1 and config is not None and _inputs_done(config)
    report = run_check(cfg, device, keep=keep, spawn=spawn)
    if not report.ok:
        raise ConfigError(report.failure())
    return report


def sample_llm_tasks(settings: Settings, config: str) -> list[luigi.Task]:
    """What must run before the pre-flight can: the sample's tiny LM, when this run builds it."""
    if MODELS in settings.model.llm and not Path(llm_config(settings).llm).is_dir():
        return [PrepareSampleModels(config=config)]
    return []


def summary(report: LLMReport | None) -> list[str]:
    """One line for the console after a pre-flight that passed."""
    if report is None:
        return []
    return [f"LLM pre-flight: {report.llm} ({report.model_type}, {report.params or 0:,} parameters): "
            f"{len(report.checks)} checks passed in {report.seconds:.1f} s"]


def check_llm_report(llm: str, config: Path | None = None, *, device: str | None = None,
                     dtype: str | None = None) -> LLMReport:
    """`ptvl check-llm`: the pre-flight of `llm` (a folder or a hub id) alone, with the [model] settings
    (recipe, dtype, [RET] layers) and [training] device of `config`, or the defaults without one."""
    path = Path(llm).expanduser()
    if (path.is_absolute() or llm.startswith((".", "~")) or llm.count("/") > 1) and not path.is_dir():
        raise ConfigError(f"{llm}: no such folder (give a Hugging Face model folder or a hub id)")
    if config is not None:
        settings = load_settings(config)
        cfg, device = settings.model.model_copy(update={"llm": llm}), device or settings.training.device
    else:
        cfg = ModelConfig(llm=llm)
    if dtype is not None:
        cfg = cfg.model_copy(update={"dtype": ModelConfig.model_validate({"dtype": dtype}).dtype})
    return run_check(cfg, device)


def report_table(report: LLMReport) -> Table:
    """The pre-flight as a table: one row per check (ok / failed / skipped, why, seconds)."""
    params = f"{report.params:,} parameters" if report.params is not None else "not loaded"
    table = Table(title=f"{report.llm}: {report.model_type}, {params}, {report.dtype} on {report.device}")
    for col, justify in (("check", "left"), ("result", "left"), ("reason", "left"), ("s", "right")):
        table.add_column(col, justify=justify, overflow="fold")
    for c in report.checks:
        style = {"ok": "green", "failed": "bold red", "skipped": "yellow"}[c.status]
        table.add_row(c.name, f"[{style}]{c.status}[/]", escape(c.reason), f"{c.seconds:.2f}")
    return table
