"""COMET-22 (`RegressionMetric`) and CometKiwi (`UnifiedMetric`, reference-free) inference on ptvl's stack.

The encoder is transformers' `XLMRobertaModel` (no pooler), built from the checkpoint's encoder config and
loaded with the checkpoint's `encoder.model.*` weights; the mix and the estimator are translation.comet.layers.
What each model computes, as unbabel-comet 2.2.7 does:

- regression (COMET-22): src, mt and ref are encoded separately (each truncated to max_positions - 2
  tokens); each is mixed over layers and mean-pooled; the estimator reads
  [mt, ref, mt*ref, |mt-ref|, mt*src, |mt-src|].
- unified (CometKiwi, input_segments [mt, src]): one sequence ``<s> mt </s></s> src </s>`` (each part first
  truncated alone, the whole cut to max_positions when too long), mixed over layers; the estimator reads
  the first token.

Scores are float32 on CPU and GPU; batches are sorted by length (less padding), results come back in
input order.  The reference fixture (tests/fixtures/comet/) holds the port to 1e-5.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from transformers import AutoTokenizer, XLMRobertaConfig, XLMRobertaModel

from translation.comet.checkpoint import REGRESSION, UNIFIED, CometCheckpoint, read_checkpoint
from translation.comet.layers import Estimator, LayerwiseMix, average_pooling
from translation.errors import ConfigurationError

# Checkpoint keys with no counterpart at inference: the mix's training-time dropout buffers, the word-level
# tagging head of UnifiedMetric, a pooler, and position-id buffers older transformers saved.
_IGNORED = ("layerwise_attention.dropout_mask", "layerwise_attention.dropout_fill", "hidden2tag.",
            "encoder.model.pooler.", "encoder.model.embeddings.position_ids", "encoder.model.embeddings.token_type_ids")
# The hyper-parameter defaults of the two reference classes, for checkpoints whose hparams leave one out.
_DEFAULTS = {
    REGRESSION: {"layer": "mix", "pool": "avg", "layer_transformation": "softmax", "layer_norm": True},
    UNIFIED: {"sent_layer": "mix", "layer_transformation": "sparsemax", "layer_norm": True,
              "input_segments": ["mt", "src", "ref"]},
}
Progress = Callable[[int], None]


class CometModel(nn.Module):
    """One COMET checkpoint ready to score.  Build it with `load_comet`."""

    def __init__(self, ckpt: CometCheckpoint, config: XLMRobertaConfig, tokenizer) -> None:
        super().__init__()
        self.kind, self.model_id, self.tokenizer = ckpt.kind, ckpt.model_id, tokenizer
        hp = {**_DEFAULTS[ckpt.kind], **ckpt.hparams}
        self.encoder = XLMRobertaModel(config, add_pooling_layer=False)
        layer = hp["sent_layer"] if ckpt.kind == UNIFIED else hp["layer"]
        transformation = hp["layer_transformation"]
        if transformation == "sparsemax_patch":  # comet >= 2.2.4 reads this marker as softmax (its issue #244)
            transformation = "softmax"
        num_layers = config.num_hidden_layers + 1  # the embeddings' output and every layer's
        self.mix = (LayerwiseMix(num_layers, transformation=transformation, layer_norm=bool(hp["layer_norm"]))
                    if layer == "mix" else None)
        self.layer = None if layer == "mix" else int(layer)
        if self.layer is not None and not 0 <= self.layer < num_layers:
            raise ConfigurationError(f"{ckpt.folder}: layer {layer!r} is not one of the encoder's {num_layers}")
        width = config.hidden_size
        if ckpt.kind == REGRESSION:
            if hp["pool"] != "avg":
                raise ConfigurationError(f"{ckpt.folder}: pool {hp['pool']!r} is not supported (avg, as COMET-22)")
            in_dim = 6 * width
        else:
            segments = list(hp["input_segments"])
            if segments not in (["mt", "src"], ["mt", "ref"]):
                raise ConfigurationError(f"{ckpt.folder}: input_segments {segments} are not supported ([mt, src] "
                                         "as CometKiwi, or [mt, ref])")
            self.second = segments[1]
            in_dim = width
        self.estimator = Estimator(in_dim, list(hp.get("hidden_sizes", [3072, 1024])), hp.get("activations", "Tanh"),
                                   hp.get("final_activation"), float(hp.get("dropout", 0.1)))
        # max_positions as COMET defines it (position embeddings minus XLM-R's padding offset); each
        # segment is cut to 2 fewer tokens.
        self.max_positions = config.max_position_embeddings - 2
        self._load(ckpt)
        self.eval()

    @property
    def needs_reference(self) -> bool:
        return self.kind == REGRESSION or getattr(self, "second", None) == "ref"

    def _load(self, ckpt: CometCheckpoint) -> None:
        mapped: dict[str, torch.Tensor] = {}
        unknown = []
        for key, value in ckpt.state_dict.items():
            if key.startswith(_IGNORED):
                continue
            if key.startswith("encoder.model."):
                mapped["encoder." + key.removeprefix("encoder.model.")] = value
            elif key.startswith("layerwise_attention.") and self.mix is not None:
                mapped["mix." + key.removeprefix("layerwise_attention.")] = value
            elif key.startswith("estimator."):
                mapped[key] = value
            else:
                unknown.append(key)
        if unknown:
            raise ConfigurationError(f"{ckpt.folder}: checkpoint keys this port does not know: {unknown[:5]}")
        missing, unexpected = self.load_state_dict(mapped, strict=False)
        missing = [k for k in missing if not k.endswith(("position_ids", "token_type_ids"))]
        if missing or unexpected:
            raise ConfigurationError(f"{ckpt.folder}: checkpoint does not fit its hparams (missing "
                                     f"{missing[:5]}, unexpected {unexpected[:5]})")

    # --- tokenisation, as COMET's encoder prepares it --------------------------------------------------

    def _ids(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer(list(texts), truncation=True, max_length=self.max_positions - 2)["input_ids"]

    def _pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], dtype=torch.long)
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], dtype=torch.long)
        return ids, mask

    def _concat(self, first: list[list[int]], second: list[list[int]]) -> list[list[int]]:
        """``<s> a </s></s> b </s>`` per pair, cut to max_positions when the parts are too long together
        (COMET's Encoder.concat_sequences for XLM-R, whose separator is two tokens)."""
        cls, sep = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        out = []
        for a, b in zip(first, second, strict=True):
            seq = [cls, *a[1:-1], sep, sep, *b[1:-1], sep]
            if len(a) - 2 + len(b) - 2 > self.max_positions - 5:
                seq = seq[: self.max_positions]
            out.append(seq)
        return out

    # --- forward ---------------------------------------------------------------------------------------

    def _mixed(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        layers = self.encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        return self.mix(layers, mask) if self.mix is not None else layers[self.layer]

    def _sentence(self, seqs: list[list[int]], device: torch.device) -> torch.Tensor:
        ids, mask = self._pad(seqs)
        ids, mask = ids.to(device), mask.to(device)
        return average_pooling(ids, self._mixed(ids, mask), mask, self.tokenizer.pad_token_id)

    @torch.inference_mode()
    def _batch(self, src: list[str], mt: list[str], ref: list[str] | None) -> torch.Tensor:
        device = next(self.parameters()).device
        if self.kind == REGRESSION:
            s = self._sentence(self._ids(src), device)
            r = self._sentence(self._ids(ref or []), device)
            m = self._sentence(self._ids(mt), device)
            features = torch.cat((m, r, m * r, torch.abs(m - r), m * s, torch.abs(m - s)), dim=1)
            return self.estimator(features).view(-1)
        other = src if self.second == "src" else (ref or [])
        ids, mask = self._pad(self._concat(self._ids(mt), self._ids(other)))
        ids, mask = ids.to(device), mask.to(device)
        return self.estimator(self._mixed(ids, mask)[:, 0, :]).view(-1)

    def score(self, src: Sequence[str], mt: Sequence[str], ref: Sequence[str] | None = None, *,
              batch_size: int = 32, progress: Progress | None = None) -> list[float]:
        """One score per (src, mt[, ref]) in input order; `progress(n)` after each batch of n segments."""
        if len(src) != len(mt) or (ref is not None and len(ref) != len(mt)):
            raise ValueError(f"COMET score: {len(src)} sources, {len(mt)} translations"
                             + (f", {len(ref)} references" if ref is not None else ""))
        if self.needs_reference and ref is None:
            raise ValueError(f"COMET model {self.model_id} needs references (it is not a QE model)")
        if not mt:
            return []
        order = sorted(range(len(mt)), key=lambda i: (len(src[i]) + len(mt[i]), i))  # less padding per batch
        out = [0.0] * len(mt)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            scores = self._batch([src[i] for i in idx], [mt[i] for i in idx],
                                 [ref[i] for i in idx] if ref is not None else None)
            for i, s in zip(idx, scores.float().cpu().tolist(), strict=True):
                out[i] = s
            if progress is not None:
                progress(len(idx))
        return out


def load_comet(model: str, device: str = "cpu") -> CometModel:
    """A COMET-22 or CometKiwi checkpoint (folder or Hugging Face id) on `device`, ready to `score`."""
    ckpt = read_checkpoint(model)
    try:
        config = XLMRobertaConfig.from_pretrained(ckpt.encoder_source)
        tokenizer = AutoTokenizer.from_pretrained(ckpt.encoder_source)
    except OSError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigurationError(f"{ckpt.folder}: its encoder {ckpt.encoder_source!r} (config and tokenizer) "
                                 f"cannot be loaded: {first}") from None
    return CometModel(ckpt, config, tokenizer).to(device)
