"""VisDial v1.0 metrics with the official definitions (visdial-challenge-starter-pytorch, visdialch/metrics.py),
and ties resolved the way retrieval resolves them (eval.metrics.retrieval).

- Scores can be "higher is better" (logits, log-likelihoods) or "lower is better" (losses, as V-Glória's
  summed answer-token loss): say which with `higher_is_better`; nothing is guessed.
- R@1/5/10, mean rank and MRR use the ground-truth option (gt_index) of EVERY round. With a = options
  scoring strictly better than the ground truth and w = other options scoring the same:
  - headline (`r<k>`, `mean_rank`, `mrr`): expected value under uniformly random tie-breaking, the
    ground truth's 1-based rank being uniform on a+1 .. a+w+1: R@k = clip((k - a) / (w + 1), 0, 1),
    mean rank a + w/2 + 1, MRR mean of 1/r over those ranks;
  - pessimistic (`r<k>_pess`, `mean_rank_pess`, `mrr_pess`): rank a + w + 1.
  The official code sorts with torch.sort, whose order among equal scores is unspecified (in practice
  the option's position): a round's R@1 could depend on where the ground truth sits among equal options.
  Here no metric depends on option position (tests permute the options).
- NDCG uses only the densely annotated round of each dialog: k = number of options with relevance > 0;
  DCG@k of the model's ranking vs DCG@k of the ideal (relevance-sorted) ranking, discount log2(i + 2)
  for 0-based position i. Under random tie-breaking the expected relevance at a position is the mean
  relevance of the tied group covering it, and DCG is linear in the relevances, so E[DCG@k] is exact.
  Rounds whose relevances are all 0 have no ideal DCG: they are skipped and counted in `ndcg_skipped`
  (the official code would produce NaN).
- Translation collisions: distinct English options can become one Portuguese string; a round whose
  ground-truth option's PT text equals another option's is counted by `translation_collisions`.
- Rankings (`VISDIAL_RANKINGS`): one evaluation scores the rounds several ways, each under its own keys:
  the model's summed answer loss (`it2t_*`, the thesis' headline) and mean token loss (`it2t_meanloss_*`), and
  as separate baseline records the same LLM with no image and options ranked by length alone
  (`option_lengths`). Summed loss favours short options, and VisDial's right answers are short.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from eval.metrics.retrieval import expected_hits

KS = (1, 5, 10)

# ranking -> (record, key prefix). Record None: the run's own metrics; otherwise a baseline record of that
# name (metrics.json `baselines`), so a baseline can never be read as the model's own figure.
VISDIAL_RANKINGS: dict[str, tuple[str | None, str]] = {
    "sum": (None, "it2t_"),
    "mean": (None, "it2t_meanloss_"),
    "no_image": ("no_image", "it2t_"),
    "no_image_mean": ("no_image", "it2t_meanloss_"),
    "length": ("length", "it2t_"),
}
# Counts that are the same under every ranking of the same rounds: kept once, under the headline.
_SHARED = ("n_rounds", "ndcg_skipped")


class VisDialInputError(ValueError):
    """Scores, gt indices or relevances of a VisDial evaluation do not fit together."""


def _t(x: Tensor | np.ndarray | Sequence) -> Tensor:
    return x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))


def _goodness(scores: Tensor | np.ndarray, higher_is_better: bool) -> Tensor:
    """(N, n_options) float64 scores with higher = better, validated."""
    s = _t(scores).double()
    if s.ndim != 2:
        raise VisDialInputError(f"scores must be (n_rounds, n_options), got shape {tuple(s.shape)}")
    if not torch.isfinite(s).all():
        raise VisDialInputError("scores contain NaN or infinite values")
    return s if higher_is_better else -s


def gt_standing(scores: Tensor | np.ndarray, gt_index: Tensor, *, higher_is_better: bool) -> Tensor:
    """(N, 3) int64 (a, w, 1) of each round's ground-truth option: a options strictly better, w others tied."""
    s = _goodness(scores, higher_is_better)
    right = s.gather(1, gt_index.unsqueeze(1))
    a = (s > right).sum(1)
    w = (s == right).sum(1) - 1
    return torch.stack([a, w, torch.ones_like(a)], 1)


def standing_metrics(standing: Tensor, ks: Sequence[int] = KS) -> dict[str, float]:
    """r<k>, mean_rank, mrr (expected over tie orders), their _pess twins, n_rounds and tied_rounds, from
    the rounds' (a, w, 1) standings. Also what a common-subset comparison recomputes."""
    if len(standing) == 0:
        raise VisDialInputError("no rounds to score")
    a, w = standing[:, 0].double(), standing[:, 1].double()
    out = {f"r{k}": float(expected_hits(standing, k).mean()) for k in ks}
    out["mean_rank"] = float((a + w / 2 + 1).mean())
    # mean of 1/r for r = a+1 .. a+w+1: a (N, n) mask over 1-based positions up to the largest a + w + 1.
    pos = torch.arange(1, int((a + w).max()) + 2, dtype=torch.float64)
    inside = (pos.unsqueeze(0) >= a.unsqueeze(1) + 1) & (pos.unsqueeze(0) <= (a + w).unsqueeze(1) + 1)
    out["mrr"] = float(((inside / pos).sum(1) / (w + 1)).mean())
    pess = a + w + 1
    out.update({f"r{k}_pess": float((pess <= k).double().mean()) for k in ks})
    out["mean_rank_pess"] = float(pess.mean())
    out["mrr_pess"] = float((1.0 / pess).mean())
    out["n_rounds"] = float(len(standing))
    out["tied_rounds"] = float((w > 0).sum())
    return out


