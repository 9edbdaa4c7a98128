"""The two training recipes, each checked against an independent reference built the way its source did it:
the full Hugging Face forward of a copy of the LLM with [RET] as a real resized vocabulary row.

- fromage: FROMAGe's captioning mode (labels [BOS] cap [RET] truncated to max_len, [RET] and padding masked,
  visual embeddings prepended, pairs concatenated by moving both paddings to the end), its retrieval-pass CE,
  1 x caption + 1 x [RET]-pass CE + 0.5 x (i2t + t2i), one coin per step, [RET] rows renormalised.
- thesis-eq: [BOS] [VIS*k] cap EOS rows, each example joined by its drawn partner (which keeps its own row).
Also: the logit scale is clamped in place after the step, so it can come back down from above the bound.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from training.config import ModelConfig, TrainConfig
from training.data import BatchPlan, StepBatches, concat_pairs, concat_partners
from training.features import FeatureStore
from training.model import VGloria, vgloria
from training.train import after_step, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

IGNORE = -100


def build(small_world, recipe: str, **kw) -> VGloria:
    store = FeatureStore(small_world.features)
    cfg = ModelConfig(llm=str(small_world.lm), bridge="cls", k=2, dtype="fp32", compile=False, recipe=recipe, **kw)
    return vgloria(cfg, "cpu", vis_dim=store.width, n_tokens=store.n_tokens, load_visual=False, seed=0)


def batch(small_world, model: VGloria, n: int = 6) -> tuple[dict, list[list[int]]]:
    store = FeatureStore(small_world.features)
    ids = [f"train/{i}" for i in range(n)]
    caps = model.tokenize([f"um círculo {'muito ' * i}vermelho pequeno no centro {i}" for i in range(n)])
    return store.features(ids, model.bridge.needs()), caps


def resized_lm(model: VGloria):
    """A copy of the frozen LLM with [RET] as a real vocabulary row V (FROMAGe's resize_token_embeddings)."""
    lm = copy.deepcopy(model.lm)
    lm.resize_token_embeddings(model.vocab + 1, mean_resizing=False)
    with torch.no_grad():
        lm.get_input_embeddings().weight[model.vocab] = model.ret_in
        if not model.tied:
            lm.get_output_embeddings().weight[model.vocab] = model.ret_out
    return lm


def fromage_reference(model: VGloria, feats: dict, caps: list[list[int]], concat: bool) -> tuple[float, float]:
    """Caption CE and [RET]-pass CE as FROMAGe's code computes them (models.py, captioning / retrieval mode)."""
    lm, tok = resized_lm(model), model.tokenizer
    bos, pad, ret, max_len, k = tok.bos_token_id, tok.pad_token_id, model.ret_id, model.cfg.max_caption_tokens, 2
    labels = []
    for c in caps:  # the dataset: tokenizer(caption + '[RET]', max_length=max_len, truncation) then last -> [RET]
        t = ([bos] + c + [ret])[:max_len]
        t[-1] = ret
        labels.append(t + [pad] * (max_len - len(t)))
    labels = torch.tensor(labels)
    with torch.no_grad():
        vis = model.visual_tokens(feats)
        emb = torch.cat([vis, lm.get_input_embeddings()(labels)], dim=1)
        full = torch.cat([torch.full((len(caps), k), IGNORE), labels.clone()], dim=1)
        pad_idx = []
        for row in full:
            j = next((j for j, t in enumerate(row.tolist()) if t in (pad, ret)), len(row))
            row[j:] = IGNORE
            pad_idx.append(j)
        if concat:
            es, ls = [], []
            for a in range(0, len(caps), 2):
                b = a + 1
                es.append(torch.cat([emb[a, :pad_idx[a]], emb[b, :pad_idx[b]], emb[a, pad_idx[a]:], emb[b, pad_idx[b]:]]))
                ls.append(torch.cat([full[a, :pad_idx[a]], full[b, :pad_idx[b]], full[a, pad_idx[a]:], full[b, pad_idx[b]:]]))
            emb, full = torch.stack(es), torch.stack(ls)
        caption = lm(inputs_embeds=emb, labels=full).loss
        ret_labels = labels.clone()
        ret_labels[ret_labels == pad] = IGNORE
        ret_ce = lm(input_ids=labels, labels=ret_labels).loss
    return float(caption), float(ret_ce)


def thesis_eq_reference(model: VGloria, feats: dict, caps: list[list[int]],
                        partner: list[int | None]) -> tuple[float, float]:
    """Caption CE of [BOS] [VIS*k] cap_i EOS ([VIS*k] cap_j EOS) rows, one per example; [RET]-pass CE."""
    lm, n = resized_lm(model), model.cfg.max_caption_tokens - 1
    table, eos, ret = lm.get_input_embeddings(), model.eos_id, model.ret_id
    with torch.no_grad():
        vis = model.visual_tokens(feats)
        embs, labs = [], []
        for i, j in enumerate(partner):
            parts, lab = [table(torch.tensor(model.bos, dtype=torch.long)), vis[i]], [IGNORE] * len(model.bos) + [IGNORE] * 2
            parts.append(table(torch.tensor(caps[i][:n] + [eos])))
            lab += caps[i][:n] + [eos]
            if j is not None:
                parts += [vis[j], table(torch.tensor(caps[j][:n] + [eos]))]
                lab += [IGNORE] * 2 + caps[j][:n] + [eos]
            embs.append(torch.cat(parts))
            labs.append(lab)
        t = max(len(x) for x in labs)
        emb = torch.stack([torch.cat([e, torch.zeros(t - len(e), e.shape[1])]) for e in embs])
        full = torch.tensor([x + [IGNORE] * (t - len(x)) for x in labs])
        caption = lm(inputs_embeds=emb, labels=full).loss
        rows = [model.bos + c[:n] + [ret] for c in caps]
        ids = torch.tensor([r + [0] * (max(map(len, rows)) - len(r)) for r in rows])
        lab = torch.tensor([r[:] + [IGNORE] * (ids.shape[1] - len(r)) for r in rows])
        if model.bos:
            lab[:, 0] = IGNORE
        ret_ce = lm(input_ids=ids, labels=lab).loss
    return float(caption), float(ret_ce)


def test_recipe_presets_fill_unset_keys_only():
    f = ModelConfig(recipe="fromage")
    assert (f.caption_loss_weight, f.ret_ce_weight, f.retrieval_loss_weight, f.max_caption_tokens, f.concat_prob) \
        == (1.0, 1.0, 0.5, 24, 0.5)
    t = ModelConfig()
    assert t.recipe == "thesis-eq"
    assert (t.caption_loss_weight, t.ret_ce_weight, t.retrieval_loss_weight, t.max_caption_tokens) == (0.5, 0.5, 0.5, 32)
    assert ModelConfig(recipe="fromage", max_caption_tokens=40).max_caption_tokens == 40  # an explicit key wins
    with pytest.raises(ValueError, match="recipe"):
        ModelConfig(recipe="blip")


def test_fromage_one_coin_per_step_fixed_pairs_each_caption_once():
    draws = [concat_pairs(8, 0.5, seed=3, step=s) for s in range(400)]
    pairs = [1, None, 3, None, 5, None, 7, None]
    assert all(p in (pairs, [None] * 8) for p in draws)  # the whole batch, or none of it
    assert 0.4 < sum(p == pairs for p in draws) / 400 < 0.6
    assert concat_pairs(8, 0.5, 3, 17) == concat_pairs(8, 0.5, 3, 17)  # a function of (seed, step): resume
    # every micro-batch of a step follows the same coin
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 9, size=64)

    class Data:
        tokens = [[5] * int(n) for n in lengths]
        image_ids = [str(i) for i in range(64)]

    plan = BatchPlan(lengths, 16, seed=1)
    steps = StepBatches(Data(), plan, start=0, steps=20, micro_batch_size=4, concat_prob=0.5, seed=1, recipe="fromage")
    for i in range(20):
        parts = [mb.partner for mb in steps[i]]
        assert parts in ([[1, None, 3, None]] * 4, [[None] * 4] * 4)
    with pytest.raises(ValueError, match="even"):
        StepBatches(Data(), BatchPlan(lengths, 15, seed=1), start=0, steps=1, concat_prob=0.5, recipe="fromage")


