"""MADLAD-400 and Narrativa (mBART-50) translators on CTranslate2, sharing one base engine.

A model folder is made by `ptvl convert-model` (translation.convert): the CTranslate2 model plus
the checkpoint's tokenizer. Inputs are tokenized and truncated by us (counted in `stats`), then
handed to `translate_batch` in one call so CTranslate2 sorts them by length, batches them by
tokens and spreads the batches over every device in `device_index`; results come back in input order.
"""
from __future__ import annotations

import json
import os
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
    compute_type: ComputeType | Literal["auto"] = Field(
        default="auto",
        description="auto: int8 on CPU; on GPU int8_float16, or bfloat16 for MADLAD (T5 overflows in float16). "
        "The resolved type is part of the engine id, so `auto` and its value share one memory.",
    )
    inter_threads: int | None = Field(
        default=None, ge=1,
        description="Batches run in parallel (replicas per device). None: on CPU, one thread per core split as "
        "min(cores, 4) replicas x the rest in intra_threads (bench/RESULTS.md: 2 cores as 2 replicas x 1 thread "
        "beat 1 x 2, 3.81x vs 3.25x over transformers); on GPU one replica per device.",
    )
    intra_threads: int | None = Field(
        default=None, ge=0, description="Threads per batch on CPU; None: cores / inter_threads (at least 1).")
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


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask: a container's or taskset's share, not the host's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity on macOS
        return max(1, os.cpu_count() or 1)


def cpu_threads(device: str, inter: int | None, intra: int | None, cores: int | None = None) -> tuple[int, int]:
    """(inter_threads, intra_threads) for CTranslate2: given values are kept; on CPU the rest is filled so
    that threads = cores (oversubscribed OpenMP threads on a shared box only fight each other), with at most
    4 replicas (each holds its own working memory); on GPU one replica per device and CTranslate2's default."""
    if device != "cpu":
        return inter or 1, 0 if intra is None else intra
    cores = cores or usable_cores()
    inter = inter or min(cores, 4)
    return inter, max(1, cores // inter) if intra is None else intra


def resolve_compute_type(compute_type: str, device: str, kind: str) -> str:
    """`auto` made concrete from the device and model kind alone (never from probing the hardware), so the
    engine id is computed offline: int8 on CPU; on GPU bfloat16 for MADLAD (float16 overflows T5) and
    int8_float16 for the others."""
    if compute_type != "auto":
        return compute_type
    if device == "cpu":
        return "int8"
    return "bfloat16" if kind == "madlad" else "int8_float16"


def check_compute_type(compute_type: str, device: str, index: int) -> None:
    """EngineConfigError when CTranslate2 cannot run `compute_type` on this device (e.g. int8_float16 on a GPU
    without int8 kernels), naming the types it can."""
    import ctranslate2  # deferred: a compiled runtime only the CTranslate2 engines need

    try:
        supported = ctranslate2.get_supported_compute_types(device, index)
    except (RuntimeError, ValueError) as err:
        raise EngineConfigError(f"CTranslate2 cannot use device {device!r}: {err}") from err
    if compute_type not in supported:
        raise EngineConfigError(f"compute_type {compute_type!r} is not supported on {device} here; "
                                f"supported: {', '.join(sorted(supported))}")


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
    compute_type = resolve_compute_type(settings.compute_type, settings.device, kind)
    return (f"ct2-{kind}:{model_dir.resolve().name}@{digest}:{compute_type}:"
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
        compute_type = resolve_compute_type(settings.compute_type, settings.device, self.kind)
        try:
            check_precision(self.kind, compute_type, what="compute_type")
        except ConversionError as err:
            raise EngineConfigError(str(err)) from err
        check_compute_type(compute_type, settings.device, settings.device_index[0])
        self.tokenizer = load_tokenizer(model_dir, self.kind)
        inter, intra = cpu_threads(settings.device, settings.inter_threads, settings.intra_threads)
        self.translator = ctranslate2.Translator(
            str(model_dir), device=settings.device, device_index=settings.device_index,
            compute_type=compute_type, inter_threads=inter, intra_threads=intra,
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
