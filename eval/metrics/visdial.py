"""VisDial v1.0 metrics with the official definitions (visdial-challenge-starter-pytorch, visdialch/metrics.py).

- Ranks: each round's 100 options are sorted best first; the rank of an option is its 1-based position.
  Scores can be "higher is better" (logits, log-likelihoods) or "lower is better" (losses, as V-Glória's
  summed answer-token loss): say which with `higher_is_better`; nothing is guessed.
- R@1/5/10, mean rank and MRR use the rank of the ground-truth option (gt_index) of EVERY round.
- NDCG uses only the densely annotated round of each dialog: k = number of options with relevance > 0;
  DCG@k of the model's ranking vs DCG@k of the ideal (relevance-sorted) ranking, discount log2(i + 2)
  for 0-based position i. Rounds whose relevances are all 0 have no ideal DCG: they are skipped and
  counted in `ndcg_skipped` (the official code would produce NaN).
- Ties: broken by option index (a stable sort puts the lower index first). The official code uses
  torch.sort, whose order among equal scores is unspecified; a stable sort makes results reproducible.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

KS = (1, 5, 10)


class VisDialInputError(ValueError):
    """Scores, gt indices or relevances of a VisDial evaluation do not fit together."""


def _t(x: Tensor | np.ndarray | Sequence) -> Tensor:
    return x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))


def scores_to_ranks(scores: Tensor | np.ndarray, *, higher_is_better: bool) -> Tensor:
    """(N, n_options) scores -> (N, n_options) 1-based rank of each option (1 = best)."""
    s = _t(scores).double()
    if s.ndim != 2:
        raise VisDialInputError(f"scores must be (n_rounds, n_options), got shape {tuple(s.shape)}")
    if not torch.isfinite(s).all():
        raise VisDialInputError("scores contain NaN or infinite values")
    order = torch.sort(s if higher_is_better else -s, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(1, s.shape[1] + 1).expand_as(order).contiguous())
    return ranks


def ndcg(scores: Tensor | np.ndarray, relevance: Tensor | np.ndarray, *, higher_is_better: bool
         ) -> tuple[float, int]:
    """Mean NDCG over rounds (N, n_options) with dense relevances; returns (ndcg, rounds skipped)."""
    rel = _t(relevance).double()
    ranks = scores_to_ranks(scores, higher_is_better=higher_is_better)
    if rel.shape != ranks.shape:
        raise VisDialInputError(f"relevance shape {tuple(rel.shape)} != scores shape {tuple(ranks.shape)}")
    if (rel < 0).any():
        raise VisDialInputError("relevance scores must be >= 0")
    model_order = torch.argsort(ranks, dim=1)  # option indices, best first
    ideal_order = torch.sort(rel, dim=1, descending=True, stable=True).indices
    discount = torch.log2(torch.arange(rel.shape[1], dtype=torch.float64) + 2)
    values, skipped = [], 0
    for r, m, i in zip(rel, model_order, ideal_order, strict=True):
        k = int((r > 0).sum())
        if k == 0:
            skipped += 1
            continue
        dcg = (r[m[:k]] / discount[:k]).sum()
        best = (r[i[:k]] / discount[:k]).sum()
        values.append(float(dcg / best))
    return (float(np.mean(values)) if values else float("nan")), skipped


def visdial_metrics(scores: Tensor | np.ndarray, gt_index: Sequence[int] | Tensor | np.ndarray, *,
                    higher_is_better: bool, dense_scores: Tensor | np.ndarray | None = None,
                    dense_relevance: Tensor | np.ndarray | None = None, ks: Sequence[int] = KS
                    ) -> dict[str, float]:
    """Official VisDial v1.0 retrieval metrics.

    scores: (n_rounds, n_options) for every evaluated round; gt_index: (n_rounds,) 0-based.
    dense_scores / dense_relevance: (n_dialogs, n_options) for the densely annotated round of each dialog
    (optional; without them there is no `ndcg`). Returns r1, r5, r10 (fractions), mean_rank, mrr, n_rounds,
    and ndcg, ndcg_skipped when dense data is given.
    """
    ranks = scores_to_ranks(scores, higher_is_better=higher_is_better)
    gt = _t(gt_index).long()
    if gt.shape != (ranks.shape[0],):
        raise VisDialInputError(f"gt_index must have one entry per round ({ranks.shape[0]}), "
                                f"got shape {tuple(gt.shape)}")
    if len(gt) == 0:
        raise VisDialInputError("no rounds to score")
    if int(gt.min()) < 0 or int(gt.max()) >= ranks.shape[1]:
        raise VisDialInputError(f"gt_index outside [0, {ranks.shape[1]})")
    gt_rank = ranks.gather(1, gt.unsqueeze(1)).squeeze(1).double()
    out = {f"r{k}": float((gt_rank <= k).double().mean()) for k in ks}
    out["mean_rank"] = float(gt_rank.mean())
    out["mrr"] = float((1.0 / gt_rank).mean())
    out["n_rounds"] = float(len(gt_rank))
    if (dense_scores is None) != (dense_relevance is None):
        raise VisDialInputError("give both dense_scores and dense_relevance, or neither")
    if dense_scores is not None and dense_relevance is not None:
        out["ndcg"], skipped = ndcg(dense_scores, dense_relevance, higher_is_better=higher_is_better)
        out["ndcg_skipped"] = float(skipped)
    return out