def test_fromage_recipe_matches_fromage_reference(small_world):
    model = build(small_world, "fromage")
    with torch.no_grad():  # a trained-looking [RET] row, not the initial mean row
        model.ret_in.copy_(torch.randn(model.d, generator=torch.Generator().manual_seed(1)))
    feats, caps = batch(small_world, model)
    caps[0] = caps[0] * 5  # longer than max_caption_tokens: truncated, [RET] kept last
    bos = model.tokenizer.bos_token_id
    rows, images = model.caption_rows(caps, [1, None, 3, None, 5, None])
    assert len(rows) == 3 and images == [0, 1, 2, 3, 4, 5]  # B/2 rows, each caption once
    n = model.cfg.max_caption_tokens - 2  # [BOS] cap [RET] fits max_caption_tokens
    assert rows[0] == [-1, -1, bos] + caps[0][:n] + [-1, -1, bos] + caps[1][:n]
    ids = model.pad(rows, "cpu")
    tgt = model.targets(ids, torch.tensor([len(r) for r in rows]))
    # targets: BOS (predicted from the visual prefix, as FROMAGe's labels start at BOS) and the caption; no EOS
    assert tgt[0][tgt[0] != IGNORE].tolist() == [bos] + caps[0][:n] + [bos] + caps[1][:n]
    assert model.retrieval_rows(caps)[0] == [bos] + caps[0][:n] + [model.ret_id]
    for concat in (True, False):
        partner = concat_pairs(6, 1.0 if concat else 0.0, 0, 0)
        for fused in (False, True):
            model.cfg.fused_pass = fused
            losses = model(feats, caps, partner)
            ref_cap, ref_ret = fromage_reference(model, feats, caps, concat)
            assert float(losses.caption) == pytest.approx(ref_cap, rel=1e-5)
            assert float(losses.ret_ce) == pytest.approx(ref_ret, rel=1e-5)
            expected = 1.0 * losses.caption + 1.0 * losses.ret_ce + 0.5 * (losses.i2t + losses.t2i)
            assert float(losses.total.detach()) == pytest.approx(float(expected), rel=1e-6)


