"""What a results table says about a run's LLM: a short name, its `model_type` and its parameter count.

Read from the LLM's own config (a local folder, or the Hugging Face cache for a hub id: the LLM was loaded
there to train the run) and counted on the `meta` device: the architecture is built without weights or
memory, so a 7B model costs a second, not 14 GB. The count is the causal LM's own parameters (tied
embeddings once), frozen as they are in V-Glória; the bridge's trained parameters are not in it.
An LLM whose config cannot be read (a hub id not in the cache, offline) keeps its name; type and count
are then unknown (None) rather than guessed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import PurePath


@dataclass(frozen=True)
class LLMFacts:
    name: str  # the folder's or the hub id's last part: "tiny-lm", "Qwen2.5-1.5B"
    model_type: str | None  # config.json's model_type: "gpt_neo", "qwen2"
    params: int | None  # parameters of the causal LM

    def as_dict(self) -> dict:
        return asdict(self)


def short_name(llm: str) -> str:
    """The last part of a folder or hub id: the name people use for the model."""
    return PurePath(str(llm).rstrip("/")).name or str(llm)


def format_params(n: int | None) -> str:
    """1_234_567 -> "1.2M", 1_300_000_000 -> "1.3B", 350_000 -> "350K"; unknown -> "?"."""
    if n is None:
        return "?"
    for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            value = n / size
            return f"{value:.1f}{unit}" if value < 100 else f"{value:.0f}{unit}"
    return str(n)


@lru_cache(maxsize=64)
def llm_facts(llm: str) -> LLMFacts:
    """Name, model_type and parameter count of a Hugging Face causal LM (folder or cached hub id)."""
    import torch  # deferred: only a table or an evaluation that describes an LLM needs it
    from transformers import AutoConfig, AutoModelForCausalLM  # deferred: transformers is heavy to import

    name = short_name(llm)
    try:
        config = AutoConfig.from_pretrained(llm)
    except (OSError, ValueError, KeyError):
        return LLMFacts(name, None, None)
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, NotImplementedError):
        return LLMFacts(name, config.model_type, None)
    return LLMFacts(name, config.model_type, sum(p.numel() for p in model.parameters()))
