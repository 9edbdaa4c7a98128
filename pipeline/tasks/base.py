"""The base of every ptvl Luigi task: a config path parameter, the run root, and marker targets.

Only the path of the TOML profile travels as a Luigi parameter: settings are re-read from it in each
worker (no secret ever becomes a parameter, and luigid shows short, readable task ids).
"""
from __future__ import annotations

import logging
from pathlib import Path

import luigi

from pipeline.settings import Settings, cached_settings

log = logging.getLogger("ptvl")


class PtvlTask(luigi.Task):
    config = luigi.Parameter(description="path of the TOML run profile")

    @property
    def settings(self) -> Settings:
        return cached_settings(str(self.config))

    @property
    def root(self) -> Path:
        return self.settings.root

    def target(self, *parts: str) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(self.root.joinpath(*parts)))
