"""CLIP features: tiny open_clip folder loading, per-layer CLS / token conventions, and the fp16 cache."""
from __future__ import annotations

import io
import json
import random

import numpy as np
import open_clip
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

import training.features.cache as cache_module
from pipeline.sample.scenes import render, sample_scene
from tests.helpers import jpeg
from tests.tinyclip import build_tiny_clip
from training.features import (
    ClipLoadError,
    FeatureCacheError,
    FeatureStore,
    VisualEncoder,
    all_token_cache_size,
    cache_features,
    load_clip,
    to_pixels,
)
from training.features.encoder import open_clip_args


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-vit")
    model, preprocess = load_clip(str(folder))
    return folder, model, preprocess, VisualEncoder(model, name="tiny-vit")


@pytest.fixture(scope="module")
def images():
    return [(f"img/{i}", jpeg((90, 80), noise_seed=i)) for i in range(7)]


def test_tiny_folder_loads_through_the_open_clip_path_frozen_and_deterministic(tiny):
    folder, model, preprocess, enc = tiny
    assert (folder / "open_clip_config.json").is_file()
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    # Same weights as open_clip's own local-dir loader gives (the folder is a genuine open_clip folder).
    ref, _, _ = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    assert torch.equal(ref.visual.conv1.weight, model.visual.conv1.weight)
    assert (enc.width, enc.n_layers, enc.grid, enc.n_tokens) == (64, 4, (8, 8), 65)
    img = Image.open(io.BytesIO(jpeg((90, 80), noise_seed=0)))
    assert torch.equal(preprocess(img), preprocess(img))  # eval transform: no random augmentation
    assert preprocess(img).shape == (3, 64, 64)


def test_open_clip_args_route_names_tags_and_folders(tiny, tmp_path):
    folder = tiny[0]
    # OpenAI's weights were trained with QuickGELU; open_clip's plain "ViT-L-14" config would use GELU.
    assert open_clip_args("ViT-L-14", "openai") == ("ViT-L-14", "openai", True)
    assert open_clip_args("ViT-L-14", "laion2b_s32b_b82k") == ("ViT-L-14", "laion2b_s32b_b82k", False)
    assert open_clip_args("ViT-L-14", None) == ("ViT-L-14", None, False)
    assert open_clip_args(str(folder), "openai") == (f"local-dir:{folder.resolve()}", None, False)
    assert open_clip_args(f"local-dir:{folder}", "openai") == (f"local-dir:{folder}", None, False)


def test_load_clip_errors_are_clear(tmp_path):
    # The built-in path names the model and tag when the weights cannot be had (no silent random weights).
    with pytest.raises(ClipLoadError, match="'ViT-L-14' \\(pretrained='no-such-tag'\\)"):
        load_clip("ViT-L-14", "no-such-tag")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ClipLoadError, match="open_clip_config.json"):
        load_clip(str(tmp_path / "empty"))
    with pytest.raises(ClipLoadError, match="no such"):
        load_clip(str(tmp_path / "missing"))


def test_last_layer_cls_is_ln_post_of_cls_without_proj_like_fromage(tiny):
    _, model, preprocess, enc = tiny
    pixels = to_pixels([jpeg((90, 80), noise_seed=1), jpeg((90, 80), noise_seed=2)], preprocess)
    cls = enc.encode(pixels, [-1])[-1]
    assert cls.shape == (2, 64)  # width m, not the projected embed_dim 32
    v = model.visual
    with torch.no_grad():
        # Independent recomputation with open_clip's plain forward path (blocks, then ln_post on CLS).
        x = v.transformer(v._embeds(pixels))
        expected = v.ln_post(x[:, 0])
        assert torch.allclose(cls, expected, atol=1e-5)
        # ...and it is the pooled output before `proj`: projecting it gives open_clip's image features.
        assert torch.allclose(cls @ v.proj, model.encode_image(pixels), atol=1e-5)
        # Raw last-layer tokens differ from the pooled CLS exactly by ln_post.
        tokens = enc.encode(pixels, [-1], tokens="all")[-1]
        assert torch.allclose(tokens[:, 0], x[:, 0], atol=1e-5)
        assert not torch.allclose(tokens[:, 0], cls, atol=1e-2)


def test_earlier_layers_are_raw_residual_cls_and_layer_selection(tiny):
    _, model, preprocess, enc = tiny
    pixels = to_pixels([jpeg((90, 80), noise_seed=3), jpeg((90, 80), noise_seed=4), jpeg((90, 80), noise_seed=5)], preprocess)
    v = model.visual
    with torch.no_grad():
        x = v._embeds(pixels)
        per_block = []
        for block in v.transformer.resblocks:
            x = block(x)
            per_block.append(x)
    out = enc.encode(pixels, [-2, 0, -4, 1])
    assert list(out) == [-2, 0, -4, 1]  # keys as asked
    assert torch.allclose(out[-2], per_block[2][:, 0], atol=1e-5)
    assert torch.allclose(out[0], per_block[0][:, 0], atol=1e-5)
    assert torch.equal(out[-4], out[0])  # -4 and 0 are the same block of a 4-layer ViT
    assert torch.allclose(out[1], per_block[1][:, 0], atol=1e-5)
    assert not torch.allclose(out[-2], out[1], atol=1e-3)
    with pytest.raises(IndexError):
        enc.encode(pixels, [-5])
    with pytest.raises(IndexError):
        enc.encode(pixels, [4])


