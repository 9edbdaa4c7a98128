"""The Luigi DAG.  `STAGES` names the points `ptvl run --until STAGE` can stop at, in order."""
from __future__ import annotations

from collections.abc import Callable

import luigi

from pipeline.settings import Settings
from pipeline.tasks.acquire import AvailabilityReport, FetchSource, IngestSegments
from pipeline.tasks.curate import CompareTranslators
from pipeline.tasks.model import CacheFeatures, Evaluate, Train
from pipeline.tasks.report import FinalReport
from pipeline.tasks.shards import BuildShards
from pipeline.tasks.translate import Translate


def _sources(config: str, s: Settings) -> list[luigi.Task]:
    return [FetchSource(config=config, dataset=d) for d in s.datasets.enabled()]


def _segments(config: str, s: Settings) -> list[luigi.Task]:
    return [IngestSegments(config=config, dataset=d, split=sp) for d, sp in s.datasets.splits()]


def _images(config: str, s: Settings) -> list[luigi.Task]:
    return [AvailabilityReport(config=config)]


def _translate(config: str, s: Settings) -> list[luigi.Task]:
    return [
        Translate(config=config, dataset=d, split=sp, engine=e)
        for e in s.translate.engines
        for d, sp in s.datasets.splits()
    ]


def _curate(config: str, s: Settings) -> list[luigi.Task]:
    return [CompareTranslators(config=config)]


def _shards(config: str, s: Settings) -> list[luigi.Task]:
    return [
        BuildShards(config=config, engine=e, dataset=d, split=sp)
        for e in s.translate.engines
        for d, sp in s.datasets.splits()
    ]


def _features(config: str, s: Settings) -> list[luigi.Task]:
    return [
        CacheFeatures(config=config, engine=s.training.engine, dataset=d, split=sp)
        for d, sp in s.datasets.splits()
        if d != "vqav2"
    ]


def _train(config: str, s: Settings) -> list[luigi.Task]:
    return [Train(config=config)]


def _eval(config: str, s: Settings) -> list[luigi.Task]:
    return [Evaluate(config=config, benchmark=b) for b in s.eval.benchmarks]


def _report(config: str, s: Settings) -> list[luigi.Task]:
    return [FinalReport(config=config)]


# name -> (what it produces, the tasks that complete it)
STAGES: dict[str, tuple[str, Callable[[str, Settings], list[luigi.Task]]]] = {
    "sources": ("official files fetched and verified (or the sample generated)", _sources),
    "segments": ("every translatable string as segments/<dataset>/<split>.parquet", _segments),
    "images": ("images downloaded + availability table (reports/availability.md)", _images),
    "translate": ("memory filled for every engine; translated/<engine>/<dataset>/<split>.parquet", _translate),
    "curate": ("quality flags, token statistics and reports/compare/comparison.html", _curate),
    "shards": ("Parquet shards + dataset cards under shards/<engine>/<dataset>/<split>/", _shards),
    "features": ("CLIP CLS features of the chosen layers, once per image (features/<clip>/...)", _features),
    "train": ("the V-Glória bridge trained (train/<run>/: checkpoints, TensorBoard, model card)", _train),
    "eval": ("retrieval, captioning and VisDial metrics (train/<run>/eval/<benchmark>/)", _eval),
    "report": ("reports/README.md linking everything, with the headline numbers", _report),
}
