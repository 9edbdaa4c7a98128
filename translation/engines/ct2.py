"""MADLAD-400 and Narrativa (mBART-50) translators on CTranslate2, sharing one base engine.

A model folder is made by `ptvl convert-model` (translation.convert): the CTranslate2 model plus
the checkpoint's tokenizer. Inputs are tokenized and truncated by us (counted in `stats`), then
handed to `translate_batch` in one call so CTranslate2 sorts them by length, batches them by
tokens and spreads the batches over every device in `device_index`; results come back in input order.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from translation.convert import MANIFEST, ConversionError, check_precision
from translation.engines.seq2seq import (
    TOKENIZER_FILES,
    EngineConfigError,
    EngineStats,
    ModelKind,
    Seq2SeqEngine,
    Translation,
    decode_output,
    encode,
    folder_digest,
    load_tokenizer,
    mean_logprob,
    target_prefix_ids,
)

ComputeType = Literal[
    "float32", "float16", "bfloat16", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16",
]


class CT2Settings(BaseModel):
    """Settings of a CTranslate2 engine. Everything that changes outputs is part of `engine_id`."""

    model_config = ConfigDict(extra="forbid")

    model_dir: Path = Field(description="Folder written by `ptvl convert-model` (model.bin + tokenizer).")
    device: Literal["cpu", "cuda"] = "cpu"
    device_index: list[int] = Field(default=[0], min_length=1, description="GPUs; one model replica on each.")
    compute_type: ComputeType = Field(
        default="int8",
        description="int8 on CPU; bfloat16 or int8_bfloat16 on GPU (never float16 for MADLAD).",
    )
    inter_threads: int = Field(
        default=1, ge=1,
        description="Batches run in parallel (replicas per device). For bulk CPU jobs, cores with "
        "intra_threads=1 is fastest (bench/RESULTS.md: 3.8x vs 3.25x over transformers with 2 cores).",
    )
    intra_threads: int = Field(default=0, ge=0, description="Threads per batch on CPU; 0 = CTranslate2 default.")
    beam_size: int = Field(default=1, ge=1, description="1 = greedy.")
    max_batch_tokens: int = Field(default=4096, ge=1, description="Source tokens per batch (batch_type='tokens').")
    max_input_length: int = Field(default=256, ge=2, description="Source tokens kept; longer inputs are counted.")
    max_decoding_length: int = Field(
        default=256, ge=1, description="Output tokens (language prefix and end token included); hits are counted.",
    )
    return_scores: bool = Field(default=True, description="Mean token log-probability in Result.score.")
    call_size: int = Field(
        default=4096, ge=1,
        description="Texts per engine call, stored as one chunk (a kill loses at most one). Thousands, so "
        "CTranslate2 sorts by length, fills max_batch_tokens batches and keeps every replica busy "
        "(bench/RESULTS.md: 50-text calls leave replicas idle).",
    )


def _convert_hint(kind: str, model_dir: Path) -> str:
    source = {"madlad": "google/madlad400-3b-mt",
              "narrativa": "Narrativa/mbart-large-50-finetuned-opus-en-pt-translation"}[kind]
    return f"create it with: ptvl convert-model {kind} --from {source} --to {model_dir} --quantization int8"


MODEL_FILES = ("config.json", "model.bin", "shared_vocabulary.json", "shared_vocabulary.txt", *TOKENIZER_FILES)


def ct2_engine_id(settings: CT2Settings, kind: ModelKind) -> str:
    """The engine id of a CTranslate2 model folder with these settings, without loading the model: the folder's
    name and a digest of its files (a re-converted model is a new engine), and every setting that changes
    the output."""
    model_dir = settings.model_dir
    digest = folder_digest(model_dir, MODEL_FILES)
    return (f"ct2-{kind}:{model_dir.resolve().name}@{digest}:{settings.compute_type}:"
            f"beam{settings.beam_size}:in{settings.max_input_length}:dec{settings.max_decoding_length}")


class CT2Engine(Seq2SeqEngine):
    """Base CTranslate2 engine; subclasses fix the model family (`kind`)."""

    kind: ClassVar[ModelKind]

    def __init__(self, settings: CT2Settings) -> None:
        import ctranslate2  # deferred: a compiled runtime only the CTranslate2 engines need

        super().__init__()
        self.settings = settings
        model_dir = settings.model_dir
        self._check_model_dir(model_dir)
        try:
            check_precision(self.kind, settings.compute_type, what="compute_type")
        except ConversionError as err:
            raise EngineConfigError(str(err)) from err
        try:
            supported = ctranslate2.get_supported_compute_types(settings.device, settings.device_index[0])
        except (RuntimeError, ValueError) as err:
            raise EngineConfigError(f"CTranslate2 cannot use device {settings.device!r}: {err}") from err
        if settings.compute_type not in supported:
            raise EngineConfigError(
                f"compute_type {settings.compute_type!r} is not supported on {settings.device} here; "
                f"supported: {', '.join(sorted(supported))}"
            )
        self.tokenizer = load_tokenizer(model_dir, self.kind)
        self.translator = ctranslate2.Translator(
            str(model_dir), device=settings.device, device_index=settings.device_index,
            compute_type=settings.compute_type, inter_threads=settings.inter_threads,
            intra_threads=settings.intra_threads,
        )
        self._prefix_ids = target_prefix_ids(self.tokenizer, self.kind)
        self._prefix_tokens = self.tokenizer.convert_ids_to_tokens(self._prefix_ids)
        self._engine_id = ct2_engine_id(settings, self.kind)
        self.stats = EngineStats()

    def _check_model_dir(self, model_dir: Path) -> None:
        if not model_dir.is_dir():
            raise EngineConfigError(f"{self.kind} model folder {model_dir} does not exist; "
                                    + _convert_hint(self.kind, model_dir))
        missing = [n for n in ("model.bin", "config.json", *TOKENIZER_FILES) if not (model_dir / n).is_file()]
        if missing:
            raise EngineConfigError(
                f"{model_dir} is not a CTranslate2 {self.kind} model folder (missing {', '.join(missing)}); "
                + _convert_hint(self.kind, model_dir)
            )
        manifest = model_dir / MANIFEST
        if manifest.is_file():
            kind = json.loads(manifest.read_text()).get("kind")
            if kind != self.kind:
                raise EngineConfigError(f"{model_dir} holds a {kind} model, not {self.kind}")

    def translate_detailed(self, texts: list[str]) -> list[Translation]:
        """Translate `texts` (order kept) with token counts and length-limit flags; updates `stats`."""
        if not texts:
            return []
        s = self.settings
        encoded = encode(self.tokenizer, self.kind, texts, s.max_input_length)
        source = [self.tokenizer.convert_ids_to_tokens(ids) for ids in encoded.ids]
        target_prefix = [list(self._prefix_tokens) for _ in texts] if self._prefix_tokens else None
        results = self.translator.translate_batch(
            source, target_prefix, max_batch_size=s.max_batch_tokens, batch_type="tokens",
            beam_size=s.beam_size, max_input_length=s.max_input_length,
            max_decoding_length=s.max_decoding_length, return_scores=s.return_scores, return_end_token=True,
        )
        eos = self.tokenizer.eos_token
        out = []
        for ids, cut, result in zip(encoded.ids, encoded.truncated, results, strict=True):
            hypothesis = result.hypotheses[0]  # language prefix + output + end token when one was produced
            ended = bool(hypothesis) and hypothesis[-1] == eos
            out_ids = self.tokenizer.convert_tokens_to_ids(hypothesis)
            n_generated = len(hypothesis) - len(self._prefix_ids)
            score = None
            if s.return_scores and result.scores:
                # CTranslate2 (length_penalty=1) returns the log-prob sum of the generated tokens
                # (end token in, forced prefix out) divided by the whole hypothesis length; undo
                # the division and take the mean over the generated tokens only.
                score = mean_logprob(float(result.scores[0]) * len(hypothesis), n_generated)
            out.append(Translation(
                text=decode_output(self.tokenizer, out_ids, self._prefix_ids),
                score=score,
                input_tokens=len(ids),
                output_tokens=n_generated,
                input_truncated=cut,
                output_capped=not ended and len(hypothesis) >= s.max_decoding_length,
            ))
        self.stats.add(out)
        return out


class MadladEngine(CT2Engine):
    """google/madlad400-3b-mt: T5 with the `<2pt>` target tag (Brazilian-leaning Portuguese)."""

    kind = "madlad"


class NarrativaEngine(CT2Engine):
    """Narrativa/mbart-large-50-finetuned-opus-en-pt-translation: mBART-50, en_XX -> pt_XX."""

    kind = "narrativa"
