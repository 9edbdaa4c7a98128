"""The TOML settings model: one validated object per run profile (configs/*.toml).

Every section forbids unknown keys, so a typo is an error at start-up, never a silently ignored
setting hours into a run.  Library packages own the models for their parts (download, engines,
quality, model, training); this module composes them.
"""
from __future__ import annotations

import hashlib
import json
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from eval.settings import EvalSettings
from pipeline.engines import EngineEntry, ReferenceEntry
from pipeline.fetch import FetchSettings
from pipeline.images.settings import DownloadSettings
from pipeline.layout import RunLayout
from pipeline.shards import ShardSettings
from training.config import FeatureSettings, ModelConfig, TrainConfig
from translation.quality import QualityThresholds


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunSection(Strict):
    """Where a run writes: every stage writes under `root`.  A relative root is relative to the working
    directory `ptvl` starts in (so `make run` in a clone writes ./runs/sample), resolved once when the
    profile is loaded; never relative to where the package is installed."""

    name: str = "sample"
    root: Path = Path("runs/sample")


class SampleSection(Strict):
    """The embedded bilingual synthetic sample (offline default).  Sizes keep `make run` to minutes."""

    enabled: bool = False
    seed: int = 0
    n_train: int = 600
    n_val: int = 100
    n_coco: int = 100
    n_dialogs: int = 50
    image_size: int = 64
    broken_fraction: float = Field(0.1, ge=0, le=0.5, description="share of CC3M rows broken on purpose")
    n_vqa: int = 50  # VQAv2-style images (3 questions x 10 answers each)


class CC3MSection(Strict):
    enabled: bool = True
    splits: list[Literal["train", "validation"]] = ["train", "validation"]


class COCOSection(Strict):
    enabled: bool = True
    # Karpathy splits to ingest: the benchmark uses val/test (5k each); train for training.
    splits: list[Literal["train", "restval", "val", "test"]] = ["val", "test"]
    # Karpathy's restval (30,504 images) is read as part of train, as FROMAGe and the thesis train on
    # train + restval (113,287 images).  False keeps restval a split of its own (list it in `splits`).
    fold_restval: bool = True
    # Where images live: "{url_base}/{filepath}/{filename}" (official COCO host or a local mirror).
    url_base: str = "http://images.cocodataset.org"


class VisDialSection(Strict):
    enabled: bool = True
    splits: list[Literal["train", "val"]] = ["val"]
    # Image URL per split; {image_id} is VisDial's integer image id and {sources} the run's sources
    # folder.  Val images come from VisualDialog_val2018.zip (fetched and extracted by the sources
    # stage).  Train images are COCO 2014 images from both train2014 and val2014, so "coco_url" looks
    # each id up in the COCO captions JSONs instead of guessing a file name.
    image_url_template: dict[str, str] = {
        "val": "file://{sources}/visdial/VisualDialog_val2018/VisualDialog_val2018_{image_id:012d}.jpg",
        "train": "coco_url",
    }


class VQAv2Section(Strict):
    """VQAv2 validation (zero-shot VQA benchmark): questions and answers are translated like captions."""

    enabled: bool = True
    splits: list[Literal["val"]] = ["val"]
    image_url_template: str = "http://images.cocodataset.org/val2014/COCO_val2014_{image_id:012d}.jpg"


class DatasetsSection(Strict):
    cc3m: CC3MSection = CC3MSection()
    coco: COCOSection = COCOSection()
    visdial: VisDialSection = VisDialSection()
    vqav2: VQAv2Section = VQAv2Section()
    # A caption, question or answer longer than this is quarantined as `too_long` (real ones are under
    # 300 characters; a 1 MB "caption" is a broken record that would fill a translation request).
    max_text_chars: int = Field(2000, ge=1)
    # file:// URLs *read from a source file* (a CC3M TSV line, a COCO coco_url) make img2dataset read
    # local files: refused (`local_file_refused`) unless the profile allows it.  Unset: allowed only
    # when [sample] is enabled (ptvl wrote those files itself).  URLs the profile itself builds
    # (coco.url_base, the VisDial / VQAv2 templates) are trusted either way.
    allow_local_files: bool | None = None

    @model_validator(mode="after")
    def _restval(self) -> DatasetsSection:
        if self.coco.fold_restval and "restval" in self.coco.splits:
            raise ValueError("datasets.coco.splits lists 'restval', but fold_restval = true reads restval as "
                             "part of train; drop 'restval' from splits, or set fold_restval = false")
        return self

    def enabled(self) -> dict[str, list[str]]:
        """dataset -> splits, for the datasets switched on."""
        out: dict[str, list[str]] = {}
        for name in ("cc3m", "coco", "visdial", "vqav2"):
            sec = getattr(self, name)
            if sec.enabled:
                out[name] = list(sec.splits)
        return out

    def splits(self) -> list[tuple[str, str]]:
        """Every enabled (dataset, split): the unit most stages make one task per."""
        return [(d, sp) for d, splits in self.enabled().items() for sp in splits]


