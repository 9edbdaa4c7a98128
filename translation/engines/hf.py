"""MADLAD-400 and Narrativa through transformers `generate`: the baseline and the no-CTranslate2 fallback.

It tokenizes, truncates and scores exactly as the CTranslate2 engines do (translation.engines.seq2seq),
so for the same checkpoint and greedy decoding both give the same tokens and the same scores.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from translation.convert import ConversionError, check_precision
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
    token_batches,
)

_DEVICE = re.compile(r"^(cpu|cuda|mps|xpu|meta)(:\d+)?$")


class HFSettings(BaseModel):
    """Settings of the transformers engine. Everything that changes outputs is part of `engine_id`."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="Hugging Face id or local folder of the original (unconverted) checkpoint.")
    kind: ModelKind
    device: str = Field(default="cpu", description="torch device: cpu, cuda, cuda:1, ...")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        default="float32", description="float16 is refused for MADLAD (T5 overflows).",
    )
    batch_size: int = Field(default=32, ge=1, description="Sentences per generate call (sorted by length).")
    num_beams: int = Field(default=1, ge=1, description="1 = greedy.")
    call_size: int = Field(
        default=1024, ge=1,
        description="Texts per engine call, stored as one chunk (a kill loses at most one); sorted by "
        "length inside the call, then cut into batch_size generate calls.",
    )
    max_input_length: int = Field(default=256, ge=2)
    max_decoding_length: int = Field(default=256, ge=1, description="New tokens, language prefix included.")

    @field_validator("device")
    @classmethod
    def _valid_device(cls, value: str) -> str:
        # Checked by pattern, not torch.device(): loading a profile must not import torch (the review app
        # and the CLI's --help stay light).
        if not _DEVICE.match(value):
            raise ValueError(f"device {value!r} is not a torch device (cpu, cuda, cuda:N, mps, xpu:N)")
        return value


def hub_snapshot(repo_id: str, cache_dir: str | Path | None = None) -> str:
    """The commit hash of the snapshot of `repo_id` that loading uses: the folder name under
    ``snapshots/`` that the cache resolves ``config.json`` to (transformers 5 no longer sets
    ``config._commit_hash``, so every revision used to get the same engine id).

    Raises EngineConfigError when the model is not in the local cache (it is after `from_pretrained`)."""
    from huggingface_hub import try_to_load_from_cache  # deferred: the hub client loads only for a hub id

    found = try_to_load_from_cache(repo_id, "config.json", cache_dir=cache_dir)
    if not isinstance(found, str):
        raise EngineConfigError(f"{repo_id}: no config.json in the Hugging Face cache, so its revision is unknown")
    snapshot = Path(found).parent
    if snapshot.parent.name != "snapshots":
        raise EngineConfigError(f"{repo_id}: {found} is not inside a cache snapshot folder")
    return snapshot.name


def model_identity(model: str) -> str:
    """A checkpoint's identity for engine ids: a local folder's name and a digest of its weights and
    tokenizer files, or a hub id with the commit of the cached snapshot loading uses."""
    path = Path(model)
    if path.is_dir():
        names = ["config.json", *TOKENIZER_FILES, *(p.name for p in path.glob("*.safetensors")),
                 *(p.name for p in path.glob("*.bin"))]
        return f"{path.resolve().name}@{folder_digest(path, names)}"
    return f"{model}@{hub_snapshot(model)[:12]}"


def hf_engine_id(settings: HFSettings) -> str:
    """The engine id of these settings, without loading the model."""
    return (f"hf-{settings.kind}:{model_identity(settings.model)}:{settings.dtype}:beam{settings.num_beams}:"
            f"in{settings.max_input_length}:dec{settings.max_decoding_length}")


