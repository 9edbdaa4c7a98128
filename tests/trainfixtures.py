"""Offline training fixtures: synthetic-scene CAPTION_SHARD files, a tiny CLIP, a tiny PT LM, a feature cache.

Everything is deterministic, so built artefacts are memoised on disk (pytest's cache folder) under a key
that hashes the builder sources and arguments: a second test run reuses them, and any change rebuilds.
"""
from __future__ import annotations

import hashlib
import inspect
import io
import random
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.sample.scenes import Scene, captions, render, sample_scene
from training.shards import CAPTION_SHARD

LM_ARGS = dict(hidden=128, layers=2, heads=4, vocab_size=400, seq_len=96, batch=16, steps=300, lr=3e-3)


def scenes(n: int, seed: int) -> list[Scene]:
    rng = random.Random(seed)
    return [sample_scene(rng) for _ in range(n)]


def jpeg(scene: Scene, size: int = 64) -> bytes:
    buf = io.BytesIO()
    render(scene, size).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def write_caption_shard(items: list[Scene], path: Path, split: str, prefix: str, captions_per_image: int = 5) -> Path:
    """One CAPTION_SHARD row per (image, PT caption); image ids `<prefix>/<i>`."""
    rows: dict[str, list] = {name: [] for name in CAPTION_SHARD.names}
    for i, sc in enumerate(items):
        img = jpeg(sc)
        for n, (en, pt) in enumerate(captions(sc)[:captions_per_image]):
            rows["sample_id"].append(f"{prefix}/{i}/{n}")
            rows["image_id"].append(f"{prefix}/{i}")
            rows["image"].append(img)
            rows["caption"].append(pt)
            rows["caption_en"].append(en)
            rows["dataset"].append("sample")
            rows["split"].append(split)
            rows["engine"].append("reference")
            rows["flags"].append([])
            rows["text_source"].append("machine")
            rows["caption_machine"].append(pt)
            rows["flags_machine"].append([])
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(rows, schema=CAPTION_SHARD), path, compression="zstd")
    return path


def _key(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


@dataclass
class SampleWorld:
    root: Path
    clip: Path
    lm: Path
    train_shards: list[Path]
    features: Path  # CLS cache of the chosen layers over train + held-out images
    heldout: list[Scene]
    heldout_ids: list[str]


def build_world(cache_root: Path, *, n_train: int = 600, n_heldout: int = 50, lm_args: dict | None = None,
                clip_layers: tuple[int, ...] = (-1, -2), tokens: bool = False, clip_steps: int = 0,
                seed: int = 0) -> SampleWorld:
    """Build (or reuse from `cache_root`) the synthetic world the training tests use. tokens=True also
    caches all tokens of `clip_layers` (for the all-token bridges); clip_steps > 0 briefly trains the
    tiny CLIP on the training scenes' English captions first, as the sample pipeline does."""
    import torch

    from tests.tinyclip import build_tiny_clip
    from training import lm_pretrain
    from training.features import VisualEncoder, cache_features, load_clip
    from training.features.tiny import pretrain_tiny_clip

    lm_args = {**LM_ARGS, **(lm_args or {})}
    key = _key(inspect.getsource(lm_pretrain), inspect.getsource(build_world), lm_args, n_train, n_heldout,
               clip_layers, tokens, seed, clip_steps, inspect.getsource(pretrain_tiny_clip) if clip_steps else "")
    root = Path(cache_root) / f"world-{key}"
    train_sc, held = scenes(n_train, seed), scenes(n_heldout, seed + 10_000)
    world = SampleWorld(root, root / "clip", root / "lm", [root / "shards" / "train.parquet"], root / "features",
                        held, [f"heldout/{i}" for i in range(n_heldout)])
    if (root / "done").exists():
        return world
    root.mkdir(parents=True, exist_ok=True)
    write_caption_shard(train_sc, world.train_shards[0], "train", "train")
    build_tiny_clip(world.clip)
    if clip_steps:
        pretrain_tiny_clip(world.clip, [(jpeg(sc), [en for en, _ in captions(sc)]) for sc in train_sc],
                           steps=clip_steps, seed=seed)
    # One document per image (its 5 PT captions): the LM learns to read context (see lm_pretrain).
    docs = [[pt for _, pt in captions(sc)] for sc in train_sc]
    lm_pretrain.pretrain_tiny_lm(docs, world.lm, seed=seed, **lm_args)
    clip, preprocess = load_clip(str(world.clip), device="cpu")
    enc = VisualEncoder(clip)
    images = [(f"train/{i}", jpeg(sc)) for i, sc in enumerate(train_sc)]
    images += [(hid, jpeg(sc)) for hid, sc in zip(world.heldout_ids, held, strict=True)]
    torch.manual_seed(0)
    cache_features(images, enc, preprocess, world.features, layers=list(clip_layers), n_images=len(images),
                   tokens="all" if tokens else "cls", workers=1, overwrite=True)
    (root / "done").write_text("ok")
    return world



def colour_shape_right(caption: str, scene: Scene) -> tuple[bool, bool]:
    """Whether a PT caption names the scene's colour (any inflection, and no other colour) and its shape
    (singular or plural)."""
    from pipeline.sample.scenes import COLOURS, SHAPES, inflect_pt

    words = set(caption.lower().split())

    def forms(c: int) -> set[str]:
        return {inflect_pt(COLOURS[c][1], g, pl) for g in "mf" for pl in (False, True)}

    colours = [c for c in range(len(COLOURS)) if words & forms(c)]
    shape = SHAPES[scene.shape]
    return colours == [scene.colour], bool(words & {shape[2], shape[3]})


def evaluate_sample(model, world: SampleWorld) -> dict[str, float]:
    """Held-out scenes: text->image R@1 among all held-out images (query: each scene's first PT caption),
    colour+shape accuracy of greedy captions, and BLEU-4 of those captions against the 5 references."""
    import sacrebleu
    import torch

    from training.features import FeatureStore

    store = FeatureStore(world.features)
    feats = store.features(world.heldout_ids, model.bridge.needs())
    refs = [[pt for _, pt in captions(sc)] for sc in world.heldout]
    with torch.no_grad():
        img = model.image_embeddings(feats)
        _, top = model.retrieve([r[0] for r in refs], img, k=1)
        r1 = float((top[:, 0] == torch.arange(len(refs))).float().mean())
        caps = model.caption(feats, max_new_tokens=16)
    right = [colour_shape_right(c, sc) for c, sc in zip(caps, world.heldout, strict=True)]
    bleu = sacrebleu.corpus_bleu(caps, [list(x) for x in zip(*refs, strict=True)]).score
    return {"t2i_r1": r1, "colour_shape": sum(a and b for a, b in right) / len(right),
            "colour": sum(a for a, _ in right) / len(right), "shape": sum(b for _, b in right) / len(right),
            "bleu4": bleu, "distinct_captions": len(set(caps)) / len(caps)}
