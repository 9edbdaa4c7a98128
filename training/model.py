"""V-Glória: frozen CLIP features -> bridge -> k LLM input embeddings, plus a [RET] token for retrieval (FROMAGe).

Reading order: the model (its [RET] and visual rows, sequence building, one forward, the losses), the
inference API (captions, answers, retrieval, VisDial option scoring), then the `vgloria` builder. Loading the
LLM, finding its body and running its head alone are in `training/llm_access.py`; decoding in
`training/decoding.py`; option scoring in `training/scoring.py`.

[RET] is a *virtual* token: its id is `V`, one past the LLM's embedding rows, and its input embedding (and,
for untied heads, its output row) are trainable parameters spliced in explicitly. Nothing is resized, so
the frozen LLM and its tokenizer stay byte-identical and we do not depend on `resize_token_embeddings`
side effects (transformers PR 26865 changed how new rows are initialised).

Virtual rows must behave exactly as real resized vocabulary rows, in every LLM family, without a list of
family quirks. So both ends go through the family's own code (`tests/test_llm_families.py` checks this
against the full Hugging Face forward of a resized model, for every causal-LM family transformers ships):
- input: the [RET] row and the visual tokens go through the embedding module's own forward, as rows of
  the table (Gemma's sqrt(d) scaling inside the embedding module under transformers 5; a plain
  nn.Embedding is a lookup, so they are spliced in directly);
- output: logits come from the causal-LM class's own forward, run on our hidden states with its body
  skipped (llm_access.HeadOnly), while a forward hook adds the [RET] column to the output layer. Whatever the family does after
  the body (Gemma-2's soft-capping, Cohere's logit_scale, Granite's logits_scaling, a head bias, BERT's
  transform before the decoder) applies to [RET] as to any real token.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dnn
import torch.nn.functional as F
from torch import Tensor, nn

from training import decoding, scoring
from training.bridges import build_bridge
from training.features import VisualEncoder, load_clip
from training.llm_access import (
    HeadOnly,
    check_inputs_embeds,
    find_body,
    first_position,
    load_llm,
    torch_dtype,
)

if TYPE_CHECKING:  # only annotations: the GPU benchmark runs this module without pydantic installed
    from training.config import ModelConfig

VIS = -1  # placeholder id of a visual-token slot in a sequence under construction
IGNORE = -100  # CE ignore index

Feats = dict[str, dict[int, Tensor]]  # {"cls": {layer: (N, m)}, "tokens": {layer: (N, T, m)}}


@dataclass
class Losses:
    """One training step's losses (total is what backward() sees)."""

    total: Tensor
    caption: Tensor
    ret_ce: Tensor
    i2t: Tensor
    t2i: Tensor
    caption_tokens: int  # label tokens in the caption pass (for throughput)

    def as_floats(self) -> dict[str, float]:
        return {k: float(getattr(self, k).detach()) for k in ("total", "caption", "ret_ce", "i2t", "t2i")}


def take_feats(feats: Feats, index: Tensor | list[int]) -> Feats:
    """Select images (rows) of a feature dict."""
    return {kind: {layer: t[index] for layer, t in d.items()} for kind, d in feats.items()}


def gather_with_grad(x: Tensor) -> Tensor:
    """All-gather along dim 0 keeping gradients (identity outside torch.distributed)."""

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x

    return torch.cat(dnn.all_gather(x), dim=0)


