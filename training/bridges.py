"""Bridges h: frozen-ViT features -> LLM input embeddings, every variant of the thesis in one registry.

Every bridge is an nn.Module that declares the features it consumes (`needs()`), maps them to
`n_out` LLM input embeddings (`forward`), and gives the visual vector that W_i maps to the retrieval
space (`retrieval_input`, of width `retrieval_dim`). Features come as
`{"cls": {layer: (B, m)}, "tokens": {layer: (B, 1 + P, m)}}` with VisualEncoder's conventions.

Thesis references (Bridging Modalities, ch. 6-7; m = ViT width, d = LLM width):
- cls      CLS-k (6.4):   Z = reshape(CLS_l W + b), W in R^{m x dk}.
- l4l      (6.5):  [LL_0(CLS_l), LL_1(CLS_{l-1}), LL_2(CLS_{l-2}), LL_3(CLS_{l-3})], LL_i(Y) = Y W_i + b_i.
- l2l      (6.6):  [LL_0(CLS_l), LL_1(CLS_{l-1})].
- l2lx2    (6.7):  [LL_0(CLS_l), LL_1(CLS_l), LL_2(CLS_{l-1}), LL_3(CLS_{l-1})].
- comp     (6.8):  [LL_0(CLS_l), LL_1(CLS_{l-1}), LL_2(CLS_l - CLS_{l-1}), LL_3(CLS_l * CLS_{l-1})].
  CLS-based models with several CLS tokens retrieve with "the average of these token embeddings" (6.3):
  the mean of the extracted CLS vectors; CLS-k and MLP-k retrieve with their single CLS (5.3.1.4).
- grouped  (7.1-7.7): patch tokens (no CLS) in 4 raster-order groups of P/4, each concatenated,
  ONE shared LL (W in R^{(P/4)m x d}, + b) -> 4 tokens.
- regions  (7.8-7.9): 4 quadrants + a centre window, each (g/2)^2 tokens of the g x g patch grid
  (64 of 16 x 16), concatenated, shared LL -> 5 tokens.
- wavg     (7.10-7.14): 4 groups, one learned weight vector W_a in R^{1 x P/4} shared by the groups
  (initialised to a plain mean), then LL(Y) = Y W (no bias, as written) -> 4 tokens.
- crossattn (7.15-7.17): k learned queries (k x heads*head_dim), 4 heads of 256, keys and values
  from all 1 + P tokens of layer l (no bias), LL_O: heads*head_dim -> d with bias. Scores are scaled by
  1/sqrt(head_dim) (the thesis writes softmax(Q K^T); the scale only reparametrises the learned Q).
- mlp      MLP-k (beyond the thesis, LLaVA's 2-layer GELU projector): CLS_l -> Linear(m, k d) -> GELU
  -> a Linear(d, d) shared by the k tokens.

Retrieval input of the all-token bridges. The thesis states that CLS-20 trains 42M parameters and
Regions 151M (ch. 7, discussion of table 7.3). Regions' shared map is 64*1024*2048 + 2048 = 134.2M,
and the 16.78M difference is exactly W_i on a 65,536-d input (65536*256 + 256): Regions fed W_i the
concatenated region vectors. So grouped and regions retrieve with the mean of their concatenated
group vectors (retrieval_dim = group size * m), wavg with the mean of its weighted averages (m), and
crossattn with one extra learned query attending over all tokens with the same key/value projections
(retrieval_dim = heads*head_dim), the "1-query cross-attention" of SPEC section 4. CLS-20 is then
41.98M (W_c) + 0.26M (W_i) = 42.2M, Regions 134.2M + 16.8M = 151.0M.
"""
from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

Feats = dict[str, dict[int, torch.Tensor]]


class MissingFeatures(KeyError):
    """The features dict lacks a layer or kind that the bridge declared in needs()."""


