"""How V-Glória reaches into any Hugging Face causal LM: loading it (once, when the pre-flight hands it over),
finding its transformer body, running its head alone, and refusing in one line what it cannot address.

The head runs as the causal-LM class's own forward, with the body skipped (`HeadOnly`): whatever the family
does after the body (Gemma-2's soft-capping, Cohere's logit_scale, Granite's logits_scaling, a head bias,
BERT's transform before the decoder) applies to V-Glória's hidden states, and to the [RET] column, as to any
real token.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from training import decoding

if TYPE_CHECKING:  # only annotations: the GPU benchmark runs without pydantic installed
    from training.config import ModelConfig


def torch_dtype(name: str) -> torch.dtype:
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


class _BodyOutput(tuple):
    """What the causal-LM forward reads from its body, when `logits` skips the body: the given hidden states
    as `last_hidden_state` / `[0]`; every other field (cache, router logits, attentions) is absent (None)."""

    def __new__(cls, hidden: Tensor) -> _BodyOutput:
        return super().__new__(cls, (hidden,))

    @property
    def last_hidden_state(self) -> Tensor:
        return self[0]

    def __getattr__(self, name: str) -> None:
        return None


class _SkipBody:
    """Stands in for the transformer body: returns its `inputs_embeds` (our final hidden states) unchanged.
    A sub-module of the body is skipped too (wrappers call `self.model.decoder(...)`); any other attribute is
    the body's own (Falcon-H1 scales its logits by `self.model.lm_head_multiplier`)."""

    def __init__(self, body: nn.Module) -> None:
        self._body = body

    def __call__(self, *args: Any, inputs_embeds: Tensor | None = None, **kw: Any) -> _BodyOutput:
        if inputs_embeds is None:
            raise TypeError("the causal-LM forward did not pass inputs_embeds to its body")
        return _BodyOutput(inputs_embeds)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._body, name)
        return self if isinstance(value, nn.Module) else value


class HeadOnly:
    """`self` for the causal-LM class's own forward: the LM, except that its body is `_SkipBody`."""

    def __init__(self, lm: nn.Module, body_name: str) -> None:
        self._lm, self._body_name, self._skip = lm, body_name, _SkipBody(getattr(lm, body_name))

    def __getattr__(self, name: str) -> Any:
        return self._skip if name == self._body_name else getattr(self._lm, name)


class LLMUnsupported(ValueError):
    """An LLM this model cannot address (one line: the family, what is wrong and why it matters)."""


def error_line(e: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text[:160]}" if text else type(e).__name__


def find_body(lm: nn.Module, table: Any, head: Any) -> str:
    """Refuse, in one line, an LLM whose embedding, head or body this model cannot address. Returns the
    attribute that holds the body: `base_model_prefix`, or else the one child that holds the input
    embeddings (Llama4ForCausalLM names `language_model` but keeps its body at `model`)."""
    name = f"{getattr(lm.config, 'model_type', '?')} ({type(lm).__name__})"
    if not isinstance(table, nn.Embedding):
        raise LLMUnsupported(f"{name}: the input embeddings are {type(table).__name__}, not an nn.Embedding "
                             "table, so [RET] and visual tokens cannot be added as rows")
    if not isinstance(head, nn.Linear) or head.weight.shape != table.weight.shape:
        raise LLMUnsupported(f"{name}: the output layer is not a linear map over the {table.weight.shape[0]} "
                             "input tokens, so [RET] cannot be added as an output row")
    prefix = lm.base_model_prefix
    if prefix and lm.base_model is not lm and getattr(lm, prefix, None) is lm.base_model:
        return prefix
    owners = [n for n, child in lm.named_children() if any(m is table for m in child.modules())]
    if len(owners) != 1:
        raise LLMUnsupported(f"{name}: no single sub-module holds the input embeddings (found "
                             f"{owners or 'none'}), so the transformer body cannot be run without its head")
    return owners[0]