def test_all_token_shapes_and_one_pass_features(tiny):
    _, _, preprocess, enc = tiny
    pixels = to_pixels([jpeg((90, 80), noise_seed=6), jpeg((90, 80), noise_seed=7)], preprocess)
    toks = enc.encode(pixels, [-1, -3], tokens="all")
    assert {k: tuple(t.shape) for k, t in toks.items()} == {-1: (2, 65, 64), -3: (2, 65, 64)}
    feats = enc.features(pixels, {"cls": [-1, -2], "tokens": [-2]})
    assert feats["tokens"][-2].shape == (2, 65, 64)
    assert torch.equal(feats["cls"][-2], feats["tokens"][-2][:, 0])  # earlier layers: CLS = token 0


def test_cache_equals_online_features_and_reads_back_by_id(tiny, images, tmp_path, monkeypatch):
    _, _, preprocess, enc = tiny
    # Unknown count: rows are spilled in chunks (here of 2 rows, so several) and assembled at the end.
    monkeypatch.setattr(cache_module, "SPILL_ROWS_BYTES", 2 * 2 * 64 * 2)
    rows = images + [images[2], images[0]]  # one row per caption: repeated ids are encoded once
    seen = []
    out = cache_features(iter(rows), enc, preprocess, tmp_path / "feats", layers=[-1, -2], batch_size=3,
                         progress=seen.append, workers=2)
    store = FeatureStore(out)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["count"] == 7 and meta["duplicates_skipped"] == 2 and meta["layers"] == [-1, -2]
    assert seen[-1] == 9 and sorted(seen) == seen
    cls = np.load(out / "cls.npy")
    assert cls.shape == (7, 2, 64) and cls.dtype == np.float16
    assert not any(p.name.startswith("tokens_") for p in out.iterdir())  # all-token cache only on request
    index = pq.read_table(out / "index.parquet").to_pylist()
    assert [r["image_id"] for r in index] == [i for i, _ in images] and [r["row"] for r in index] == list(range(7))

    # Same preprocessing, deterministic encoder, same batch: the cache is the online features in fp16.
    ids = ["img/3", "img/4", "img/5"]
    online = enc.encode(to_pixels([dict(images)[i] for i in ids], preprocess), [-1, -2])
    cached = store.get(ids)
    for layer in (-1, -2):
        assert torch.equal(cached[layer], online[layer].half().float())
    # Asking by absolute block index finds the same column; a different order gives the same rows.
    assert torch.equal(store.get(["img/5", "img/3"], layers=[3])[3], cached[-1][[2, 0]])
    assert store.has({"cls": [-1, 2]}) and not store.has({"cls": [-3]}) and not store.has({"tokens": [-1]})
    with pytest.raises(FeatureCacheError, match="not cached"):
        store.get(["img/3"], layers=[-3])
    with pytest.raises(FeatureCacheError, match="nope"):
        store.get(["nope"])
    with pytest.raises(FeatureCacheError, match="tokens not cached"):
        store.features(ids, {"tokens": [-1]})
    with pytest.raises(FileExistsError):
        cache_features(iter(rows), enc, preprocess, out, layers=[-1])


def test_all_token_cache_in_place_with_known_count_and_bad_images_quarantined(tiny, images, tmp_path):
    _, _, preprocess, enc = tiny
    rows = images[:4] + [("broken", b"not a jpeg")]
    out = cache_features(iter(rows), enc, preprocess, tmp_path / "tok", layers=[-2], tokens="all",
                         batch_size=2, n_images=6)  # one fewer than announced: rewritten at the right size
    store = FeatureStore(out)
    assert len(store) == 4 and "broken" not in store
    failed = pq.read_table(out / "failed.parquet").to_pylist()
    assert failed[0]["image_id"] == "broken" and "cannot decode" in failed[0]["reason"]
    assert np.load(out / "tokens_-2.npy", mmap_mode="r").shape == (4, 65, 64)
    feats = store.features(["img/1", "img/0"], {"cls": [-2], "tokens": [-2]})
    online = enc.features(to_pixels([images[1][1], images[0][1]], preprocess), {"cls": [-2], "tokens": [-2]})
    assert torch.equal(feats["tokens"][-2], online["tokens"][-2].half().float())
    assert torch.equal(feats["cls"][-2], feats["tokens"][-2][:, 0])
    assert not list(tmp_path.glob(".*tmp"))  # the temporary folder was renamed into place