class Bridge(nn.Module):
    """Base class: subclasses set `n_out`, `retrieval_dim` and implement the three methods."""

    name: ClassVar[str] = ""
    settings: ClassVar[tuple[str, ...]] = ()  # extra keyword settings the bridge accepts
    n_out: int
    retrieval_dim: int

    def __init__(self, *, vis_dim: int, llm_dim: int, layer: int) -> None:
        super().__init__()
        self.vis_dim, self.llm_dim, self.layer = vis_dim, llm_dim, layer

    def needs(self) -> dict[str, list[int]]:
        raise NotImplementedError

    def forward(self, feats: Feats) -> torch.Tensor:  # (B, n_out, llm_dim)
        raise NotImplementedError

    def retrieval_input(self, feats: Feats) -> torch.Tensor:  # (B, retrieval_dim)
        raise NotImplementedError

    def _get(self, feats: Feats, kind: str, layer: int) -> torch.Tensor:
        try:
            x = feats[kind][layer]
        except KeyError:
            have = sorted(feats.get(kind, {}))
            raise MissingFeatures(f"bridge {self.name!r} needs {kind} of layer {layer}; got layers {have}") from None
        return x.to(next(self.parameters()).dtype)  # cached fp16 / autocast bf16 -> the bridge's dtype

    def extra_repr(self) -> str:
        return f"name={self.name}, n_out={self.n_out}, retrieval_dim={self.retrieval_dim}, layer={self.layer}"


BRIDGES: dict[str, type[Bridge]] = {}


def register(cls: type[Bridge]) -> type[Bridge]:
    BRIDGES[cls.name] = cls
    return cls


def _fixed_k(name: str, k: int, n_out: int) -> None:
    if k not in (1, n_out):
        raise ValueError(f"bridge {name!r} always gives {n_out} tokens; k={k} does not apply (leave k=1)")


def _earlier(layer: int, steps: int) -> list[int]:
    """[layer, layer-1, ..., layer-steps+1]: CLS of consecutive blocks ending at `layer`."""
    layers = [layer - j for j in range(steps)]
    if layer >= 0 and layers[-1] < 0:
        raise ValueError(f"layer {layer} has fewer than {steps - 1} blocks before it")
    return layers


# CLS-based bridges ---------------------------------------------------------------------------------


@register
class ClsBridge(Bridge):
    """CLS-k: one CLS of layer l, one linear map, reshaped into k tokens."""

    name = "cls"

    def __init__(self, *, vis_dim: int, llm_dim: int, k: int = 1, layer: int = -1, n_tokens: int | None = None):
        super().__init__(vis_dim=vis_dim, llm_dim=llm_dim, layer=layer)
        if k < 1:
            raise ValueError(f"bridge {self.name!r} needs k >= 1, got {k}")
        self.n_out, self.retrieval_dim = k, vis_dim
        self.proj = nn.Linear(vis_dim, llm_dim * k)

    def needs(self) -> dict[str, list[int]]:
        return {"cls": [self.layer]}

    def forward(self, feats: Feats) -> torch.Tensor:
        x = self._get(feats, "cls", self.layer)
        return self.proj(x).view(x.shape[0], self.n_out, self.llm_dim)

    def retrieval_input(self, feats: Feats) -> torch.Tensor:
        return self._get(feats, "cls", self.layer)


@register
class MlpBridge(ClsBridge):
    """MLP-k (LLaVA-style 2-layer GELU projector): CLS -> Linear(m, k d) -> GELU -> shared Linear(d, d)."""

    name = "mlp"

    def __init__(self, *, vis_dim: int, llm_dim: int, k: int = 1, layer: int = -1, n_tokens: int | None = None):
        super().__init__(vis_dim=vis_dim, llm_dim=llm_dim, k=k, layer=layer)
        self.out = nn.Linear(llm_dim, llm_dim)

    def forward(self, feats: Feats) -> torch.Tensor:
        return self.out(F.gelu(super().forward(feats)))