class HFEngine(Seq2SeqEngine):
    """A seq2seq checkpoint run with `AutoModelForSeq2SeqLM.generate`."""

    def __init__(self, settings: HFSettings) -> None:
        import torch  # deferred: torch and transformers load only when this engine is built
        from transformers import AutoModelForSeq2SeqLM, GenerationConfig

        super().__init__()
        self.settings = settings
        self.kind = settings.kind
        try:
            check_precision(self.kind, settings.dtype, what="dtype")
        except ConversionError as err:
            raise EngineConfigError(str(err)) from err
        if settings.device.startswith("cuda") and not torch.cuda.is_available():
            raise EngineConfigError(f"device {settings.device!r} requested but torch sees no CUDA device")
        try:
            self.tokenizer = load_tokenizer(settings.model, self.kind)
            self.model = AutoModelForSeq2SeqLM.from_pretrained(
                settings.model, dtype=getattr(torch, settings.dtype),
            ).to(settings.device).eval()
        except OSError as err:
            raise EngineConfigError(f"cannot load {self.kind} checkpoint {settings.model!r}: {err}") from err
        self._prefix_ids = target_prefix_ids(self.tokenizer, self.kind)
        # Our own generation config replaces the checkpoint's (which may set beams, lengths or
        # repetition penalties), so outputs depend only on these settings.
        self.model.generation_config = GenerationConfig(
            do_sample=False, num_beams=settings.num_beams, max_new_tokens=settings.max_decoding_length,
            decoder_start_token_id=self.model.config.decoder_start_token_id,
            eos_token_id=self.tokenizer.eos_token_id, pad_token_id=self.tokenizer.pad_token_id,
            forced_bos_token_id=self._prefix_ids[0] if self._prefix_ids else None,
        )
        self._engine_id = hf_engine_id(settings)
        self.stats = EngineStats()

    def translate_detailed(self, texts: list[str]) -> list[Translation]:
        """Translate `texts` (order kept) with token counts and length-limit flags; updates `stats`."""
        if not texts:
            return []
        s = self.settings
        encoded = encode(self.tokenizer, self.kind, texts, s.max_input_length)
        out: list[Translation | None] = [None] * len(texts)
        lengths = [len(ids) for ids in encoded.ids]
        n_prefix = len(self._prefix_ids)  # forced pt_XX: not the model's choice, so not scored
        for batch in token_batches(lengths, max_tokens=sys.maxsize, max_examples=s.batch_size):
            for i, (ids, logprobs) in zip(batch, self._generate([encoded.ids[i] for i in batch]), strict=True):
                ended = bool(ids) and ids[-1] == self.tokenizer.eos_token_id
                out[i] = Translation(
                    text=decode_output(self.tokenizer, ids, self._prefix_ids),
                    score=mean_logprob(sum(logprobs[n_prefix:]), len(logprobs) - n_prefix),
                    input_tokens=lengths[i],
                    output_tokens=len(ids) - n_prefix,
                    input_truncated=encoded.truncated[i],
                    output_capped=not ended and len(ids) >= s.max_decoding_length,
                )
        self.stats.add(out)
        return out  # type: ignore[return-value]

    def _generate(self, batch_ids: list[list[int]]) -> list[tuple[list[int], list[float]]]:
        """Output ids (after the decoder start token, up to and including eos) and their log-probs.

        The log-probs are the model's own (log-softmax of the raw logits, before any logits processor),
        the same quantity CTranslate2 scores.
        """
        import torch  # deferred: see __init__

        inputs = self.tokenizer.pad({"input_ids": batch_ids}, return_tensors="pt").to(self.settings.device)
        with torch.inference_mode():
            greedy = self.settings.num_beams == 1
            generated = self.model.generate(**inputs, return_dict_in_generate=True, output_logits=greedy)
            sequences = generated.sequences
            if greedy:
                logits = torch.stack(generated.logits, dim=1)  # (B, T, V), raw, one step per new token
            else:  # beam search: rescore the chosen sequences with one teacher-forced pass
                logits = self.model(**inputs, decoder_input_ids=sequences[:, :-1]).logits
            new = sequences[:, 1:]
            logprobs = torch.log_softmax(logits.float(), dim=-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)
        eos = self.tokenizer.eos_token_id
        rows = []
        for ids, lps in zip(new.tolist(), logprobs.tolist(), strict=True):
            n = ids.index(eos) + 1 if eos in ids else len(ids)
            rows.append((ids[:n], lps[:n]))
        return rows
