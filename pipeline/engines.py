"""The `[engines.<name>]` tables of a run profile: each entry is an engine's settings plus what the
pipeline asks of it, so a setting becomes an engine in one place (`build`) and every caller asks the entry
(`engine_id`, `check`, `price_per_million`, `context_variant`), never its class.

Each table picks an implementation with `engine = "..."`; the rest of the table is that engine's own
settings model, so unknown keys fail at start-up.  `check` runs before any task does: a missing DeepL key
or model folder is a configuration error at start-up, never a crash hours into a run.

A new local engine: its module in `translation/engines/` (settings + an `Engine`), and here an entry class
and its name in `EngineEntry` -- two files.

A model path may start with `{models}`, the run's models folder (`load_settings` resolves it): the sample's
engines run the tiny translators the DAG trains there, and their start-up check accepts those folders unbuilt.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from pipeline.layout import RunLayout
from pipeline.sample.translators import sample_folders
from translation.engines.base import Engine
from translation.engines.ct2 import CT2Settings, MadladEngine, NarrativaEngine, ct2_engine_id
from translation.engines.deepl_api import DeepLEngine, DeepLSettings, engine_id_for
from translation.engines.hf import HFEngine, HFSettings, hf_engine_id
from translation.engines.llm import LLMEngine
from translation.engines.llm_prompt import PromptError
from translation.engines.llm_settings import LLMSettings, llm_engine_id, model_folder, prompt_spec
from translation.engines.reference import ReferenceEngine
from translation.engines.seq2seq import ModelKind
from translation.errors import ConfigurationError
from translation.secrets import load_secret


class EntryBehaviour:
    """What the pipeline asks of every engine entry; the defaults are those of a local engine."""

    engine: str
    # False: the engine only serves translations imported into the memory (nothing is sent, no gold set).
    translates: ClassVar[bool] = True
    # True: the engine accepts a per-request context (VisDial's caption, translate.visdial_context).
    takes_context: ClassVar[bool] = False
    # True: a paid API; its key and remaining quota are checked before a run sends anything (pre-flight).
    paid: ClassVar[bool] = False
    # The slow-to-import modules `build` loads, imported once before Luigi forks the task processes
    # (PtvlTask.preload).
    preload: ClassVar[tuple[str, ...]] = ()

    def build(self, name: str) -> Engine:
        """Instantiate the engine (loads the model / opens the API client)."""
        raise NotImplementedError

    def engine_id(self, name: str) -> str:
        """The engine id `build(name).engine_id` will have, computed without a key or loading a model (dry
        runs, memory look-ups, reports)."""
        raise NotImplementedError

    def check(self, name: str, sources: Path, *, sample: bool) -> None:
        """Raise ConfigurationError, saying what to do, when the engine cannot possibly run."""

    def price_per_million(self) -> float:
        """EUR per million billed characters (0 for local engines)."""
        return 0.0

    def model_folder(self) -> Path | None:
        """The local model folder the engine reads (None: none, or a hub id)."""
        return None

    def at_models(self, models: Path) -> Self:
        """This entry with `{models}` in its model path replaced by the run's models folder."""
        return self

    def context_variant(self, name: str) -> Self:
        """This entry translating with a context, or ConfigurationError when the engine takes none."""
        raise ConfigurationError(
            f"engine {name!r} ({self.engine}) cannot take a translation context, but translate.visdial_context "
            "= true; translate VisDial with it from a profile with visdial_context = false")