def ndcg_per_round(scores: Tensor | np.ndarray, relevance: Tensor | np.ndarray, *, higher_is_better: bool
                   ) -> list[float | None]:
    """Expected NDCG@k of each dense round under random tie-breaking; None for a round with no relevant
    option (no ideal DCG)."""
    s = _goodness(scores, higher_is_better)
    rel = _t(relevance).double()
    if rel.shape != s.shape:
        raise VisDialInputError(f"relevance shape {tuple(rel.shape)} != scores shape {tuple(s.shape)}")
    if (rel < 0).any():
        raise VisDialInputError("relevance scores must be >= 0")
    discount = torch.log2(torch.arange(rel.shape[1], dtype=torch.float64) + 2)
    values: list[float | None] = []
    for score, r in zip(s, rel, strict=True):
        k = int((r > 0).sum())
        if k == 0:
            values.append(None)
            continue
        order = torch.argsort(score, descending=True)
        _, group, counts = torch.unique_consecutive(score[order], return_inverse=True, return_counts=True)
        group_mean = torch.zeros(len(counts), dtype=torch.float64).index_add_(0, group, r[order]) / counts
        dcg = (group_mean[group][:k] / discount[:k]).sum()
        best = (torch.sort(r, descending=True).values[:k] / discount[:k]).sum()
        values.append(float(dcg / best))
    return values


def ndcg(scores: Tensor | np.ndarray, relevance: Tensor | np.ndarray, *, higher_is_better: bool
         ) -> tuple[float, int]:
    """Mean expected NDCG over rounds (N, n_options) with dense relevances; returns (ndcg, rounds skipped)."""
    values = ndcg_per_round(scores, relevance, higher_is_better=higher_is_better)
    kept = [v for v in values if v is not None]
    return (float(np.mean(kept)) if kept else float("nan")), len(values) - len(kept)


def ranking_keys(ranking: str, metrics: dict[str, float]) -> dict[str, float]:
    """`metrics` of one ranking (as visdial_metrics / standing_metrics return them) under that ranking's
    prefix; the counts every ranking of a record shares are kept once, under the `it2t_` prefix."""
    prefix = VISDIAL_RANKINGS[ranking][1]
    return {f"{prefix}{k}": v for k, v in metrics.items() if prefix == "it2t_" or k not in _SHARED}


def option_lengths(options: Sequence[Sequence[str]]) -> np.ndarray:
    """(n_rounds, n_options) character count of every (stripped) option: the length-only baseline's scores,
    lower = better. Characters, not words: a summed token loss grows with tokens, which follow characters,
    and word counts tie most options (VisDial's answers are 1-2 words), which would make a weaker baseline
    (on the sample: R@5 66 by characters, 24 by words)."""
    return np.asarray([[len(o.strip()) for o in opts] for opts in options], dtype=np.float64)


def translation_collisions(options: Sequence[Sequence[str]], gt_index: Sequence[int]) -> int:
    """Rounds whose ground-truth option's text (stripped) equals another option's text."""
    n = 0
    for opts, gt in zip(options, gt_index, strict=True):
        right = opts[gt].strip()
        n += any(o.strip() == right for i, o in enumerate(opts) if i != gt)
    return n


def _gt(gt_index: Sequence[int] | Tensor | np.ndarray, n_rounds: int, n_options: int) -> Tensor:
    gt = _t(gt_index).long()
    if gt.shape != (n_rounds,):
        raise VisDialInputError(f"gt_index must have one entry per round ({n_rounds}), got shape {tuple(gt.shape)}")
    if len(gt) == 0:
        raise VisDialInputError("no rounds to score")
    if int(gt.min()) < 0 or int(gt.max()) >= n_options:
        raise VisDialInputError(f"gt_index outside [0, {n_options})")
    return gt


def visdial_metrics(scores: Tensor | np.ndarray, gt_index: Sequence[int] | Tensor | np.ndarray, *,
                    higher_is_better: bool, dense_scores: Tensor | np.ndarray | None = None,
                    dense_relevance: Tensor | np.ndarray | None = None, ks: Sequence[int] = KS
                    ) -> dict[str, float]:
    """Official VisDial v1.0 retrieval metrics with expected-tie and pessimistic figures.

    scores: (n_rounds, n_options) for every evaluated round; gt_index: (n_rounds,) 0-based.
    dense_scores / dense_relevance: (n_dialogs, n_options) for the densely annotated round of each dialog
    (optional; without them there is no `ndcg`). Returns r1, r5, r10 (fractions), mean_rank, mrr, their
    _pess twins, n_rounds, tied_rounds, and ndcg, ndcg_skipped when dense data is given.
    """
    s = _goodness(scores, True)  # validates; the direction is applied in gt_standing
    gt = _gt(gt_index, s.shape[0], s.shape[1])
    out = standing_metrics(gt_standing(scores, gt, higher_is_better=higher_is_better), ks)
    if (dense_scores is None) != (dense_relevance is None):
        raise VisDialInputError("give both dense_scores and dense_relevance, or neither")
    if dense_scores is not None and dense_relevance is not None:
        out["ndcg"], skipped = ndcg(dense_scores, dense_relevance, higher_is_better=higher_is_better)
        out["ndcg_skipped"] = float(skipped)
    return out
