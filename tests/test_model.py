"""V-Glória model: [RET] rows for tied and untied heads, sequence building, fused pass, KV-shared option scoring."""
from __future__ import annotations

import pytest
import torch

from tests.trainfixtures import scenes
from training.config import ModelConfig
from training.decoding import Cached
from training.lm_pretrain import pretrain_tiny_lm
from training.model import IGNORE, VIS, VGloria, vgloria

VIS_DIM = 24


@pytest.fixture(scope="module")
def lms(tmp_path_factory) -> dict[str, str]:
    """Random tiny GPT-Neo (tied head, Glória's architecture) and LLaMA (untied, Gervásio's) folders."""
    from pipeline.sample.scenes import captions

    texts = [pt for sc in scenes(60, 1) for _, pt in captions(sc)]
    root = tmp_path_factory.mktemp("lms")
    kw = dict(hidden=32, layers=2, heads=4, vocab_size=300, steps=0)
    return {"gpt_neo": str(pretrain_tiny_lm(texts, root / "neo", "gpt_neo", **kw)),
            "llama": str(pretrain_tiny_lm(texts, root / "llama", "llama", tie_embeddings=False, **kw))}


def build(llm: str, **kw) -> VGloria:
    cfg = ModelConfig(llm=llm, bridge="cls", k=kw.pop("k", 2), dtype="fp32", compile=False, **kw)
    return vgloria(cfg, "cpu", vis_dim=VIS_DIM, load_visual=False, seed=0)


def feats(n: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"cls": {-1: torch.randn(n, VIS_DIM, generator=g)}, "tokens": {}}


CAPS = ["um círculo vermelho pequeno no centro", "duas estrelas azuis", "há um quadrado verde", "três triângulos"]


@pytest.mark.parametrize("arch", ["gpt_neo", "llama"])
def test_only_the_ret_rows_and_heads_train_and_the_llm_is_untouched(lms, arch):
    model = build(lms[arch])
    untied = arch == "llama"
    assert model.tied is (not untied)
    assert (model.ret_out is not None) is untied  # LLaMA's lm_head needs its own trainable [RET] row
    names = {n.split(".")[0] for n, _ in model.trainable_parameters()}
    assert names == {"bridge", "ret_in", "text_fc", "image_fc", "logit_scale"} | ({"ret_out"} if untied else set())
    assert model.ret_id == model.lm.get_input_embeddings().weight.shape[0]  # virtual id, nothing resized
    before = {n: p.clone() for n, p in model.lm.named_parameters()}
    opt = torch.optim.AdamW([p for _, p in model.trainable_parameters()], lr=1e-2)
    caps = model.tokenize(CAPS)
    losses = model(feats(4), caps, [1, None, None, 2])
    losses.total.backward()
    assert all(p.grad is None for p in model.lm.parameters())
    for n, p in model.trainable_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, n  # gradients reach every trainable part
    opt.step()
    assert all(torch.equal(before[n], p) for n, p in model.lm.named_parameters())


@pytest.mark.parametrize("arch", ["gpt_neo", "llama"])
def test_logits_extend_the_llm_by_one_ret_column(lms, arch):
    model = build(lms[arch])
    ids = torch.tensor([model.tokenize(["há um quadrado verde"])[0]])
    ours = model.logits(model.body(inputs_embeds=model.embed(ids)).last_hidden_state)
    ref = model.lm(input_ids=ids).logits
    assert ours.shape[-1] == ref.shape[-1] + 1
    torch.testing.assert_close(ours[..., :-1], ref)
    h = model.body(inputs_embeds=model.embed(ids)).last_hidden_state
    row = model.ret_in if not model.ret_out is not None else model.ret_out
    torch.testing.assert_close(ours[..., -1], h @ row)