class TranslateSection(Strict):
    """Which configured engines run, and how the work is cut."""

    # Names of [engines.<name>] tables to run; the sample runs only the imported reference.
    engines: list[str] = ["reference"]
    # Texts per engine call for engines without their own call size (the reference import).  Each
    # engine entry sets its own: DeepL fills each request to its limits (<= 50 texts, <= 128 KiB), the
    # CTranslate2 / transformers engines take `call_size` texts (thousands) per call.  Each call's
    # results are stored as one durable chunk before the next call, so one call is the most a kill loses.
    batch_size: int = Field(64, ge=1)
    # Shard groups per split: several workers (or machines under luigid) translate disjoint parts of
    # a split into the shared memory; one task per group keeps the Luigi graph small.
    parts: int = Field(1, ge=1, le=256)
    # VisDial translation context.  Off (default): each global question/answer string is translated
    # once, context-free, whatever dialog it appears in.  On: additionally, each round's question and
    # ground-truth answer as they appear in a dialog's history are translated with that dialog's EN
    # caption as DeepL `context`, keyed by memory_key(text, caption) under the engine's context id;
    # the 100 answer options stay context-free (translating them per dialog would cost ~100x).
    # Only DeepL takes a context, so every engine in `engines` must be DeepL (checked at start-up):
    # one policy per run keeps the engines' VisDial shards comparable.
    visdial_context: bool = False


class CurateSection(Strict):
    """Token statistics and the translator comparison."""

    # None: word-level tokens (the thesis' unit).  A Hugging Face tokenizer id or folder (e.g. Glória's)
    # shows the sequence lengths the trainer will pay for.
    tokenizer: str | None = None
    # Run the hand-written gold PT-PT set (data_manifests/gold/) through every engine that translates.
    gold: bool = True
    seed: int = 0  # which random examples the report shows
    # Neural metrics (translation/comet/, README "Neural metrics"): a COMET checkpoint folder (checkpoints/
    # model.ckpt + hparams.yaml) or a Hugging Face id.  comet_model scores the gold set against its PT-PT
    # references (e.g. Unbabel/wmt22-comet-da); qe_model scores every translated string without a reference
    # (e.g. Unbabel/wmt22-cometkiwi-da, CC BY-NC-SA 4.0).  Unset: the comparison runs without them and says so.
    comet_model: str | None = None
    qe_model: str | None = None
    # A sequence classifier telling PT-PT from PT-BR (a folder or id); its PT-BR probability is evidence for
    # the `brazilian` flag beside the lexical rules.  variety_label names its PT-BR class (found in id2label).
    variety_model: str | None = None
    variety_label: str = "PT-BR"
    variety_threshold: float = Field(0.9, gt=0.0, le=1.0)
    # Where and how the neural models run: "cpu", "cuda" or "cuda:N"; segments per forward pass.
    neural_device: str = "cpu"
    neural_batch_size: int = Field(32, ge=1)


class SampleModelsSection(Strict):
    """The sample's tiny frozen models (built by the pipeline, then loaded like ViT-L/14 and Glória)."""

    clip_width: int = 64
    clip_layers: int = 4
    clip_patch: int = 8
    # Contrastive steps on the training images' English captions (0: keep the random ViT, whose features
    # carry colour but little shape). 300 steps of batch 64 take under a minute on 2 cores.
    clip_steps: int = Field(300, ge=0)
    clip_lr: float = 1e-3
    lm_hidden: int = 128
    lm_layers: int = 2
    lm_heads: int = 4
    lm_vocab: int = 400
    lm_seq_len: int = 96
    # VisDial IT2T feeds caption + 9 rounds of history + an option after the visual tokens.
    lm_max_positions: int = 512
    lm_steps: int = 300
    lm_lr: float = 3e-3
    doc_captions: int = 6  # captions packed into one pretraining document


class TrainingSection(Strict):
    """What the Train stage trains on and where it writes (the model and optimiser are [model], [train])."""

    engine: str = "reference"  # whose translations (shards/<engine>/...)
    data: list[str] = ["cc3m/train"]  # dataset/split shard folders
    run_name: str = "vgloria"
    device: str = "cpu"  # "cuda" on a GPU machine; multi-GPU: `torchrun ... ptvl train`


class EvalSection(Strict):
    benchmarks: list[Literal["cc3m-val", "coco", "visdial", "vqav2"]] = ["cc3m-val", "coco", "visdial", "vqav2"]
    settings: EvalSettings = EvalSettings()


class ConfigError(Exception):
    """A settings file that cannot be used, with a message that says which key and why."""


