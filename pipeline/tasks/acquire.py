"""Acquisition stages: sources (fetch or generate), segments (readers) and images (img2dataset)."""
from __future__ import annotations

import luigi

from pipeline.availability import run_report
from pipeline.contracts import DIALOGS, ITEMS, QUARANTINE, SEGMENTS, VQA_QUESTIONS
from pipeline.fetch import fetch_source
from pipeline.images.download import download_images
from pipeline.io import write_json_atomic, write_parquet_atomic, write_text_atomic
from pipeline.manifests import load_source
from pipeline.sample.write import write_sample
from pipeline.sources import read_split
from pipeline.tasks.base import PtvlTask, log


class GenerateSample(PtvlTask):
    """Write the embedded bilingual synthetic sample in the real source formats (offline default)."""

    def output(self) -> luigi.LocalTarget:
        return self.target("sources", "_SAMPLE.json")

    def run(self) -> None:

        s = self.settings.sample
        layout = write_sample(
            self.root / "sources",
            seed=s.seed,
            n_train=s.n_train,
            n_val=s.n_val,
            n_coco=s.n_coco,
            n_dialogs=s.n_dialogs,
            image_size=s.image_size,
            broken_fraction=s.broken_fraction,
            n_vqa=s.n_vqa,
        )
        write_json_atomic(self.output().path, {k: str(v) for k, v in vars(layout).items() if k != "truth"})


class FetchSource(PtvlTask):
    """Download and verify a dataset's official files (data_manifests/<dataset>.toml); files the user
    imported (`ptvl sources import`) are verified, never fetched; on the sample profile the generated files
    stand in for them."""

    dataset = luigi.Parameter()

    def requires(self):
        return GenerateSample(config=self.config) if self.settings.sample.enabled else []

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(self.layout.source_marker(str(self.dataset))))

    def run(self) -> None:
        dest = self.root / "sources" / str(self.dataset)
        if self.settings.sample.enabled:
            write_json_atomic(self.output().path, {"dataset": self.dataset, "source": "embedded sample"})
            return

        fetch_source(load_source(str(self.dataset)), dest, settings=self.settings.fetch)


class IngestSegments(PtvlTask):
    """Read one split of a source into the segments contract (+ items, quarantine, dialogs)."""

    dataset = luigi.Parameter()
    split = luigi.Parameter()

    def requires(self):
        return FetchSource(config=self.config, dataset=self.dataset)

    def output(self) -> luigi.LocalTarget:
        return self.target("segments", str(self.dataset), f"{self.split}.parquet")

    def run(self) -> None:

        result = read_split(self.settings, str(self.dataset), str(self.split))
        side = self.root / "sources" / str(self.dataset) / str(self.split)
        write_parquet_atomic(side / "items.parquet", result.items, ITEMS)
        write_parquet_atomic(side / "quarantine.parquet", result.quarantine, QUARANTINE)
        if result.dialogs is not None:
            write_parquet_atomic(side / "dialogs.parquet", result.dialogs, DIALOGS)
        if result.extra is not None:  # VQAv2: questions with their 10 answers and answer type
            write_parquet_atomic(side / "questions.parquet", result.extra, VQA_QUESTIONS)
        write_json_atomic(side / "read_stats.json", result.read_stats())  # Table 4.1's original and reader losses
        if result.quarantine.num_rows:
            log.warning(
                "%s/%s: %d rows quarantined (see %s)",
                self.dataset, self.split, result.quarantine.num_rows, side / "quarantine.parquet",
            )
        # The segments file is the target, so it is written last.
        write_parquet_atomic(self.output().path, result.segments, SEGMENTS)


class DownloadImages(PtvlTask):
    """Fetch a split's images with img2dataset and record why every unavailable URL failed."""

    dataset = luigi.Parameter()
    split = luigi.Parameter()
    preload = ("img2dataset",)

    def requires(self):
        return IngestSegments(config=self.config, dataset=self.dataset, split=self.split)

    def output(self) -> luigi.LocalTarget:
        return self.target("images", str(self.dataset), str(self.split), "_MANIFEST.json")

    def run(self) -> None:

        items = self.root / "sources" / str(self.dataset) / str(self.split) / "items.parquet"
        download_images(items, self.root / "images" / str(self.dataset) / str(self.split), self.settings.download)


class AvailabilityReport(PtvlTask):
    """Thesis Table 4.1 (original / available / loss per split) and the breakdown by reason."""

    def requires(self):
        return {
            f"{d}/{s}": DownloadImages(config=self.config, dataset=d, split=s)
            for d, s in self.settings.datasets.splits()
        }

    def output(self) -> luigi.LocalTarget:
        return self.target("reports", "availability.md")

    def run(self) -> None:

        write_text_atomic(self.output().path, run_report(self.root, self.requires()))