def test_visual_tokens_land_in_their_slots_in_order(lms):
    model = build(lms["gpt_neo"], k=2)
    rows, images = model.caption_rows([[5, 6], [7]], [1, None])
    assert images == [0, 1, 1]
    eos = model.eos_id
    assert rows[0] == [VIS, VIS, 5, 6, eos, VIS, VIS, 7, eos] and rows[1] == [VIS, VIS, 7, eos]
    ids = model.pad(rows, "cpu")
    vis = torch.arange(6 * model.d, dtype=torch.float).view(6, model.d)
    emb = model.embed(ids, vis)
    torch.testing.assert_close(emb[0, [0, 1, 5, 6]], vis[:4])
    torch.testing.assert_close(emb[1, [0, 1]], vis[4:])
    tgt = model.targets(ids, torch.tensor([9, 4]))
    # labels: caption tokens and EOS only, never visual slots or padding
    assert tgt[0].tolist() == [IGNORE, 5, 6, eos, IGNORE, IGNORE, 7, eos]
    assert tgt[1].tolist() == [IGNORE, 7, eos, IGNORE, IGNORE, IGNORE, IGNORE, IGNORE]


def test_truncation_keeps_ret_last(lms):
    model = build(lms["llama"], max_caption_tokens=5)
    rows = model.retrieval_rows([list(range(10, 30)), [10]])
    assert rows[0] == model.bos + [10, 11, 12, 13, model.ret_id]
    assert rows[1] == model.bos + [10, model.ret_id]
    cap, _ = model.caption_rows([list(range(10, 30))], [None])
    assert cap[0][-1] == model.eos_id and len(cap[0]) == len(model.bos) + model.bridge.n_out + 5


@pytest.mark.parametrize("arch", ["gpt_neo", "llama"])
def test_fused_pass_equals_two_passes(lms, arch):
    model = build(lms[arch])
    caps = model.tokenize(CAPS)
    assert model.cfg.fused_pass is None  # default: fused on CUDA only
    model.cfg.fused_pass = True
    fused = model(feats(4), caps, [1, None, 3, None])
    model.cfg.fused_pass = False
    split = model(feats(4), caps, [1, None, 3, None])
    for k in ("total", "caption", "ret_ce", "i2t", "t2i"):
        torch.testing.assert_close(getattr(fused, k), getattr(split, k), rtol=1e-5, atol=1e-5)


def test_text_embeddings_are_the_training_ret_state(lms):
    model = build(lms["gpt_neo"], text_emb_layers=[-1, 1])
    caps = model.tokenize(CAPS)
    rows = model.retrieval_rows(caps)
    ids = model.pad(rows, "cpu")
    last, hidden = model.run_body(model.embed(ids))
    lengths = torch.tensor([len(r) for r in rows])
    state = model.text_state(last, hidden, torch.arange(4), lengths - 1)
    emb = model.text_embeddings(CAPS, batch_size=3)  # other batching, other padding: same vectors
    torch.testing.assert_close(emb, torch.nn.functional.normalize(state, dim=-1), rtol=1e-5, atol=1e-5)
    img = model.image_embeddings(feats(5))
    scores, idx = model.retrieve(CAPS[:2], img, k=3)
    torch.testing.assert_close(scores, (emb[:2] @ img.t()).topk(3).values)


@pytest.mark.parametrize("arch", ["gpt_neo", "llama"])
def test_option_losses_match_scoring_each_option_separately(lms, arch):
    model = build(lms[arch])
    f = feats(2)
    prefixes = ["há um", "uma fotografia de"]
    options = [["círculo vermelho", "estrela", "quadrado verde pequeno"], ["dois círculos azuis", "um"]]
    got = model.option_losses(f, prefixes, options)
    vis = model.visual_tokens(f)
    for n, (p, opts) in enumerate(zip(prefixes, options, strict=True)):
        for j, o in enumerate(opts):
            pre, ans = model.tokenize([p])[0], model.tokenize([o])[0]
            ids = torch.tensor([model.bos + [VIS] * 2 + pre + ans])
            h = model.body(inputs_embeds=model.embed(ids, vis[n])).last_hidden_state
            logp = torch.log_softmax(model.logits(h[0, :-1]), -1)
            start = ids.shape[1] - len(ans)
            ref = -sum(logp[start - 1 + t, a] for t, a in enumerate(ans))
            torch.testing.assert_close(got[n, j], ref, rtol=1e-4, atol=1e-4)


