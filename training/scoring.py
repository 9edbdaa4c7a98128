"""VisDial option scoring: the cross-entropy of each candidate answer after [image] prefix (lower is better).

Two ways that give the same scores (tests/test_llm_families.py holds them to 1e-4 of the resized
Hugging Face model scoring each option alone):
- `full`: one forward over [prefix; option] per option, batched and right-padded, without a cache, as the
  thesis code scores VisDial. Right padding needs no mask in a causal LM (real positions never see the pads),
  which is also how training batches its rows. Works for every family the training forward works for.
- `shared`: the prefix runs once, its cache is copied for every option, and the options run as one batch
  after it, positioned as decoding positions new tokens (training/decoding.py). Only where copying the
  cache is plain tensor indexing and a multi-token step after a cache is the family's ordinary attention
  path: a `DynamicCache` whose layers are all key/value attention layers (full or sliding window). A
  state-space or linear-attention layer (Mamba, Jamba, Qwen3-Next, ...) or a model-specific cache falls
  back to `full`.
"""
from __future__ import annotations

from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from training.decoding import Cached
from training.decoding import Model as DecodingModel

Feats = dict[str, dict[int, Tensor]]


class Model(DecodingModel, Protocol):
    """What scoring uses of V-Glória (training.model.VGloria, which imports this module)."""

    ret_in: Tensor

    def tokenize(self, texts: list[str]) -> list[list[int]]: ...

    def pad(self, rows: list[list[int]], device: torch.device | str) -> Tensor: ...

    def prefix_ids(self, text: list[int], k: int) -> list[int]: ...

    def visual_tokens(self, feats: Feats) -> Tensor: ...

Reduce = Literal["sum", "mean"]


def shareable(model: Model, cache: object) -> bool:
    """A prefix cache that can be copied per option: HF's DynamicCache of plain key/value layers, in a
    model without a cache handling of its own."""
    from transformers.cache_utils import (  # deferred: transformers loads only with a model
        DynamicCache,
        DynamicLayer,
        DynamicSlidingWindowLayer,
    )

    if type(cache) is not DynamicCache or hasattr(model.lm, "_reorder_cache"):
        return False
    return all(type(layer) in (DynamicLayer, DynamicSlidingWindowLayer) for layer in cache.layers)


def _option_ids(model: Model, options: list[str]) -> list[list[int]]:
    """Token ids of each option; an empty option is scored as EOS (it ends the answer at once)."""
    return [t or [model.eos_id] for t in model.tokenize(options)]


def _token_logp(model: Model, h: Tensor, targets: list[list[int]]) -> Tensor:
    """(n,) summed log-probability of each row's target tokens; h[i, j] is the state that predicts
    targets[i][j]. Logits are computed at those states only (not over the prefix or the padding)."""
    rows = torch.cat([torch.full((len(t),), i, dtype=torch.long) for i, t in enumerate(targets)]).to(h.device)
    cols = torch.cat([torch.arange(len(t)) for t in targets]).to(h.device)
    tgt = torch.tensor([x for t in targets for x in t], device=h.device)
    logp = F.log_softmax(model.logits(h[rows, cols]).float(), -1).gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
    return torch.zeros(len(targets), device=h.device).index_add_(0, rows, logp)


def _full(model: Model, prefix: list[int], vis: Tensor | None, opts: list[list[int]]) -> Tensor:
    """Summed CE of each option: one uncached forward over [prefix; option] per row, right-padded."""
    device = model.ret_in.device
    ids = model.pad([prefix + o for o in opts], device)
    slots = None if vis is None else vis.repeat(len(opts), 1)
    h = model.body(inputs_embeds=model.embed(ids, slots), use_cache=False).last_hidden_state
    return -_token_logp(model, h[:, len(prefix) - 1 :], opts)


def _shared(model: Model, prefix: Tensor, opts: list[list[int]]) -> Tensor | None:
    """Summed CE of each option after one cached pass over the prefix (1, P, d); None where the cache
    cannot be shared (the caller scores with `_full`)."""
    if model.cache_kw is None:
        return None
    run = Cached(model)
    h0 = run(prefix)  # (1, d): the state predicting each option's first token
    if not (run.returned and shareable(model, run.cache)):
        return None
    n = len(opts)
    run.cache.batch_repeat_interleave(n)
    run.seen = prefix.shape[1]
    h = torch.cat([h0.unsqueeze(1).expand(n, 1, -1), _states(run, model.embed(model.pad(opts, prefix.device)))], 1)
    return -_token_logp(model, h, opts)


def _states(run: Cached, emb: Tensor) -> Tensor:
    """(n, T, d) states of a batch fed after the cache: every position, not only the last."""
    m = run.model
    kw = {m.cache_kw: run.cache, **run.positions(emb)}
    return m.body(inputs_embeds=emb, use_cache=True, **kw).last_hidden_state


@torch.no_grad()
def option_losses(model: Model, feats: Feats, prefix_texts: list[str], options: list[list[str]],
                  chunk: int = 100, *, image: bool = True, reduce: Reduce = "sum",
                  how: Literal["auto", "full", "shared"] = "auto") -> Tensor:
    """(N, max options) cross-entropy of each option's tokens after [image] prefix_text (lower is better;
    columns past an example's options are 0). reduce="sum": summed over the option's tokens (the thesis'
    ranking); "mean": per token (length-normalised). image=False: the same prefix with no visual tokens
    (the LLM's own ranking). how: "auto" shares the prefix cache where it can (module docstring)."""
    if reduce not in ("sum", "mean"):
        raise ValueError(f"reduce must be 'sum' or 'mean', not {reduce!r}")
    vis_all = model.visual_tokens(feats) if image else None
    device = model.ret_in.device
    result = torch.zeros(len(prefix_texts), max(map(len, options)), device=device)
    share = how != "full"  # until a cache turns out not to be shareable (then for the rest of the call)
    for n, (prefix_text, opts) in enumerate(zip(prefix_texts, options, strict=True)):
        vis = None if vis_all is None else vis_all[n]
        prefix = model.prefix_ids(model.tokenize([prefix_text])[0], 0 if vis is None else vis.shape[0])
        for s in range(0, len(opts), chunk):
            toks = _option_ids(model, opts[s : s + chunk])
            got = _shared(model, model.embed(torch.tensor([prefix], device=device), vis), toks) if share else None
            if got is None and how == "shared":
                raise ValueError(f"{model.model_type}: its cache cannot be shared between options")
            share = share and got is not None
            if got is None:
                got = _full(model, prefix, vis, toks)
            if reduce == "mean":
                got = got / torch.tensor([len(t) for t in toks], device=device)
            result[n, s : s + len(toks)] = got
    return result
