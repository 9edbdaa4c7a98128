"""Retrieval Recall@K on hand-made similarity matrices (5-captions protocol), ties (expected and pessimistic)
checked against brute force over every tie order, and the vsepp / CLIP_benchmark definitions."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from eval.metrics.retrieval import (
    RetrievalInputError,
    retrieval_metrics,
    retrieval_metrics_from_embeddings,
    vsepp_median_rank,
)

KS = (1, 2, 3)


def test_hand_made_matrix_both_directions():
    # 3 images x 5 texts; texts 0,1 describe image 0, texts 2,3 image 1, text 4 image 2.
    sim = np.array([
        [0.9, 0.1, 0.8, 0.2, 0.3],  # image 0: own best 0.9, nothing >= it                 -> a 0, w 0
        [0.5, 0.6, 0.4, 0.6, 0.7],  # image 1: own best 0.6 tied by text 1, beaten by 4     -> a 1, w 1
        [0.2, 0.2, 0.2, 0.2, 0.2],  # image 2: all tied                                     -> a 0, w 4
    ])
    t2i = [0, 0, 1, 1, 2]
    m = retrieval_metrics(sim, t2i, ks=KS)
    # Expected over tie orders: image 1 hits at 1 never, at 2 half the time; image 2 at k w.p. k/5.
    assert [m["i2t_r1"], m["i2t_r2"], m["i2t_r3"]] == pytest.approx([(1 + 0 + 1 / 5) / 3, (1 + 0.5 + 2 / 5) / 3,
                                                                     (1 + 1 + 3 / 5) / 3])
    # Pessimistic: image 1 rank 2, image 2 rank 4.
    assert [m["i2t_r1_pess"], m["i2t_r2_pess"], m["i2t_r3_pess"]] == pytest.approx([1 / 3, 1 / 3, 2 / 3])
    # Text columns (no ties): t0 rank 0; t1 (0.1 vs 0.6, 0.2) rank 2; t2 (0.4 vs 0.8) rank 1; t3 (0.6 vs
    # 0.2, 0.2) rank 0; t4 (0.2 vs 0.3, 0.7) rank 2. Both rules agree.
    for suffix in ("", "_pess"):
        assert [m[f"t2i_r1{suffix}"], m[f"t2i_r2{suffix}"], m[f"t2i_r3{suffix}"]] == pytest.approx([2 / 5, 3 / 5, 1.0])
    assert m["i2t_n"] == 3 and m["t2i_n"] == 5 and m["i2t_tied"] == 2 and m["t2i_tied"] == 0
    # vsepp median rank: expected 0-based ranks 0, 1.5, 2 -> median 1.5 -> floor 1, + 1; pessimistic 0, 2, 4.
    assert m["i2t_medr"] == 2.0 and m["i2t_medr_pess"] == 3.0
    assert m["i2t_meanr"] == pytest.approx((0 + 1.5 + 2) / 3 + 1)
    assert m["t2i_medr"] == 2.0  # ranks 0, 2, 1, 0, 2
    # Image 2 without captions is no i2t query, but still a t2i candidate (text 4 now describes image 1).
    m = retrieval_metrics(sim, [0, 0, 1, 1, 1], ks=KS)
    assert m["i2t_n"] == 2 and m["t2i_n"] == 5 and m["i2t_r1"] == 1.0  # image 1: own best 0.7, the top


def test_median_rank_follows_vsepp_not_the_lower_middle():
    # numpy's median of an even count is the mean of the two middle values; torch.median takes the lower.
    assert vsepp_median_rank([0, 4]) == 3.0 and float(torch.tensor([0, 4]).median()) + 1 == 1.0
    assert vsepp_median_rank([0, 1, 2, 5]) == 2.0 and vsepp_median_rank([3]) == 4.0
    sim = np.array([[0.9, 0.1], [0.8, 0.7]])  # one caption each: ranks i2t 0 and 1 -> median 0.5 -> 1
    assert retrieval_metrics(sim, [0, 1], ks=(1,))["i2t_medr"] == 1.0
    sim = -np.eye(4) + np.diag([0, 0, 0, 10])  # images 0-2 rank their caption last (3), image 3 first (0)
    m = retrieval_metrics(sim, np.arange(4), ks=(1,))
    assert m["i2t_medr"] == 4.0  # median of 0, 3, 3, 3 is 3


def test_constant_model_scores_chance_not_zero_and_pessimistic_zero():
    m = retrieval_metrics(np.zeros((2, 2)), [0, 1], ks=(1, 2))
    assert m["i2t_r1"] == 0.5 and m["t2i_r1"] == 0.5  # one of two tied candidates: 1/2 at rank 1
    assert m["i2t_r1_pess"] == 0.0 and m["t2i_r1_pess"] == 0.0
    assert m["i2t_r2"] == 1.0 and m["i2t_r2_pess"] == 1.0
    # Two own captions tied at the top, one wrong caption below: a hit at 1 under both rules.
    m = retrieval_metrics(np.array([[0.5, 0.5, 0.1]]), [0, 0, 0], ks=(1,))
    assert m["i2t_r1"] == 1.0 and m["i2t_r1_pess"] == 1.0
    # Two own captions tied with two wrong ones: first own caption ahead of both wrong ones w.p. 2/4 at
    # rank 1; P(X >= 2) = C(2,2)/C(4,2) = 1/6, so R@2 = 5/6.
    m = retrieval_metrics(np.full((2, 4), 0.5), [0, 0, 1, 1], ks=(1, 2, 3))
    assert [m["i2t_r1"], m["i2t_r2"], m["i2t_r3"]] == pytest.approx([2 / 4, 5 / 6, 1.0])  # both images alike
    assert m["i2t_meanr"] == pytest.approx(2 / 3 + 1)  # E[X] = w / (p + 1)


def test_one_caption_per_image_like_cc3m():
    rng = np.random.default_rng(0)
    sim = rng.normal(size=(6, 6)) + 10 * np.eye(6)
    m = retrieval_metrics(sim, np.arange(6))
    assert m["i2t_r1"] == 1.0 and m["t2i_r1"] == 1.0
    sim[2, 2] = -100.0  # image 2 / text 2 now ranked last in both directions
    m = retrieval_metrics(sim, np.arange(6), ks=(1, 5, 6))
    assert m["i2t_r1"] == pytest.approx(5 / 6) and m["i2t_r5"] == pytest.approx(5 / 6)
    assert m["i2t_r6"] == 1.0 and m["t2i_r1"] == pytest.approx(5 / 6)


def _vsepp_i2t(sim: np.ndarray, t2i: np.ndarray) -> np.ndarray:
    """vsepp's i2t loop (evaluation.py), generalised from 5 captions per image to `t2i`: 0-based rank of
    the best-ranked own caption in a descending argsort."""
    ranks = []
    for i in range(sim.shape[0]):
        own = np.flatnonzero(t2i == i)
        if len(own) == 0:
            continue
        inds = np.argsort(-sim[i], kind="stable")  # vsepp: argsort(d)[::-1]; without ties the same order
        ranks.append(min(int(np.where(inds == t)[0][0]) for t in own))
    return np.asarray(ranks)


def _vsepp_t2i(sim: np.ndarray, t2i: np.ndarray) -> np.ndarray:
    return np.asarray([int(np.where(np.argsort(-sim[:, t], kind="stable") == t2i[t])[0][0])
                       for t in range(sim.shape[1])])


def _clip_benchmark_recall(scores: np.ndarray, positive: np.ndarray, k: int) -> float:
    """CLIP_benchmark's recall_at_k: a query hits if any of its positives is in torch.topk(k)."""
    top = torch.topk(torch.as_tensor(scores), k, dim=1).indices.numpy()
    return float(np.mean([positive[q, top[q]].any() for q in range(len(scores))]))


