"""Bridge and feature-cache benchmark: trainable parameters, forward+backward time per bridge, cache rate.

    .venv/bin/python bench/features_bench.py                      # ViT-L/14 shapes, d=2048, CPU, batch 4
    .venv/bin/python bench/features_bench.py --device cuda --batch 180
    .venv/bin/python bench/features_bench.py --cache 256          # also cache 256 images with a tiny CLIP

Figures on a shared CPU are only indicative; compare bridges with each other, not with other runs.
"""
from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.bridges import BRIDGES, build_bridge, count_parameters  # noqa: E402
from training.features import FeatureStore, VisualEncoder, all_token_cache_size, cache_features, load_clip  # noqa: E402

Q = 256


def bench_bridges(m: int, d: int, t: int, batch: int, device: str, repeats: int) -> None:
    print(f"bridges: m={m} d={d} tokens={t} batch={batch} device={device}")
    print(f"{'bridge':10} {'k':>3} {'n_out':>5} {'params':>12} {'+W_i':>12} {'fwd+bwd ms':>11}")
    for name in sorted(BRIDGES):
        k = {"cls": 20, "mlp": 4, "crossattn": 12}.get(name, 1)
        bridge = build_bridge(name, vis_dim=m, llm_dim=d, k=k, n_tokens=t).to(device)
        needs = bridge.needs()
        feats = {"cls": {layer: torch.randn(batch, m, device=device) for layer in needs.get("cls", [])},
                 "tokens": {layer: torch.randn(batch, t, m, device=device) for layer in needs.get("tokens", [])}}
        times = []
        for _ in range(repeats + 1):
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            loss = bridge(feats).float().square().mean() + bridge.retrieval_input(feats).float().square().mean()
            loss.backward()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        n = count_parameters(bridge)
        print(f"{name:10} {k:>3} {bridge.n_out:>5} {n:>12,} {n + bridge.retrieval_dim * Q + Q:>12,} "
              f"{1000 * float(np.median(times[1:])):>11.1f}")


def bench_cache(n_images: int, batch: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tinyclip import build_tiny_clip

    with tempfile.TemporaryDirectory() as tmp:
        model, preprocess = load_clip(str(build_tiny_clip(Path(tmp) / "clip")))
        enc = VisualEncoder(model, name="tiny")
        rng = np.random.default_rng(0)
        images = []
        for i in range(n_images):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(buf, format="JPEG")
            images.append((f"img/{i}", buf.getvalue()))
        start = time.perf_counter()
        out = cache_features(images, enc, preprocess, Path(tmp) / "feats", layers=[-1, -2], batch_size=batch)
        elapsed = time.perf_counter() - start
        assert len(FeatureStore(out)) == n_images
        print(f"cache: {n_images} JPEGs, tiny ViT, 2 CLS layers: {n_images / elapsed:.0f} images/s")
    print(f"all-token cache, ViT-L/14, 1 layer: {all_token_cache_size(1):,} B/image, "
          f"CC3M 2.7M images: {all_token_cache_size(2_700_000) / 1e12:.2f} TB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--m", type=int, default=1024)
    ap.add_argument("--d", type=int, default=2048)
    ap.add_argument("--tokens", type=int, default=257)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cache", type=int, default=0, help="also time caching this many images (tiny CLIP)")
    args = ap.parse_args()
    torch.manual_seed(0)
    bench_bridges(args.m, args.d, args.tokens, args.batch, args.device, args.repeats)
    if args.cache:
        bench_cache(args.cache, 64)


if __name__ == "__main__":
    main()
