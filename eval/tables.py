"""Markdown tables in the thesis' layout (Tables 5.3, 5.4, 5.5 and the ablation tables of chapters 6-7).

Input: one dict per evaluated run, as the Evaluate step writes it to metrics.json:

    {"llm": "Glória 1.3B", "engine": "deepl", "bridge": "cls", "layer": -1, "k": 1,
     "metrics": {"cc3m-val": {...}, "coco": {...}, "visdial": {...}, "vqav2": {...}}}

Metric values are fractions as `eval.runners` returns them (R@5 = 0.234); tables print percentages with
the thesis' precision. The best value of each column within a dataset group is bold, as in the thesis.
A run without a benchmark or metric shows "–". Rows come from any number of runs, so a newly trained
LLM lands in the same table as the old ones.

Scoring rules are labelled under every table, from the `scoring` labels each metrics.json carries: the tie
rule of retrieval and VisDial (R@k cells show the expected value under random tie-breaking, with the
pessimistic value in parentheses when it differs) and the VQA answer-matching mode (also a column of the
VQA table). Runs re-scored on the common subset of several engines (eval.common_subset) say so in the caption.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# Re-exported: the formatting lives below `training` (whose model card prints metrics too and must not
# import eval); callers of eval.tables.format_metric / is_count keep working.
from ptvl_io.formatting import format_metric, is_count  # noqa: F401

RunMetrics = Mapping[str, Any]
DASH = "–"

ENGINE_LABELS = {"deepl": "PT-PT DeepL", "madlad": "PT-PT MADLAD-400", "narrativa": "PT-PT Narrativa",
                 "reference": "PT-PT reference", "english": "English", "en": "English", None: "English"}
BENCHMARK_LABELS = {"cc3m-val": "CC3M", "coco": "MSCOCO", "visdial": "VisDial", "vqav2": "VQAv2"}

# (column header, metric key). Every value prints x100, CIDEr-D included (the thesis' 46.96 is 0.4696).
RETRIEVAL_COLS = [("IT2T R@5", "i2t_r5"), ("IT2T R@10", "i2t_r10"), ("T2I R@5", "t2i_r5"), ("T2I R@10", "t2i_r10")]
CAPTION_COLS = [("BLEU1", "bleu1"), ("BLEU2", "bleu2"), ("BLEU3", "bleu3"), ("BLEU4", "bleu4"),
                ("METEOR", "meteor_en")]
VISDIAL_COLS = [("IT2T R@5", "it2t_r5"), ("IT2T R@10", "it2t_r10"), ("T2I R@5", "t2i_r5"), ("T2I R@10", "t2i_r10")]
ABLATION_COLS: dict[str, list[tuple[str, str]]] = {
    "captioning": [("BLEU-1", "bleu1"), ("BLEU-2", "bleu2"), ("BLEU-3", "bleu3"), ("BLEU-4", "bleu4"),
                   ("METEOR", "meteor_en"), ("ROUGE-L", "rouge_l"), ("CIDEr", "cider_d")],
    "retrieval": [("I2T r1", "i2t_r1"), ("I2T r5", "i2t_r5"), ("T2I r1", "t2i_r1"), ("T2I r5", "t2i_r5")],
    "cc3m": [("BLEU-1", "bleu1"), ("BLEU-2", "bleu2"), ("BLEU-3", "bleu3"), ("BLEU-4", "bleu4"),
             ("METEOR", "meteor_en"), ("I2T r1", "i2t_r1"), ("I2T r5", "i2t_r5"), ("T2I r1", "t2i_r1"),
             ("T2I r5", "t2i_r5")],
    "vqa": [("overall", "overall"), ("yes/no", "yes/no"), ("number", "number"), ("other", "other")],
}


class TableInputError(ValueError):
    """A run record lacks a field the table needs."""


def engine_label(engine: str | None) -> str:
    return ENGINE_LABELS.get(engine, f"PT-PT {engine}")


def layer_label(layer: int | str | None) -> str:
    """-1 -> 'L', -2 -> 'L-1' (the thesis counts back from the last ViT layer)."""
    if isinstance(layer, int) and layer < 0:
        return "L" if layer == -1 else f"L{layer + 1}"
    return DASH if layer is None else str(layer)


def _value(run: RunMetrics, benchmark: str, key: str) -> float | None:
    v = run.get("metrics", {}).get(benchmark, {}).get(key)
    return None if v is None or v != v else float(v)  # NaN (e.g. no 'number' questions) -> missing


def _fmt(v: float | None, digits: int, best: bool) -> str:
    if v is None:
        return DASH
    s = f"{100 * v:.{digits}f}"
    return f"**{s}**" if best else s


def _rows_with_best(values: list[list[float | None]], digits: int,
                    beside: list[list[float | None]] | None = None) -> list[list[str]]:
    """Format a block of rows; the maximum of each column (after rounding) is bold, ties included.
    `beside` (same shape, optional): a second figure shown in parentheses when it rounds differently
    (the pessimistic R@k beside the expected one)."""
    out = [[""] * len(r) for r in values]
    for c in range(len(values[0]) if values else 0):
        col = [round(100 * v, digits) if v is not None else None for v in (r[c] for r in values)]
        present = [v for v in col if v is not None]
        top = max(present) if len(present) > 1 else None
        for r, v in enumerate(values):
            out[r][c] = _fmt(v[c], digits, top is not None and col[r] == top)
            other = beside[r][c] if beside else None
            if other is not None and v[c] is not None and round(100 * other, digits) != col[r]:
                out[r][c] += f" ({100 * other:.{digits}f})"
    return out


def _pess(run: RunMetrics, benchmark: str, cols: list[tuple[str, str]]) -> list[float | None]:
    return [_value(run, benchmark, f"{k}_pess") for _, k in cols]


def scoring_notes(runs: Sequence[RunMetrics], benchmarks: Sequence[str]) -> list[str]:
    """The scoring labels (tie rule, VQA mode) the runs' metrics.json carry for these benchmarks, one line
    each; runs evaluated before labels existed are named as unlabelled."""
    ties, vqa, unlabelled = set(), set(), False
    for r in runs:
        for b in benchmarks:
            if b not in r.get("metrics", {}):
                continue
            labels = r.get("scoring", {}).get(b, {})
            if "tie_rule" in labels:
                ties.add(labels["tie_rule"])
            elif "vqa_rule" in labels:
                vqa.add(labels["vqa_rule"])
            else:
                unlabelled = True
    notes = [f"Ties: {t}." for t in sorted(ties)] + [f"VQA answers: {v}." for v in sorted(vqa)]
    if unlabelled:
        notes.append("Some runs carry no scoring labels (evaluated before they were recorded): re-run `ptvl eval`.")
    if any(r.get("subset") == "common" for r in runs):
        notes.append("Common subset: every engine scored on the images, references and queries all engines have.")
    return notes


def _markdown(header: list[str], rows: list[list[str]], caption: str, notes: Sequence[str] = ()) -> str:
    lines = [f"**{caption}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def _subset_caption(runs: Sequence[RunMetrics], caption: str) -> str:
    if any(r.get("subset") == "common" for r in runs):
        return caption.rstrip(".") + " (common subset of all engines)."
    return caption


def _require(run: RunMetrics, fields: Sequence[str]) -> None:
    missing = [f for f in fields if f not in run]
    if missing:
        raise TableInputError(f"run record lacks {missing}: {dict(run)!r:.200}")


ABLATION_FIELDS = ("bridge", "layer", "k")
FIELD_HEADERS = {"bridge": "Bridge", "layer": "Layer", "k": "k"}


def _label_fields(runs: Sequence[RunMetrics], labels: Sequence[str]) -> list[str]:
    """Columns that tell the rows apart besides LLM and engine: `labels` always; and when LLM and engine
    alone leave two rows alike (runs that differ only in layer, say), whichever of bridge, layer and k
    differ between the runs.  Runs told apart by LLM and engine keep the thesis' layout."""
    ambiguous = len({(str(r.get("llm")), str(r.get("engine"))) for r in runs}) < len(runs)
    varying = [f for f in ABLATION_FIELDS if ambiguous and len({str(r.get(f)) for r in runs}) > 1]
    return [f for f in ABLATION_FIELDS if f in labels or f in varying]