class _MultiClsBridge(Bridge):
    """CLS of several layers (and comparisons of them), one linear map per output token."""

    steps: ClassVar[int]  # how many consecutive layers' CLS are used
    sources: ClassVar[tuple[str, ...]]  # per output token: "0".."3" = CLS of layer-i, "diff", "prod"

    def __init__(self, *, vis_dim: int, llm_dim: int, k: int = 1, layer: int = -1, n_tokens: int | None = None):
        super().__init__(vis_dim=vis_dim, llm_dim=llm_dim, layer=layer)
        self.n_out, self.retrieval_dim = len(self.sources), vis_dim
        _fixed_k(self.name, k, self.n_out)
        self.layers = _earlier(layer, self.steps)
        self.maps = nn.ModuleList(nn.Linear(vis_dim, llm_dim) for _ in self.sources)

    def needs(self) -> dict[str, list[int]]:
        return {"cls": list(self.layers)}

    def _inputs(self, cls: list[torch.Tensor]) -> list[torch.Tensor]:
        derived = {"diff": lambda: cls[0] - cls[1], "prod": lambda: cls[0] * cls[1]}
        return [derived[s]() if s in derived else cls[int(s)] for s in self.sources]

    def forward(self, feats: Feats) -> torch.Tensor:
        cls = [self._get(feats, "cls", layer) for layer in self.layers]
        return torch.stack([m(x) for m, x in zip(self.maps, self._inputs(cls), strict=True)], dim=1)

    def retrieval_input(self, feats: Feats) -> torch.Tensor:
        # "the average of these token embeddings": the mean of the extracted CLS vectors.
        return torch.stack([self._get(feats, "cls", layer) for layer in self.layers], dim=1).mean(dim=1)


@register
class L4LBridge(_MultiClsBridge):
    name, steps, sources = "l4l", 4, ("0", "1", "2", "3")


@register
class L2LBridge(_MultiClsBridge):
    name, steps, sources = "l2l", 2, ("0", "1")


@register
class L2Lx2Bridge(_MultiClsBridge):
    name, steps, sources = "l2lx2", 2, ("0", "0", "1", "1")


@register
class CompBridge(_MultiClsBridge):
    name, steps, sources = "comp", 2, ("0", "1", "diff", "prod")


# All-token bridges ----------------------------------------------------------------------------------


class _TokenBridge(Bridge):
    """Bridges over all tokens (1 + P, CLS first) of one layer."""

    def __init__(self, *, vis_dim: int, llm_dim: int, layer: int, n_tokens: int | None, need_count: bool = True):
        super().__init__(vis_dim=vis_dim, llm_dim=llm_dim, layer=layer)
        if need_count and (n_tokens is None or n_tokens < 2):
            raise ValueError(f"bridge {self.name!r} needs n_tokens (1 + number of patches, 257 for ViT-L/14)")
        self.n_tokens = n_tokens
        self.n_patches = None if n_tokens is None else n_tokens - 1

    def needs(self) -> dict[str, list[int]]:
        return {"tokens": [self.layer]}

    def _tokens(self, feats: Feats) -> torch.Tensor:
        x = self._get(feats, "tokens", self.layer)
        if self.n_tokens is not None and (x.ndim != 3 or x.shape[1] != self.n_tokens):
            raise ValueError(f"bridge {self.name!r} was built for {self.n_tokens} tokens, got shape {tuple(x.shape)}")
        return x


def _groups(name: str, n_patches: int, n_groups: int) -> int:
    if n_groups < 1 or n_patches % n_groups:
        raise ValueError(f"bridge {name!r}: {n_patches} patches do not split into {n_groups} equal groups")
    return n_patches // n_groups


@register
class GroupedBridge(_TokenBridge):
    """Grouped: patches in `n_groups` raster-order groups, each concatenated, one shared linear map."""

    name, settings = "grouped", ("n_groups",)

    def __init__(self, *, vis_dim: int, llm_dim: int, k: int = 1, layer: int = -1, n_tokens: int | None = None,
                 n_groups: int = 4):
        super().__init__(vis_dim=vis_dim, llm_dim=llm_dim, layer=layer, n_tokens=n_tokens)
        _fixed_k(self.name, k, n_groups)
        self.group = _groups(self.name, self.n_patches, n_groups)
        self.n_out, self.retrieval_dim = n_groups, self.group * vis_dim
        self.proj = nn.Linear(self.group * vis_dim, llm_dim)

    def _group_vectors(self, feats: Feats) -> torch.Tensor:  # (B, n_groups, group * m)
        patches = self._tokens(feats)[:, 1:]
        return patches.reshape(patches.shape[0], self.n_out, self.group * self.vis_dim)

    def forward(self, feats: Feats) -> torch.Tensor:
        return self.proj(self._group_vectors(feats))

    def retrieval_input(self, feats: Feats) -> torch.Tensor:
        return self._group_vectors(feats).mean(dim=1)


