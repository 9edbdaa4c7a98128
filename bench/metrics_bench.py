"""Benchmark: cost of the tie-aware scoring at full benchmark size (CPU).

- Retrieval, COCO 5k shape: 5,000 images x 25,000 captions, q = 256, 10% of the captions duplicates of
  another image's caption (identical PT strings), through retrieval_metrics_from_embeddings (chunk 1024):
  the distinct-row multiplication, both directions' (a, w, p) standings and the expected / pessimistic
  summaries.
- VisDial val shape: 20,640 rounds x 100 options with losses rounded to 0.1 (many ties), plus 2,064 dense
  rounds for NDCG.
- VQA: 50,000 questions x 10 answers in both modes (official, pt).
Prints seconds per unit; nothing is asserted.
"""
from __future__ import annotations

import argparse
import random
import time

import numpy as np
import torch
import torch.nn.functional as F

from eval.metrics.retrieval import retrieval_metrics_from_embeddings
from eval.metrics.visdial import visdial_metrics
from eval.metrics.vqa import vqa_metrics


def _time(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=5000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)

    n_img = args.images
    img = F.normalize(torch.randn(n_img, 256, generator=g), dim=1)
    t2i = torch.arange(n_img).repeat_interleave(5)
    txt = F.normalize(img[t2i] + 1.2 * torch.randn(len(t2i), 256, generator=g), dim=1)
    dup = torch.randperm(len(txt), generator=g)[: len(txt) // 10]
    txt[dup] = txt[torch.randint(0, len(txt), (len(dup),), generator=g)]
    secs, m = _time(lambda: retrieval_metrics_from_embeddings(img, txt, t2i, chunk=1024))
    print(f"retrieval {n_img} x {len(txt)}: {secs:.2f} s  (i2t_r1 {m['i2t_r1']:.4f}, pess {m['i2t_r1_pess']:.4f}, "
          f"tied i2t queries {int(m['i2t_tied'])}, medr {m['i2t_medr']:.0f})")

    rng = np.random.default_rng(0)
    losses = np.round(rng.gamma(4.0, 1.0, size=(20_640, 100)), 1)
    gt = rng.integers(0, 100, size=20_640)
    rel = rng.choice([0.0, 0.5, 1.0], size=(2_064, 100), p=[0.8, 0.1, 0.1])
    secs, m = _time(lambda: visdial_metrics(losses, gt, higher_is_better=False, dense_scores=losses[:2_064],
                                            dense_relevance=rel))
    print(f"visdial 20,640 rounds x 100 options + 2,064 dense: {secs:.2f} s  (tied rounds {int(m['tied_rounds'])}, "
          f"r1 {m['r1']:.4f} vs pess {m['r1_pess']:.4f})")

    random.seed(0)
    words = ["sim", "não", "dois", "2", "guarda-chuva", "a comer", "vermelho", "1,5", "na mesa", "o cão"]
    refs = {str(q): [random.choice(words) for _ in range(10)] for q in range(50_000)}
    preds = {q: random.choice(words) for q in refs}
    types = dict.fromkeys(refs, "other")
    for mode in ("official", "pt"):
        secs, (m, _) = _time(lambda mode=mode: vqa_metrics(preds, refs, types, mode=mode))
        print(f"vqa 50,000 questions, mode {mode}: {secs:.2f} s  (overall {m['overall']:.4f})")


if __name__ == "__main__":
    main()
