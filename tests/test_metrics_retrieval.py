"""Retrieval Recall@K on hand-made similarity matrices (5-captions protocol, pessimistic ties)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from eval.metrics.retrieval import (
    RetrievalInputError,
    retrieval_metrics,
    retrieval_metrics_from_embeddings,
)

KS = (1, 2, 3)


def test_hand_made_matrix_both_directions():
    # 3 images x 5 texts; texts 0,1 describe image 0, texts 2,3 image 1, text 4 image 2.
    sim = np.array([
        [0.9, 0.1, 0.8, 0.2, 0.3],  # image 0: own best 0.9, nothing >= it            -> rank 0
        [0.5, 0.6, 0.4, 0.6, 0.7],  # image 1: own best 0.6 tied by text 1, beaten by 4 -> rank 2
        [0.2, 0.2, 0.2, 0.2, 0.2],  # image 2: all tied, pessimistic                    -> rank 4
    ])
    t2i = [0, 0, 1, 1, 2]
    m = retrieval_metrics(sim, t2i, ks=KS)
    assert [m["i2t_r1"], m["i2t_r2"], m["i2t_r3"]] == pytest.approx([1 / 3, 1 / 3, 2 / 3])
    # Text columns: t0 rank 0; t1 (0.1 vs 0.6, 0.2) rank 2; t2 (0.4 vs 0.8) rank 1; t3 (0.6 vs 0.2, 0.2)
    # rank 0; t4 (0.2 vs 0.3, 0.7) rank 2.
    assert [m["t2i_r1"], m["t2i_r2"], m["t2i_r3"]] == pytest.approx([2 / 5, 3 / 5, 1.0])
    assert m["i2t_n"] == 3 and m["t2i_n"] == 5
    assert m["i2t_medr"] == 3.0  # 1-based median of ranks 1, 3, 5


def test_ties_are_pessimistic_and_own_caption_ties_do_not_hurt():
    constant = np.zeros((2, 2))
    m = retrieval_metrics(constant, [0, 1], ks=(1, 2))
    assert m["i2t_r1"] == 0.0 and m["t2i_r1"] == 0.0  # a constant model earns nothing at R@1
    assert m["i2t_r2"] == 1.0 and m["t2i_r2"] == 1.0
    # Two own captions tied at the top, one wrong caption below: still a hit at 1.
    m = retrieval_metrics(np.array([[0.5, 0.5, 0.1]]), [0, 0, 0], ks=(1,))
    assert m["i2t_r1"] == 1.0


def test_one_caption_per_image_like_cc3m():
    rng = np.random.default_rng(0)
    sim = rng.normal(size=(6, 6)) + 10 * np.eye(6)
    m = retrieval_metrics(sim, np.arange(6))
    assert m["i2t_r1"] == 1.0 and m["t2i_r1"] == 1.0
    sim[2, 2] = -100.0  # image 2 / text 2 now ranked last in both directions
    m = retrieval_metrics(sim, np.arange(6), ks=(1, 5, 6))
    assert m["i2t_r1"] == pytest.approx(5 / 6) and m["i2t_r5"] == pytest.approx(5 / 6)
    assert m["i2t_r6"] == 1.0 and m["t2i_r1"] == pytest.approx(5 / 6)


def _brute_force(sim: np.ndarray, t2i: np.ndarray, k: int) -> tuple[float, float]:
    """The protocol spelled out with Python sorts (no ties in random data)."""
    hits_i = []
    for i in range(sim.shape[0]):
        order = sorted(range(sim.shape[1]), key=lambda t: -sim[i, t])
        hits_i.append(any(t2i[t] == i for t in order[:k]))
    hits_t = []
    for t in range(sim.shape[1]):
        order = sorted(range(sim.shape[0]), key=lambda i: -sim[i, t])
        hits_t.append(t2i[t] in order[:k])
    return float(np.mean(hits_i)), float(np.mean(hits_t))


def test_chunked_embeddings_match_the_protocol_on_random_data():
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(13, 8, generator=g), dim=1)
    t2i = np.repeat(np.arange(13), 5)
    txt = torch.nn.functional.normalize(img[t2i] + 0.9 * torch.randn(65, 8, generator=g), dim=1)
    chunked = retrieval_metrics_from_embeddings(img, txt, t2i, chunk=4)
    full = retrieval_metrics((img @ txt.T).numpy(), t2i)
    assert chunked == pytest.approx(full)
    for k in (1, 5, 10):
        i2t, t2i_r = _brute_force((img @ txt.T).numpy(), t2i, k)
        assert chunked[f"i2t_r{k}"] == pytest.approx(i2t) and chunked[f"t2i_r{k}"] == pytest.approx(t2i_r)
    assert 0 < chunked["i2t_r1"] < 1  # the data is neither trivial nor hopeless


def test_bad_inputs_are_reported():
    with pytest.raises(RetrievalInputError, match="one entry per text"):
        retrieval_metrics(np.zeros((2, 3)), [0, 1])
    with pytest.raises(RetrievalInputError, match="outside"):
        retrieval_metrics(np.zeros((2, 2)), [0, 2])
    with pytest.raises(RetrievalInputError, match="NaN"):
        retrieval_metrics(np.array([[np.nan, 0.0], [0.0, 1.0]]), [0, 1])
    with pytest.raises(RetrievalInputError, match="shapes"):
        retrieval_metrics_from_embeddings(np.zeros((2, 3)), np.zeros((2, 4)), [0, 1])