def test_generation_greedy_and_beam(lms):
    model = build(lms["gpt_neo"])
    f = feats(2)
    greedy = model.caption(f, max_new_tokens=6)
    assert len(greedy) == 2 and all(isinstance(c, str) for c in greedy)
    assert model.caption(f, max_new_tokens=6, num_beams=1) == greedy
    vis = model.visual_tokens(f)[0]
    ids = model.generate_ids(model._prefix(vis, []), 6, num_beams=3)
    assert 1 <= len(ids) <= 6
    assert isinstance(model.answer(f, "há"), str)


def test_unknown_setting_is_an_error():
    with pytest.raises(ValueError):
        ModelConfig(llm="x", bridg="cls")


def test_fp16_is_refused_with_a_clear_message():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="fp16 training needs a GradScaler"):
        ModelConfig(llm="x", dtype="fp16")


def test_captions_never_emit_ret_but_answers_may(lms):
    model = build(lms["llama"])  # untied: its [RET] output row is free to set
    f = feats(1)
    vis = model.visual_tokens(f)[0]
    prefix = model._prefix(vis, [])
    h = Cached(model)(prefix)
    with torch.no_grad():  # [RET] now wins the first step by a logit margin of ~1000
        model.ret_out.copy_(h[0] * 1000 / h[0].pow(2).sum())
    assert model.generate_ids(prefix, 5) == [model.ret_id]  # allowed: stops at once
    assert model.answer(f, "").endswith("[RET]")
    expected = int(model.logits(h)[0, : model.vocab].argmax())
    for beams in (1, 3):
        ids = model.generate_ids(prefix, 5, num_beams=beams, allow_ret=False)
        assert ids and model.ret_id not in ids
    assert model.generate_ids(prefix, 5, allow_ret=False)[0] == expected
    caption = model.caption(f, max_new_tokens=5)[0]
    assert caption and "[RET]" not in caption


def test_decoded_text_has_no_special_tokens(lms):
    model = build(lms["gpt_neo"])
    tok = model.tokenizer
    words = model.tokenize(["duas estrelas azuis"])[0]
    ids = [tok.pad_token_id] + words + [tok.pad_token_id, model.eos_id, model.ret_id]
    assert tok.decode(ids).count("<pad>") == 2  # the tokenizer alone would keep them
    assert model.decode(ids) == "duas estrelas azuis"


def test_w_t_takes_each_layer_width_opt_350m_style(tmp_path, lms):
    """OPT-350m projects its 1024-d states to 512-d embeddings: the last hidden state is 512 wide, the
    intermediate ones 1024. W_t must be built per chosen layer, not with the embedding width."""
    from transformers import AutoTokenizer, OPTConfig, OPTForCausalLM

    tok = AutoTokenizer.from_pretrained(lms["gpt_neo"])
    cfg = OPTConfig(vocab_size=len(tok), hidden_size=48, word_embed_proj_dim=32, num_hidden_layers=2,
                    num_attention_heads=4, ffn_dim=64, max_position_embeddings=128, do_layer_norm_before=False,
                    bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    OPTForCausalLM(cfg).save_pretrained(tmp_path / "opt")
    tok.save_pretrained(tmp_path / "opt")
    model = build(str(tmp_path / "opt"), text_emb_layers=[-1, 1])
    assert model.d == 32 and [fc.in_features for fc in model.text_fc] == [32, 48]
    losses = model(feats(4), model.tokenize(CAPS), [1, None, None, 2])
    losses.total.backward()
    assert all(fc.weight.grad.abs().sum() > 0 for fc in model.text_fc)
    assert model.text_embeddings(CAPS).shape == (4, model.cfg.q)
    with pytest.raises(ValueError, match="layer 7 does not exist"):
        build(str(tmp_path / "opt"), text_emb_layers=[7])