def _label(run: RunMetrics, field: str) -> str:
    return layer_label(run.get(field)) if field == "layer" else str(run.get(field, DASH))


def _per_dataset(runs: Sequence[RunMetrics], cols: list[tuple[str, str]], caption: str, digits: int,
                 benchmarks: Sequence[str] = ("cc3m-val", "coco"), ranked: bool = False,
                 labels: Sequence[str] = ()) -> str:
    rows: list[list[str]] = []
    fields = _label_fields([r for r in runs if any(b in r.get("metrics", {}) for b in benchmarks)], labels)
    for bench in benchmarks:
        group = [r for r in runs if bench in r.get("metrics", {})]
        for r in group:
            _require(r, ("llm", "engine", *fields))
        cells = _rows_with_best([[_value(r, bench, k) for _, k in cols] for r in group], digits,
                                [_pess(r, bench, cols) for r in group] if ranked else None)
        for n, (r, c) in enumerate(zip(group, cells, strict=True)):
            rows.append([BENCHMARK_LABELS.get(bench, bench) if n == 0 else "", str(r["llm"]),
                         *[_label(r, f) for f in fields], engine_label(r["engine"]), *c])
    notes = scoring_notes(runs, benchmarks) if ranked else (
        ["Common subset: captioning is not re-scored on it."] if any(r.get("subset") == "common" for r in runs) else [])
    return _markdown(["", "LLM", *[FIELD_HEADERS[f] for f in fields], "Data Language", *[h for h, _ in cols]],
                     rows, _subset_caption(runs, caption), notes)