def region_indices(grid: int) -> torch.Tensor:
    """(5, (grid/2)^2) patch indices (raster order) of the TL, TR, BL, BR quadrants and the centre window."""
    if grid < 2 or grid % 2:
        raise ValueError(f"regions need an even patch grid, got {grid} x {grid}")
    half, centre = grid // 2, (grid - grid // 2) // 2
    idx = torch.arange(grid * grid).view(grid, grid)
    corners = [(0, 0), (0, half), (half, 0), (half, half), (centre, centre)]
    return torch.stack([idx[r:r + half, c:c + half].reshape(-1) for r, c in corners])


@register
class RegionsBridge(_TokenBridge):
    """Regions: 4 quadrants + centre of the patch grid, each concatenated, one shared linear map."""

    name = "regions"

    def __init__(self, *, vis_dim: int, llm_dim: int, k: int = 1, layer: int = -1, n_tokens: int | None = None):
        super().__init__(vis_dim=vis_dim, llm_dim=llm_dim, layer=layer, n_tokens=n_tokens)
        grid = math.isqrt(self.n_patches)
        if grid * grid != self.n_patches:
            raise ValueError(f"bridge 'regions' needs a square patch grid; {self.n_patches} patches is not one")
        self.register_buffer("index", region_indices(grid), persistent=False)
        self.n_out = 5
        _fixed_k(self.name, k, self.n_out)
        self.region = self.index.shape[1]
        self.retrieval_dim = self.region * vis_dim
        self.proj = nn.Linear(self.region * vis_dim, llm_dim)

    def _region_vectors(self, feats: Feats) -> torch.Tensor:  # (B, 5, region * m)
        patches = self._tokens(feats)[:, 1:]
        return patches[:, self.index].reshape(patches.shape[0], self.n_out, self.region * self.vis_dim)

    def forward(self, feats: Feats) -> torch.Tensor:
        return self.proj(self._region_vectors(feats))

    def retrieval_input(self, feats: Feats) -> torch.Tensor:
        return self._region_vectors(feats).mean(dim=1)


@register
class WavgBridge(_TokenBridge):
    """W avg: a learned weighted average (W_a, shared by the groups) of each group, then Y W (no bias)."""

    name, settings = "wavg", ("n_groups",)

    def __init__(self, *, vis_dim: int, llm_dim: int, k: int = 1, layer: int = -1, n_tokens: int | None = None,
                 n_groups: int = 4):
        super().__init__(vis_dim=vis_dim, llm_dim=llm_dim, layer=layer, n_tokens=n_tokens)
        _fixed_k(self.name, k, n_groups)
        self.group = _groups(self.name, self.n_patches, n_groups)
        self.n_out, self.retrieval_dim = n_groups, vis_dim
        self.weights = nn.Parameter(torch.full((self.group,), 1.0 / self.group))  # W_a, starts as the mean
        self.proj = nn.Linear(vis_dim, llm_dim, bias=False)

    def _averages(self, feats: Feats) -> torch.Tensor:  # (B, n_groups, m)
        patches = self._tokens(feats)[:, 1:]
        grouped = patches.reshape(patches.shape[0], self.n_out, self.group, self.vis_dim)
        return torch.einsum("bngm,g->bnm", grouped, self.weights)

    def forward(self, feats: Feats) -> torch.Tensor:
        return self.proj(self._averages(feats))

    def retrieval_input(self, feats: Feats) -> torch.Tensor:
        return self._averages(feats).mean(dim=1)


