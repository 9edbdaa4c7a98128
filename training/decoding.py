"""Decoding with the frozen LLM: greedy and beam search over V-Glória's logits ([RET] included).

One path for every family, built on what Hugging Face's own `generate()` passes to a model, so that what
`generate()` gets right, this gets right, without a list of family quirks:
- the cache is created as `generate()` creates it (a `DynamicCache` from the text config, or none where the
  model builds its own: MiniMax's linear attention);
- the body gets its own copy of the input embeddings, as `generate()` clones them (CTRL scales them in
  place);
- every fed token gets its position explicitly (`position_ids`), counted here, as `generate()` gives them.
  A body left to derive positions may ignore the cache (Bamba numbers every step from 0; RoBERTa-style
  embeddings do when fed inputs_embeds) or read a length a hybrid cache misreports (MiniMax) or cannot
  report (RecurrentGemma). The first number is the one the body's own forward gives (0, or RoBERTa's padding
  index + 1), found when the model is built;
- a cache the output does not return is the one passed in, updated in place (as `generate()` keeps it);
- beam search reorders the cache with `reorder_cache` only where that provably reaches every state:
  transformers' own DynamicCache of transformers' own layer classes, returned by the model. Otherwise (a
  model's cache subclass with extra state, MiniMax; state kept in the model's modules, RecurrentGemma) beam
  search runs uncached: slower, right.

`Uncached` runs the whole sequence again at every step (no cache, exactly the training forward): the
reference the cached path is tested against, and the path of a body that keeps no cache (GPT-1, RWKV).
"""
from __future__ import annotations

import inspect
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor


class Model(Protocol):
    """What decoding uses of V-Glória (training.model.VGloria, which imports this module)."""

    lm: Any  # the frozen Hugging Face causal LM
    body: Any  # its transformer body
    cache_kw: str | None  # "cache" (transformers >= 5.2x), "past_key_values" before, None: takes no cache
    first_position: int | None  # position_ids o, o+1, ... give the body's own forward (None: no such o)
    model_type: str
    eos_id: int
    ret_id: int

    def embed(self, ids: Tensor, vis: Tensor | None = None) -> Tensor: ...

    def logits(self, h: Tensor) -> Tensor: ...


def cache_of(out: Any) -> Any:
    """The cache of a model output (`cache` in transformers >= 5.2x, `past_key_values` before), or None
    where the output carries none (RecurrentGemma updates the cache it was given and its own modules)."""
    return out["cache"] if "cache" in out else out.get("past_key_values")


def new_cache(lm: Any) -> Any:
    """The cache `generate()` would start with: a DynamicCache built from the text config, or None where
    the model makes its own (`_supports_default_dynamic_cache` is False: MiniMax, RWKV, xLSTM, ...)."""
    supports = getattr(type(lm), "_supports_default_dynamic_cache", None)
    if supports is not None and not supports():
        return None
    from transformers import DynamicCache  # deferred: transformers loads only with a model

    return DynamicCache(config=lm.config.get_text_config(decoder=True))


def takes_positions(body: Any) -> bool:
    """Whether the body's forward accepts `position_ids` (`generate()` passes them whenever it does)."""
    return "position_ids" in inspect.signature(body.forward).parameters


class Steps(Protocol):
    """Feeds a growing batch of sequences to the LLM body and returns the last hidden state of each."""

    def __call__(self, emb: Tensor) -> Tensor: ...  # (B, T, d) new embeddings -> (B, d)

    def reorder(self, index: Tensor) -> None: ...  # keep/duplicate rows (beam search)


class Cached:
    """The incremental path: a KV / state cache, and each new token's position passed explicitly (`positions`)."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.cache = new_cache(model.lm)
        self.seen = 0  # tokens fed so far: the next token's position
        self.returned = True  # every output carried the cache: no state outside it

    def positions(self, emb: Tensor) -> dict[str, Tensor]:
        """`position_ids` of new embeddings (B, T, d), counted from the tokens fed so far, as `generate()`
        gives them, from the number the body's own forward gives the first token (RoBERTa: its padding
        index + 1); none where no numbering reproduces that forward (the body then derives them itself)."""
        first = self.model.first_position
        if first is None:
            return {}
        pos = torch.arange(first + self.seen, first + self.seen + emb.shape[1], device=emb.device)
        return {"position_ids": pos.unsqueeze(0).expand(emb.shape[0], -1)}

    def __call__(self, emb: Tensor) -> Tensor:
        m = self.model
        kw: dict[str, Any] = {m.cache_kw: self.cache, **self.positions(emb)}
        # A copy, as generate() passes one: CTRL scales inputs_embeds in place, which would corrupt the prefix.
        out = m.body(inputs_embeds=emb.clone(), use_cache=True, **kw)
        returned = cache_of(out)
        self.returned = self.returned and returned is not None
        self.cache = returned if returned is not None else self.cache
        self.seen += emb.shape[1]
        return out.last_hidden_state[:, -1]

    def can_reorder(self) -> bool:
        """Whether reorder_cache reaches every state: transformers' own DynamicCache, made of transformers'
        own layer classes (each reorders its tensors), returned by the model (no state kept elsewhere). A
        model's cache subclass may hold state its reorder_cache misses (MiniMaxCache's linear-attention
        states: Hugging Face's own beam search on MiniMax is wrong)."""
        from transformers import cache_utils  # deferred: transformers loads only with a model

        return (self.returned and type(self.cache) is cache_utils.DynamicCache
                and not hasattr(self.model.lm, "_reorder_cache")
                and all(type(layer).__module__ == cache_utils.__name__ for layer in self.cache.layers))

    def reorder(self, index: Tensor) -> None:
        self.cache.reorder_cache(index)