def test_thesis_eq_recipe_matches_its_reference(small_world):
    model = build(small_world, "thesis-eq", max_caption_tokens=8)
    with torch.no_grad():
        model.ret_in.copy_(torch.randn(model.d, generator=torch.Generator().manual_seed(1)))
    feats, caps = batch(small_world, model)
    partner = concat_partners(6, 0.5, seed=0, step=1, rank=0, micro=0)
    assert any(p is not None for p in partner) and None in partner  # a per-example coin
    rows, _ = model.caption_rows(caps, partner)
    assert len(rows) == 6  # a partner keeps its own row: second captions count twice
    assert all(r[-1] == model.eos_id for r in rows)  # EOS closes (and is a target of) every caption
    for fused in (False, True):
        model.cfg.fused_pass = fused
        losses = model(feats, caps, partner)
        ref_cap, ref_ret = thesis_eq_reference(model, feats, caps, partner)
        assert float(losses.caption) == pytest.approx(ref_cap, rel=1e-5)
        assert float(losses.ret_ce) == pytest.approx(ref_ret, rel=1e-5)
        expected = 0.5 * losses.caption + 0.5 * losses.ret_ce + 0.5 * (losses.i2t + losses.t2i)
        assert float(losses.total.detach()) == pytest.approx(float(expected), rel=1e-6)


