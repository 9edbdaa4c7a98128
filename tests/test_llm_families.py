"""Every causal-LM family of the installed transformers, against the full Hugging Face forward of a model whose
vocabulary was really resized: [RET] as a real token row, visual tokens as real rows of the embedding table.

For each family in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES a random tiny model (hidden 32, 2 layers) is built from
its config, saved with a tokenizer, and loaded by `training.model.vgloria`, the code path that loads Glória.
Checked per family:
1. ptvl's logits (V + 1 columns) equal the resized model's, [RET] column included: the family's head
   post-processing (Cohere's logit_scale, Granite's logits_scaling, Gemma-2's soft-capping, a head bias)
   applies to [RET] as to any token;
2. the [RET] row and the visual tokens are fed exactly as the resized embedding module feeds real rows
   (Gemma's sqrt(d) scaling inside the embedding module under transformers 5);
3. one training step (caption CE, [RET] CE, i2t and t2i InfoNCE) gives the same losses and the same
   gradients on every trainable parameter as the resized model run row by row, without padding.
By default a representative set of families runs (DEFAULT); PTVL_ALL_LLM_FAMILIES=1 runs all of them.
Families that the generic tiny config cannot build are skipped, each with its reason.
"""
from __future__ import annotations

import math
import os
import re
import warnings

import pytest
import torch
import torch.nn.functional as F
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from training.config import ModelConfig
from training.decoding import greedy_trace
from training.llm_check import check_llm
from training.model import VIS, VGloria, vgloria
from training.scoring import option_losses

H, LAYERS, HEADS, KV_HEADS, FF = 32, 2, 4, 2, 64
VIS_DIM, K = 16, 2
CAPS = ["um círculo vermelho pequeno no centro", "duas estrelas azuis", "há um quadrado verde"]
PARTNER = [1, None, None]  # caption 0 is followed by image 1 and caption 1 (FROMAGe's concatenation)

