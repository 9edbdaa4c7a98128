"""Cross-modal retrieval Recall@K (image->text, text->image) with the standard COCO 5-captions protocol.

Protocol (Karpathy / VSE++ style), from a similarity matrix sim (n_images x n_texts) and
`text_to_image[t]` = index of the image caption t describes:
- image->text: each image ranks all texts; a hit at k if ANY of its captions is among the top k.
  Images without any caption are not queried (they still compete as t2i candidates).
- text->image: each caption ranks all images; a hit at k if its image is among the top k.
CC3M validation (one caption per image) is the same computation with n_texts == n_images.

Ties (identical PT captions are common after translation). For a query, with s* the best score of a right
candidate (its own image; for i2t the best of its captions):
    a = wrong candidates scoring > s*,  w = wrong candidates scoring == s*,  p = right candidates at s*.
- EXPECTED (the headline, keys `<dir>_r<k>`): the expected value of the metric when ties are broken
  uniformly at random. The number X of tied wrong candidates ranked before the first tied right one has
  P(X >= j) = C(w, j) / C(w + p, j), E[X] = w / (p + 1); R@k = mean over queries of P(a + X < k).
  vsepp (numpy argsort) and CLIP_benchmark (torch.topk) break ties by an unspecified, implementation-defined
  order; this is the value their R@k has on average over tie orders, and equals it exactly without ties.
- PESSIMISTIC (keys `<dir>_r<k>_pess`): every tied wrong candidate ranks first, rank a + w. A model with
  constant embeddings scores 0 here (and k / n_candidates-ish, chance level, in the expected figure).
- Median rank as vsepp: floor(median of the 0-based ranks over all queries) + 1, numpy's median (the mean
  of the two middle values for an even count). `<dir>_medr` uses the expected ranks a + E[X],
  `<dir>_medr_pess` the pessimistic ones; `<dir>_meanr` is mean(expected rank) + 1.
- `<dir>_tied`: queries whose right candidate is tied with a wrong one (w > 0).
Identical embedding rows are scored once and shared, so equal texts get bit-identical similarities (a
blocked matrix product need not give two equal rows equal results).

Works in chunks from embeddings, so COCO 5k (5,000 x 25,000 similarities) never materialises at once.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from eval.metrics.labels import TIE_RULE_LABEL  # noqa: F401  (re-exported: the runners label results with it)

KS = (1, 5, 10)
ArrayLike = Tensor | np.ndarray


class RetrievalInputError(ValueError):
    """Shapes or indices of a retrieval evaluation do not fit together."""


def _t(x: ArrayLike) -> Tensor:
    return x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))


def _validate(n_images: int, n_texts: int, text_to_image: Tensor) -> None:
    if text_to_image.ndim != 1 or len(text_to_image) != n_texts:
        raise RetrievalInputError(f"text_to_image must have one entry per text ({n_texts}), "
                                  f"got shape {tuple(text_to_image.shape)}")
    if n_texts and (int(text_to_image.min()) < 0 or int(text_to_image.max()) >= n_images):
        raise RetrievalInputError(f"text_to_image points outside [0, {n_images}): "
                                  f"min {int(text_to_image.min())}, max {int(text_to_image.max())}")


# A query's standing: (a, w, p) as in the module docstring, one row per query; a = -1 marks an image with
# no caption (not a query).
Standing = Tensor  # (n, 3) int64


def i2t_standing(sim_rows: Tensor, image_index: Tensor, text_to_image: Tensor) -> Standing:
    """(a, w, p) of each image row. sim_rows: (b, n_texts) similarities of images `image_index` (b,)."""
    b = sim_rows.shape[0]
    # Each image's own captions are found through text_to_image (no (b, n_texts) mask): the best own score,
    # then two passes over the row count what scores above it and what ties it.
    size = int(max(int(image_index.max()), int(text_to_image.max()) if len(text_to_image) else 0)) + 1
    local = torch.full((size,), -1, dtype=torch.long, device=sim_rows.device)
    local[image_index] = torch.arange(b, device=sim_rows.device)
    texts = torch.nonzero(local[text_to_image] >= 0).squeeze(1)
    rows = local[text_to_image[texts]]
    own_scores = sim_rows[rows, texts]
    best = torch.full((b,), float("-inf"), dtype=sim_rows.dtype, device=sim_rows.device)
    best = best.scatter_reduce(0, rows, own_scores, reduce="amax")
    p = torch.zeros(b, dtype=torch.long, device=sim_rows.device).index_add_(0, rows, (own_scores == best[rows]).long())
    a = (sim_rows > best.unsqueeze(1)).sum(1)  # no own caption scores above the best own one
    w = (sim_rows == best.unsqueeze(1)).sum(1) - p
    a = torch.where(p > 0, a, torch.full_like(a, -1))  # an image without captions is not a query
    return torch.stack([a, w, p], 1)


def t2i_standing(sim_cols: Tensor, gt_image: Tensor) -> Standing:
    """(a, w, 1) of each text row. sim_cols: (b, n_images) similarities of b texts; gt_image: (b,)."""
    right = sim_cols.gather(1, gt_image.unsqueeze(1))  # (b, 1)
    a = (sim_cols > right).sum(1)
    w = (sim_cols == right).sum(1) - 1  # minus the right image itself
    return torch.stack([a, w, torch.ones_like(a)], 1)


def p_tied_first_at_least(w: Tensor, p: Tensor, j: Tensor) -> Tensor:
    """P(X >= j) for X = tied wrong candidates before the first of p tied right ones, in a uniformly random
    order of w wrong and p right: C(w, j) / C(w + p, j) (1 for j <= 0, 0 for j > w). float64."""
    w, p, j = w.double(), p.double(), j.double()
    jj = j.clamp(min=0).minimum(w)
    lg = torch.lgamma
    ratio = torch.exp(lg(w + 1) - lg(w - jj + 1) - lg(w + p + 1) + lg(w + p - jj + 1))
    return torch.where(j <= 0, torch.ones_like(ratio), torch.where(j > w, torch.zeros_like(ratio), ratio))


def expected_hits(standing: Standing, k: int) -> Tensor:
    """P(rank < k) per query under random tie-breaking (float64)."""
    a, w, p = standing.unbind(1)
    return 1.0 - p_tied_first_at_least(w, p, k - a)


def expected_ranks(standing: Standing) -> Tensor:
    """Expected 0-based rank a + w / (p + 1) per query (float64)."""
    a, w, p = standing.double().unbind(1)
    return a + w / (p + 1)


def pessimistic_ranks(standing: Standing) -> Tensor:
    """0-based rank a + w per query: every tied wrong candidate first."""
    a, w, _ = standing.unbind(1)
    return a + w


def vsepp_median_rank(ranks_0based: Tensor | np.ndarray) -> float:
    """floor(median) + 1 over all queries, numpy's median (vsepp's `medr`)."""
    return float(math.floor(float(np.median(np.asarray(ranks_0based, dtype=np.float64))))) + 1.0


def recall_at(ranks: Tensor, ks: Sequence[int] = KS) -> dict[int, float]:
    """Fraction of queries whose 0-based rank is < k, per k (in [0, 1]); for fixed (e.g. pessimistic) ranks."""
    if len(ranks) == 0:
        raise RetrievalInputError("no queries to score")
    return {k: float((ranks < k).double().mean()) for k in ks}


def standing_summary(name: str, standing: Standing, ks: Sequence[int] = KS) -> dict[str, float]:
    """Metrics of one direction from its queries' standings (`name`_r<k>, _r<k>_pess, _medr, _medr_pess,
    _meanr, _n, _tied). Also what a common-subset comparison recomputes."""
    standing = standing[standing[:, 0] >= 0]
    if len(standing) == 0:
        raise RetrievalInputError("no queries to score")
    out: dict[str, float] = {}
    pess = pessimistic_ranks(standing)
    expected = expected_ranks(standing)
    for k in ks:
        out[f"{name}_r{k}"] = float(expected_hits(standing, k).mean())
    for k, r in recall_at(pess, ks).items():
        out[f"{name}_r{k}_pess"] = r
    out[f"{name}_medr"] = vsepp_median_rank(expected)
    out[f"{name}_medr_pess"] = vsepp_median_rank(pess)
    out[f"{name}_meanr"] = float(expected.mean()) + 1.0
    out[f"{name}_n"] = float(len(standing))
    out[f"{name}_tied"] = float((standing[:, 1] > 0).sum())
    return out


def _check_finite(x: Tensor, what: str) -> None:
    if not torch.isfinite(x).all():
        raise RetrievalInputError(f"{what} contains NaN or infinite values")


def retrieval_metrics(sim: ArrayLike, text_to_image: ArrayLike, ks: Sequence[int] = KS) -> dict[str, float]:
    """Metrics for both directions from a full (n_images, n_texts) similarity matrix (see module docstring).
    Keys: i2t_r1, i2t_r5, i2t_r10 (expected ties), i2t_r1_pess, ..., i2t_medr, i2t_medr_pess, i2t_meanr,
    i2t_n, i2t_tied, and the same for t2i."""
    s, t2i_idx = _t(sim).double(), _t(text_to_image).long()
    if s.ndim != 2:
        raise RetrievalInputError(f"sim must be (n_images, n_texts), got shape {tuple(s.shape)}")
    _validate(s.shape[0], s.shape[1], t2i_idx)
    _check_finite(s, "sim")
    i2t = i2t_standing(s, torch.arange(s.shape[0]), t2i_idx)
    t2i = t2i_standing(s.t(), t2i_idx)
    return {**standing_summary("i2t", i2t, ks), **standing_summary("t2i", t2i, ks)}


def _distinct(emb: Tensor) -> tuple[Tensor, Tensor | None]:
    """(distinct rows, index of each row among them), or (emb, None) when every row is distinct already."""
    distinct, inverse = torch.unique(emb, dim=0, return_inverse=True)
    return (emb, None) if len(distinct) == len(emb) else (distinct, inverse)


def _expand(sim: Tensor, inverse: Tensor | None) -> Tensor:
    return sim if inverse is None else sim[:, inverse]


def retrieval_metrics_from_embeddings(
    image_emb: ArrayLike, text_emb: ArrayLike, text_to_image: ArrayLike, ks: Sequence[int] = KS, *,
    chunk: int = 1024, device: str | torch.device = "cpu", progress: Callable[[int, int], None] | None = None,
) -> dict[str, float]:
    """Same as `retrieval_metrics` with sim = image_emb @ text_emb.T, computed `chunk` rows at a time.
    Embeddings are used as given (the model L2-normalises them, so this is cosine similarity)."""
    img, txt = _t(image_emb).float().to(device), _t(text_emb).float().to(device)
    t2i_idx = _t(text_to_image).long().to(device)
    if img.ndim != 2 or txt.ndim != 2 or img.shape[1] != txt.shape[1]:
        raise RetrievalInputError(f"embedding shapes do not match: images {tuple(img.shape)}, "
                                  f"texts {tuple(txt.shape)}")
    _validate(len(img), len(txt), t2i_idx)
    _check_finite(img, "image embeddings")
    _check_finite(txt, "text embeddings")
    # The candidates of a row (texts for i2t, images for t2i) are multiplied once per distinct embedding and
    # gathered: equal texts get exactly equal similarities, hence exact ties.
    img_u, img_inv = _distinct(img)
    txt_u, txt_inv = _distinct(txt)
    steps = -(-len(img) // chunk) + -(-len(txt) // chunk)
    done = 0
    i2t_parts = []
    for s in range(0, len(img), chunk):
        rows = _expand(img[s : s + chunk] @ txt_u.t(), txt_inv)
        i2t_parts.append(i2t_standing(rows, torch.arange(s, s + len(rows), device=device), t2i_idx).cpu())
        done += 1
        if progress:
            progress(done, steps)
    t2i_parts = []
    for s in range(0, len(txt), chunk):
        cols = _expand(txt[s : s + chunk] @ img_u.t(), img_inv)
        t2i_parts.append(t2i_standing(cols, t2i_idx[s : s + chunk]).cpu())
        done += 1
        if progress:
            progress(done, steps)
    return {**standing_summary("i2t", torch.cat(i2t_parts), ks), **standing_summary("t2i", torch.cat(t2i_parts), ks)}


def topk_texts(image_emb: ArrayLike, text_emb: ArrayLike, k: int = 5) -> tuple[Tensor, Tensor]:
    """(scores, indices) of the k most similar texts per image, for qualitative pages."""
    sim = _t(image_emb).float() @ _t(text_emb).float().t()
    return sim.topk(min(k, sim.shape[1]), dim=1)