def _over_tie_orders(sim: np.ndarray, t2i: np.ndarray, direction: str):
    """Brute force: vsepp's ranks with ties broken by EVERY order of the candidates (a stable sort of the
    candidates permuted), per query: the mean over orders of hit@k and of the rank, and the worst rank."""
    n_cand = sim.shape[1] if direction == "i2t" else sim.shape[0]
    rank_lists = []
    for perm in itertools.permutations(range(n_cand)):
        perm = np.asarray(perm)
        if direction == "i2t":
            rank_lists.append(_vsepp_i2t(sim[:, perm], t2i[perm]))
        else:
            inv = np.argsort(perm)
            rank_lists.append(_vsepp_t2i(sim[perm], inv[t2i]))
    return np.stack(rank_lists)  # (orders, queries)


@pytest.mark.parametrize("seed", range(4))
def test_expected_ties_match_brute_force_over_every_tie_order(seed):
    rng = np.random.default_rng(seed)
    t2i = np.array([0, 0, 1, 1, 2, 2])
    sim = rng.integers(0, 3, size=(3, 6)).astype(float)  # 3 levels: ties everywhere
    m = retrieval_metrics(sim, t2i, ks=(1, 2, 3))
    for direction in ("i2t", "t2i"):
        ranks = _over_tie_orders(sim, t2i, direction)
        for k in (1, 2, 3):
            assert m[f"{direction}_r{k}"] == pytest.approx(float((ranks < k).mean()), abs=1e-12)
            assert m[f"{direction}_r{k}_pess"] == pytest.approx(float((ranks.max(0) < k).mean()))
        per_query = ranks.mean(0)  # expected rank of each query
        assert m[f"{direction}_meanr"] == pytest.approx(float(per_query.mean()) + 1)
        assert m[f"{direction}_medr"] == math.floor(float(np.median(per_query))) + 1
        assert m[f"{direction}_medr_pess"] == math.floor(float(np.median(ranks.max(0)))) + 1
    assert m["i2t_tied"] + m["t2i_tied"] > 0


