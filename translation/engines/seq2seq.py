"""What the CTranslate2 and transformers engines share: model-family prompts, truncation, scores, stats.

Both engines tokenize with the checkpoint's own Hugging Face tokenizer and truncate here, before
the model sees the input, so the two agree token for token and every cut is counted instead of
CTranslate2 silently truncating at its 1024-token default.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from translation.engines.base import BaseEngine, Result
from translation.errors import ConfigurationError

ModelKind = Literal["madlad", "narrativa"]

# MADLAD picks its target language with a `<2xx>` tag at the start of the source text.
MADLAD_PREFIX = "<2pt> "
# mBART-50: the tokenizer starts the source with en_XX; the decoder starts `</s> pt_XX`.
NARRATIVA_SRC_LANG = "en_XX"
NARRATIVA_TGT_LANG = "pt_XX"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


class EngineConfigError(ConfigurationError, ValueError):
    """An engine cannot start with these settings or model files (raised at start-up, never mid-run)."""


@dataclass(frozen=True)
class Translation:
    """One translated string with what the engine saw: token counts and whether a length limit hit.

    input_truncated: the source had more than `max_input_length` tokens and its end was dropped.
    output_capped: decoding stopped at `max_decoding_length` without an end token (the translation
    is probably cut short).
    """

    text: str
    score: float | None
    input_tokens: int
    output_tokens: int
    input_truncated: bool
    output_capped: bool

    def result(self) -> Result:
        return Result(text=self.text, score=self.score, billed_chars=0, input_truncated=self.input_truncated)


class Seq2SeqSettings(Protocol):
    """What the shared engine reads of either engine's settings (CT2Settings, HFSettings)."""

    call_size: int


class Seq2SeqEngine(BaseEngine):
    """What both engines expose on top of `translate_detailed`: the Engine protocol's members.

    Subclasses set `_engine_id` and `stats` in `__init__` and implement `translate_detailed`.
    """

    _engine_id: str
    stats: EngineStats
    settings: Seq2SeqSettings

    @property
    def engine_id(self) -> str:
        return self._engine_id

    @property
    def call_size(self) -> int:
        """Texts per `translate` call that `translation.runner` makes (and stores as one chunk)."""
        return self.settings.call_size

    def translate(self, texts: list[str], context: str | None = None) -> list[Result]:
        if context is not None:
            raise ValueError(f"{self._engine_id} takes no translation context")
        return [t.result() for t in self.translate_detailed(texts)]

    def translate_detailed(self, texts: list[str]) -> list[Translation]:
        """Translate `texts` (order kept) with token counts and length-limit flags; updates `stats`."""
        raise NotImplementedError


@dataclass
class EngineStats:
    """Running counts over an engine's lifetime; they add up across calls (and shards, with `+`)."""

    inputs: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    truncated_inputs: int = 0
    capped_outputs: int = 0

    def add(self, translations: Iterable[Translation]) -> None:
        for t in translations:
            self.inputs += 1
            self.input_tokens += t.input_tokens
            self.output_tokens += t.output_tokens
            self.truncated_inputs += t.input_truncated
            self.capped_outputs += t.output_capped

    def __add__(self, other: EngineStats) -> EngineStats:
        return type(self)(**{k: v + getattr(other, k) for k, v in asdict(self).items()})

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class Encoded:
    """Tokenized sources (ids, special tokens included), after truncation."""

    ids: list[list[int]]
    truncated: list[bool] = field(default_factory=list)


def load_tokenizer(folder: str | Path, kind: ModelKind):
    """The checkpoint's own tokenizer; for mBART-50 set to English source and Portuguese target."""
    from transformers import (
        AutoTokenizer,  # deferred: transformers loads only when a tokenizer or model is needed
    )

    if kind == "narrativa":
        return AutoTokenizer.from_pretrained(str(folder), src_lang=NARRATIVA_SRC_LANG, tgt_lang=NARRATIVA_TGT_LANG)
    return AutoTokenizer.from_pretrained(str(folder))


def encode(tokenizer, kind: ModelKind, texts: list[str], max_input_length: int) -> Encoded:
    """Token ids for each text, cut to `max_input_length` keeping the final special token (`</s>`).

    Keeping `</s>` means a truncated input still looks like a complete sentence to the encoder,
    as in training; the leading en_XX (mBART) survives because the cut is at the end.
    """
    if not texts:
        return Encoded(ids=[])
    prefix = MADLAD_PREFIX if kind == "madlad" else ""
    all_ids = tokenizer([prefix + t for t in texts], add_special_tokens=True)["input_ids"]
    out = Encoded(ids=[])
    for ids in all_ids:
        cut = len(ids) > max_input_length
        out.ids.append(ids[: max_input_length - 1] + ids[-1:] if cut else list(ids))
        out.truncated.append(cut)
    return out


def target_prefix_ids(tokenizer, kind: ModelKind) -> list[int]:
    """Tokens forced at the start of the output (after the decoder start token)."""
    return [tokenizer.convert_tokens_to_ids(NARRATIVA_TGT_LANG)] if kind == "narrativa" else []


def decode_output(tokenizer, ids: list[int], prefix: list[int]) -> str:
    """Text of an output without the forced language token and special tokens (eos, stray lang codes)."""
    if prefix and ids[: len(prefix)] == prefix:
        ids = ids[len(prefix):]
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


def mean_logprob(total: float, n_tokens: int) -> float | None:
    """Mean token log-probability; None when nothing was scored or the sum is not a number."""
    if n_tokens <= 0 or not math.isfinite(total):
        return None
    return total / n_tokens


def token_batches(lengths: list[int], max_tokens: int, max_examples: int | None = None) -> list[list[int]]:
    """Indices grouped into batches of similar length whose padded size stays within `max_tokens`.

    Sorting by length first keeps padding small; a single input longer than `max_tokens` still
    gets a batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[i]  # ascending order: the newest item is the longest in the batch
        full = max_examples is not None and len(current) >= max_examples
        if current and ((len(current) + 1) * longest > max_tokens or full):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def folder_digest(folder: Path, names: Iterable[str]) -> str:
    """12-hex-digit blake2b of the named files present in `folder` (names and bytes), for engine ids."""
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(set(names)):
        path = folder / name
        if not path.is_file():
            continue
        digest.update(name.encode() + b"\0")
        with path.open("rb") as handle:
            while block := handle.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()[:12]
