"""The `[engines.<name>]` tables of a run profile: each entry is an engine's settings plus what the
pipeline asks of it, so a setting becomes an engine in one place (`build`) and every caller asks the entry
(`engine_id`, `check`, `price_per_million`, `context_variant`), never its class.

Each table picks an implementation with `engine = "..."`; the rest of the table is that engine's own
settings model, so unknown keys fail at start-up.  `check` runs before any task does: a missing DeepL key
or model folder is a configuration error at start-up, never a crash hours into a run.

A new local engine: its module in `translation/engines/` (settings + an `Engine`), and here an entry class
and its name in `EngineEntry` -- two files.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from translation.engines.base import Engine
from translation.engines.ct2 import CT2Settings, MadladEngine, NarrativaEngine, ct2_engine_id
from translation.engines.deepl_api import DeepLEngine, DeepLSettings, engine_id_for
from translation.engines.hf import HFEngine, HFSettings, hf_engine_id
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


class _CT2Entry(EntryBehaviour, CT2Settings):
    kind: ClassVar[ModelKind]

    def engine_id(self, name: str) -> str:
        return ct2_engine_id(self, self.kind)

    def check(self, name: str, sources: Path, *, sample: bool) -> None:
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

    def build(self, name: str) -> Engine:
        return HFEngine(self)

    def engine_id(self, name: str) -> str:
        return hf_engine_id(self)

    def check(self, name: str, sources: Path, *, sample: bool) -> None:
        p = Path(self.model)
        if (p.is_absolute() or self.model.startswith(".")) and not p.exists():
            raise ConfigurationError(f"engine {name!r}: model folder {self.model} does not exist")


EngineEntry = Annotated[
    ReferenceEntry | DeepLEntry | MadladEntry | NarrativaEntry | HFEntry, Field(discriminator="engine")
]