class VGloria(nn.Module):
    """The FROMAGe-style model. Frozen: `lm`, `visual`. Trainable: bridge, [RET] rows, W_t, W_i, logit scale."""

    def __init__(self, cfg: ModelConfig, lm: nn.Module, tokenizer: Any, bridge: nn.Module,
                 visual: Any | None = None) -> None:
        super().__init__()
        self.cfg, self.tokenizer = cfg, tokenizer
        self.lm = lm.eval().requires_grad_(False)  # eval: no dropout in the frozen LLM
        self.visual = visual  # training.features.VisualEncoder (frozen, not an nn.Module) or None
        self.bridge = bridge
        self.model_type = str(getattr(lm.config, "model_type", type(lm).__name__))
        table, head = lm.get_input_embeddings(), lm.get_output_embeddings()
        body_name = find_body(lm, table, head)
        emb_in, emb_out = table.weight, head.weight
        self.vocab = emb_in.shape[0]  # V; [RET] gets id V
        self.ret_id = self.vocab
        self.d = emb_in.shape[1]
        self.tied = emb_in.data_ptr() == emb_out.data_ptr()
        # nn.Embedding.forward is a lookup: virtual rows can be spliced in as they are (fast path). Any other
        # embedding forward (a scale, a norm) must see them as table rows (see embed()).
        self._lookup = type(table).forward is nn.Embedding.forward and table.max_norm is None
        # New rows start at the mean embedding (a neutral point of the frozen distribution), fp32 masters.
        self.ret_in = nn.Parameter(emb_in.detach().float().mean(0).clone())
        self.ret_out = None if self.tied else nn.Parameter(emb_out.detach().float().mean(0).clone())
        # A head with a bias gives [RET] the mean bias, fixed (derived from frozen weights: not checkpointed).
        bias = getattr(head, "bias", None)
        self.register_buffer("ret_bias", None if bias is None else bias.detach().float().mean().reshape(1),
                             persistent=False)
        self._head_only = HeadOnly(lm, body_name)
        self.body = getattr(lm, body_name)  # the transformer without its head
        # transformers >= 5.2x renamed `past_key_values` to `cache`; accept either generation.
        # None: a body that takes no cache (GPT-1, RWKV's `state`) decodes by full forwards (training.decoding).
        params = inspect.signature(self.body.forward).parameters
        self.cache_kw = next((k for k in ("cache", "past_key_values") if k in params), None)
        check_inputs_embeds(lm, self.body, tokenizer, lambda ids: self.embed(
            torch.cat([ids[:, :2], torch.tensor([[self.ret_id, VIS]], device=ids.device), ids[:, 2:]], 1),
            self.ret_in.detach().unsqueeze(0) * 0.5))
        self.first_position = first_position(lm, self.body)  # decoding numbers fed tokens from here
        # W_t: one map per chosen layer, each as wide as that layer's hidden state (OPT-350m: the last
        # state is projected to the 512-d embedding width, the intermediate ones are 1024 wide).
        self.text_fc = nn.ModuleList(nn.Linear(w, cfg.q) for w in self._layer_widths(cfg.text_emb_layers))
        self.image_fc = nn.Linear(bridge.retrieval_dim, cfg.q)  # W_i
        self.logit_scale = nn.Parameter(torch.tensor(math.log(cfg.logit_scale_init)))
        self.eos_id = tokenizer.eos_token_id
        if self.eos_id is None:
            raise ValueError(f"tokenizer of {cfg.llm} has no eos_token: cannot end captions")
        ids = tokenizer("a")["input_ids"]
        self.bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None and ids[:1] == [
            tokenizer.bos_token_id] else []  # LLaMA-style tokenizers start every sequence with BOS
        # Training recipe (training/config.py RECIPES). bench/ builds cfg without pydantic: default thesis-eq.
        self.recipe = getattr(cfg, "recipe", "thesis-eq")
        # fromage: [VIS*k] [BOS] cap, with the tokenizer's BOS even where it adds none itself (GPT-style).
        self.lead = [tokenizer.bos_token_id] if self.recipe == "fromage" and tokenizer.bos_token_id is not None \
            else self.bos
        # The frozen rows' mean norms: the fromage recipe rescales the [RET] rows to them after every step.
        self.frozen_in_norm = float(emb_in.detach().float().norm(dim=1).mean())
        self.frozen_out_norm = float(emb_out.detach().float().norm(dim=1).mean())
        self._body_fwd = self.body  # replaced by a compiled version when cfg.compile resolves on
        self.need_layers = any(i != -1 for i in cfg.text_emb_layers)
        self.feature_stats: dict[str, dict[int, tuple[Tensor, Tensor]]] = {}  # cfg.feature_norm statistics

    @torch.no_grad()
    def _layer_widths(self, layers: list[int]) -> list[int]:
        """Width of the hidden state at each chosen layer (-1: the last hidden state), from a 1-token probe."""
        probe = torch.zeros(1, 1, self.d, dtype=self.lm.get_input_embeddings().weight.dtype,
                            device=self.lm.get_input_embeddings().weight.device)
        out = self.body(inputs_embeds=probe, output_hidden_states=True, use_cache=False)
        hidden = out.hidden_states
        widths = []
        for layer in layers:
            if layer == -1:
                widths.append(out.last_hidden_state.shape[-1])
            elif -len(hidden) <= layer < len(hidden):
                widths.append(hidden[layer].shape[-1])
            else:
                raise ValueError(f"text_emb_layers: layer {layer} does not exist; the LLM gives {len(hidden)} "
                                 f"hidden states (0 = embeddings, -1 = last)")
        return widths

    # ------------------------------------------------------------------ parameters

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    def trainable_state_dict(self) -> dict[str, Tensor]:
        return {n: p.detach().clone() for n, p in self.trainable_parameters()}

    def load_trainable_state_dict(self, state: dict[str, Tensor]) -> None:
        own = dict(self.trainable_parameters())
        if set(own) != set(state):
            raise KeyError(f"checkpoint weights do not match the model: missing {sorted(set(own) - set(state))}, "
                           f"unexpected {sorted(set(state) - set(own))}")
        with torch.no_grad():
            for n, p in own.items():
                p.copy_(state[n])

    @torch.no_grad()
    def renorm_ret_rows(self) -> None:
        """Rescale the [RET] input row (and the untied output row) to the frozen rows' mean norm, as FROMAGe
        does after each optimizer step (the fromage recipe)."""
        self.ret_in.mul_(self.frozen_in_norm / self.ret_in.norm())
        if self.ret_out is not None:
            self.ret_out.mul_(self.frozen_out_norm / self.ret_out.norm())

    def enable_compile(self) -> None:
        """torch.compile the frozen transformer body (dynamic shapes: bucketed batches vary in length)."""
        self._body_fwd = torch.compile(self.body, dynamic=True)

    # ------------------------------------------------------------------ tokens and embeddings

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]

    def embed(self, ids: Tensor, vis: Tensor | None = None) -> Tensor:
        """Input embeddings of `ids` (B, T): token rows, the trainable [RET] row, and visual tokens
        (vis: (n_slots, d) in row-major slot order) in the VIS slots, each fed as a table row would be."""
        table = self.lm.get_input_embeddings()
        is_ret, is_vis = ids == self.ret_id, ids == VIS
        if not (is_ret.any() or (vis is not None and is_vis.any())):
            return table(ids)
        dtype = table.weight.dtype
        if self._lookup:
            emb = table(ids.clamp(0, self.vocab - 1))
            emb = torch.where(is_ret.unsqueeze(-1), self.ret_in.to(dtype), emb)
            if vis is not None:
                emb = emb.masked_scatter(is_vis.unsqueeze(-1), vis.to(dtype))
            return emb
        # The module's own forward over the table extended by [RET] (row V) and the visual tokens (V+1...):
        # exactly what a resized vocabulary would give. Costs one copy of the table per call.
        rows = [table.weight, self.ret_in.to(dtype).unsqueeze(0)]
        if vis is not None:
            rows.append(vis.to(dtype))
            ids = ids.masked_scatter(is_vis, torch.arange(self.vocab + 1, self.vocab + 1 + len(vis),
                                                         device=ids.device))
        return torch.func.functional_call(table, {"weight": torch.cat(rows)}, (ids,))

    def _ret_column(self, module: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> Tensor:
        """Forward hook on the output layer: append the [RET] logit, as a resized head row would."""
        row = (self.ret_in if self.tied else self.ret_out).to(args[0].dtype)
        bias = None if self.ret_bias is None else self.ret_bias.to(args[0].dtype)
        return torch.cat([out, F.linear(args[0], row.unsqueeze(0), bias).to(out.dtype)], dim=-1)

    def logits(self, h: Tensor) -> Tensor:
        """(…, d) final hidden states -> (…, V + 1) logits; the last column is [RET].

        Runs the causal-LM class's own forward with the body skipped, so every post-processing of the
        family applies, to the [RET] column too (module docstring)."""
        hook = self.lm.get_output_embeddings().register_forward_hook(self._ret_column)
        try:
            out = type(self.lm).forward(self._head_only, inputs_embeds=h.reshape(1, -1, h.shape[-1]))
        finally:
            hook.remove()
        return out.logits.reshape(*h.shape[:-1], out.logits.shape[-1])

    def set_feature_stats(self, stats: dict[str, dict[int, tuple[Tensor, Tensor]]]) -> None:
        """Fix the (mean, std) per feature kind and layer used by cfg.feature_norm = "standardize"."""
        dev = self.ret_in.device
        self.feature_stats = {k: {int(layer): (m.float().to(dev), s.float().clamp_min(1e-6).to(dev))
                                 for layer, (m, s) in d.items()} for k, d in stats.items()}

    def norm_feats(self, feats: Feats) -> Feats:
        if self.cfg.feature_norm == "none":
            return feats
        if not self.feature_stats:
            raise RuntimeError("feature_norm='standardize' but no statistics set (set_feature_stats)")
        return {kind: {layer: (x.float() - self.feature_stats[kind][layer][0]) / self.feature_stats[kind][layer][1]
                       for layer, x in d.items()} for kind, d in feats.items()}

    def visual_tokens(self, feats: Feats) -> Tensor:
        """(N, k, d) LLM input embeddings of N images."""
        return self.bridge(self.norm_feats(feats))

    def image_embeddings(self, feats: Feats) -> Tensor:
        """(N, q) unit-norm retrieval embeddings of images (W_i)."""
        return F.normalize(self.image_fc(self.bridge.retrieval_input(self.norm_feats(feats))).float(), dim=-1)

    def encode_images(self, images: Tensor) -> Feats:
        """Run the frozen CLIP on preprocessed images (N, 3, H, W) for the features the bridge needs."""
        if self.visual is None:
            raise RuntimeError("this model was built without a CLIP encoder: pass features instead of images")
        return self.visual.features(images, self.bridge.needs())

    def _feats(self, images_or_feats: Tensor | Feats) -> Feats:
        return images_or_feats if isinstance(images_or_feats, dict) else self.encode_images(images_or_feats)

    # ------------------------------------------------------------------ sequences

    def caption_rows(self, caps: list[list[int]], partner: list[int | None]) -> tuple[list[list[int]], list[int]]:
        """Caption pass: [BOS] [VIS*k] cap EOS, or with a partner j: [BOS] [VIS*k] cap_i EOS [VIS*k] cap_j EOS.
        Returns the rows and the image index of every VIS block in row-major order."""
        if self.recipe == "fromage":
            return self._fromage_caption_rows(caps, partner)
        k, n = self.bridge.n_out, self.cfg.max_caption_tokens - 1
        rows, images = [], []
        for i, j in enumerate(partner):
            row = self.bos + [VIS] * k + caps[i][:n] + [self.eos_id]
            images.append(i)
            if j is not None:
                row += [VIS] * k + caps[j][:n] + [self.eos_id]
                images.append(j)
            rows.append(row)
        return rows, images

    def _fromage_caption_rows(self, caps: list[list[int]],
                              partner: list[int | None]) -> tuple[list[list[int]], list[int]]:
        """fromage recipe: [VIS*k] [BOS] cap_i, with a partner j: [VIS*k] [BOS] cap_i [VIS*k] [BOS] cap_j; no
        EOS. A caption that is another row's partner gets no row of its own (each caption used once)."""
        k, n = self.bridge.n_out, self._fromage_cap_len()
        taken = {j for j in partner if j is not None}
        rows, images = [], []
        for i, j in enumerate(partner):
            if i in taken:
                continue
            row = [VIS] * k + self.lead + caps[i][:n]
            images.append(i)
            if j is not None:
                row += [VIS] * k + self.lead + caps[j][:n]
                images.append(j)
            rows.append(row)
        return rows, images

    def _fromage_cap_len(self) -> int:
        # FROMAGe's max_len counts the tokenised caption [BOS] cap [RET].
        return max(0, self.cfg.max_caption_tokens - len(self.lead) - 1)

    def retrieval_rows(self, caps: list[list[int]]) -> list[list[int]]:
        """Retrieval pass: [BOS] cap [RET]; truncation keeps [RET] last."""
        if self.recipe == "fromage":
            n = self._fromage_cap_len()
            return [self.lead + c[:n] + [self.ret_id] for c in caps]
        n = self.cfg.max_caption_tokens - 1
        return [self.bos + c[:n] + [self.ret_id] for c in caps]

    @staticmethod
    def pad(rows: list[list[int]], device: torch.device | str) -> Tensor:
        """Right-pad with id 0. With a causal LM, right padding needs no attention mask: real positions never
        see the pads, and pad positions are ignored by the losses (a mask would only slow the kernels)."""
        t = max(map(len, rows))
        out = torch.zeros(len(rows), t, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r)
        return out.to(device)

    def targets(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """Next-token labels aligned with logits[:, :-1]: text tokens (and [RET]) of each row, never VIS,
        BOS or padding."""
        tgt = ids[:, 1:].clone()
        pos = torch.arange(1, ids.shape[1], device=ids.device)
        tgt[(tgt == VIS) | (pos.unsqueeze(0) >= lengths.unsqueeze(1))] = IGNORE
        return tgt

    # ------------------------------------------------------------------ training forward

    def run_body(self, emb: Tensor) -> tuple[Tensor, tuple[Tensor, ...] | None]:
        out = self._body_fwd(inputs_embeds=emb, output_hidden_states=self.need_layers, use_cache=False)
        return out.last_hidden_state, (out.hidden_states if self.need_layers else None)

    def text_state(self, last: Tensor, hidden: tuple[Tensor, ...] | None, rows: Tensor, pos: Tensor) -> Tensor:
        """(B, q) W_t of the hidden state(s) at [RET] (FROMAGe: one map per layer, summed)."""
        outs = []
        for layer, fc in zip(self.cfg.text_emb_layers, self.text_fc, strict=True):
            h = last if layer == -1 else hidden[layer]
            outs.append(fc(h[rows, pos].float()))
        return torch.stack(outs).sum(0)

    def forward(self, feats: Feats, caps: list[list[int]], partner: list[int | None]) -> Losses:
        """Losses of one (micro-)batch: feats of B images, their B tokenised captions (no special tokens),
        and for each caption the index of the caption concatenated after it (None for none; in the fromage
        recipe a partner has no caption row of its own, so there may be fewer caption rows than B)."""
        device = self.ret_in.device
        b = len(caps)
        vis = self.visual_tokens(feats)  # (B, k, d)
        cap_rows, images = self.caption_rows(caps, partner)
        ret_rows = self.retrieval_rows(caps)
        vis_slots = vis[torch.tensor(images, device=device)].reshape(-1, vis.shape[-1])

        fused = self.cfg.fused_pass if self.cfg.fused_pass is not None else device.type == "cuda"
        if fused:  # one forward over 2B rows: bigger matmuls, one kernel launch sequence
            ids = self.pad(cap_rows + ret_rows, device)
            lengths = torch.tensor([len(r) for r in cap_rows + ret_rows], device=device)
            last, hidden = self.run_body(self.embed(ids, vis_slots))
            nc = len(cap_rows)
            cap_sl, ret_sl = slice(0, nc), slice(nc, nc + b)
            cap_ids, ret_ids = ids[cap_sl], ids[ret_sl]
            cap_len, ret_len = lengths[cap_sl], lengths[ret_sl]
            cap_last, ret_last = last[cap_sl], last[ret_sl]
            ret_hidden = tuple(h[ret_sl] for h in hidden) if hidden is not None else None
        else:
            cap_ids, ret_ids = self.pad(cap_rows, device), self.pad(ret_rows, device)
            cap_len = torch.tensor([len(r) for r in cap_rows], device=device)
            ret_len = torch.tensor([len(r) for r in ret_rows], device=device)
            cap_last, _ = self.run_body(self.embed(cap_ids, vis_slots))
            ret_last, ret_hidden = self.run_body(self.embed(ret_ids))

        caption_ce, n_tok = self._ce(cap_last, self.targets(cap_ids, cap_len))
        ret_ce, _ = self._ce(ret_last, self.targets(ret_ids, ret_len))

        # Retrieval: [RET] state (text) vs W_i(visual) over the batch, negatives gathered across ranks.
        rows = torch.arange(b, device=device)
        txt = F.normalize(self.text_state(ret_last, ret_hidden, rows, ret_len - 1).float(), dim=-1)
        img = self.image_embeddings(feats)
        txt, img = gather_with_grad(txt), gather_with_grad(img)
        # Not clamped here: a clamp in the graph kills the gradient above the bound, so the scale could never
        # come back down. The train loop clamps the parameter in place after each step, as CLIP does.
        scale = self.logit_scale.exp()
        sim = scale * img @ txt.t()  # (B_global, B_global), i2t
        labels = torch.arange(sim.shape[0], device=device)
        i2t, t2i = F.cross_entropy(sim, labels), F.cross_entropy(sim.t(), labels)

        c = self.cfg
        total = c.caption_loss_weight * caption_ce + c.retrieval_loss_weight * (i2t + t2i) + c.ret_ce_weight * ret_ce
        return Losses(total, caption_ce.detach(), ret_ce.detach(), i2t.detach(), t2i.detach(), n_tok)

    def _ce(self, last: Tensor, tgt: Tensor) -> tuple[Tensor, int]:
        """Mean CE over labelled positions only: the vocabulary matmul skips padding and visual slots."""
        keep = tgt != IGNORE
        logits = self.logits(last[:, :-1][keep]).float()
        return F.cross_entropy(logits, tgt[keep]), int(keep.sum())

    # ------------------------------------------------------------------ inference API

    def prefix_ids(self, text: list[int], k: int) -> list[int]:
        """[BOS] [VIS*k] text (fromage recipe: [VIS*k] [BOS] text); k=0: the text prefix with no image."""
        if self.recipe == "fromage":
            return [VIS] * k + self.lead + text
        return self.bos + [VIS] * k + text

    def _prefix(self, vis: Tensor, text: list[int]) -> Tensor:
        """(1, P, d) embeddings of the prefix of one image's visual tokens vis (k, d) and text."""
        return self.embed(torch.tensor([self.prefix_ids(text, vis.shape[0])], device=vis.device), vis)

    @torch.no_grad()
    def generate_ids(self, prefix: Tensor, max_new_tokens: int, num_beams: int = 1, allow_ret: bool = True,
                     *, cached: bool = True) -> list[int]:
        """Greedy (num_beams=1) or beam search continuation of one prefix (1, P, d); stops at EOS or [RET]
        (the stop token is kept at the end of the returned ids). allow_ret=False never emits [RET].
        cached=False decodes without a cache (the reference; training/decoding.py)."""
        return decoding.generate_ids(self, prefix, max_new_tokens, num_beams, allow_ret, cached=cached)

    def decode(self, ids: list[int]) -> str:
        """Text of generated ids: no [RET], no EOS, no other special token of the tokenizer."""
        return self.tokenizer.decode([t for t in ids if t < self.vocab], skip_special_tokens=True).strip()

    @torch.no_grad()
    def caption(self, images_or_feats: Tensor | Feats, max_new_tokens: int = 30, num_beams: int = 1) -> list[str]:
        """Caption each image (greedy or beam search); [RET] is suppressed, as in FROMAGe."""
        vis = self.visual_tokens(self._feats(images_or_feats))
        return [self.decode(self.generate_ids(self._prefix(v, []), max_new_tokens, num_beams, allow_ret=False))
                for v in vis]

    @torch.no_grad()
    def answer(self, feats: Tensor | Feats, prompt: str, max_new_tokens: int = 30) -> str:
        """Greedy continuation of [image] prompt for the first image (VQA / dialogue). A [RET] in the
        output is written as "[RET]" and ends the answer (the caller may then retrieve)."""
        vis = self.visual_tokens(self._feats(feats))[0]
        ids = self.generate_ids(self._prefix(vis, self.tokenize([prompt])[0]), max_new_tokens)
        return self.decode(ids) + (" [RET]" if ids and ids[-1] == self.ret_id else "")

    @torch.no_grad()
    def text_embeddings(self, texts: list[str], batch_size: int = 256) -> Tensor:
        """(N, q) unit-norm retrieval embeddings of texts: append [RET], take its state (W_t)."""
        out = []
        device = self.ret_in.device
        for s in range(0, len(texts), batch_size):
            rows = self.retrieval_rows(self.tokenize(texts[s : s + batch_size]))
            ids = self.pad(rows, device)
            lengths = torch.tensor([len(r) for r in rows], device=device)
            last, hidden = self.run_body(self.embed(ids))
            state = self.text_state(last, hidden, torch.arange(len(rows), device=device), lengths - 1)
            out.append(F.normalize(state.float(), dim=-1))
        return torch.cat(out)

    @torch.no_grad()
    def retrieve(self, texts: list[str], image_index: Tensor, k: int = 10) -> tuple[Tensor, Tensor]:
        """Top-k images of an (N_img, q) embedding index for each text: (scores, indices), each (N_txt, k)."""
        sim = self.text_embeddings(texts) @ image_index.to(self.ret_in.device).float().t()
        return sim.topk(min(k, sim.shape[1]), dim=1)

    def option_losses(self, feats: Tensor | Feats, prefix_texts: list[str], options: list[list[str]],
                      chunk: int = 100, *, image: bool = True, reduce: Literal["sum", "mean"] = "sum") -> Tensor:
        """(N, max options) cross-entropy of each option's tokens after [image] prefix_text (VisDial IT2T:
        lower is better). reduce="sum": summed over the option's tokens (the thesis' ranking), "mean": per
        token (length-normalised); image=False: the same prefix without visual tokens (the LLM alone).
        training/scoring.py: the prefix cache is shared between options where the cache allows it."""
        feats = self._feats(feats) if image else feats
        return scoring.option_losses(self, feats, prefix_texts, options, chunk, image=image, reduce=reduce)


# ---------------------------------------------------------------------- builder


def resolve_compile(cfg: ModelConfig, device: torch.device | str) -> bool:
    return cfg.compile if cfg.compile is not None else torch.device(device).type == "cuda"


def vgloria(cfg: ModelConfig, device: torch.device | str = "cpu", *, vis_dim: int | None = None,
            n_tokens: int | None = None, load_visual: bool = True, seed: int | None = None) -> VGloria:
    """Build V-Glória: load the frozen LLM (and CLIP unless load_visual=False, e.g. training on cached
    features, where `vis_dim` and `n_tokens` give the ViT width and tokens per image), build the bridge
    and the trainable heads."""

    lm, tokenizer = load_llm(cfg, device)
    visual = None
    if load_visual:

        # fp32 weights, bf16 autocast on GPU: open_clip's "bf16" casts weights but not the input pixels.
        clip, _ = load_clip(cfg.clip, pretrained=cfg.clip_pretrained or None, device=device, precision="fp32")
        use_amp = torch.device(device).type == "cuda" and cfg.dtype != "fp32"
        visual = VisualEncoder(clip, name=cfg.clip, autocast=torch_dtype(cfg.dtype) if use_amp else None)
        vis_dim, n_tokens = visual.width, visual.n_tokens
    if vis_dim is None:
        raise ValueError("vis_dim is required when the CLIP encoder is not loaded")
    if seed is not None:
        torch.manual_seed(seed)  # trainable init is reproducible from the run seed
    bridge = build_bridge(cfg.bridge, vis_dim=vis_dim, llm_dim=lm.get_input_embeddings().weight.shape[1],
                          k=cfg.k, layer=cfg.layer, n_tokens=n_tokens, **cfg.bridge_kwargs)
    model = VGloria(cfg, lm, tokenizer, bridge, visual).to(device)
    model.bridge.float()  # fp32 master weights for everything trainable (the LLM stays in cfg.dtype)
    if resolve_compile(cfg, device):
        model.enable_compile()
    return model


def clip_preprocess(cfg: ModelConfig) -> Any:
    """The deterministic CLIP preprocessing transform of cfg.clip (no augmentation)."""

    _, preprocess = load_clip(cfg.clip, pretrained=cfg.clip_pretrained or None, device="cpu", precision="fp32")
    return preprocess


def feature_stats(feats: Feats) -> dict[str, dict[int, tuple[Tensor, Tensor]]]:
    """Per-dimension (mean, std) of a sample of features (tokens pooled over images and positions)."""
    return {kind: {layer: (x.float().reshape(-1, x.shape[-1]).mean(0), x.float().reshape(-1, x.shape[-1]).std(0))
                   for layer, x in d.items()} for kind, d in feats.items() if d}


def count_trainable(model: VGloria) -> int:
    return sum(p.numel() for _, p in model.trainable_parameters())