def test_without_ties_vsepp_and_clip_benchmark_agree_exactly():
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(13, 8, generator=g), dim=1)
    t2i = np.repeat(np.arange(13), 5)
    txt = torch.nn.functional.normalize(img[t2i] + 0.9 * torch.randn(65, 8, generator=g), dim=1)
    sim = (img @ txt.T).double().numpy()
    chunked = retrieval_metrics_from_embeddings(img, txt, t2i, chunk=4)
    full = retrieval_metrics(img @ txt.T, t2i)
    assert chunked == pytest.approx(full)
    i2t_ranks, t2i_ranks = _vsepp_i2t(sim, t2i), _vsepp_t2i(sim, t2i)
    positive = t2i[None, :] == np.arange(13)[:, None]  # (images, texts)
    for k in (1, 5, 10):
        assert chunked[f"i2t_r{k}"] == pytest.approx(float((i2t_ranks < k).mean()))
        assert chunked[f"t2i_r{k}"] == pytest.approx(float((t2i_ranks < k).mean()))
        assert chunked[f"i2t_r{k}"] == pytest.approx(_clip_benchmark_recall(sim, positive, k))
        assert chunked[f"t2i_r{k}"] == pytest.approx(_clip_benchmark_recall(sim.T, positive.T, k))
        assert chunked[f"i2t_r{k}"] == chunked[f"i2t_r{k}_pess"]
    assert chunked["i2t_medr"] == math.floor(np.median(i2t_ranks)) + 1  # vsepp's medr
    assert chunked["t2i_medr"] == math.floor(np.median(t2i_ranks)) + 1
    assert chunked["i2t_tied"] == 0 and 0 < chunked["i2t_r1"] < 1  # the data is neither trivial nor hopeless


def test_identical_texts_tie_exactly_in_chunks():
    # Duplicate captions (one PT string for two EN captions) must tie exactly, whatever chunk they fall in.
    g = torch.Generator().manual_seed(1)
    img = torch.nn.functional.normalize(torch.randn(5, 16, generator=g), dim=1)
    txt = torch.nn.functional.normalize(img + 0.3 * torch.randn(5, 16, generator=g), dim=1)
    # Texts 5, 6 copy texts 0, 1 but are the only captions of images 2, 3 (texts 2, 3 describe image 4).
    t2i = np.array([0, 1, 4, 4, 4, 2, 3])
    sim = (img @ txt.T)[:, [0, 1, 2, 3, 4, 0, 1]]  # equal columns by construction
    txt = torch.cat([txt, txt[:2]])
    want = retrieval_metrics(sim, t2i)
    for chunk in (1, 3, 100):
        assert retrieval_metrics_from_embeddings(img, txt, t2i, chunk=chunk) == pytest.approx(want)
    assert want["i2t_tied"] >= 2 and want["t2i_tied"] == 0


def test_bad_inputs_are_reported():
    with pytest.raises(RetrievalInputError, match="one entry per text"):
        retrieval_metrics(np.zeros((2, 3)), [0, 1])
    with pytest.raises(RetrievalInputError, match="outside"):
        retrieval_metrics(np.zeros((2, 2)), [0, 2])
    with pytest.raises(RetrievalInputError, match="NaN"):
        retrieval_metrics(np.array([[np.nan, 0.0], [0.0, 1.0]]), [0, 1])
    with pytest.raises(RetrievalInputError, match="shapes"):
        retrieval_metrics_from_embeddings(np.zeros((2, 3)), np.zeros((2, 4)), [0, 1])
