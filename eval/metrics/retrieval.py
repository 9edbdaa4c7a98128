"""Cross-modal retrieval Recall@K (image->text, text->image) with the standard COCO 5-captions protocol.

Protocol (Karpathy / VSE++ style), from a similarity matrix sim (n_images x n_texts) and
`text_to_image[t]` = index of the image caption t describes:
- image->text: each image ranks all texts; a hit at k if ANY of its captions is among the top k.
  Images without any caption are not queried (they still compete as t2i candidates).
- text->image: each caption ranks all images; a hit at k if its image is among the top k.
CC3M validation (one caption per image) is the same computation with n_texts == n_images.

Ties are PESSIMISTIC: every wrong candidate scoring >= the right one ranks above it. A degenerate model
with constant embeddings therefore scores R@k = 0 instead of the 100% an index-order tie rule would give
it. (Ties among an image's own captions do not hurt: any one of them is a hit.)

Works in chunks from embeddings, so COCO 5k (5,000 x 25,000 similarities) never materialises at once.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

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


def i2t_ranks(sim_rows: Tensor, image_index: Tensor, text_to_image: Tensor) -> Tensor:
    """0-based rank of the best-ranked own caption for each image row (pessimistic ties).
    sim_rows: (b, n_texts) similarities of images `image_index` (b,). Images with no caption get -1."""
    own = text_to_image.unsqueeze(0) == image_index.unsqueeze(1)  # (b, n_texts)
    best = sim_rows.masked_fill(~own, float("-inf")).amax(1, keepdim=True)  # (b, 1)
    ranks = ((sim_rows >= best) & ~own).sum(1)
    return torch.where(own.any(1), ranks, torch.full_like(ranks, -1))


def t2i_ranks(sim_cols: Tensor, gt_image: Tensor) -> Tensor:
    """0-based rank of the right image for each text row (pessimistic ties).
    sim_cols: (b, n_images) similarities of b texts to all images; gt_image: (b,)."""
    right = sim_cols.gather(1, gt_image.unsqueeze(1))  # (b, 1)
    return (sim_cols >= right).sum(1) - 1  # minus the right image itself


def recall_at(ranks: Tensor, ks: Sequence[int] = KS) -> dict[int, float]:
    """Fraction of queries whose 0-based rank is < k, per k (in [0, 1])."""
    if len(ranks) == 0:
        raise RetrievalInputError("no queries to score")
    return {k: float((ranks < k).float().mean()) for k in ks}


def _summary(i2t: Tensor, t2i: Tensor, ks: Sequence[int]) -> dict[str, float]:
    i2t = i2t[i2t >= 0]
    out: dict[str, float] = {}
    for name, ranks in (("i2t", i2t), ("t2i", t2i)):
        for k, r in recall_at(ranks, ks).items():
            out[f"{name}_r{k}"] = r
        out[f"{name}_medr"] = float(ranks.float().median()) + 1.0  # 1-based median rank
        out[f"{name}_n"] = float(len(ranks))
    return out


def _check_finite(x: Tensor, what: str) -> None:
    if not torch.isfinite(x).all():
        raise RetrievalInputError(f"{what} contains NaN or infinite values")


def retrieval_metrics(sim: ArrayLike, text_to_image: ArrayLike, ks: Sequence[int] = KS) -> dict[str, float]:
    """R@k (fractions) for both directions from a full (n_images, n_texts) similarity matrix.
    Keys: i2t_r1, i2t_r5, i2t_r10, t2i_r1, ..., plus i2t_medr/t2i_medr (1-based) and query counts."""
    s, t2i_idx = _t(sim).float(), _t(text_to_image).long()
    if s.ndim != 2:
        raise RetrievalInputError(f"sim must be (n_images, n_texts), got shape {tuple(s.shape)}")
    _validate(s.shape[0], s.shape[1], t2i_idx)
    _check_finite(s, "sim")
    i2t = i2t_ranks(s, torch.arange(s.shape[0]), t2i_idx)
    t2i = t2i_ranks(s.t(), t2i_idx)
    return _summary(i2t, t2i, ks)


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
    steps = -(-len(img) // chunk) + -(-len(txt) // chunk)
    done = 0
    i2t_parts = []
    for s in range(0, len(img), chunk):
        rows = img[s : s + chunk] @ txt.t()
        i2t_parts.append(i2t_ranks(rows, torch.arange(s, s + len(rows), device=device), t2i_idx).cpu())
        done += 1
        if progress:
            progress(done, steps)
    t2i_parts = []
    for s in range(0, len(txt), chunk):
        cols = txt[s : s + chunk] @ img.t()
        t2i_parts.append(t2i_ranks(cols, t2i_idx[s : s + chunk]).cpu())
        done += 1
        if progress:
            progress(done, steps)
    return _summary(torch.cat(i2t_parts), torch.cat(t2i_parts), ks)


def topk_texts(image_emb: ArrayLike, text_emb: ArrayLike, k: int = 5) -> tuple[Tensor, Tensor]:
    """(scores, indices) of the k most similar texts per image, for qualitative pages."""
    sim = _t(image_emb).float() @ _t(text_emb).float().t()
    return sim.topk(min(k, sim.shape[1]), dim=1)
