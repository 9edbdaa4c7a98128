"""A PT-PT / PT-BR classifier as evidence for the `brazilian` flag, beside its lexical rules.

`[curate] variety_model` names a sequence classifier (any `AutoModelForSequenceClassification` folder or
Hugging Face id, e.g. one trained on the PtBrVId corpus) whose `id2label` has a PT-BR class
(`variety_label`, matched case- and punctuation-insensitively: "PT-BR", "pt_br", "pt-BR").  Its probability
of PT-BR is evidence:

- a row the rules flag `brazilian` keeps the flag, and its reason gains the model's probability
  ("brazilian: ônibus (PT-PT autocarro); variety model P(PT-BR) 0.97");
- a row the rules leave clean is flagged when the probability reaches `variety_threshold`, with the
  reason "brazilian: variety model P(PT-BR) 0.95 (no lexical marker)";
- rows flagged `empty` or `untranslated` are left alone, as the rules leave them (`untranslated` suppresses
  `brazilian`).

The held-out precision figures of the flags are the rules' own (tests/test_gold.py): the model only adds.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import polars as pl

from translation.errors import ConfigurationError
from translation.quality import BRAZILIAN, FLAG_NAMES, UNTRANSLATED

EMPTY = "empty"
_ORDER = {name: i for i, name in enumerate(FLAG_NAMES)}


def _label_key(label: str) -> str:
    return re.sub(r"[^a-z]", "", label.casefold())


class VarietyClassifier:
    """A loaded classifier; `probabilities(texts)` gives P(PT-BR) per text."""

    def __init__(self, model: str, label: str = "PT-BR", device: str = "cpu", batch_size: int = 64) -> None:
        import torch  # deferred: torch and transformers load only when a variety model is configured
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model)
            self.model = AutoModelForSequenceClassification.from_pretrained(model).to(device).eval()
        except OSError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigurationError(f"variety model {model!r} cannot be loaded: {first}") from None
        labels = {int(i): str(name) for i, name in self.model.config.id2label.items()}
        found = [i for i, name in labels.items() if _label_key(name) == _label_key(label)]
        if len(found) != 1:
            raise ConfigurationError(f"variety model {model!r}: no class {label!r} among its labels "
                                     f"{sorted(labels.values())} (set [curate] variety_label)")
        self.index, self.name, self.device, self.batch_size = found[0], model, device, batch_size
        self._torch = torch

    def probabilities(self, texts: Sequence[str]) -> list[float]:
        out: list[float] = []
        with self._torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = list(texts[start:start + self.batch_size])
                enc = self.tokenizer(batch, padding=True, truncation=True, max_length=256, return_tensors="pt")
                logits = self.model(**enc.to(self.device)).logits.float()
                out += self._torch.softmax(logits, dim=-1)[:, self.index].cpu().tolist()
        return out


def add_variety_evidence(table: pl.DataFrame, probability: Callable[[list[str]], list[float]],
                         threshold: float) -> pl.DataFrame:
    """`table` (text_pt, flags, flag_reasons) with the classifier's P(PT-BR) as `brazilian` evidence (see the
    module doc).  `probability` is called once, on the distinct outputs that are not empty/untranslated."""
    skip = pl.col("flags").list.contains(EMPTY) | pl.col("flags").list.contains(UNTRANSLATED)
    texts = (table.filter(~skip.fill_null(False) & pl.col("text_pt").is_not_null())["text_pt"]
             .unique(maintain_order=True).to_list())
    if not texts:
        return table
    p = dict(zip(texts, probability(texts), strict=True))

    def merge(flags: list[str], reasons: list[str], prob: float) -> tuple[list[str], list[str]]:
        if BRAZILIAN in flags:
            i = flags.index(BRAZILIAN)
            reasons[i] = f"{reasons[i]}; variety model P(PT-BR) {prob:.2f}"
            return flags, reasons
        flags.append(BRAZILIAN)
        reasons.append(f"{BRAZILIAN}: variety model P(PT-BR) {prob:.2f} (no lexical marker)")
        order = sorted(range(len(flags)), key=lambda k: _ORDER.get(flags[k], len(_ORDER)))
        return [flags[k] for k in order], [reasons[k] for k in order]

    # Only the rows whose flags change go through Python (a few percent of a table; 3.3M rows otherwise).
    prob = pl.col("text_pt").replace_strict(p, default=None, return_dtype=pl.Float64)
    indexed = table.with_row_index("_row").with_columns(prob.alias("_p"))
    touched = indexed.filter(~skip.fill_null(False) & pl.col("_p").is_not_null()
                             & (pl.col("flags").list.contains(BRAZILIAN).fill_null(False) | (pl.col("_p") >= threshold)))
    if not touched.height:
        return table
    new = [merge(list(f or []), list(r or []), q) for f, r, q in
           touched.select("flags", "flag_reasons", "_p").iter_rows()]
    update = pl.DataFrame({"_row": touched["_row"], "_flags": [f for f, _ in new], "_reasons": [r for _, r in new]},
                          schema={"_row": pl.UInt32, "_flags": pl.List(pl.String), "_reasons": pl.List(pl.String)})
    out = indexed.join(update, on="_row", how="left", maintain_order="left")
    return out.with_columns(pl.coalesce("_flags", "flags").alias("flags"),
                            pl.coalesce("_reasons", "flag_reasons").alias("flag_reasons")
                            ).drop("_row", "_p", "_flags", "_reasons")
