"""Bridges: shapes at ViT-L/14 and tiny sizes, thesis parameter counts, gradients, and token subsets."""
from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from tests.tinyclip import build_tiny_clip
from training.bridges import (
    BRIDGES,
    BridgeSettings,
    MissingFeatures,
    build_bridge,
    count_parameters,
    region_indices,
)
from training.features import VisualEncoder, load_clip

Q = 256  # retrieval width q


def _feats(bridge, b: int, m: int, t: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    needs = bridge.needs()
    return {"cls": {layer: torch.randn(b, m, generator=g) for layer in needs.get("cls", [])},
            "tokens": {layer: torch.randn(b, t, m, generator=g) for layer in needs.get("tokens", [])}}


def _build(name: str, m: int, d: int, t: int, k: int = 1, **kw):
    if name == "crossattn" and m < 1024:
        kw = {"heads": 4, "head_dim": 16, **kw}
    return build_bridge(name, vis_dim=m, llm_dim=d, k=k, n_tokens=t, **kw)


EXPECTED_OUT = {"cls": 3, "mlp": 3, "crossattn": 3, "l4l": 4, "l2l": 2, "l2lx2": 4, "comp": 4,
                "grouped": 4, "regions": 5, "wavg": 4}


def test_registry_has_every_thesis_variant_and_mlp():
    assert set(BRIDGES) == set(EXPECTED_OUT)


@pytest.mark.parametrize("m,t", [(1024, 257), (64, 65)], ids=["vit-l14", "tiny"])
@pytest.mark.parametrize("name", sorted(EXPECTED_OUT))
def test_shapes_needs_and_retrieval_dims(name, m, t):
    k = 3 if name in ("cls", "mlp", "crossattn") else 1
    bridge = _build(name, m, 24, t, k=k)
    feats = _feats(bridge, 2, m, t)
    out = bridge(feats)
    assert out.shape == (2, EXPECTED_OUT[name], 24) and bridge.n_out == EXPECTED_OUT[name]
    r = bridge.retrieval_input(feats)
    assert r.shape == (2, bridge.retrieval_dim)
    patches = t - 1
    expected_rdim = {"grouped": patches // 4 * m, "regions": patches // 4 * m,
                     "crossattn": 1024 if m == 1024 else 64}.get(name, m)
    assert bridge.retrieval_dim == expected_rdim
    kinds = bridge.needs()
    if name in ("grouped", "regions", "wavg", "crossattn"):
        assert kinds == {"tokens": [-1]}
    else:
        assert list(kinds) == ["cls"]
        assert kinds["cls"] == {"l4l": [-1, -2, -3, -4], "l2l": [-1, -2], "l2lx2": [-1, -2],
                                "comp": [-1, -2]}.get(name, [-1])


def _meta(name: str, d: int = 2048, **kw):
    with torch.device("meta"):  # shapes only: a 134M-parameter map without allocating it
        return build_bridge(name, vis_dim=1024, llm_dim=d, n_tokens=257, **kw)


def test_parameter_counts_match_the_thesis():
    # "the CLS-based models with k = 20 train 42M parameters while the Regions model trains 151M" (ch. 7)
    cls20 = _meta("cls", k=20)
    regions = _meta("regions")
    assert count_parameters(cls20) == 1024 * 2048 * 20 + 2048 * 20 == 41_984_000
    assert count_parameters(regions) == 64 * 1024 * 2048 + 2048 == 134_219_776

    def with_w_i(bridge):  # + W_i: retrieval_dim -> q, which the model builds from bridge.retrieval_dim
        return count_parameters(bridge) + bridge.retrieval_dim * Q + Q

    assert round(with_w_i(cls20) / 1e6) == 42
    assert round(with_w_i(regions) / 1e6) == 151  # 134.2M + 65536 x 256 W_i = 150,997,248
    # The thesis' other definitions, counted exactly.
    lin = 1024 * 2048 + 2048
    assert count_parameters(_meta("cls", k=1)) == lin  # eq. 6.3
    assert [count_parameters(_meta(n)) for n in ("l4l", "l2l", "l2lx2", "comp")] == [4 * lin, 2 * lin, 4 * lin, 4 * lin]
    assert count_parameters(_meta("grouped")) == 65536 * 2048 + 2048  # eq. 7.6
    assert count_parameters(_meta("wavg")) == 64 + 1024 * 2048  # W_a in R^{1x64}, LL(Y) = YW
    attn = 12 * 1024 + 1024 + 2 * 1024 * 1024 + 1024 * 2048 + 2048  # queries, retrieval query, W^K, W^V, LL_O
    assert count_parameters(_meta("crossattn", k=12)) == attn
    assert count_parameters(_meta("mlp", k=4)) == 1024 * 2048 * 4 + 2048 * 4 + 2048 * 2048 + 2048


def test_cls_k_is_reshape_of_one_linear_map():
    bridge = _build("cls", 64, 8, 65, k=3, layer=-2)
    feats = _feats(bridge, 2, 64, 65)
    x = feats["cls"][-2]
    w, b = bridge.proj.weight, bridge.proj.bias
    expected = torch.stack([x @ w[j * 8:(j + 1) * 8].T + b[j * 8:(j + 1) * 8] for j in range(3)], dim=1)
    assert torch.allclose(bridge(feats), expected, atol=1e-6)
    assert bridge.needs() == {"cls": [-2]} and torch.equal(bridge.retrieval_input(feats), x)


def test_multi_cls_tokens_come_from_the_right_layers_and_retrieve_with_their_mean():
    for name, depends in {"l4l": {-1: {0}, -2: {1}, -3: {2}, -4: {3}}, "l2l": {-1: {0}, -2: {1}},
                          "l2lx2": {-1: {0, 1}, -2: {2, 3}}, "comp": {-1: {0, 2, 3}, -2: {1, 2, 3}}}.items():
        bridge = _build(name, 64, 8, 65)
        feats = _feats(bridge, 2, 64, 65)
        base = bridge(feats)
        for layer, tokens in depends.items():
            changed = {**feats, "cls": {**feats["cls"], layer: feats["cls"][layer] + 1.0}}
            diff = (bridge(changed) - base).abs().amax(dim=(0, 2))
            assert {i for i in range(bridge.n_out) if diff[i] > 1e-6} == tokens, (name, layer)
        mean = torch.stack([feats["cls"][layer] for layer in bridge.needs()["cls"]]).mean(0)
        assert torch.allclose(bridge.retrieval_input(feats), mean, atol=1e-6)
    assert _build("l2l", 64, 8, 65, layer=-2).needs() == {"cls": [-2, -3]}


def _perturb(feats, layer, token):
    tokens = feats["tokens"][layer].clone()
    tokens[:, token] += 5.0
    return {**feats, "tokens": {**feats["tokens"], layer: tokens}}


def _changed(bridge, feats, token) -> set[int]:
    diff = (bridge(_perturb(feats, -1, token)) - bridge(feats)).abs().amax(dim=(0, 2))
    return {i for i in range(bridge.n_out) if diff[i] > 1e-6}


@pytest.mark.parametrize("name", ["grouped", "wavg"])
def test_grouped_and_wavg_use_raster_order_groups_of_patches_only(name):
    bridge = _build(name, 32, 8, 65)  # 64 patches -> 4 groups of 16
    feats = _feats(bridge, 2, 32, 65)
    assert _changed(bridge, feats, 0) == set()  # the CLS token is not used
    for patch in range(64):
        assert _changed(bridge, feats, 1 + patch) == {patch // 16}


@pytest.mark.parametrize("grid", [8, 16])
def test_regions_use_exactly_the_quadrant_and_centre_tokens(grid):
    bridge = _build("regions", 16, 8, 1 + grid * grid)
    feats = _feats(bridge, 1, 16, 1 + grid * grid)
    half, lo = grid // 2, grid // 4
    assert bridge.region == half * half  # 64 tokens per region on ViT-L/14's 16 x 16 grid
    assert _changed(bridge, feats, 0) == set()
    for patch in range(0, grid * grid, 1 if grid == 8 else 7):
        r, c = divmod(patch, grid)
        inside = {2 * (r >= half) + (c >= half)} | ({4} if lo <= r < lo + half and lo <= c < lo + half else set())
        assert _changed(bridge, feats, 1 + patch) == inside, (r, c)


def test_region_indices_for_vit_l14():
    idx = region_indices(16)
    assert idx.shape == (5, 64)
    assert idx[0].tolist()[:9] == [0, 1, 2, 3, 4, 5, 6, 7, 16]  # top-left, raster order
    assert idx[4].min().item() == 4 * 16 + 4 and idx[4].max().item() == 11 * 16 + 11  # centre window 4..11
    assert len(set(idx[:4].reshape(-1).tolist())) == 256  # quadrants tile the grid; centre overlaps them
    with pytest.raises(ValueError, match="even"):
        region_indices(7)


def test_cross_attention_attends_to_every_token_and_only_its_layer():
    bridge = _build("crossattn", 64, 8, 65, k=4, layer=-2)
    feats = _feats(bridge, 2, 64, 65)
    feats["tokens"][-1] = torch.randn(2, 65, 64)  # another layer present in the dict is ignored
    base, ret = bridge(feats), bridge.retrieval_input(feats)
    for token in (0, 1, 33, 64):  # CLS and patches all reach every query
        changed = _perturb(feats, -2, token)
        assert (bridge(changed) - base).abs().amax(dim=(0, 2)).min() > 1e-6
        assert not torch.allclose(bridge.retrieval_input(changed), ret)
    assert torch.equal(bridge(_perturb(feats, -1, 5)), base)
    # The thesis' attention: softmax(Q K_i^T / sqrt(hd)) V_i per head, heads concatenated, then LL_O.
    tokens = feats["tokens"][-2]
    heads = []
    for i in range(4):
        sl = slice(16 * i, 16 * (i + 1))
        keys, values = tokens @ bridge.to_k.weight[sl].T, tokens @ bridge.to_v.weight[sl].T
        scores = torch.softmax(bridge.queries[:, sl] @ keys.transpose(1, 2) / 4.0, dim=-1)
        heads.append(scores @ values)
    assert torch.allclose(bridge(feats), bridge.out(torch.cat(heads, dim=-1)), atol=1e-5)


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    model, preprocess = load_clip(str(build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny")))
    return VisualEncoder(model)


@pytest.mark.parametrize("name", sorted(EXPECTED_OUT))
def test_gradients_reach_every_bridge_parameter_and_nothing_else(name, tiny_encoder):
    enc = tiny_encoder
    k = 2 if name in ("cls", "mlp", "crossattn") else 1
    bridge = _build(name, enc.width, 16, enc.n_tokens, k=k)
    pixels = torch.randn(3, 3, 64, 64)
    feats = enc.features(pixels, bridge.needs())
    loss = bridge(feats).square().mean() + bridge.retrieval_input(feats).square().mean()
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in bridge.parameters())
    assert all(p.grad is None for p in enc.visual.parameters())
    assert not any(t.requires_grad for kind in feats.values() for t in kind.values())


def test_cached_fp16_features_are_accepted():
    bridge = _build("comp", 64, 8, 65)
    feats = _feats(bridge, 2, 64, 65)
    half = {"cls": {layer: x.half() for layer, x in feats["cls"].items()}, "tokens": {}}
    assert bridge(half).dtype == torch.float32
    assert torch.allclose(bridge(half), bridge(feats), atol=1e-2)


def test_clear_errors():
    with pytest.raises(ValueError, match="unknown bridge"):
        build_bridge("qformer", vis_dim=64, llm_dim=8)
    with pytest.raises(ValueError, match="no setting"):
        build_bridge("cls", vis_dim=64, llm_dim=8, heads=4)
    with pytest.raises(ValueError, match="always gives 4"):
        build_bridge("l4l", vis_dim=64, llm_dim=8, k=12)
    with pytest.raises(ValueError, match="n_tokens"):
        build_bridge("regions", vis_dim=64, llm_dim=8)
    with pytest.raises(ValueError, match="square"):
        build_bridge("regions", vis_dim=64, llm_dim=8, n_tokens=1 + 32)
    with pytest.raises(ValueError, match="equal groups"):
        build_bridge("grouped", vis_dim=64, llm_dim=8, n_tokens=1 + 30)
    with pytest.raises(ValueError, match="fewer than 3"):
        build_bridge("l4l", vis_dim=64, llm_dim=8, layer=2)
    bridge = build_bridge("l2l", vis_dim=64, llm_dim=8)
    with pytest.raises(MissingFeatures, match="layer -2"):
        bridge({"cls": {-1: torch.zeros(1, 64)}, "tokens": {}})
    grouped = build_bridge("grouped", vis_dim=64, llm_dim=8, n_tokens=65)
    with pytest.raises(ValueError, match="built for 65 tokens"):
        grouped({"cls": {}, "tokens": {-1: torch.zeros(1, 257, 64)}})


def test_settings_build_and_forbid_unknown_or_inapplicable_keys():
    s = BridgeSettings(name="crossattn", k=12, layer=-2, heads=4, head_dim=16)
    bridge = s.build(vis_dim=64, llm_dim=8)
    assert (bridge.n_out, bridge.layer, bridge.retrieval_dim) == (12, -2, 64)
    with pytest.raises(ValidationError):
        BridgeSettings(name="cls", kk=3)
    with pytest.raises(ValueError, match="no setting"):
        BridgeSettings(name="cls", heads=2).build(vis_dim=64, llm_dim=8)