def test_fromage_renormalises_ret_rows_after_each_step_thesis_eq_does_not(small_world, tmp_path):
    mean_norm = float(build(small_world, "thesis-eq").lm.get_input_embeddings().weight.norm(dim=1).mean())
    tc = TrainConfig(steps=3, batch_size=8, warmup_steps=1, lr=1e-2, ckpt_every=100, log_every=1, seed=0)
    norms = {}
    for recipe in ("fromage", "thesis-eq"):
        mc = ModelConfig(llm=str(small_world.lm), bridge="cls", k=2, dtype="fp32", compile=False, recipe=recipe)
        res = train(mc, tc, small_world.train_shards, tmp_path / recipe, features_dir=small_world.features, progress=False)
        norms[recipe] = float(res.model.ret_in.detach().norm())
        assert all(math.isfinite(v) for v in res.losses.values())
    assert norms["fromage"] == pytest.approx(mean_norm, rel=1e-5)
    assert abs(norms["thesis-eq"] - mean_norm) > 1e-3 * mean_norm  # started at the mean row, trained freely


def test_renorm_rescales_the_untied_output_row_too(tmp_path):
    from pipeline.sample.scenes import captions
    from tests.trainfixtures import scenes
    from training.lm_pretrain import pretrain_tiny_lm

    texts = [pt for sc in scenes(30, 1) for _, pt in captions(sc)]
    llm = pretrain_tiny_lm(texts, tmp_path / "llama", "llama", hidden=32, layers=1, heads=4, vocab_size=200,
                           steps=0, tie_embeddings=False)
    cfg = ModelConfig(llm=str(llm), bridge="cls", k=1, dtype="fp32", compile=False, recipe="fromage")
    model = vgloria(cfg, "cpu", vis_dim=8, load_visual=False, seed=0)
    with torch.no_grad():
        model.ret_in.mul_(7.0)
        model.ret_out.mul_(0.01)
    after_step(model, cfg)
    emb_in, emb_out = model.lm.get_input_embeddings().weight, model.lm.get_output_embeddings().weight
    assert float(model.ret_in.detach().norm()) == pytest.approx(float(emb_in.norm(dim=1).mean()), rel=1e-5)
    assert float(model.ret_out.detach().norm()) == pytest.approx(float(emb_out.norm(dim=1).mean()), rel=1e-5)


def test_logit_scale_is_clamped_in_place_and_can_come_back_down(small_world, tmp_path):
    # Above the bound the forward still gives the scale a gradient (a clamp in the graph would give 0) ...
    model = build(small_world, "thesis-eq", logit_scale_init=150.0, logit_scale_max=100.0)
    feats, caps = batch(small_world, model)
    model(feats, caps, [None] * len(caps)).total.backward()
    assert float(model.logit_scale.grad) != 0.0
    # ... so a run that starts above it is clamped to 100 after step 1, then moves down with its gradient.
    mc = ModelConfig(llm=str(small_world.lm), bridge="cls", k=2, dtype="fp32", compile=False, logit_scale_init=150.0,
                     logit_scale_max=100.0)
    tc = TrainConfig(steps=1, batch_size=8, warmup_steps=1, lr=1e-3, ckpt_every=100, log_every=1, seed=0)
    one = train(mc, tc, small_world.train_shards, tmp_path / "one", features_dir=small_world.features, progress=False)
    assert float(one.model.logit_scale.detach().exp()) == pytest.approx(100.0, rel=1e-6)
    three = train(mc, tc.model_copy(update={"steps": 3}), small_world.train_shards, tmp_path / "three",
                  features_dir=small_world.features, progress=False)
    assert 95.0 < float(three.model.logit_scale.detach().exp()) < 99.99
