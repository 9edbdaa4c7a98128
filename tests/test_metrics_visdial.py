"""VisDial v1.0 metrics (ranks, R@k, mean rank, MRR, NDCG) on hand-computed cases."""
from __future__ import annotations

import math

import numpy as np
import pytest

from eval.metrics.visdial import VisDialInputError, ndcg, scores_to_ranks, visdial_metrics


def test_ranks_follow_the_declared_direction_and_break_ties_by_index():
    losses = np.array([[3.0, 1.0, 2.0]])
    assert scores_to_ranks(losses, higher_is_better=False).tolist() == [[3, 1, 2]]
    assert scores_to_ranks(losses, higher_is_better=True).tolist() == [[1, 3, 2]]
    assert scores_to_ranks(np.array([[1.0, 1.0, 0.0]]), higher_is_better=True).tolist() == [[1, 2, 3]]
    assert scores_to_ranks(np.array([[0.0, 1.0, 0.0]]), higher_is_better=False).tolist() == [[1, 3, 2]]


def test_recall_mean_rank_and_mrr():
    # Losses (lower = better) of 3 rounds x 4 options; gt options rank 1, 3 and 4.
    losses = np.array([
        [0.1, 0.5, 0.9, 0.7],  # gt 0 -> rank 1
        [0.4, 0.2, 0.3, 0.1],  # gt 0 -> rank 4
        [0.2, 0.9, 0.5, 0.1],  # gt 2 -> rank 3
    ])
    m = visdial_metrics(losses, [0, 0, 2], higher_is_better=False, ks=(1, 2, 3))
    assert [m["r1"], m["r2"], m["r3"]] == pytest.approx([1 / 3, 1 / 3, 2 / 3])
    assert m["mean_rank"] == pytest.approx((1 + 4 + 3) / 3)
    assert m["mrr"] == pytest.approx((1 + 1 / 4 + 1 / 3) / 3)
    assert m["n_rounds"] == 3 and "ndcg" not in m
    # The same numbers as log-likelihoods (higher = better) give the same metrics.
    assert visdial_metrics(-losses, [0, 0, 2], higher_is_better=True, ks=(1, 2, 3)) == m


def test_ndcg_uses_k_relevant_options_and_log2_discount():
    relevance = np.array([[0.0, 1.0, 0.5, 0.0, 0.5]])  # k = 3 options with relevance > 0
    scores = np.array([[0.9, 0.8, 0.1, 0.7, 0.6]])  # model order: 0, 1, 3, 4, 2
    dcg = 0 / math.log2(2) + 1.0 / math.log2(3) + 0 / math.log2(4)
    ideal = 1.0 / math.log2(2) + 0.5 / math.log2(3) + 0.5 / math.log2(4)
    value, skipped = ndcg(scores, relevance, higher_is_better=True)
    assert value == pytest.approx(dcg / ideal) and skipped == 0
    assert value == pytest.approx(0.40303, abs=1e-5)
    # A perfect ranking gives 1; a round with no relevant option is skipped, not NaN.
    perfect = np.array([[0.0, 5.0, 4.0, 0.0, 3.0]])
    m = visdial_metrics(np.vstack([scores, perfect]), [1, 1], higher_is_better=True,
                        dense_scores=np.vstack([scores, perfect, scores]),
                        dense_relevance=np.vstack([relevance, relevance, np.zeros((1, 5))]))
    assert m["ndcg"] == pytest.approx((dcg / ideal + 1.0) / 2) and m["ndcg_skipped"] == 1


def test_bad_inputs_are_reported():
    with pytest.raises(VisDialInputError, match="gt_index outside"):
        visdial_metrics(np.zeros((1, 4)), [4], higher_is_better=False)
    with pytest.raises(VisDialInputError, match="one entry per round"):
        visdial_metrics(np.zeros((2, 4)), [0], higher_is_better=False)
    with pytest.raises(VisDialInputError, match="NaN"):
        visdial_metrics(np.array([[np.nan, 0.0]]), [0], higher_is_better=False)
    with pytest.raises(VisDialInputError, match="both"):
        visdial_metrics(np.zeros((1, 2)), [0], higher_is_better=False, dense_scores=np.zeros((1, 2)))
    with pytest.raises(VisDialInputError, match="relevance shape"):
        ndcg(np.zeros((1, 3)), np.zeros((1, 4)), higher_is_better=True)
