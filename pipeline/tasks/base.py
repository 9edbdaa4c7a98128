"""The base of every ptvl Luigi task: the profile parameters, the run root, and marker targets.

Two parameters identify the run profile:

- `config`, the path of the TOML profile, is how a worker reads its settings.  It is *not
  significant*: it is left out of the task id, because two machines may mount one profile at two
  paths (and `ptvl train` writes its overrides to a file of its own).
- `profile`, a hash of the resolved settings (`Settings.fingerprint`), is filled in from `config`
  when not given, and *is* the task id.  So every machine running one profile's content names each
  task alike, and `luigid` lets exactly one of them run it; a profile that differs in any setting
  (another run root included) gets other ids and never borrows a task of another run.

Settings are re-read from `config` in each worker: no secret ever becomes a parameter, and luigid
shows short, readable task ids.
"""
from __future__ import annotations

import logging
from pathlib import Path

import luigi

from pipeline.layout import RunLayout
from pipeline.settings import Settings, cached_settings

log = logging.getLogger("ptvl")

# A task that fails this many times is disabled by the scheduler (luigid or local), so workers kept
# alive for a multi-machine run stop offering it and exit non-zero instead of retrying forever; the
# retries cover a machine lost mid-task (luigid marks its tasks FAILED once it stops pinging).
RETRY_COUNT = 3


class PtvlTask(luigi.Task):
    config = luigi.Parameter(significant=False, description="path of the TOML run profile (not part of the task id)")
    profile = luigi.Parameter(default="", description="hash of the resolved settings (default: computed from config)")

    retry_count = RETRY_COUNT

    # Modules run() imports that take seconds (torch, transformers, open_clip, img2dataset), deferred so that
    # `ptvl --help` and the light tasks stay fast.  With `--workers N` Luigi forks one process per task, which
    # would import them again each time; the worker imports them once, before forking (tasks/scheduling.py),
    # and every task process inherits them.  Importing runs no torch code, so forking after it is safe
    # (running torch first is what hung forked workers: pipeline/llm_preflight.py).
    preload: tuple[str, ...] = ()

    @classmethod
    def get_param_values(cls, params, args, kwargs):
        values = super().get_param_values(params, args, kwargs)
        named = dict(values)
        if not named.get("profile"):
            named["profile"] = cached_settings(str(named["config"])).fingerprint()
        return [(name, named[name]) for name, _ in values]

    @property
    def settings(self) -> Settings:
        return cached_settings(str(self.config))

    @property
    def root(self) -> Path:
        return self.settings.root

    @property
    def layout(self) -> RunLayout:
        return self.settings.layout

    def target(self, *parts: str) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(self.root.joinpath(*parts)))
