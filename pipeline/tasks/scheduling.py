"""Run the DAG with Luigi, locally or as one of N processes sharing a central `luigid`.

What a shared `luigid` needs from each process, and why:

- **Stay until the DAG is done.**  Luigi's worker `keep_alive` keeps a worker only while tasks it
  scheduled are PENDING (or FAILED, awaiting a retry).  A task *running on another machine* does not
  count, so without more a process whose remaining tasks all wait on another machine's task exits at
  once ("did not run any tasks"), and the tasks after that one are run by one machine alone.
  `_DagWorker` also stays while any of its tasks runs elsewhere: when that task ends, the process
  takes its share of what follows, or exits with everyone else when nothing is left.
- **Success is the DAG's state, not this process's history.**  Luigi's run status calls the tasks
  another process ran "not run" (NOT_RUN), so an honest run ended with exit code 2 and "fix the error
  above" with no error above.  A run here succeeds when every target task is complete, whoever ran
  it; it fails naming the tasks that failed here, or the targets left incomplete.
- **Retries end.**  Each task allows `base.RETRY_COUNT` failures (the scheduler then disables it), so
  kept-alive processes stop offering a task that fails every time and exit non-zero, while a task
  lost with its machine (luigid marks it FAILED once the worker stops pinging) is run again by
  another.  luigid waits `[scheduler] retry_delay` (900 s by default) before offering a failed task
  again: `configs/luigid.cfg` sets 60 s.
- **Completion is checked after a run**, so a task whose run returned but whose output is not on the
  shared disk is not marked done for the other machines.

And what every process needs, local scheduler or not:

- **No orphans.**  With ``--workers N`` Luigi forks a process per running task.  Killed with SIGKILL, the
  parent cannot stop them: they would live on under PID 1, finish their parts and race the rerun.  Each
  task process here is tied to the worker that forked it (`ptvl_io.lifetime.die_with_parent`): when that
  dies, a translation part finishes the request in flight and sends no other; any other task is killed.
- **Slow imports once.**  Before forking a task's process the worker imports the task's `preload` modules
  (torch, transformers, open_clip, img2dataset, ...), so the task processes inherit them instead of each
  importing them again: seconds per task.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field

import luigi
import luigi.execution_summary
import luigi.rpc
import luigi.scheduler
import luigi.worker

from ptvl_io.lifetime import die_with_parent


class _TaskProcess(luigi.worker.ContextManagedTaskProcess):
    """Luigi's task process, tied to the process that forked it (set as the class of the one Luigi built)."""

    parent_pid: int

    def run(self) -> None:
        if self.use_multiprocessing:  # a forked child (with one worker the task runs in the parent itself)
            die_with_parent(self.parent_pid)
        super().run()


def _preload(modules: tuple[str, ...]) -> None:
    """Import a task's slow modules here, before Luigi forks its process, so that every task process inherits
    them (PtvlTask.preload).  A module that fails to import is left to the task, which reports it itself."""
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the task imports it again, in its own process, and reports the error
            pass


class _DagWorker(luigi.worker.Worker):
    def _keep_alive(self, get_work_response) -> bool:
        # Luigi counts PENDING and FAILED tasks only; a task of this DAG running on another worker also
        # means the DAG is not done (this private hook is pinned by luigi==3.8.1 in constraints.txt).
        return super()._keep_alive(get_work_response) or bool(
            self._config.keep_alive and get_work_response.running_tasks
        )

    def _create_task_process(self, task):
        # Luigi's own construction (its arguments change between versions), then our subclass, which only
        # adds what its child runs first.  The parent's pid is read here, before the fork.
        process = super()._create_task_process(task)
        process.__class__ = _TaskProcess
        process.parent_pid = os.getpid()
        if process.use_multiprocessing:
            _preload(getattr(task, "preload", ()))
        return process


class _Factory:
    """Luigi's worker/scheduler factory (the `worker_scheduler_factory` of `luigi.build`)."""

    def __init__(self, **worker_config) -> None:
        self.worker_config = worker_config

    def create_local_scheduler(self):
        return luigi.scheduler.Scheduler(prune_on_get_work=True, record_task_history=False)

    def create_remote_scheduler(self, url: str):
        return luigi.rpc.RemoteScheduler(url)

    def create_worker(self, scheduler, worker_processes: int, assistant: bool = False):
        return _DagWorker(scheduler=scheduler, worker_processes=worker_processes, assistant=assistant,
                          **self.worker_config)


@dataclass
class DagOutcome:
    """What one `ptvl run` process saw: `complete` decides its exit code."""

    complete: bool
    ran_here: list[str] = field(default_factory=list)  # task ids this process ran to completion
    failed_here: list[str] = field(default_factory=list)  # tasks that failed in this process
    incomplete: list[str] = field(default_factory=list)  # target tasks left incomplete
    already_done: int = 0
    summary_text: str = ""  # Luigi's own execution summary of this process


def run_dag(
    tasks: list[luigi.Task],
    workers: int = 1,
    scheduler_host: str | None = None,
    scheduler_port: int = 8082,
    wait_interval: float = 1.0,
    wait_jitter: float = 3.0,
) -> DagOutcome:
    """Build `tasks` and what they need.  With `scheduler_host`, this is one of possibly many processes
    (on many machines) sharing that `luigid`: it runs its share, waits while other processes run tasks
    its remaining tasks need, and returns when the DAG is complete or cannot complete."""
    # Keep our logging (rich) instead of Luigi's own handler, which would print the summary twice.
    luigi.configuration.get_config().set("core", "no_configure_logging", "true")
    remote = bool(scheduler_host)
    factory = _Factory(keep_alive=remote, wait_interval=wait_interval, wait_jitter=wait_jitter,
                       check_complete_on_run=True)
    kwargs: dict = {"workers": workers}
    if remote:
        kwargs.update(scheduler_host=scheduler_host, scheduler_port=scheduler_port)
    else:
        kwargs["local_scheduler"] = True
    result = luigi.build(tasks, worker_scheduler_factory=factory, detailed_summary=True, **kwargs)
    # The task sets behind Luigi's summary (the same call luigi.retcodes makes for its exit codes).
    sets = luigi.execution_summary._summary_dict(result.worker)
    incomplete = [t.task_id for t in tasks if not t.complete()]
    return DagOutcome(
        # The targets' own completeness: a failure here that another worker made good (a retry on
        # another machine) does not fail a DAG that is complete.
        complete=not incomplete,
        ran_here=sorted(t.task_id for t in sets["completed"]),
        failed_here=sorted(str(t) for t in sets["failed"]),
        incomplete=incomplete,
        already_done=len(sets["already_done"]),
        summary_text=result.summary_text,
    )


@dataclass
class LocalBuild:
    """A `luigi.build` with a local scheduler in this process: did it succeed, and Luigi's summary."""

    ok: bool
    status: str  # Luigi's LuigiStatusCode name
    summary_text: str


def build_local(tasks: list[luigi.Task], workers: int = 1) -> LocalBuild:
    """Build `tasks` (and what they need) with a local scheduler, its task processes tied to this one; never
    raises for a failed task."""
    luigi.configuration.get_config().set("core", "no_configure_logging", "true")
    result = luigi.build(tasks, workers=workers, local_scheduler=True, detailed_summary=True,
                         worker_scheduler_factory=_Factory())
    return LocalBuild(result.status.name in ("SUCCESS", "SUCCESS_WITH_RETRY"), result.status.name,
                      result.summary_text)
