"""The LLM engine's settings and engine id, computed offline from the model's files (no transformers, no torch).

`LLMSettings` is the `[engines.<name>]` table of `engine = "llm"`; `llm_engine_id` names the backend, the model
revision (a folder's digest or the cached hub commit), the precision, the beam, the prompt's digest and the
decoding settings' digest, so a changed prompt is a new engine and never reads the old prompt's memory.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from translation.engines.ct2 import ComputeType, resolve_compute_type
from translation.engines.hf import hub_snapshot
from translation.engines.llm_prompt import DEFAULT_MESSAGE, PromptSpec, read_chat_template
from translation.engines.seq2seq import TOKENIZER_FILES, folder_digest

Backend = Literal["ct2", "hf", "vllm"]
# Files that change what a model folder generates besides its weights: the tokenizer, its chat template and the
# end tokens of generation_config.json.
LLM_FILES = ("config.json", "model.bin", "vocabulary.json", "generation_config.json", "chat_template.jinja",
             *TOKENIZER_FILES)


class LLMSettings(BaseModel):
    """Settings of the LLM engine. Everything that changes outputs is part of `engine_id`."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="backend ct2: a folder from `ptvl convert-model llm`; hf, vllm: a Hugging Face "
                       "id or folder.")
    backend: Backend = Field(default="ct2", description="ct2 (CTranslate2 Generator, CPU and GPU), hf "
                             "(transformers generate: families CTranslate2 cannot convert) or vllm (optional extra).")
    prompt: str | None = Field(
        default=None, description='A prompt template with {source}, e.g. "Translate from English to European '
        'Portuguese:\\n{source}\\n"; None: the model\'s chat template with `message`.')
    message: str = Field(default=DEFAULT_MESSAGE, description="The user message of the chat template, with {source}.")
    system: str | None = Field(default=None, description="A system message for the chat template (None: none).")
    device: Literal["cpu", "cuda"] = "cpu"
    device_index: list[int] = Field(default=[0], min_length=1, description="GPUs (ct2: one replica on each).")
    compute_type: ComputeType | Literal["auto"] = Field(
        default="auto", description="ct2: auto = int8 on CPU, int8_float16 on GPU.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="hf, vllm: auto = float32 on CPU, bfloat16 on GPU.")
    inter_threads: int | None = Field(default=None, ge=1, description="ct2 on CPU; None: see CT2Settings.")
    intra_threads: int | None = Field(default=None, ge=0, description="ct2 on CPU; None: see CT2Settings.")
    beam_size: int = Field(default=1, ge=1, description="1 = greedy (vllm: greedy only).")
    new_tokens_ratio: float = Field(default=2.0, gt=0, description="New-token budget per source token ...")
    new_tokens_extra: int = Field(default=16, ge=0, description="... plus this many ...")
    max_new_tokens: int = Field(default=256, ge=1, description="... and never more than this.")
    stop: list[str] = Field(
        default=[], description='Strings that end an output (e.g. ["\\n"] for a base model that goes on with the '
        "next example); decoding stops there. Empty: the model's end tokens only, and a run-on is flagged "
        "`overgeneration`.")
    end_tokens: list[str] = Field(default=[], description="End tokens besides the checkpoint's own eos and "
                                  "generation_config.json's eos_token_id (e.g. \"<|eot_id|>\").")
    max_input_length: int = Field(default=256, ge=2, description="Source tokens kept; longer sources are counted.")
    max_batch_tokens: int = Field(default=8192, ge=1, description="Tokens per batch (prompt + new-token budget).")
    call_size: int = Field(default=4096, ge=1, description="Texts per engine call, stored as one chunk.")

    def precision(self) -> str:
        """The resolved number format (part of the engine id)."""
        if self.backend == "ct2":
            return resolve_compute_type(self.compute_type, self.device, "llm")
        if self.dtype != "auto":
            return self.dtype
        return "float32" if self.device == "cpu" else "bfloat16"


def model_folder(model: str) -> Path | None:
    """The local files of `model`: the folder itself, or the cached hub snapshot loading uses (None: not cached)."""
    path = Path(model)
    if path.is_dir():
        return path
    if path.is_absolute() or model.startswith((".", "~")) or model.count("/") != 1:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache  # deferred: the hub client, only for a hub id

        found = try_to_load_from_cache(model, "config.json")
    except ValueError:  # not a valid repo id
        return None
    return Path(found).parent if isinstance(found, str) else None


def prompt_spec(settings: LLMSettings) -> PromptSpec:
    """The prompt spec of these settings, with the chat template read from the model's files."""
    folder = model_folder(settings.model)
    template = read_chat_template(folder) if folder is not None else None
    return PromptSpec(settings.prompt, settings.message, settings.system, template)


def _identity(settings: LLMSettings) -> str:
    path = Path(settings.model)
    if path.is_dir():
        names = [*LLM_FILES, *(p.name for p in path.glob("*.safetensors"))]
        return f"{path.resolve().name}@{folder_digest(path, names)}"
    return f"{settings.model}@{hub_snapshot(settings.model)[:12]}"


def llm_engine_id(settings: LLMSettings) -> str:
    """The engine id, without loading the model: backend, model revision (a folder's digest or the hub commit),
    precision, beam, the prompt's digest, and a digest of the decoding settings (stops, budget, input cut)."""
    decoding = json.dumps([settings.stop, settings.end_tokens, settings.new_tokens_ratio, settings.new_tokens_extra,
                           settings.max_new_tokens, settings.max_input_length])
    dec = hashlib.blake2b(decoding.encode(), digest_size=4).hexdigest()
    return (f"llm-{settings.backend}:{_identity(settings)}:{settings.precision()}:beam{settings.beam_size}:"
            f"prompt-{prompt_spec(settings).digest()}:dec-{dec}")


@dataclass(frozen=True)
class Raw:
    """What a backend generated for one prompt: new token ids (the end token included when one came), their
    log-probabilities (None where the backend gives only a sequence score) and that score."""

    ids: list[int]
    logprobs: list[float] | None = None
    score: float | None = None
