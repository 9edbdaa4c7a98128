"""The sample's machine translators, built by the DAG before any of their translate parts runs (as the reference
engine's memory is imported first): `PrepareSampleTranslators` trains, saves and converts them
(pipeline/sample/translators.py) from the training splits' English captions and their PT-PT reference."""
from __future__ import annotations

from pathlib import Path

import luigi
import polars as pl

from pipeline.io import write_json_atomic
from pipeline.sample.translators import build_sample_translators, sample_folders
from pipeline.tasks.acquire import GenerateSample, IngestSegments
from pipeline.tasks.base import PtvlTask, log


def _training_splits(task: PtvlTask) -> list[tuple[str, str]]:
    return [tuple(x.split("/", 1)) for x in task.settings.training.data]


def builds_model(task: PtvlTask, engine: str) -> bool:
    """Whether `engine` runs a model folder the sample builds (the sample on, its folder one of the recipes')."""
    if not task.settings.sample.enabled:
        return False
    folder = getattr(task.settings.engines[engine], "model_folder", lambda: None)()
    return folder is not None and Path(folder).resolve() in sample_folders(task.layout.models)


class PrepareSampleTranslators(PtvlTask):
    """Train the sample's tiny translators on the training splits only (never on evaluation data) and convert
    them with `ptvl convert-model`'s code into the folders the sample profile's engines name."""
    preload = ("pipeline.sample.tiny_translators", "torch", "transformers.modeling_utils", "ctranslate2")

    def requires(self):
        return [GenerateSample(config=self.config),
                *[IngestSegments(config=self.config, dataset=d, split=sp) for d, sp in _training_splits(self)]]

    def output(self) -> luigi.LocalTarget:
        return self.target("models", "_TRANSLATORS_READY.json")

    def run(self) -> None:
        reference = self.settings.engines["reference"].memory_path(self.layout.sources)
        pt = pl.read_parquet(reference, columns=["text_en", "text_pt"]).unique("text_en")
        english = pl.concat([pl.read_parquet(self.layout.segments(d, sp), columns=["text_en"])
                             for d, sp in _training_splits(self)])
        pairs = english.join(pt, on="text_en", how="inner", maintain_order="left").rows()
        built = build_sample_translators(self.layout.models, pairs, seed=self.settings.sample.seed,
                                         progress=lambda line: log.info("sample translator %s", line))
        write_json_atomic(self.output().path, {"pairs": len(pairs), "models": built})
