"""Every path under a run root, in one place: the tasks, the CLI, the reports and the review app ask here.

A run root holds one folder per stage (README, "Stages"):

    sources/<dataset>/[<split>/]        official files (or the sample) and what the readers set aside
    segments/<dataset>/<split>.parquet  every translatable string (SEGMENTS)
    images/<dataset>/<split>/           img2dataset output, availability.parquet, _MANIFEST.json
    memory/                             translation memories (shared, per engine id, per part) + human.sqlite
    translated/<engine>/...             the joins (TRANSLATED), set-aside rows, part stats and audits
    neural/                             QE per string per engine, COMET on the gold set (score caches)
    reports/                            availability, token statistics, comparison, quarantine, README.md
    shards/<engine>/<dataset>/<split>/  the trainer's shards and dataset cards
    features/<clip>/<dataset>/<split>/  CLIP feature caches
    models/                             the sample's tiny models
    train/<run>/                        training runs (checkpoints, run.toml, eval/)

Nothing here reads settings or touches the disk: a `RunLayout` is the root plus names, so any module may
use it (it sits at the bottom of the `pipeline` package).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

FETCHED_MARKER = "_FETCHED.json"  # a source's files are present and verified, with each one's provenance
IMPORTED_RECORD = "_IMPORTED.json"  # the files `ptvl sources import` placed (pipeline/source_import.py)
SHARED_MEMORY = "memory.sqlite"
HUMAN_OVERLAY = "human.sqlite"
IMPORTED_MEMORY = "imported.sqlite"
# Inside each engine id's memory folder: the full id it holds (the folder's name is a digest of it).
ENGINE_ID_FILE = "ENGINE_ID"


def memory_folder_name(engine_id: str) -> str:
    """`deepl-3f2a9c1b0d4e`: the folder of one engine id's memory, named by what decides the output (the
    engine id: kind, model, formality, glossary, ...), never by the [engines.<name>] table: renaming a
    table, or two tables with the same settings, find the same memory, and the same leases."""
    kind = re.sub(r"[^A-Za-z0-9_.-]+", "-", engine_id.split(":", 1)[0]).strip("-.")[:32] or "engine"
    return f"{kind}-{hashlib.sha256(engine_id.encode('utf-8')).hexdigest()[:12]}"


def part_name(part: int, parts: int) -> str:
    """`part-003-of-008`: the stem every file of one translation part shares."""
    return f"part-{part:03d}-of-{parts:03d}"


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run root."""

    root: Path

    # -- sources and segments -------------------------------------------------------------------------

    @property
    def sources(self) -> Path:
        return self.root / "sources"

    def source(self, dataset: str) -> Path:
        """A dataset's official files (`_FETCHED.json` marks them verified)."""
        return self.sources / dataset

    def source_marker(self, dataset: str) -> Path:
        """FetchSource's target: every official file verified, and where each came from."""
        return self.source(dataset) / FETCHED_MARKER

    def source_imports(self, dataset: str) -> Path:
        """The files the user imported instead of fetching them."""
        return self.source(dataset) / IMPORTED_RECORD

    def source_split(self, dataset: str, split: str) -> Path:
        """What a reader wrote beside the segments: items, quarantine, dialogs, questions, read stats."""
        return self.sources / dataset / split

    def segments(self, dataset: str, split: str) -> Path:
        return self.root / "segments" / dataset / f"{split}.parquet"

    # -- images -------------------------------------------------------------------------------------------

    def images(self, dataset: str, split: str) -> Path:
        return self.root / "images" / dataset / split

    # -- translation memory -------------------------------------------------------------------------------

    @property
    def memory_dir(self) -> Path:
        return self.root / "memory"

    @property
    def shared_memory(self) -> Path:
        """The run's shared memory: written only by `ptvl memory import`, read by every part."""
        return self.memory_dir / SHARED_MEMORY

    @property
    def human_overlay(self) -> Path:
        """People's corrections, flag verdicts and gold rows (`translation.overlay.HumanOverlay`), beside the
        machine memory, never inside it."""
        return self.memory_dir / HUMAN_OVERLAY

    def engine_memory(self, engine_id: str) -> Path:
        """The folder of one engine id's memory files (its parts, a reference engine's import, the parts'
        leases and billing ledger), shared by every table with those settings."""
        return self.memory_dir / memory_folder_name(engine_id)

    def legacy_engine_memory(self, engine: str) -> Path:
        """Where runs before the id folders kept an [engines.<name>] table's memory (read, never written)."""
        return self.memory_dir / engine

    def part_memory(self, engine_id: str, part: int, parts: int) -> Path:
        """Written only by the one process holding the part's lease."""
        return self.engine_memory(engine_id) / f"{part_name(part, parts)}.sqlite"

    def imported_memory(self, engine_id: str) -> Path:
        return self.engine_memory(engine_id) / IMPORTED_MEMORY

    def leases_dir(self, engine_id: str) -> Path:
        """The parts' leases (`pipeline.leases`): one sender per part, whoever runs it."""
        return self.engine_memory(engine_id) / "_leases"

    def ledger_dir(self, engine_id: str) -> Path:
        """The billing ledger (`pipeline.ledger`): one journal per part attempt, and acknowledged differences."""
        return self.engine_memory(engine_id) / "_ledger"

    # -- translated tables ----------------------------------------------------------------------------------

    def translated_dir(self, engine: str) -> Path:
        return self.root / "translated" / engine

    def translated(self, engine: str, dataset: str, split: str) -> Path:
        """TRANSLATED rows of one split (the Translate task's target)."""
        return self.translated_dir(engine) / dataset / f"{split}.parquet"

    def set_aside(self, engine: str, dataset: str, split: str) -> Path:
        """Segments never sent, with their reason (SET_ASIDE)."""
        return self.translated_dir(engine) / dataset / f"{split}.set_aside.parquet"

    def split_stats(self, engine: str, dataset: str, split: str) -> Path:
        return self.translated_dir(engine) / dataset / f"_{split}.stats.json"

    def context_translated(self, engine: str, split: str) -> Path:
        """VisDial dialog texts translated with their caption as context (VISDIAL_CONTEXT_TRANSLATED)."""
        return self.translated_dir(engine) / "visdial" / f"{split}.context.parquet"

    def parts_dir(self, engine: str) -> Path:
        """Part stats (`<part>-<fingerprint>.json`), and the billing audits of runs before the ledger
        (`<part>.audit.jsonl`, still read)."""
        return self.translated_dir(engine) / "_parts"

    def part_stem(self, engine: str, part: int, parts: int) -> Path:
        return self.parts_dir(engine) / part_name(part, parts)

    def unique_strings(self, engine: str, fingerprint: str) -> Path:
        return self.translated_dir(engine) / f"_unique-{fingerprint}.parquet"

    # -- neural scores (COMET, CometKiwi) -------------------------------------------------------------------

    @property
    def neural_dir(self) -> Path:
        return self.root / "neural"

    def qe_store(self, engine: str) -> Path:
        """The engine's QE score cache (translation.qe_store), written only by its QEScores task."""
        return self.neural_dir / engine / "qe.sqlite"

    def qe_scores(self, engine: str) -> Path:
        """QE per translated string (text_hash, qe) under the profile's qe_model."""
        return self.neural_dir / engine / "qe.parquet"

    def qe_summary(self, engine: str) -> Path:
        """What the QEScores task did (model, strings, computed, cached): written last."""
        return self.neural_dir / engine / "_QE.json"

    @property
    def gold_comet_store(self) -> Path:
        """COMET scores of every engine's gold-set translations (and the PT-BR yardstick), cached."""
        return self.neural_dir / "gold_comet.sqlite"

    @property
    def gold_comet(self) -> Path:
        """COMET per (engine, gold sentence) under the profile's comet_model."""
        return self.neural_dir / "gold_comet.parquet"

    @property
    def gold_comet_summary(self) -> Path:
        return self.neural_dir / "_GOLD_COMET.json"

    # -- reports --------------------------------------------------------------------------------------------

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def availability_report(self) -> Path:
        return self.reports / "availability.md"

    @property
    def token_stats(self) -> Path:
        return self.reports / "token_stats.parquet"

    @property
    def compare_dir(self) -> Path:
        return self.reports / "compare"

    @property
    def comparison_html(self) -> Path:
        return self.compare_dir / "comparison.html"

    @property
    def final_report(self) -> Path:
        return self.reports / "README.md"

    # -- shards, features, models, training -------------------------------------------------------------------

    def shards(self, engine: str, dataset: str, split: str) -> Path:
        return self.root / "shards" / engine / dataset / split

    @property
    def shards_root(self) -> Path:
        return self.root / "shards"

    def features(self, clip: str, dataset: str, split: str) -> Path:
        return self.root / "features" / clip / dataset / split

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def train_root(self) -> Path:
        return self.root / "train"

    def train_run(self, name: str) -> Path:
        return self.train_root / name
