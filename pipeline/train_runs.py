"""Training runs started from the command line: a profile with command-line overrides, a rerun from a
finished run's run.toml, and the retrain-with-a-new-LLM flow (train, evaluate, tables beside the earlier
runs).  Each function raises `ConfigError` (one line) or returns what the command prints."""
from __future__ import annotations

import logging
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from eval.failures import read_failure, write_failure
from pipeline.checks import check_model, check_writable
from pipeline.io import write_json_atomic, write_text_atomic
from pipeline.llm_preflight import preflight_training, run_check, summary
from pipeline.settings import ConfigError, Settings, load_settings
from pipeline.tasks.model import Evaluate, Train
from pipeline.tasks.scheduling import LocalBuild, build_local
from training.config import RECIPES, ModelConfig, read_run_toml, to_toml
from training.modelcard import refresh_model_card

log = logging.getLogger("ptvl")

# Overrides that name a different model, so the run gets a folder of its own by default.
MODEL_OVERRIDES = ("llm", "bridge", "k", "layer")


def read_profile(config: Path) -> dict:
    """The profile's TOML as a dict (raw: overrides are applied before validation)."""
    try:
        return tomllib.loads(Path(config).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{config}: {e}") from None


def default_run_name(model: dict) -> str:
    """`<llm folder>-<bridge>-k<k>-l<layer>`: runs of different models never share a folder."""
    return "-".join(str(x) for x in (Path(model.get("llm", "llm")).name, model.get("bridge", "cls"),
                                     f"k{model.get('k', 1)}", f"l{model.get('layer', -1)}"))


def train_profile(config: Path, overrides: dict, steps: int | None, run_name: str | None, *,
                  preflight: bool = True, workers: int = 1) -> Path:
    """The profile `ptvl train` runs: the user's file itself when nothing is overridden, else the profile with
    the overrides written into the run folder it names (train/<run>/profile.toml), never beside the user's
    file: two runs with different overrides must not overwrite each other, and a read-only config folder
    must work. `preflight`: the LLM pre-flight first (pipeline/llm_preflight.py), before anything is written."""
    if not overrides and steps is None and run_name is None:
        settings = load_settings(config)
        check_model(settings)  # the cheap checks first
        check_writable(settings.root)
        if preflight:
            _preflight(settings, config, workers)
        return Path(config).resolve()
    settings = load_settings(config)  # the user's file must be valid on its own first
    data = read_profile(config)
    model = data.setdefault("model", {})
    model.update(overrides)
    if steps is not None:
        data.setdefault("train", {})["steps"] = steps
    if run_name is not None or set(MODEL_OVERRIDES) & set(overrides):
        data.setdefault("training", {})["run_name"] = run_name or default_run_name(model)
    # The profile's own root, made absolute: the copy lives in the run folder, not where the user ran from.
    data.setdefault("run", {})["root"] = str(settings.root)
    text = to_toml(data, header=f"{Path(config).resolve()} with the overrides of `ptvl train`")
    try:  # validated in memory: where it goes depends on the settings (root, run name)
        resolved = Settings.model_validate({**tomllib.loads(text), "config_path": Path(config).resolve()})
    except ValidationError as e:
        raise ConfigError(f"{config} with the command-line overrides: " + "; ".join(
            f"[{'.'.join(map(str, x['loc']))}] {x['msg']}" for x in e.errors())) from None
    check_model(resolved)  # before anything is written: a typo in --bridge leaves no trace
    check_writable(resolved.root)
    if preflight:  # so is an LLM that cannot be trained
        _preflight(resolved, config, workers)
    dest = resolved.layout.train_run(resolved.training.run_name) / "profile.toml"
    write_text_atomic(dest, text)
    return dest


def _preflight(settings: Settings, config: Path, workers: int) -> None:
    report = preflight_training(settings, Path(config).resolve(), workers=workers)
    for line in summary(report):
        log.info(line)


def train_from_run_toml(path: Path, overrides: dict, steps: int | None, run_name: str | None) -> Path:
    """Rerun (or resume) a run from its run.toml alone: no profile, no DAG; the shards must be as they were.
    Returns the run folder."""
    from training.train import train  # deferred: imports torch

    try:
        cfg = read_run_toml(path)
    except ValidationError as e:
        raise ConfigError(f"{path}: not a valid run.toml: {e}") from None
    inp = cfg.inputs
    for i, shard in enumerate(inp.shards):
        p = Path(shard)
        if not p.is_file():
            raise ConfigError(f"{path}: shard file {shard} is missing")
        if inp.shard_bytes and p.stat().st_size != inp.shard_bytes[i]:
            raise ConfigError(f"{path}: shard file {shard} has changed since the run ({p.stat().st_size:,} bytes, "
                              f"recorded {inp.shard_bytes[i]:,}): a rerun would not reproduce it")
    if inp.features is not None and not Path(inp.features).is_dir():
        raise ConfigError(f"{path}: feature cache {inp.features} is missing")
    model_cfg = cfg.model
    if overrides:
        resolved = cfg.model.model_dump(mode="json")
        if "recipe" in overrides:  # run.toml holds the old recipe's values: take the new recipe's preset
            resolved = {key: v for key, v in resolved.items() if key not in RECIPES.get(overrides["recipe"], {})}
        try:
            model_cfg = ModelConfig.model_validate({**resolved, **overrides})
        except ValueError as e:
            raise ConfigError(f"{path} with the command-line overrides: {e}") from None
    train_cfg = cfg.train if steps is None else cfg.train.model_copy(update={"steps": steps})
    run_dir = Path(inp.run_dir) if run_name is None else Path(inp.run_dir).parent / run_name
    if not (run_dir / "_DONE.json").is_file():  # the LLM pre-flight, before anything is trained or written
        report = run_check(model_cfg, inp.device, keep=True)
        if not report.ok:
            raise ConfigError(report.failure())
    try:
        res = train(model_cfg, train_cfg, [Path(s) for s in inp.shards], run_dir,
                    features_dir=Path(inp.features) if inp.features else None, progress=True, device=inp.device,
                    root=Path(inp.root) if inp.root else None, profile=Path(path).resolve())
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, rank 0 writes
        losses = res.losses
        first, last = (losses[min(losses)], losses[max(losses)]) if losses else (None, None)
        write_json_atomic(run_dir / "_DONE.json", {"steps": res.step, "trainable_params": res.trainable_params,
                                                   "loss_first": first, "loss_last": last,
                                                   "checkpoint": str(res.checkpoint),
                                                   "from": str(Path(path).resolve())})
    return run_dir


@dataclass
class Retrained:
    """What `ptvl retrain` prints: the run folder, its status (finished, partial, failed), how many earlier
    runs sit beside it, and the tables (this run's row says what failed, if anything did)."""

    run_dir: Path
    status: str
    earlier: int
    tables: str


def _record_silent_failures(train: Train, evaluations: list[Evaluate], build: LocalBuild) -> None:
    """Steps that did not finish and left no failure record (a killed worker, a task Luigi could not schedule)
    get one naming Luigi's status, so the run is listed as failed rather than missing."""
    settings = train.settings
    why = (f"did not finish (Luigi: {build.status}) and recorded no error: a step before it failed, or the "
           "process was killed; see the log above")
    facts = {"expected": settings.eval.benchmarks, "engine": settings.training.engine}
    run_dir = train.run_dir()
    if not train.complete():
        if read_failure(run_dir) is None:
            write_failure(run_dir, "training", why, **facts)
        return  # no evaluation could start
    for task in evaluations:
        folder = Path(task.output().path).parent
        if not task.complete() and read_failure(folder) is None:
            write_failure(folder, "evaluation", why, **facts)


def retrain(config: Path, overrides: dict, steps: int | None, run_name: str | None, workers: int,
            out: Path | None) -> Retrained:
    """Train with `overrides` (a new LLM), evaluate every benchmark of the profile, and render the results
    tables with this run under every earlier run of the same root, whatever happened: a run whose training
    or some evaluations failed is listed with its one-line errors beside the results it has."""
    from eval.benchmarks import collect_runs  # deferred: imports torch
    from eval.report_tables import render_run_tables, write_run_tables  # deferred: imports torch
    from eval.run_records import has_result  # deferred: imports torch

    load_settings(config)
    resolved = train_profile(config, overrides, steps, run_name, workers=workers)
    settings = load_settings(resolved)
    check_model(settings)
    check_writable(settings.root)
    train = Train(config=str(resolved))
    run_dir = train.run_dir()
    evaluations = [Evaluate(config=str(resolved), benchmark=b) for b in settings.eval.benchmarks]
    build = build_local(evaluations, workers)  # trains first: every Evaluate requires Train
    if not build.ok:
        _record_silent_failures(train, evaluations, build)
    refresh_model_card(run_dir)  # with every benchmark, also when evaluations ran side by side
    runs = [d for d in sorted(settings.layout.train_root.iterdir()) if d.is_dir() and d != run_dir and has_result(d)]
    rows = collect_runs(runs) + collect_runs([run_dir], expected=settings.eval.benchmarks)  # this run last
    labels = ("bridge", "layer")
    tables = write_run_tables(rows, out, labels) if out else render_run_tables(rows, labels)
    return Retrained(run_dir, rows[-1]["status"], len(runs), tables)