@torch.no_grad()
def check_inputs_embeds(lm: nn.Module, body: nn.Module, tokenizer: Any,
                        embed_virtual: Callable[[Tensor], Tensor]) -> None:
    """ptvl feeds every sequence as inputs_embeds, [RET] and visual tokens as rows of no real token.
    Refuse a body that cannot run from inputs_embeds alone (DeepSeek-V4 routes experts by input_ids),
    whose input_ids path does more than look the ids up (Falcon-H1 multiplies by embedding_multiplier only
    there: every token would be fed differently from real tokens), or that cannot take a row outside its
    table (Gemma-4 maps inputs_embeds back to ids for its per-layer inputs). `embed_virtual(ids)` embeds
    (1, 4) ids with [RET] and a visual row among them, as the model feeds them."""
    table = lm.get_input_embeddings()
    special = {tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id}
    ids = torch.tensor([[t for t in range(table.weight.shape[0]) if t not in special][:4]], device=table.weight.device)
    what = f"{getattr(lm.config, 'model_type', '?')} ({type(lm).__name__})"
    try:
        by_ids = body(input_ids=ids, use_cache=False).last_hidden_state
    except Exception as e:  # noqa: BLE001 - whatever the family raises, the answer is the same refusal
        raise LLMUnsupported(f"{what}: its own forward fails on 4 ordinary tokens ({error_line(e)})") from None
    try:
        by_emb = body(inputs_embeds=table(ids), use_cache=False).last_hidden_state
    except Exception as e:  # noqa: BLE001
        raise LLMUnsupported(f"{what}: its body cannot run from input embeddings alone ({error_line(e)}), "
                             "so [RET] and visual tokens cannot be fed") from None
    if not torch.allclose(by_ids.float(), by_emb.float(), rtol=1e-3, atol=1e-3 * float(by_ids.abs().max())):
        raise LLMUnsupported(f"{what}: its body treats input_ids beyond an embedding lookup "
                             "(e.g. a multiplier applied only to input_ids), so input embeddings cannot be fed "
                             "as real tokens are")
    try:
        body(inputs_embeds=embed_virtual(ids), use_cache=False)
    except Exception as e:  # noqa: BLE001
        raise LLMUnsupported(f"{what}: its body refuses input rows that are not rows of its embedding table "
                             f"({error_line(e)}), so [RET] and visual tokens cannot be fed") from None


@torch.no_grad()
def first_position(lm: nn.Module, body: nn.Module) -> int | None:
    """The number the body's own forward gives the first token, when explicit position_ids o, o+1, ... give
    exactly that forward: o = 0 almost everywhere, the padding index + 1 in RoBERTa-style embeddings. None
    where no such numbering does (or the body takes no positions): decoding then leaves them to the body."""
    if not decoding.takes_positions(body):
        return None
    table = lm.get_input_embeddings()
    emb = table(torch.arange(1, 5, device=table.weight.device).clamp_max(table.weight.shape[0] - 1).unsqueeze(0))
    own = body(inputs_embeds=emb.clone(), use_cache=False).last_hidden_state.float()
    # Half precision may round the two paths apart; a wrong first number moves absolute position embeddings
    # by far more (and rotary positions are relative: any first number matches, so 0 is taken).
    tol = (1e-4 if emb.dtype == torch.float32 else 2e-2) * float(own.abs().max())
    pad = getattr(lm.config, "pad_token_id", None)
    for first in dict.fromkeys([0, 1, 2] + ([pad + 1] if isinstance(pad, int) else [])):
        pos = torch.arange(first, first + 4, device=emb.device).unsqueeze(0)
        try:
            given = body(inputs_embeds=emb.clone(), position_ids=pos, use_cache=False).last_hidden_state
        except Exception:  # noqa: BLE001 - a body that refuses plain positions derives its own
            return None
        if torch.allclose(own, given.float(), rtol=0, atol=tol):
            return first
    return None


# A loaded LLM handed from the pre-flight (training/llm_check.py) to the training that follows it in the same
# process: one entry, taken once, so a 7B model is read and moved to the GPU once, not twice.
_HANDED_OVER: dict[tuple[str, str, str | None, str], tuple[nn.Module, Any]] = {}


def _llm_key(cfg: ModelConfig, device: torch.device | str) -> tuple[str, str, str | None, str]:
    return cfg.llm, cfg.dtype, cfg.attn_implementation, str(torch.device(device))


def hand_over(cfg: ModelConfig, device: torch.device | str, lm: nn.Module, tokenizer: Any) -> None:
    """Keep (lm, tokenizer) for the next `load_llm` of the same LLM, dtype, attention and device (once)."""
    _HANDED_OVER.clear()
    _HANDED_OVER[_llm_key(cfg, device)] = (lm, tokenizer)


def drop_handed_over() -> None:
    """Free an LLM handed over and never taken (the training did not run in this process)."""
    _HANDED_OVER.clear()


def load_llm(cfg: ModelConfig, device: torch.device | str) -> tuple[nn.Module, Any]:
    """Any Hugging Face causal LM by id or local folder, frozen, in cfg.dtype (the pre-flight's, if it
    handed this one over)."""
    kept = _HANDED_OVER.pop(_llm_key(cfg, device), None)
    if kept is not None:
        return kept
    from transformers import (  # deferred: transformers loads only when a tokenizer or model is needed
        AutoModelForCausalLM,
        AutoTokenizer,
    )

    kw: dict[str, Any] = {"dtype": torch_dtype(cfg.dtype)}
    if cfg.attn_implementation:
        kw["attn_implementation"] = cfg.attn_implementation
    lm = AutoModelForCausalLM.from_pretrained(cfg.llm, **kw).to(device)
    tokenizer = AutoTokenizer.from_pretrained(cfg.llm)
    return lm, tokenizer