class Settings(Strict):
    run: RunSection = RunSection()
    sample: SampleSection = SampleSection()
    datasets: DatasetsSection = DatasetsSection()
    fetch: FetchSettings = FetchSettings()
    download: DownloadSettings = DownloadSettings()
    translate: TranslateSection = TranslateSection()
    engines: dict[str, EngineEntry] = {"reference": ReferenceEntry()}
    quality: QualityThresholds = QualityThresholds()
    curate: CurateSection = CurateSection()
    shards: ShardSettings = ShardSettings()
    features: FeatureSettings = FeatureSettings()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    training: TrainingSection = TrainingSection()
    sample_models: SampleModelsSection = SampleModelsSection()
    eval: EvalSection = EvalSection()

    # Filled in by later stages (see their sections below); kept as the place every stage reads.
    config_path: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _reference_always(cls, data: dict) -> dict:
        # The imported `reference` memory is always an engine, also when a profile adds others.
        if isinstance(data, dict) and isinstance(data.get("engines"), dict):
            data = {**data, "engines": {"reference": {"engine": "reference"}, **data["engines"]}}
        return data

    @model_validator(mode="after")
    def _check(self) -> Settings:
        """What every stage that translates relies on; stage-specific checks live in pipeline/checks.py."""
        unknown = [e for e in self.translate.engines if e not in self.engines]
        if unknown:
            raise ValueError(
                f"translate.engines names {unknown}, but only {sorted(self.engines)} are configured "
                "as [engines.<name>] tables"
            )
        # [training] and [features] are checked by the stages that read them (pipeline/checks.py: features,
        # train), so a profile for `--until images` never has to name training data it does not build.
        if self.shards.min_qe is not None and self.curate.qe_model is None:
            raise ValueError("shards.min_qe drops rows by their QE score, but curate.qe_model is not set; set "
                             "curate.qe_model (e.g. \"Unbabel/wmt22-cometkiwi-da\") or remove shards.min_qe")
        # The pipeline derives the caption-context engine from translate.visdial_context; an entry's own
        # use_context would move every context-free translation to another memory id and pay again.
        own = [n for n, e in self.engines.items() if getattr(e, "use_context", False)]
        if own:
            raise ValueError(
                f"engines.{own[0]}.use_context: in a pipeline run, context is switched by "
                "translate.visdial_context = true (the pipeline then builds the caption-context engine "
                "itself); remove use_context from the [engines] table"
            )
        if self.translate.visdial_context:
            cannot = [n for n in self.translate.engines if not self.engines[n].takes_context]
            if cannot:
                raise ValueError(
                    "translate.visdial_context = true passes each VisDial dialog's caption as translation "
                    "context, which only DeepL engines accept; translate.engines also lists "
                    + ", ".join(f"{n!r} (engine {self.engines[n].engine!r})" for n in cannot)
                    + ". A run keeps one VisDial policy so its engines stay comparable: run those engines "
                    "from a profile with visdial_context = false"
                )
        return self

    @property
    def local_files_allowed(self) -> bool:
        """Whether source files may name file:// URLs ([datasets] allow_local_files; unset: the sample only)."""
        allowed = self.datasets.allow_local_files
        return self.sample.enabled if allowed is None else allowed

    @property
    def root(self) -> Path:
        """The run root as an absolute path (load_settings already made it absolute)."""
        root = self.run.root
        return root if root.is_absolute() else (Path.cwd() / root).resolve()

    @property
    def layout(self) -> RunLayout:
        """Every path under the run root."""
        return RunLayout(self.root)

    def fingerprint(self) -> str:
        """A hash of the resolved settings (run root made absolute; the profile's own path left out):
        the identity of the run's Luigi tasks, equal on every machine that reads this profile's content,
        wherever the file is mounted."""
        data = self.model_dump(mode="json")
        data["run"]["root"] = str(self.root)
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _format_errors(err: ValidationError, path: Path) -> str:
    lines = [f"invalid settings in {path}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (typo? see configs/sample.toml for the known keys)"
        lines.append(f"  [{loc}] {msg}")
    return "\n".join(lines)


def load_settings(path: str | Path) -> Settings:
    """Read and validate a TOML profile; raise ConfigError with every problem listed."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"settings file not found: {path}")
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; --config takes a TOML profile file (e.g. configs/sample.toml)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    try:
        settings = Settings.model_validate({**data, "config_path": path.resolve()})
    except ValidationError as e:
        raise ConfigError(_format_errors(e, path)) from None
    # Fix a relative root to the working directory now, so every later use (and every worker forked
    # from here) sees one absolute folder; so are the engines' `{models}` paths (the run's models folder).
    models = settings.layout.models
    return settings.model_copy(update={"run": settings.run.model_copy(update={"root": settings.root}),
                                       "engines": {n: e.at_models(models) for n, e in settings.engines.items()}})


@lru_cache(maxsize=8)
def cached_settings(path: str) -> Settings:
    """Settings by path, parsed once per process (Luigi tasks pass only the path as a parameter, so
    no secret or large object ever becomes a Luigi parameter)."""
    return load_settings(path)


DatasetName = Annotated[str, Literal["cc3m", "coco", "visdial"]]