def test_failed_run_leaves_no_cache_and_keeps_the_old_one(tiny, images, tmp_path):
    _, _, preprocess, enc = tiny
    out = cache_features(iter(images[:2]), enc, preprocess, tmp_path / "f", layers=[-1])

    def exploding():
        yield images[0]
        raise OSError("shard read failed")

    with pytest.raises(OSError):
        cache_features(exploding(), enc, preprocess, out, layers=[-1], overwrite=True)
    assert len(FeatureStore(out)) == 2  # the previous complete cache is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["f"]
    with pytest.raises(FeatureCacheError, match="more distinct images"):
        cache_features(iter(images), enc, preprocess, tmp_path / "g", layers=[-1], n_images=3, batch_size=2)
    assert not (tmp_path / "g").exists()


def test_cache_accepts_pil_images_from_the_synthetic_sample(tiny, tmp_path):
    _, _, preprocess, enc = tiny
    rng = random.Random(0)
    scenes = [sample_scene(rng) for _ in range(3)]
    pil = [(f"s{i}", render(scene, 96)) for i, scene in enumerate(scenes)]
    store = FeatureStore(cache_features(pil, enc, preprocess, tmp_path / "p", layers=[-1]))
    assert store.get(["s0", "s1", "s2"])[-1].shape == (3, 64)


def test_all_token_cache_size_matches_the_issue_figures():
    per_image = all_token_cache_size(1)
    assert per_image == 257 * 1024 * 2 == 526_336  # "526 KB per image" (decimal kB)
    cc3m = all_token_cache_size(2_700_000)
    assert round(cc3m / 1e12, 1) == 1.4  # "1.4 TB for CC3M"
    assert all_token_cache_size(10, n_tokens=65, width=64, n_layers=2) == 10 * 65 * 64 * 2 * 2


def test_bf16_autocast_encoder_stays_close_to_fp32(tiny):
    _, model, preprocess, enc = tiny
    pixels = to_pixels([jpeg((90, 80), noise_seed=8), jpeg((90, 80), noise_seed=9)], preprocess)
    amp = VisualEncoder(model, autocast=torch.bfloat16)
    exact = enc.features(pixels, {"cls": [-1, -2], "tokens": [-2]})
    fast = amp.features(pixels, {"cls": [-1, -2], "tokens": [-2]})
    assert fast["tokens"][-2].dtype == torch.bfloat16
    for kind, layer in (("cls", -1), ("cls", -2), ("tokens", -2)):
        a, b = exact[kind][layer], fast[kind][layer].float()
        assert (a - b).norm() / a.norm() < 0.05, (kind, layer)


def _scene_pairs(n: int, seed: int) -> list[tuple[bytes, list[str]]]:
    from pipeline.sample.scenes import captions

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        scene = sample_scene(rng)
        buf = io.BytesIO()
        render(scene, 64).save(buf, format="JPEG", quality=95)
        out.append((buf.getvalue(), [en for en, _ in captions(scene)]))
    return out


def test_brief_clip_pretraining_learns_saves_in_place_and_is_deterministic(tmp_path):
    from training.features.tiny import pretrain_tiny_clip

    pairs = _scene_pairs(32, seed=3)
    folders = [build_tiny_clip(tmp_path / name) for name in ("a", "b")]
    before, _ = load_clip(str(folders[0]))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same reduction order in both runs
    try:
        losses = [pretrain_tiny_clip(f, pairs, steps=40, batch=16, lr=2e-3, seed=0) for f in folders]
    finally:
        torch.set_num_threads(threads)
    assert losses[0] == losses[1]  # deterministic for a seed
    first, last = np.mean(losses[0][:5]), np.mean(losses[0][-5:])
    assert last < first - 0.5, (first, last)  # the contrastive loss really falls (chance: ln 16 = 2.77)
    after, preprocess = load_clip(str(folders[0]))  # still an open_clip folder, frozen on load
    assert not after.training and not any(p.requires_grad for p in after.parameters())
    assert not torch.equal(before.visual.conv1.weight, after.visual.conv1.weight)
    assert torch.equal(after.visual.conv1.weight, load_clip(str(folders[1]))[0].visual.conv1.weight)
    assert not list(folders[0].glob("*.tmp"))
    # The trained towers rank each image's own caption first several times more often than chance (1/32;
    # scenes of the same colour, shape and count make exact hits hard) and than the random towers do.
    tok = open_clip.get_tokenizer(f"local-dir:{folders[0]}")

    def top1(model) -> float:
        with torch.no_grad():
            img = model.encode_image(torch.stack([preprocess(Image.open(io.BytesIO(j))) for j, _ in pairs]))
            txt = model.encode_text(tok([caps[0] for _, caps in pairs], context_length=model.context_length))
        return float(((img @ txt.T).argmax(dim=1) == torch.arange(len(pairs))).float().mean())

    assert top1(after) >= 3 / 32 and top1(after) > top1(before), (top1(after), top1(before))


def test_clip_pretraining_refuses_unusable_pairs(tmp_path):
    from training.features.tiny import pretrain_tiny_clip

    folder = build_tiny_clip(tmp_path / "c")
    with pytest.raises(ValueError, match="at least 2"):
        pretrain_tiny_clip(folder, _scene_pairs(1, 0), steps=1)
    with pytest.raises(ValueError, match="at least one caption"):
        pretrain_tiny_clip(folder, [(b, []) for b, _ in _scene_pairs(2, 0)], steps=1)
