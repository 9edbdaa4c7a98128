"""COMET's own layers on top of the encoder: the layer-wise mix, the estimator and the pooling.

Each is written to compute what unbabel-comet 2.2.7 computes, in the same order of operations, so that
the scores agree to float32 rounding (tests/test_comet_port.py holds them to 1e-5 against the reference):
`LayerwiseMix` is comet.modules.LayerwiseAttention in eval mode (softmax or entmax's sparsemax over one
scalar per layer, times gamma; with layer_norm, each layer normalised over a sentence's unmasked values),
`Estimator` is comet.modules.FeedForward (its Sequential indices kept, so the checkpoint's
`estimator.ff.N.*` keys load as they are), `average_pooling` is comet.models.pooling_utils.average_pooling.
"""
from __future__ import annotations

import torch
from torch import nn


def sparsemax(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Sparsemax (Martins & Astudillo 2016) as entmax 1.3 computes it: shift by the max, sort, threshold."""
    x = x - x.max(dim=dim, keepdim=True).values
    top, _ = torch.sort(x, dim=dim, descending=True)
    cumsum = top.cumsum(dim) - 1
    shape = [1] * x.dim()
    shape[dim] = -1
    rhos = torch.arange(1, x.shape[dim] + 1, device=x.device, dtype=x.dtype).view(shape)
    support = (rhos * top > cumsum).sum(dim=dim, keepdim=True)
    tau = cumsum.gather(dim, support - 1) / support.to(x.dtype)
    return torch.clamp(x - tau, min=0)


class LayerwiseMix(nn.Module):
    """gamma * sum_k w_k * layer_k with w = softmax or sparsemax of one scalar per layer (inference only)."""

    def __init__(self, num_layers: int, *, transformation: str, layer_norm: bool) -> None:
        super().__init__()
        if transformation not in ("softmax", "sparsemax"):
            raise ValueError(f"layer_transformation {transformation!r}: softmax or sparsemax")
        self.transformation, self.layer_norm = transformation, layer_norm
        self.scalar_parameters = nn.ParameterList([nn.Parameter(torch.zeros(1)) for _ in range(num_layers)])
        self.gamma = nn.Parameter(torch.ones(1))

    def weights(self) -> torch.Tensor:
        raw = torch.cat(list(self.scalar_parameters))
        return sparsemax(raw, dim=0) if self.transformation == "sparsemax" else torch.softmax(raw, dim=0)

    def forward(self, layers: tuple[torch.Tensor, ...], mask: torch.Tensor) -> torch.Tensor:
        if len(layers) != len(self.scalar_parameters):
            raise ValueError(f"{len(layers)} layers given, the mix has {len(self.scalar_parameters)} weights")
        weights = torch.split(self.weights(), 1)
        if not self.layer_norm:
            return self.gamma * sum(w * t for w, t in zip(weights, layers, strict=True))
        mask_f = mask.float()
        broadcast = mask_f.unsqueeze(-1)
        batch, _, dim = layers[0].size()
        # One mean and variance per sentence over all its unmasked values (not per token), as COMET does.
        count = mask_f.sum(1) * dim

        def norm(t: torch.Tensor) -> torch.Tensor:
            masked = t * broadcast
            mean = (masked.view(batch, -1).sum(1) / count).view(batch, 1, 1)
            var = (((masked - mean) * broadcast) ** 2).view(batch, -1).sum(1) / count
            return (t - mean) / torch.sqrt(var + 1e-12).view(batch, 1, 1)

        return self.gamma * sum(w * norm(t) for w, t in zip(weights, layers, strict=True))


class Estimator(nn.Module):
    """Linear, activation, dropout per hidden size, then a linear to one score (and a final activation)."""

    def __init__(self, in_dim: int, hidden_sizes: list[int], activations: str, final_activation: str | None,
                 dropout: float = 0.1) -> None:
        super().__init__()
        modules: list[nn.Module] = []
        sizes = [in_dim, *hidden_sizes]
        for a, b in zip(sizes, sizes[1:], strict=False):
            modules += [nn.Linear(a, b), _activation(activations), nn.Dropout(dropout)]
        modules.append(nn.Linear(sizes[-1], 1))
        if final_activation is not None:
            modules.append(_activation(final_activation))
        self.ff = nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ff(x.to(self.ff[0].weight.dtype))


def _activation(name: str) -> nn.Module:
    # COMET looks the name up as nn.<name.title()> ('Tanh', 'Sigmoid'); the same lookup accepts the same names.
    cls = getattr(nn, name.title(), None)
    if cls is None:
        raise ValueError(f"activation {name!r}: torch.nn has no {name.title()}")
    return cls()


def average_pooling(input_ids: torch.Tensor, embeddings: torch.Tensor, mask: torch.Tensor,
                    pad_id: int) -> torch.Tensor:
    """The mean of a sentence's token embeddings (pads zeroed, divided by the attention mask's count)."""
    pads = input_ids.eq(pad_id).unsqueeze(-1)
    summed = embeddings.float().masked_fill(pads, 0.0).type_as(embeddings).sum(1)
    return summed / mask.unsqueeze(-1).expand(embeddings.size()).float().sum(1)