@register
class CrossAttnBridge(_TokenBridge):
    """CrossAtt-k: k learned queries attend (heads x head_dim) over all tokens of layer l; LL_O -> d."""

    name, settings = "crossattn", ("heads", "head_dim")

    def __init__(self, *, vis_dim: int, llm_dim: int, k: int = 1, layer: int = -1, n_tokens: int | None = None,
                 heads: int = 4, head_dim: int = 256):
        # Any token count works (attention), so n_tokens is only checked when given.
        super().__init__(vis_dim=vis_dim, llm_dim=llm_dim, layer=layer, n_tokens=n_tokens, need_count=False)
        if k < 1 or heads < 1 or head_dim < 1:
            raise ValueError(f"crossattn needs k, heads, head_dim >= 1 (got {k}, {heads}, {head_dim})")
        self.heads, self.head_dim = heads, head_dim
        attn = heads * head_dim
        self.n_out, self.retrieval_dim = k, attn
        # Q-Former-style init: small queries give near-uniform attention (mean pooling) at the start.
        self.queries = nn.Parameter(torch.randn(k, attn) * 0.02)
        self.retrieval_query = nn.Parameter(torch.randn(1, attn) * 0.02)
        self.to_k = nn.Linear(vis_dim, attn, bias=False)  # W_i^K for all heads
        self.to_v = nn.Linear(vis_dim, attn, bias=False)  # W_i^V for all heads
        self.out = nn.Linear(attn, llm_dim)  # LL_O

    def _attend(self, tokens: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        b, t, _ = tokens.shape
        h, hd = self.heads, self.head_dim
        keys = self.to_k(tokens).view(b, t, h, hd).transpose(1, 2)  # (B, h, T, hd)
        values = self.to_v(tokens).view(b, t, h, hd).transpose(1, 2)
        q = queries.view(1, -1, h, hd).transpose(1, 2).expand(b, -1, -1, -1)  # (B, h, k, hd)
        heads = F.scaled_dot_product_attention(q, keys, values)  # (B, h, k, hd)
        return heads.transpose(1, 2).reshape(b, -1, h * hd)  # head_0 (+) ... (+) head_{h-1}

    def forward(self, feats: Feats) -> torch.Tensor:
        return self.out(self._attend(self._tokens(feats), self.queries))

    def retrieval_input(self, feats: Feats) -> torch.Tensor:
        return self._attend(self._tokens(feats), self.retrieval_query)[:, 0]


def build_bridge(name: str, *, vis_dim: int, llm_dim: int, k: int = 1, layer: int = -1,
                 n_tokens: int | None = None, **kw: int) -> Bridge:
    """Build the bridge `name` (a BRIDGES key) for ViT width `vis_dim` and LLM width `llm_dim`.

    `k` is the number of output tokens for cls, mlp and crossattn; the others have a fixed count and
    accept only k=1 (not given) or that count. `layer` is the ViT block (-1 = last; l4l/l2l/l2lx2/comp
    use `layer` and the blocks before it). `n_tokens` = 1 + P tokens per image, needed by grouped,
    regions and wavg. Extra settings: n_groups (grouped, wavg), heads and head_dim (crossattn).
    """
    if name not in BRIDGES:
        raise ValueError(f"unknown bridge {name!r}; known: {sorted(BRIDGES)}")
    cls = BRIDGES[name]
    unknown = set(kw) - set(cls.settings)
    if unknown:
        raise ValueError(f"bridge {name!r} has no setting(s) {sorted(unknown)}; it accepts {list(cls.settings)}")
    return cls(vis_dim=vis_dim, llm_dim=llm_dim, k=k, layer=layer, n_tokens=n_tokens, **kw)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class BridgeSettings(BaseModel):
    """Which bridge h to train. Unknown keys, and settings the chosen bridge does not take, are errors."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("cls", description=f"one of {sorted(BRIDGES)}")
    k: int = Field(1, ge=1, description="output tokens for cls, mlp, crossattn (others: fixed count)")
    layer: int = Field(-1, description="ViT block: -1 = last (L), -2 = L-1; the thesis' best is crossattn k=12, -2")
    n_groups: int | None = Field(None, ge=1, description="grouped/wavg groups (default 4)")
    heads: int | None = Field(None, ge=1, description="crossattn heads (default 4)")
    head_dim: int | None = Field(None, ge=1, description="crossattn head width (default 256)")

    def build(self, *, vis_dim: int, llm_dim: int, n_tokens: int | None = None) -> Bridge:
        extra = {key: getattr(self, key) for key in ("n_groups", "heads", "head_dim") if getattr(self, key) is not None}
        return build_bridge(self.name, vis_dim=vis_dim, llm_dim=llm_dim, k=self.k, layer=self.layer,
                            n_tokens=n_tokens, **extra)