class ReferenceEntry(EntryBehaviour, BaseModel):
    """Translations imported from a Parquet memory export (text_hash, text_en, text_pt)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    engine: Literal["reference"] = "reference"
    # {sources} is the run's sources folder (the sample writes reference_memory.parquet there).
    memory: str = "{sources}/reference_memory.parquet"

    translates: ClassVar[bool] = False

    def memory_path(self, sources: Path) -> Path:
        return Path(self.memory.replace("{sources}", str(sources)))

    def build(self, name: str) -> Engine:
        return ReferenceEngine(name)

    def engine_id(self, name: str) -> str:
        return name

    def check(self, name: str, sources: Path, *, sample: bool) -> None:
        path = self.memory_path(sources)
        if not sample and not path.exists():  # the sample writes its reference memory itself
            raise ConfigurationError(f"engine {name!r}: reference memory {path} does not exist")


class DeepLEntry(EntryBehaviour, DeepLSettings):
    engine: Literal["deepl"] = "deepl"

    takes_context: ClassVar[bool] = True
    paid: ClassVar[bool] = True

    def build(self, name: str) -> Engine:
        return DeepLEngine(self)

    def engine_id(self, name: str) -> str:
        return engine_id_for(self)  # a glossary given by name keeps its name here (no key to resolve it)

    def check(self, name: str, sources: Path, *, sample: bool) -> None:
        load_secret(env=self.auth_key_env, file=self.auth_key_file, what=f"DeepL key for engine {name!r}")

    def price_per_million(self) -> float:
        return self.price_per_million_chars

    def context_variant(self, name: str) -> Self:
        return self.model_copy(update={"use_context": True})


def _sample_builds(folder: Path | None, sources: Path, sample: bool) -> bool:
    """Whether the sample run builds `folder` itself (pipeline/tasks/sample_translators.py): accepted unbuilt."""
    return sample and folder is not None and folder.resolve() in sample_folders(RunLayout(sources.parent).models)


class _CT2Entry(EntryBehaviour, CT2Settings):
    kind: ClassVar[ModelKind]
    preload: ClassVar[tuple[str, ...]] = ("ctranslate2", "transformers")  # transformers: the tokenizer

    def engine_id(self, name: str) -> str:
        return ct2_engine_id(self, self.kind)

    def model_folder(self) -> Path | None:
        return Path(self.model_dir)

    def at_models(self, models: Path) -> Self:
        return self.model_copy(update={"model_dir": Path(str(self.model_dir).replace("{models}", str(models)))})

    def check(self, name: str, sources: Path, *, sample: bool) -> None:
        if _sample_builds(self.model_folder(), sources, sample):
            return
        if not (Path(self.model_dir) / "model.bin").exists():
            raise ConfigurationError(
                f"engine {name!r}: {self.model_dir} is not a CTranslate2 model folder; create it with "
                f"`ptvl convert-model {self.kind} --from <HF id or folder> --to {self.model_dir}`")


class MadladEntry(_CT2Entry):
    """google/madlad400-3b-mt converted with `ptvl convert-model madlad`."""

    engine: Literal["madlad"] = "madlad"
    kind: ClassVar[ModelKind] = "madlad"

    def build(self, name: str) -> Engine:
        return MadladEngine(self)


class NarrativaEntry(_CT2Entry):
    """Narrativa/mbart-large-50-finetuned-opus-en-pt-translation converted with `ptvl convert-model narrativa`."""

    engine: Literal["narrativa"] = "narrativa"
    kind: ClassVar[ModelKind] = "narrativa"

    def build(self, name: str) -> Engine:
        return NarrativaEngine(self)


class HFEntry(EntryBehaviour, HFSettings):
    """The same seq2seq models through transformers generate (the baseline, and the fallback)."""

    engine: Literal["hf"] = "hf"
    preload: ClassVar[tuple[str, ...]] = ("torch", "transformers.modeling_utils")

    def build(self, name: str) -> Engine:
        return HFEngine(self)

    def engine_id(self, name: str) -> str:
        return hf_engine_id(self)

    def at_models(self, models: Path) -> Self:
        return self.model_copy(update={"model": self.model.replace("{models}", str(models))})

    def check(self, name: str, sources: Path, *, sample: bool) -> None:
        p = Path(self.model)
        if (p.is_absolute() or self.model.startswith(".")) and not p.exists():
            raise ConfigurationError(f"engine {name!r}: model folder {self.model} does not exist")


class LLMEntry(EntryBehaviour, LLMSettings):
    """Any Hugging Face causal LM (Tradutor, EuroLLM, Tower, Gervásio) prompted to translate; see
    translation/engines/llm.py."""

    engine: Literal["llm"] = "llm"
    preload: ClassVar[tuple[str, ...]] = ("ctranslate2", "torch", "transformers.modeling_utils")

    def build(self, name: str) -> Engine:
        return LLMEngine(self)

    def engine_id(self, name: str) -> str:
        return llm_engine_id(self)

    def model_folder(self) -> Path | None:
        path = Path(self.model).expanduser()
        if path.is_absolute() or self.model.startswith((".", "~")) or path.exists():
            return path  # a local folder, also before it exists
        return model_folder(self.model)  # a hub id: its cached snapshot, if any

    def at_models(self, models: Path) -> Self:
        return self.model_copy(update={"model": self.model.replace("{models}", str(models))})

    def check(self, name: str, sources: Path, *, sample: bool) -> None:
        folder = self.model_folder()
        if _sample_builds(folder, sources, sample):
            return
        if folder is not None and not folder.is_dir():
            folder = None
        if folder is None and (self.backend == "ct2" or Path(self.model).is_absolute() or self.model.startswith(".")):
            raise ConfigurationError(
                f"engine {name!r}: model folder {self.model} does not exist"
                + (f"; create it with `ptvl convert-model llm --from <HF id or folder> --to {self.model}`"
                   if self.backend == "ct2" else ""))
        if self.backend == "ct2" and not (folder / "model.bin").is_file():
            raise ConfigurationError(f"engine {name!r}: {folder} is not a CTranslate2 model folder; convert the "
                                     f"checkpoint with `ptvl convert-model llm --from <it> --to {folder}`")
        spec = prompt_spec(self)
        try:
            if folder is not None or spec.template is not None:  # a hub id not downloaded yet: checked at build
                spec.check(self.model)
        except PromptError as e:
            raise ConfigurationError(f"engine {name!r}: {e}") from None


EngineEntry = Annotated[
    ReferenceEntry | DeepLEntry | MadladEntry | NarrativaEntry | HFEntry | LLMEntry, Field(discriminator="engine")
]
