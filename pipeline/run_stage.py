"""`ptvl run`: which tasks a stage needs, the checks before any of them runs, and what the outcome means."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import luigi

from pipeline.checks import (
    check_engines,
    check_features,
    check_luigid,
    check_model,
    check_neural_models,
    check_sources_reachable,
    check_writable,
)
from pipeline.llm_preflight import preflight_training, sample_llm_tasks, summary
from pipeline.preflight import preflight_paid_engines
from pipeline.settings import ConfigError, Settings
from pipeline.tasks import STAGES
from pipeline.tasks.acquire import FetchSource
from pipeline.tasks.scheduling import DagOutcome, run_dag


@dataclass(frozen=True)
class Scheduler:
    """A local scheduler in this process (host None), or the central `luigid` several machines share."""

    host: str | None = None
    port: int = 8082

    def where(self) -> str:
        return f"luigid {self.host}:{self.port}" if self.host else "local scheduler"

    def build_kwargs(self, workers: int) -> dict:
        where = {"scheduler_host": self.host, "scheduler_port": self.port} if self.host else {"local_scheduler": True}
        return {"workers": workers, **where}


@dataclass
class PlannedRun:
    stage: str
    tasks: list[luigi.Task]
    translates: bool  # the stage reaches translation: paid engines are pre-flighted first
    trains: bool = False  # the stage reaches train: the LLM is pre-flighted first


def plan_run(settings: Settings, config: str, until: str | None, scheduler: Scheduler) -> PlannedRun:
    """The target tasks of stage `until` (default: the last), after the checks that stage and its upstream
    stages need, and no others: engines from translate on, [training] engine and [features] from features
    on, [training] data and the model from train on, a writable root, a reachable luigid, then the hosts
    of the sources still to fetch.  ConfigError otherwise (one line per problem)."""
    names = list(STAGES)
    stage = until or names[-1]
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; stages are: {', '.join(names)}")
    translates = names.index(stage) >= names.index("translate")
    if translates:  # stages before translate need no engine
        check_engines(settings)
        check_neural_models(settings)
    if names.index(stage) >= names.index("features"):
        check_features(settings)
    if names.index(stage) >= names.index("train"):
        check_model(settings)  # [training] data, then the bridge
    check_writable(settings.root)
    if scheduler.host:
        check_luigid(scheduler.host, scheduler.port)
    tasks = STAGES[stage][1](config, settings)
    if not settings.sample.enabled and not all(settings.layout.source_marker(d).exists()
                                               for d in settings.datasets.enabled()):
        check_sources_reachable(settings, datasets=sources_to_fetch(tasks))  # the walk only when a source is missing
    return PlannedRun(stage, tasks, translates, names.index(stage) >= names.index("train"))


def sources_to_fetch(tasks: list[luigi.Task]) -> list[str]:
    """The datasets whose official files the run will fetch: a FetchSource that an incomplete task needs (what
    Luigi would schedule).  A run whose segments are built already needs no source host."""
    needed, seen, todo = [], set(), list(tasks)
    while todo:
        task = todo.pop()
        if task.task_id in seen:
            continue
        seen.add(task.task_id)  # before complete(): a task many others need is checked once
        if task.complete():
            continue
        if isinstance(task, FetchSource):
            needed.append(str(task.dataset))
        else:
            todo.extend(luigi.task.flatten(task.requires()))
    return sorted(set(needed))


def preflight_run(settings: Settings, config: str, plan: PlannedRun, *, workers: int, scheduler: Scheduler,
                  allow_partial: bool) -> list[str]:
    """The paid engines' keys and quotas, before any request (nothing to check before translate); the LLM,
    before anything is trained (when the run builds its own LLM, the sample's, once that is built)."""
    lines: list[str] = []
    first = sample_llm_tasks(settings, config) if plan.trains else []

    def llm() -> None:
        lines.extend(summary(preflight_training(settings, Path(config), workers=workers, local=not scheduler.host)))

    if plan.trains and not first:  # an LLM that exists: checked before anything runs
        llm()
    if plan.translates:
        lines += preflight_paid_engines(settings, config, settings.translate.engines, allow_partial=allow_partial,
                                        build_kwargs=scheduler.build_kwargs(workers))
    if first:  # the run builds its LLM (the sample's): checked once built, before training
        if not run_dag(first, workers=workers, scheduler_host=scheduler.host, scheduler_port=scheduler.port).complete:
            return lines  # the run itself then reports that task's failure
        llm()
    return lines


def outcome_error(outcome: DagOutcome, scheduler: Scheduler) -> str | None:
    """The one-line error of a run that did not finish, None when the DAG is complete."""
    if outcome.complete:
        return None
    if outcome.failed_here:
        return (f"run did not finish: {', '.join(outcome.failed_here)} failed (error above); fix it and rerun: "
                "finished tasks are kept")
    elsewhere = (f"; a task failed on another machine (see luigid at http://{scheduler.host}:{scheduler.port})"
                 if scheduler.host else "")
    return (f"run did not finish: {', '.join(outcome.incomplete)} incomplete{elsewhere}; rerun to resume: "
            "finished tasks are kept")


def outcome_lines(outcome: DagOutcome, stage: str, scheduler: Scheduler) -> list[str]:
    """What a complete run says: how many tasks ran here, and under luigid which."""
    lines = [f"stage {stage} complete: {len(outcome.ran_here)} tasks run by this process, {outcome.already_done} "
             "already done" + (", the rest by other workers of the same luigid" if scheduler.host else "")]
    return lines + ([f"  ran {task_id}" for task_id in outcome.ran_here] if scheduler.host else [])
