"""VisDial v1.0 metrics (R@k, mean rank, MRR, NDCG) on hand-computed cases; ties by brute force over every
tie order; no metric depends on option position; translation collisions."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from eval.metrics.visdial import VisDialInputError, ndcg, translation_collisions, visdial_metrics


def test_ties_are_expected_over_tie_orders_and_pessimistic_beside():
    # Losses (lower = better); gt 0 tied with option 1 at the top -> rank 1 or 2, equally likely.
    m = visdial_metrics(np.array([[1.0, 1.0, 2.0]]), [0], higher_is_better=False, ks=(1, 2))
    assert m["r1"] == 0.5 and m["r2"] == 1.0 and m["mean_rank"] == 1.5 and m["mrr"] == pytest.approx(0.75)
    assert m["r1_pess"] == 0.0 and m["mean_rank_pess"] == 2.0 and m["mrr_pess"] == 0.5
    assert m["tied_rounds"] == 1
    # Higher is better: gt 2 below one option, tied with two -> ranks 2, 3, 4.
    m = visdial_metrics(np.array([[0.0, 3.0, 1.0, 1.0, 1.0]]), [2], higher_is_better=True, ks=(1, 2, 3))
    assert [m["r1"], m["r2"], m["r3"]] == pytest.approx([0.0, 1 / 3, 2 / 3])
    assert m["mrr"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 4) / 3) and m["mean_rank"] == 3.0


def _brute(scores: np.ndarray, gt: list[int], relevance: np.ndarray | None, k: int):
    """Official-style ranks (a descending sort) with ties broken by EVERY order of the options; returns the
    mean over orders of (hit@k, rank, 1/rank, NDCG) averaged over rounds."""
    hits, ranks, rr, nd = [], [], [], []
    for r, row in enumerate(scores):
        n = len(row)
        per = []
        for perm in itertools.permutations(range(n)):
            order = sorted(range(n), key=lambda o: (-row[o], perm.index(o)))
            rank = order.index(gt[r]) + 1
            value = float("nan")
            if relevance is not None:
                rel = relevance[r]
                kk = int((rel > 0).sum())
                dcg = sum(rel[o] / math.log2(i + 2) for i, o in enumerate(order[:kk]))
                ideal = sum(v / math.log2(i + 2) for i, v in enumerate(sorted(rel, reverse=True)[:kk]))
                value = dcg / ideal
            per.append((rank <= k, rank, 1 / rank, value))
        arr = np.asarray(per, dtype=float).mean(0)
        hits.append(arr[0]), ranks.append(arr[1]), rr.append(arr[2]), nd.append(arr[3])
    return np.mean(hits), np.mean(ranks), np.mean(rr), np.mean(nd)


@pytest.mark.parametrize("seed", range(3))
def test_expected_metrics_match_brute_force_over_every_tie_order(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 3, size=(6, 5)).astype(float)  # 5 options, 3 levels: many ties
    gt = rng.integers(0, 5, size=6).tolist()
    relevance = rng.choice([0.0, 0.5, 1.0], size=(6, 5))
    relevance[:, 0] = 1.0  # every round has a relevant option
    for k in (1, 2, 3):
        m = visdial_metrics(scores, gt, higher_is_better=True, dense_scores=scores, dense_relevance=relevance,
                            ks=(k,))
        hit, rank, rr, nd = _brute(scores, gt, relevance, k)
        assert m[f"r{k}"] == pytest.approx(hit) and m["mean_rank"] == pytest.approx(rank)
        assert m["mrr"] == pytest.approx(rr) and m["ndcg"] == pytest.approx(nd)
    assert m["tied_rounds"] > 0


def test_no_metric_depends_on_option_position():
    rng = np.random.default_rng(7)
    scores = rng.integers(0, 4, size=(20, 10)).astype(float)
    gt = rng.integers(0, 10, size=20)
    rel = rng.choice([0.0, 0.5, 1.0], size=(20, 10))
    base = visdial_metrics(scores, gt, higher_is_better=False, dense_scores=scores, dense_relevance=rel)
    for _ in range(5):
        perm = np.stack([rng.permutation(10) for _ in range(20)])  # each round's options shuffled
        inv = np.argsort(perm, axis=1)
        moved = visdial_metrics(np.take_along_axis(scores, perm, 1), inv[np.arange(20), gt],
                                higher_is_better=False, dense_scores=np.take_along_axis(scores, perm, 1),
                                dense_relevance=np.take_along_axis(rel, perm, 1))
        assert moved == pytest.approx(base)


def test_translation_collisions_count_rounds_whose_gt_text_repeats():
    options = [["sim", "sim ", "não"], ["sim", "não", "talvez"], ["não", "sim", "não"], ["a", "b", "a"]]
    assert translation_collisions(options, [0, 0, 1, 0]) == 2  # rounds 1 and 4 ("a" twice); round 3's
    # repeated "não" is not its ground truth


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
    assert m["n_rounds"] == 3 and "ndcg" not in m and m["tied_rounds"] == 0
    assert [m["r1_pess"], m["mean_rank_pess"]] == [m["r1"], m["mean_rank"]]  # no ties: one figure
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