class Uncached:
    """The reference path: every step runs the whole sequence again, as the training forward does."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.emb: Tensor | None = None

    def __call__(self, emb: Tensor) -> Tensor:
        self.emb = emb if self.emb is None else torch.cat([self.emb, emb], dim=1)
        return self.model.body(inputs_embeds=self.emb.clone(), use_cache=False).last_hidden_state[:, -1]

    def reorder(self, index: Tensor) -> None:
        self.emb = self.emb[index]


def next_logits(model: Model, h: Tensor, allow_ret: bool) -> Tensor:
    """(B, V + 1) logits of the next token; without allow_ret, [RET] can never win."""
    logits = model.logits(h)
    if not allow_ret:  # captioning (FROMAGe): [RET] is never generated, so it cannot cut a caption short
        logits[..., model.ret_id] = float("-inf")
    return logits


def start(model: Model, prefix: Tensor, cached: bool) -> tuple[Cached | Uncached, Tensor]:
    """The decoding path for one prefix (1, P, d) and the prefix's last state. Cached where the body keeps a
    cache; a body that takes none (GPT-1), or returns none and was given none (RWKV, XLNet keep theirs in
    other arguments), decodes by full forwards."""
    if cached and model.cache_kw is not None:
        run = Cached(model)
        h = run(prefix)
        if run.cache is not None:
            return run, h
    run = Uncached(model)
    return run, run(prefix)


@torch.no_grad()
def greedy_trace(model: Model, prefix: Tensor, steps: int, *, cached: bool = True, allow_ret: bool = True,
                 stop: bool = True) -> tuple[list[int], Tensor]:
    """Greedy continuation of one prefix (1, P, d): the ids and the (n, V + 1) logits each was chosen from.
    With `stop`, it ends at EOS or [RET] (kept as the last id)."""
    run, h = start(model, prefix, cached)
    ids: list[int] = []
    rows = []
    for _ in range(steps):
        logits = next_logits(model, h, allow_ret)
        rows.append(logits[0])
        tok = int(logits[0].argmax())
        ids.append(tok)
        if stop and tok in (model.eos_id, model.ret_id):
            break
        h = run(model.embed(torch.tensor([[tok]], device=prefix.device)))
    return ids, torch.stack(rows)


@torch.no_grad()
def generate_ids(model: Model, prefix: Tensor, max_new_tokens: int, num_beams: int = 1, allow_ret: bool = True,
                 *, cached: bool = True) -> list[int]:
    """Greedy (num_beams=1) or beam search continuation of one prefix (1, P, d); stops at EOS or [RET] (the
    stop token is kept at the end of the returned ids). allow_ret=False never emits [RET]. cached=False
    decodes without a cache (the reference)."""
    if num_beams == 1:
        return greedy_trace(model, prefix, max_new_tokens, cached=cached, allow_ret=allow_ret)[0]
    run, h = start(model, prefix, cached)
    if isinstance(run, Cached) and not run.can_reorder():  # a cache beam search cannot reorder: no cache
        run = Uncached(model)
        h = run(prefix)
    return _beam(model, run, h, max_new_tokens, num_beams, prefix.device, allow_ret)


def _beam(model: Model, run: Steps, h: Tensor, max_new: int, nb: int, device: torch.device,
          allow_ret: bool) -> list[int]:
    """Beam search scored by mean log-probability per token (finished beams) as before; `run` holds the live
    beams, one row each."""
    beams: list[tuple[list[int], float]] = [([], 0.0)]
    done: list[tuple[list[int], float]] = []
    for _ in range(max_new):
        logp = F.log_softmax(next_logits(model, h, allow_ret).float(), -1)  # (n_live, V+1)
        scores = torch.tensor([s for _, s in beams], device=device).unsqueeze(1) + logp
        top = scores.flatten().topk(min(nb * 2, scores.numel()))
        nxt, keep = [], []
        for val, flat in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            src, tok = divmod(flat, logp.shape[1])
            seq = beams[src][0] + [tok]
            if tok in (model.eos_id, model.ret_id):
                done.append((seq, val / len(seq)))
            else:
                nxt.append((seq, val))
                keep.append(src)
            if len(nxt) == nb:
                break
        if not nxt or (len(done) >= nb and max(s for _, s in done) > max(v / len(q) for q, v in nxt)):
            break
        beams = nxt
        run.reorder(torch.tensor(keep, device=device))
        h = run(model.embed(torch.tensor([[q[-1]] for q, _ in beams], device=device)))
    done += [(q, v / len(q)) for q, v in beams]
    return max(done, key=lambda x: x[1])[0]