# Size settings some families name or constrain their own way.
FAMILY = {
    "gpt_neo": dict(attention_types=[[["global", "local"], LAYERS // 2]], window_size=64),  # Glória's family
    "gptj": dict(rotary_dim=4), "codegen": dict(rotary_dim=4),  # rotary_dim <= head_dim
    "falcon": dict(head_dim=None),  # derived, read-only
    "mamba2": dict(head_dim=2 * H // HEADS),  # the SSM head: expand * hidden = heads * head_dim
    "zamba2": dict(layers_block_type=["linear_attention", "hybrid"]),  # default: a 54-layer pattern
    "lfm2_moe": dict(layer_types=["conv", "full_attention"], num_dense_layers=1),  # no default pattern
    "lfm2": dict(layer_types=["conv", "full_attention"]),
    "zamba": dict(layers_block_type=["mamba", "hybrid"]),
}
# Hybrids whose default layer pattern leaves 2 layers without attention: one of each, as real checkpoints mix.
FAMILY |= {name: dict(layer_types=["linear_attention", "full_attention"])
           for name in ("granitemoehybrid", "qwen3_next", "kimi_linear", "bailing_hybrid", "qwen3_5_text",
                        "qwen3_5_moe_text", "qwen4_exp_text")}
# Scales whose defaults are 1 (a no-op that would hide a missed post-processing): Granite-3 / Falcon-H1 values.
GRANITE = dict(embedding_multiplier=12.0, logits_scaling=8.0, residual_multiplier=0.22, attention_multiplier=0.0078125)
FAMILY |= {"granite": GRANITE, "granitemoe": GRANITE, "granitemoeshared": GRANITE,
           "falcon_h1": dict(lm_head_multiplier=0.5)}
# Run by default (27 families, ~1.5 min on 2 busy cores; Falcon-H1's SSM alone takes 140 s, so it
# runs in the sweep): the thesis' and FROMAGe's families, every head post-processing and
# embedding quirk we know of, and a spread of architectures. PTVL_ALL_LLM_FAMILIES=1 runs every family of
# the installed transformers (slow: one model build per family).
DEFAULT = {
    "gpt_neo", "llama", "gemma", "opt",  # Glória, Gervásio, Gemma-2B, FROMAGe
    "gemma2", "gemma3_text", "cohere", "cohere2", "granite", "granitemoe",  # head / embedding scales
    "gptj", "phi",  # head bias
    "bert", "bart", "xglm", "biogpt", "bloom",  # transform before the head, scaled embeddings, embedding norm
    "falcon", "mixtral", "qwen2", "mamba",  # parallel attention, MoE, biases, state space
    # Decoding and VisDial scoring: a hybrid cache whose first layer holds no positions (Bamba), a model-built
    # cache (MiniMax), recurrent state kept outside the cache (RecurrentGemma), a plain KV cache that VisDial
    # shares (Qwen3), a body at an attribute other than base_model_prefix (Llama-4), and a refusal (Gemma-4).
    "bamba", "minimax", "recurrent_gemma", "qwen3", "llama4_text", "gemma4_text",
}
# Families the pre-flight refuses, with the reason its one line must give (the rest must pass everything).
REFUSED = {
    "gemma4_text": r"'load' failed: .*refuses input rows that are not rows of its embedding table",
    "deepseek_v4": r"'load' failed: .*cannot run from input embeddings alone",
    # Looped layers whose cache is an approximation by design: Hugging Face's own generate() differs from
    # the full forward by ~1% of the logits too.
    "dory": r"'decoding' failed: cached decoding differs from the uncached forward",
    "xlstm": r"'decoding' failed: ValueError: matC_old has wrong shape",  # generate() fails alike
    "xlnet": r"'forward' failed: not a causal LM",  # a permutation LM: its positions see the whole input
    # An output layer that is not one row per input token: [RET] has no output row to add.
    "moshi": r"'load' failed: .*the output layer is not a linear map over the \d+ input tokens",
    "rembert": r"'load' failed: .*the output layer is not a linear map over the \d+ input tokens",
    "cpmant": r"'load' failed: .*the output layer is not a linear map over the \d+ input tokens",
    "xmod": r"'load' failed: .*its own forward fails on 4 ordinary tokens .*Input language unknown",
}
FULL_SWEEP = os.environ.get("PTVL_ALL_LLM_FAMILIES") == "1"
MAX_PARAMS = 3_000_000  # a family whose tiny build is bigger did not shrink (nested vision/audio configs)


def tiny_config(model_type: str, vocab: int, bos: int, eos: int, pad: int):
    """A tiny config of `model_type`: the usual size settings under every name families give them."""
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    over = dict(
        hidden_size=H, n_embd=H, d_model=H, n_embed=H, embed_dim=H,
        num_hidden_layers=LAYERS, n_layer=LAYERS, num_layers=LAYERS, n_layers=LAYERS, decoder_layers=LAYERS,
        num_attention_heads=HEADS, n_head=HEADS, num_heads=HEADS, decoder_attention_heads=HEADS, n_heads=HEADS,
        num_key_value_heads=KV_HEADS, head_dim=H // HEADS,
        intermediate_size=FF, n_inner=FF, ffn_dim=FF, decoder_ffn_dim=FF, d_ff=FF,
        moe_intermediate_size=FF, shared_expert_intermediate_size=FF,
        num_experts=4, num_local_experts=4, n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1,
        vocab_size=vocab, max_position_embeddings=128, n_positions=128, n_ctx=128,
        bos_token_id=bos, eos_token_id=eos, pad_token_id=pad, is_decoder=True,
        bos_index=bos, eos_index=eos, pad_index=pad, causal=True,  # XLM's names (a CLM checkpoint is causal)
        initializer_range=0.2,  # peaked random logits: a wrong scale shows
        # State-space, linear-attention and latent-attention sizes (Mamba-2, Bamba, Zamba2, Nemotron-H,
        # Qwen3-Next, DeepSeek-V3, Kimi-Linear): SSM width = expand * hidden = heads * head dim.
        mamba_n_heads=HEADS, mamba_d_head=2 * H // HEADS, n_mamba_heads=HEADS, mamba_num_heads=HEADS,
        mamba_head_dim=2 * H // HEADS, n_groups=1, mamba_n_groups=1, mamba_ngroups=1, state_size=8,
        ssm_state_size=8, mamba_d_state=8, mamba_d_ssm=2 * H, chunk_size=16, mamba_chunk_size=16,
        linear_num_key_heads=2, linear_num_value_heads=HEADS, linear_key_head_dim=H // HEADS,
        linear_value_head_dim=H // HEADS, linear_num_heads=HEADS, linear_head_dim=H // HEADS,
        kv_lora_rank=16, q_lora_rank=16, qk_rope_head_dim=H // HEADS, qk_nope_head_dim=H // HEADS, v_head_dim=H // HEADS,
        index_head_dim=H // HEADS, index_n_heads=HEADS,
        n_group=1, topk_group=1, num_expert_group=1, first_k_dense_replace=1,
        # Hybrids: one attention layer of the two, as in every real checkpoint (an attention-free tiny build
        # cannot decode, in Hugging Face's generate() either).
        attn_layer_period=2, attn_layer_offset=1, attn_layer_indices=[1], block_types=["recurrent", "attention"],
        # Gemma-3n / Gemma-4: per-layer inputs, KV sharing, the global layers' head size.
        hidden_size_per_layer_input=8, vocab_size_per_layer_input=vocab, laurel_rank=4, num_kv_shared_layers=0, global_head_dim=H // HEADS,
    )
    over.update(FAMILY.get(model_type, {}))
    cls = CONFIG_MAPPING[model_type]  # a name the family derives (a read-only property) is not set
    if "kv_lora_rank" in getattr(cls, "__dataclass_fields__", {}):  # latent attention: every head has its K/V
        over["num_key_value_heads"] = HEADS
    return AutoConfig.for_model(model_type, **{k: v for k, v in over.items()
                                               if v is not None and not isinstance(getattr(cls, k, None), property)})


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """One byte-level BPE tokenizer (Glória's kind) shared by every family's folder."""
    from training.lm_pretrain import train_tokenizer

    tok = train_tokenizer(CAPS * 20, vocab_size=300)
    path = tmp_path_factory.mktemp("tokenizer")
    tok.save_pretrained(path)
    return path


def build_folder(model_type: str, tokenizer_dir, dest) -> str:
    """Save a tiny random `model_type` model and the tokenizer to `dest`, as a downloaded model folder is."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    try:
        cfg = tiny_config(model_type, len(tok), tok.eos_token_id, tok.eos_token_id, tok.pad_token_id)
        with torch.device("meta"):
            n = sum(p.numel() for p in AutoModelForCausalLM.from_config(cfg).parameters())
    except Exception as e:  # noqa: BLE001 - any config or constructor error: the family's constraints
        if model_type in DEFAULT:
            raise
        pytest.skip(f"{model_type}: the generic tiny config is rejected: {type(e).__name__}: {str(e)[:200]}")
    if n > MAX_PARAMS:
        pytest.skip(f"{model_type}: the generic tiny config leaves {n:,} parameters (sub-configs not shrunk)")
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(cfg)
    lm.save_pretrained(dest)
    tok.save_pretrained(dest)
    return str(dest)


def _param_name(model: torch.nn.Module, tensor: torch.Tensor) -> str:
    return next(n for n, p in model.named_parameters(remove_duplicate=False) if p is tensor)


class Resized:
    """The reference: the same folder loaded by plain transformers, its vocabulary resized by one real [RET]
    row (input row = ptvl's ret_in, output row = ret_out, bias = ret_bias). Rows are passed through
    torch.func.functional_call so gradients reach ptvl's trainable rows and bridge."""

    def __init__(self, folder: str, model: VGloria) -> None:
        from transformers import AutoModelForCausalLM

        self.model, self.v = model, model.vocab
        self.body_name = next(n for n, mod in model.lm.named_modules() if mod is model.body)
        ref = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval().requires_grad_(False)
        ref.resize_token_embeddings(self.v + 1, mean_resizing=False)
        self.ref = ref
        self.table = ref.get_input_embeddings()
        head = ref.get_output_embeddings()
        self.tied = self.table.weight is head.weight
        assert self.tied == model.tied
        self.names = {"in": _param_name(ref, self.table.weight)}
        if not self.tied:
            self.names["out"] = _param_name(ref, head.weight)
        if getattr(head, "bias", None) is not None:
            self.names["bias"] = _param_name(ref, head.bias)
        self.frozen = {k: dict(ref.named_parameters(remove_duplicate=False))[n].detach()[: self.v]
                       for k, n in self.names.items()}

    def params(self) -> dict[str, torch.Tensor]:
        """The resized rows: frozen rows of the folder, plus ptvl's [RET] row (a live tensor)."""
        m = self.model
        new = {"in": m.ret_in, "out": m.ret_out, "bias": getattr(m, "ret_bias", None)}
        return {self.names[k]: torch.cat([self.frozen[k], new[k].reshape(1, *self.frozen[k].shape[1:])])
                for k in self.names}

    def embed_rows(self, row: list[int], vis: torch.Tensor | None) -> torch.Tensor:
        """(1, T, d): the resized embedding module's own output, each visual vector a real row of its table."""
        ids = torch.tensor([row])
        weight = self.params()[self.names["in"]]
        if vis is not None:
            slots = ids == VIS
            ids = ids.masked_scatter(slots, torch.arange(self.v + 1, self.v + 1 + int(slots.sum())))
            weight = torch.cat([weight, vis])
        return torch.func.functional_call(self.table, {"weight": weight}, (ids,))

    def forward(self, row: list[int], vis: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (T, V+1) and last hidden state (T, d) of one unpadded row. Without visual tokens it runs on
        input_ids, the plain token path, [RET] included."""
        kw = {"inputs_embeds": self.embed_rows(row, vis)} if vis is not None else {"input_ids": torch.tensor([row])}
        states = []  # the body's output, as ptvl reads it (Gemma-3n's hidden_states hold every AltUp stream)
        hook = self.ref.get_submodule(self.body_name).register_forward_hook(
            lambda mod, args, out: states.append(out.last_hidden_state))
        try:
            out = torch.func.functional_call(self.ref, self.params(), args=(),
                                             kwargs={**kw, "use_cache": False, "output_hidden_states": True})
        finally:
            hook.remove()
        # A wrapper body (BART's decoder wrapper) is never called itself: its decoder's last hidden state.
        return out.logits[0], (states[-1] if states else out.hidden_states[-1])[0]


def _ce_sum(logits: torch.Tensor, row: list[int]) -> tuple[torch.Tensor, int]:
    """Summed next-token CE of a row's text tokens (never a visual slot, never position 0)."""
    labels = torch.tensor([t if t != VIS else -100 for t in row[1:]])
    return F.cross_entropy(logits[:-1].float(), labels, ignore_index=-100, reduction="sum"), int((labels != -100).sum())


def reference_losses(ref: Resized, feats: dict, caps: list[list[int]], partner: list[int | None]) -> dict:
    """FROMAGe's step losses from the resized model, one unpadded row at a time."""
    m = ref.model
    vis = m.visual_tokens(feats)
    cap_rows, images = m.caption_rows(caps, partner)
    slots = vis[torch.tensor(images)].reshape(-1, m.d)
    ce, n, used = 0.0, 0, 0
    for row in cap_rows:
        k = row.count(VIS)
        logits, _ = ref.forward(row, slots[used : used + k])
        used += k
        s, c = _ce_sum(logits, row)
        ce, n = ce + s, n + c
    caption = ce / n
    ce, n, states = 0.0, 0, []
    for row in m.retrieval_rows(caps):
        logits, h = ref.forward(row)
        s, c = _ce_sum(logits, row)
        ce, n = ce + s, n + c
        states.append(h[-1])  # the [RET] position's final hidden state
    ret_ce = ce / n
    txt = F.normalize(m.text_fc[0](torch.stack(states)), dim=-1)
    img = F.normalize(m.image_fc(m.bridge.retrieval_input(feats)), dim=-1)
    sim = min(m.logit_scale, torch.tensor(math.log(m.cfg.logit_scale_max))).exp() * img @ txt.t()
    labels = torch.arange(len(caps))
    i2t, t2i = F.cross_entropy(sim, labels), F.cross_entropy(sim.t(), labels)
    c = m.cfg
    total = c.caption_loss_weight * caption + c.retrieval_loss_weight * (i2t + t2i) + c.ret_ce_weight * ret_ce
    return {"total": total, "caption": caption, "ret_ce": ret_ce, "i2t": i2t, "t2i": t2i}


def _grads(model: VGloria, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    params = dict(model.trainable_parameters())
    grads = torch.autograd.grad(loss, list(params.values()))
    return dict(zip(params, grads, strict=True))


def _feats(n: int) -> dict:
    g = torch.Generator().manual_seed(1)
    return {"cls": {-1: torch.randn(n, VIS_DIM, generator=g) * 3}, "tokens": {}}


def _build(folder: str, **kw) -> VGloria:
    cfg = ModelConfig(llm=folder, bridge="cls", k=K, dtype="fp32", compile=False, **kw)
    model = vgloria(cfg, "cpu", vis_dim=VIS_DIM, load_visual=False, seed=0)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():  # [RET] rows away from their mean init, so a wrong scale on them shows
        for p in (model.ret_in, model.ret_out):
            if p is not None:
                p.add_(torch.randn(p.shape, generator=g) * p.norm() / math.sqrt(p.numel()) * 2 + 0.1)
    return model


def _check_decoding(model: VGloria, family: str) -> None:
    """(4) Cached greedy decoding gives the uncached forward's logits and tokens at every step, for a caption
    ([RET] suppressed) and an answer ([RET] allowed, and fed back when chosen); beam search alike."""
    vis = model.visual_tokens(_feats(1))[0]
    for prompt, allow_ret in (([], False), (model.tokenize(CAPS)[2][:3], True)):
        prefix = model._prefix(vis, prompt)
        ids, logits = greedy_trace(model, prefix, 6, allow_ret=allow_ret, stop=False)
        ref_ids, ref_logits = greedy_trace(model, prefix, 6, cached=False, allow_ret=allow_ret, stop=False)
        assert ids == ref_ids, (family, ids, ref_ids)
        # fp32 rounding, relative to the logits' scale: a state-space layer steps by a recurrence where the full
        # forward runs a chunked scan (Zamba2: 4e-4 of the largest logit apart).
        torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-3 * float(ref_logits.abs().max()),
                                   msg=lambda m: f"{family} decoding: {m}")
        beams = [model.generate_ids(prefix, 5, num_beams=3, allow_ret=allow_ret, cached=c) for c in (True, False)]
        assert beams[0] == beams[1], (family, beams)


def _hf_option_losses(ref: Resized, model: VGloria, feats: dict, prefixes: list[str], options: list[list[str]],
                      image: bool) -> torch.Tensor:
    """The reference VisDial scores: each option alone, unpadded, through the resized Hugging Face model
    (input_ids when there is no image)."""
    vis = model.visual_tokens(feats) if image else None
    out = torch.zeros(len(prefixes), max(map(len, options)))
    for n, (p, opts) in enumerate(zip(prefixes, options, strict=True)):
        pre = model.prefix_ids(model.tokenize([p])[0], K if image else 0)
        for j, o in enumerate(opts):
            ans = model.tokenize([o])[0] or [model.eos_id]
            logits, _ = ref.forward(pre + ans, None if vis is None else vis[n])
            logp = torch.log_softmax(logits[len(pre) - 1 : -1].float(), -1)
            out[n, j] = -logp.gather(-1, torch.tensor(ans).unsqueeze(-1)).sum()
    return out


def _check_visdial(model: VGloria, ref: Resized, family: str) -> None:
    """(5) VisDial scores (shared prefix where the cache allows, else one batched forward) equal the resized
    model scoring each option alone, with and without the image, summed and per token."""
    feats = _feats(2)
    prefixes = ["um círculo Q: de que cor é? A:", "duas estrelas"]
    options = [[" vermelho", " há um quadrado verde pequeno", ""], [" azuis", " três"]]
    mask = torch.tensor([[1.0, 1, 1], [1, 1, 0]])
    for image in (True, False):
        want = _hf_option_losses(ref, model, feats, prefixes, options, image)
        got = model.option_losses(feats, prefixes, options, image=image)
        full = option_losses(model, feats, prefixes, options, image=image, how="full")
        for name, x in (("auto", got), ("full", full)):
            torch.testing.assert_close(x * mask, want, rtol=1e-4, atol=1e-4,
                                       msg=lambda m, name=name, image=image: f"{family} visdial {name}, image={image}: {m}")
        lengths = torch.tensor([[len(t) or 1 for t in model.tokenize(o)] + [1] * (3 - len(o)) for o in options])
        mean = model.option_losses(feats, prefixes, options, image=image, reduce="mean")
        torch.testing.assert_close(mean * lengths, got, rtol=1e-5, atol=1e-5)
    try:  # where the cache can be shared, the shared path is tested against the same reference
        shared = option_losses(model, feats, prefixes, options, how="shared")
    except ValueError:
        return
    torch.testing.assert_close(shared * mask, _hf_option_losses(ref, model, feats, prefixes, options, True),
                               rtol=1e-4, atol=1e-4, msg=lambda m: f"{family} visdial shared: {m}")


@pytest.mark.parametrize("family", sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES))
def test_family_is_right_or_refused_in_one_line(family, tokenizer_dir, tmp_path, one_torch_thread):
    """Every family: the pre-flight refuses it in one line (REFUSED says why), or it passes the pre-flight
    and then all of (1)-(5) against the resized Hugging Face model."""
    if not (FULL_SWEEP or family in DEFAULT):
        pytest.skip("full sweep only (PTVL_ALL_LLM_FAMILIES=1)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        folder = build_folder(family, tokenizer_dir, tmp_path / family)
        report = check_llm(ModelConfig(llm=folder, dtype="fp32"), "cpu", keep=True)  # the LLM then loads once
        if family in REFUSED or not report.ok:
            failure = report.failure() or ""
            assert family in REFUSED and re.search(REFUSED[family], failure), (family, failure, report.checks)
            assert "\n" not in failure and f"({report.model_type})" in failure
            return
        model = _build(folder)
        ref = Resized(folder, model)
    caps = model.tokenize(CAPS)

    # (1) logits, [RET] column included, on a row that also feeds [RET] as input.
    row = model.retrieval_rows(caps)[0] + caps[1][:3]
    ids = torch.tensor([row])
    ours = model.logits(model.body(inputs_embeds=model.embed(ids), use_cache=False).last_hidden_state)[0]
    theirs, _ = ref.forward(row)
    assert ours.shape == theirs.shape == (len(row), model.vocab + 1)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5, msg=lambda m: f"{family} logits: {m}")

    # (2) the virtual rows are fed as the resized embedding module feeds real rows.
    vis = model.visual_tokens(_feats(1))[0]
    vrow = [VIS] * K + caps[2] + [model.ret_id]
    torch.testing.assert_close(model.embed(torch.tensor([vrow]), vis)[0], ref.embed_rows(vrow, vis)[0],
                               rtol=1e-6, atol=1e-6, msg=lambda m: f"{family} embeddings: {m}")
    torch.testing.assert_close(model.embed(ids)[0], ref.embed_rows(row, None)[0], rtol=1e-6, atol=1e-6,
                               msg=lambda m: f"{family} [RET] row: {m}")

    # (3) one training step: losses and gradients.
    feats = _feats(len(caps))
    got = model(feats, caps, PARTNER)
    grads = _grads(model, got.total)
    want = reference_losses(ref, feats, caps, PARTNER)
    got_f, want_f = got.as_floats(), {k: float(v.detach()) for k, v in want.items()}
    assert all(abs(got_f[k] - want_f[k]) < 1e-4 for k in want_f), (family, got_f, want_f)
    want_grads = _grads(model, want["total"])
    for name, g in grads.items():
        torch.testing.assert_close(g, want_grads[name], rtol=1e-4, atol=1e-5,
                                   msg=lambda m, name=name: f"{family} grad {name}: {m}")

    # (4) decoding and (5) VisDial scoring.
    _check_decoding(model, family)
    _check_visdial(model, ref, family)


def test_a_body_that_scales_only_input_ids_is_refused(tokenizer_dir, tmp_path):
    """Falcon-H1 multiplies by embedding_multiplier only when given input_ids: fed inputs_embeds, every
    token (virtual or real) would be off by that factor. ptvl refuses such a model in one line."""
    folder = build_folder("falcon_h1", tokenizer_dir, tmp_path / "fh1")
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(folder)
    cfg.embedding_multiplier = 5.0
    cfg.save_pretrained(folder)
    with pytest.raises(ValueError, match="treats input_ids beyond an embedding lookup"):
        _build(folder)
