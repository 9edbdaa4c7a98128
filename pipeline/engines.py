"""Engine entries of the settings file, and the one place that builds engines from them.

Each `[engines.<name>]` table picks an implementation with `engine = "..."`; the rest of the table is
that engine's own settings model, so unknown keys fail at start-up.  `check_engine` runs before any
task does: a missing DeepL key or model folder is a configuration error at start-up, never a crash
hours into a run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from translation.engines.base import Engine
from translation.engines.ct2 import CT2Settings
from translation.engines.deepl_api import DeepLSettings
from translation.engines.hf import HFSettings
from translation.errors import ConfigurationError


class ReferenceEntry(BaseModel):
    """Translations imported from a Parquet memory export (text_hash, text_en, text_pt)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    engine: Literal["reference"] = "reference"
    # {sources} is the run's sources folder (the sample writes reference_memory.parquet there).
    memory: str = "{sources}/reference_memory.parquet"


class DeepLEntry(DeepLSettings):
    engine: Literal["deepl"] = "deepl"


class MadladEntry(CT2Settings):
    """google/madlad400-3b-mt converted with `ptvl convert-model madlad`."""

    engine: Literal["madlad"] = "madlad"


class NarrativaEntry(CT2Settings):
    """Narrativa/mbart-large-50-finetuned-opus-en-pt-translation converted with `ptvl convert-model narrativa`."""

    engine: Literal["narrativa"] = "narrativa"


class HFEntry(HFSettings):
    """The same seq2seq models through transformers generate (the baseline, and the fallback)."""

    engine: Literal["hf"] = "hf"


EngineEntry = Annotated[
    ReferenceEntry | DeepLEntry | MadladEntry | NarrativaEntry | HFEntry, Field(discriminator="engine")
]


def reference_memory_path(entry: ReferenceEntry, sources: Path) -> Path:
    return Path(entry.memory.replace("{sources}", str(sources)))


def check_engine(name: str, entry: EngineEntry, sources: Path, *, sample: bool) -> None:
    """Fail fast, with a message that says what to do, when an engine cannot possibly run."""
    if isinstance(entry, ReferenceEntry):
        path = reference_memory_path(entry, sources)
        if not sample and not path.exists():
            raise ConfigurationError(f"engine {name!r}: reference memory {path} does not exist")
    elif isinstance(entry, DeepLEntry):
        from translation.secrets import load_secret

        load_secret(env=entry.auth_key_env, file=entry.auth_key_file, what=f"DeepL key for engine {name!r}")
    elif isinstance(entry, MadladEntry | NarrativaEntry):
        if not (Path(entry.model_dir) / "model.bin").exists():
            raise ConfigurationError(
                f"engine {name!r}: {entry.model_dir} is not a CTranslate2 model folder; create it with "
                f"`ptvl convert-model {entry.engine} --from <HF id or folder> --to {entry.model_dir}`"
            )
    elif isinstance(entry, HFEntry):
        p = Path(entry.model)
        if (p.is_absolute() or entry.model.startswith(".")) and not p.exists():
            raise ConfigurationError(f"engine {name!r}: model folder {entry.model} does not exist")


def build_engine(name: str, entry: EngineEntry) -> Engine:
    """Instantiate the engine (loads models / opens the API client)."""
    if isinstance(entry, ReferenceEntry):
        from translation.engines.reference import ReferenceEngine

        return ReferenceEngine(name)
    if isinstance(entry, DeepLEntry):
        from translation.engines.deepl_api import DeepLEngine

        return DeepLEngine(DeepLSettings(**entry.model_dump(exclude={"engine"})))
    if isinstance(entry, MadladEntry):
        from translation.engines.ct2 import MadladEngine

        return MadladEngine(CT2Settings(**entry.model_dump(exclude={"engine"})))
    if isinstance(entry, NarrativaEntry):
        from translation.engines.ct2 import NarrativaEngine

        return NarrativaEngine(CT2Settings(**entry.model_dump(exclude={"engine"})))
    from translation.engines.hf import HFEngine

    return HFEngine(HFSettings(**entry.model_dump(exclude={"engine"})))


def price_per_million(entry: EngineEntry) -> float:
    """EUR per million billed characters (0 for local engines)."""
    return entry.price_per_million_chars if isinstance(entry, DeepLEntry) else 0.0