def table_5_3(runs: Sequence[RunMetrics], labels: Sequence[str] = ()) -> str:
    """Retrieval IT2T / T2I R@5, R@10 per dataset, LLM and translation engine (and `labels`, and whichever
    of bridge, layer, k differ between runs)."""
    return _per_dataset(runs, RETRIEVAL_COLS, "Table 5.3: Retrieval results for CC3M and MSCOCO.", 1, ranked=True,
                        labels=labels)


def table_5_4(runs: Sequence[RunMetrics], labels: Sequence[str] = ()) -> str:
    """Captioning BLEU-1..4 and METEOR (English mode, the thesis' number) per dataset, LLM and engine."""
    return _per_dataset(runs, CAPTION_COLS, "Table 5.4: Captioning results on CC3M and MSCOCO.", 1, labels=labels)


def table_5_5(runs: Sequence[RunMetrics], labels: Sequence[str] = ()) -> str:
    """Zero-shot VisDial IT2T / T2I R@5, R@10 per LLM (and engine when several are present)."""
    group = [r for r in runs if "visdial" in r.get("metrics", {})]
    fields = _label_fields(group, labels)
    for r in group:
        _require(r, ("llm", "engine", *fields))
    cells = _rows_with_best([[_value(r, "visdial", k) for _, k in VISDIAL_COLS] for r in group], 1,
                            [_pess(r, "visdial", VISDIAL_COLS) for r in group])
    rows = [[str(r["llm"]), *[_label(r, f) for f in fields], engine_label(r["engine"]), *c]
            for r, c in zip(group, cells, strict=True)]
    notes = scoring_notes(group, ["visdial"])
    collisions = [_value(r, "visdial", "it2t_translation_collisions") for r in group]
    if any(c is not None for c in collisions):
        notes.append("Translation collisions (rounds whose ground-truth PT option equals another option): "
                     + ", ".join(f"{engine_label(r['engine'])} {int(c)}" for r, c in zip(group, collisions, strict=True)
                                 if c is not None) + ".")
    return _markdown(["LLM Backbone", *[FIELD_HEADERS[f] for f in fields], "Data Language",
                      *[h for h, _ in VISDIAL_COLS]], rows,
                     _subset_caption(group, "Table 5.5: Zero-shot results on VisDial (IT2T and T2I)."), notes)


VQA_COLS = [("overall", "overall"), ("yes/no", "yes/no"), ("number", "number"), ("other", "other")]


def table_vqa(runs: Sequence[RunMetrics], labels: Sequence[str] = ()) -> str:
    """VQAv2 accuracy per LLM and engine, with the answer-matching mode of every row."""
    group = [r for r in runs if "vqav2" in r.get("metrics", {})]
    fields = _label_fields(group, labels)
    for r in group:
        _require(r, ("llm", "engine", *fields))
    cells = _rows_with_best([[_value(r, "vqav2", k) for _, k in VQA_COLS] for r in group], 2)
    modes = [r.get("scoring", {}).get("vqav2", {}).get("vqa_mode", "unlabelled") for r in group]
    rows = [[str(r["llm"]), *[_label(r, f) for f in fields], engine_label(r["engine"]), m, *c]
            for r, m, c in zip(group, modes, cells, strict=True)]
    return _markdown(["LLM", *[FIELD_HEADERS[f] for f in fields], "Data Language", "VQA mode",
                      *[h for h, _ in VQA_COLS]], rows,
                     _subset_caption(group, "VQAv2 accuracy (zero-shot)."), scoring_notes(group, ["vqav2"]))


def ablation_table(runs: Sequence[RunMetrics], benchmark: str, kind: str, caption: str | None = None) -> str:
    """One row per run, labelled by the fields that vary among them (bridge, layer, k), as tables 6.x/7.x.
    kind: captioning | retrieval | cc3m (captioning + retrieval, tables 6.1/7.1) | vqa."""
    if kind not in ABLATION_COLS:
        raise ValueError(f"kind must be one of {sorted(ABLATION_COLS)}, not {kind!r}")
    group = [r for r in runs if benchmark in r.get("metrics", {})]
    for r in group:
        _require(r, ABLATION_FIELDS)
    varying = [f for f in ABLATION_FIELDS if len({str(r[f]) for r in group}) > 1] or ["bridge"]
    names = FIELD_HEADERS
    cols = ABLATION_COLS[kind]
    ranked = kind in ("retrieval", "cc3m")
    cells = _rows_with_best([[_value(r, benchmark, k) for _, k in cols] for r in group], 2,
                            [_pess(r, benchmark, cols) for r in group] if ranked else None)
    rows = [[layer_label(r["layer"]) if f == "layer" else str(r[f]) for f in varying] + c
            for r, c in zip(group, cells, strict=True)]
    title = caption or f"{BENCHMARK_LABELS.get(benchmark, benchmark)} {kind} metrics by {', '.join(varying)}."
    notes = scoring_notes(group, [benchmark]) if ranked or kind == "vqa" else []
    return _markdown([names[f] for f in varying] + [h for h, _ in cols], rows, title, notes)
