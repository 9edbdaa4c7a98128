"""Markdown tables in the thesis' layout (Tables 5.3, 5.4, 5.5 and the ablation tables of chapters 6-7).

Input: one record per run, as eval.benchmarks.collect_runs builds it from the run folder:

    {"llm": "Glória 1.3B", "engine": "deepl", "bridge": "cls", "layer": -1, "k": 1,
     "llm_facts": {"name": "gloria-1.3b", "model_type": "gpt_neo", "params": 1_300_000_000},
     "steps": 500, "steps_planned": 500, "status": "finished", "errors": {}, "expected": [...],
     "metrics": {"cc3m-val": {...}, "coco": {...}, "visdial": {...}, "vqav2": {...}},
     "baselines": {"visdial": {"no_image": {...}, "length": {...}}}}

Every table says which run a row is: the LLM (short name, model_type, parameter count), the steps trained
("20 of 500" when training stopped short) and the status (finished, partial, failed; eval.run_records).
A run that expected a benchmark and has no result for it keeps its row there, with dashes and its one-line
error in the status. VisDial's IT2T is shown under two rankings, summed loss (the thesis' headline) and mean
token loss, above two baseline rows computed by the same code: the same LLM with no image, and options by
length alone; the best value of a column is bold whichever row holds it, so a length baseline that beats
every run is bold. Cells that come from data (names, errors) go through `md_cell`.

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

from eval.llm_facts import format_params

# Re-exported: the formatting lives below `training` (whose model card prints metrics too and must not
# import eval); callers of eval.tables.format_metric / is_count keep working.
from ptvl_io.formatting import format_metric, is_count, md_cell  # noqa: F401

RunMetrics = Mapping[str, Any]
DASH = "–"

ENGINE_LABELS = {"deepl": "PT-PT DeepL", "madlad": "PT-PT MADLAD-400", "narrativa": "PT-PT Narrativa",
                 "reference": "PT-PT reference", "english": "English", "en": "English", None: "English"}
BENCHMARK_LABELS = {"cc3m-val": "CC3M", "coco": "MSCOCO", "visdial": "VisDial", "vqav2": "VQAv2"}

# (column header, metric key). Every value prints x100, CIDEr-D included (the thesis' 46.96 is 0.4696).
RETRIEVAL_COLS = [("IT2T R@5", "i2t_r5"), ("IT2T R@10", "i2t_r10"), ("T2I R@5", "t2i_r5"), ("T2I R@10", "t2i_r10")]
CAPTION_COLS = [("BLEU1", "bleu1"), ("BLEU2", "bleu2"), ("BLEU3", "bleu3"), ("BLEU4", "bleu4"),
                ("METEOR", "meteor_en")]
VISDIAL_COLS = [("IT2T R@5 summed loss (thesis)", "it2t_r5"), ("IT2T R@10 summed loss (thesis)", "it2t_r10"),
                ("IT2T R@5 mean loss", "it2t_meanloss_r5"), ("IT2T R@10 mean loss", "it2t_meanloss_r10"),
                ("T2I R@5", "t2i_r5"), ("T2I R@10", "t2i_r10")]
VISDIAL_NOTES = [
    "IT2T summed loss (thesis): every round's 100 options ranked by the summed token loss of the answer after "
    "the image and dialogue, as the thesis ranks them; it favours short options. IT2T mean loss: ranked by "
    "mean token loss (length-normalised).",
    "Baselines, scored by the same code on the same rounds: \"<LLM>, no image\" is the same frozen LLM and "
    "prompt with no visual tokens; \"options by length\" ranks options by character count, shortest first, with no "
    "model. An IT2T figure shows use of the image only where it beats both.",
]
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


def llm_label(run: RunMetrics) -> str:
    """'tiny-lm (gpt_neo, 1.2M)' from the record's llm_facts; the LLM as recorded when nothing is known of it
    (no facts, or a config that could not be read)."""
    facts = run.get("llm_facts") or {}
    if facts.get("model_type") is None and facts.get("params") is None:
        return str(run.get("llm", DASH))
    kind = facts.get("model_type") or "?"
    return f"{facts.get('name') or run.get('llm')} ({kind}, {format_params(facts.get('params'))})"


def steps_label(run: RunMetrics) -> str:
    """Steps trained: '500', or '20 of 500' when training stopped short of what run.toml asked for."""
    steps, planned = run.get("steps"), run.get("steps_planned")
    if steps is None:
        return DASH
    return f"{steps:,}" if planned is None or steps >= planned else f"{steps:,} of {planned:,}"


def status_label(run: RunMetrics, benchmark: str) -> str:
    """The run's status; where it has no result for `benchmark`, also why: the benchmark's error, training's
    error, or 'not evaluated'."""
    status = str(run.get("status", DASH))
    if benchmark in run.get("metrics", {}):
        return status
    errors = run.get("errors", {})
    return f"{status}: {errors.get(benchmark) or errors.get('training') or 'not evaluated'}"


def run_name(run: RunMetrics) -> str:
    """The run folder's name (what `ptvl table` is given); the LLM for a record made without a folder."""
    if run.get("run_name"):
        return str(run["run_name"])
    return str(run["run"]).rstrip("/").rsplit("/", 1)[-1] if run.get("run") else llm_label(run)


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


def _belongs(run: RunMetrics, benchmark: str) -> bool:
    """A run has a row for `benchmark`: it has results, or it expected them and has none (its error shows)."""
    return benchmark in run.get("metrics", {}) or benchmark in run.get("expected", ())


def _group(runs: Sequence[RunMetrics], benchmark: str) -> list[RunMetrics]:
    return [r for r in runs if _belongs(r, benchmark)]


ABLATION_FIELDS = ("bridge", "layer", "k")
FIELD_HEADERS = {"bridge": "Bridge", "layer": "Layer", "k": "k", "run": "Run"}


def _key(run: RunMetrics, fields: Sequence[str]) -> tuple[str, ...]:
    """What a reader sees of a row's identity: the LLM and engine as printed (two folders of one name look
    alike), and `fields`."""
    return (llm_label(run), engine_label(run.get("engine")), *(str(run.get(f)) for f in fields))


def _label_fields(runs: Sequence[RunMetrics], labels: Sequence[str]) -> list[str]:
    """Columns that tell the rows apart besides LLM and engine: `labels` always; and when LLM and engine
    alone leave two rows alike (runs that differ only in layer, say), whichever of bridge, layer and k
    differ between the runs; and the run folder when even those leave two rows alike.  Runs told apart by
    LLM and engine keep the thesis' layout."""
    ambiguous = len({_key(r, ()) for r in runs}) < len(runs)
    varying = [f for f in ABLATION_FIELDS if ambiguous and len({str(r.get(f)) for r in runs}) > 1]
    fields = [f for f in ABLATION_FIELDS if f in labels or f in varying]
    if len({_key(r, fields) for r in runs}) < len({run_name(r) for r in runs}):
        fields.append("run")
    return fields


def _label(run: RunMetrics, field: str) -> str:
    if field == "layer":
        return layer_label(run.get(field))
    return md_cell(run_name(run) if field == "run" else run.get(field, DASH))


def _run_cells(run: RunMetrics, benchmark: str, fields: Sequence[str]) -> tuple[list[str], list[str]]:
    """(LLM + label fields + data language, steps + status) of one run's row."""
    return ([md_cell(llm_label(run)), *[_label(run, f) for f in fields], engine_label(run["engine"])],
            [steps_label(run), md_cell(status_label(run, benchmark))])


def _per_dataset(runs: Sequence[RunMetrics], cols: list[tuple[str, str]], caption: str, digits: int,
                 benchmarks: Sequence[str] = ("cc3m-val", "coco"), ranked: bool = False,
                 labels: Sequence[str] = ()) -> str:
    rows: list[list[str]] = []
    fields = _label_fields([r for r in runs if any(_belongs(r, b) for b in benchmarks)], labels)
    for bench in benchmarks:
        group = _group(runs, bench)
        for r in group:
            _require(r, ("llm", "engine", *fields))
        cells = _rows_with_best([[_value(r, bench, k) for _, k in cols] for r in group], digits,
                                [_pess(r, bench, cols) for r in group] if ranked else None)
        for n, (r, c) in enumerate(zip(group, cells, strict=True)):
            who, state = _run_cells(r, bench, fields)
            rows.append([BENCHMARK_LABELS.get(bench, bench) if n == 0 else "", *who, *state, *c])
    notes = scoring_notes(runs, benchmarks) if ranked else (
        ["Common subset: captioning is not re-scored on it."] if any(r.get("subset") == "common" for r in runs) else [])
    return _markdown(["", "LLM", *[FIELD_HEADERS[f] for f in fields], "Data Language", "Steps", "Status",
                      *[h for h, _ in cols]], rows, _subset_caption(runs, caption), notes)


def table_5_3(runs: Sequence[RunMetrics], labels: Sequence[str] = ()) -> str:
    """Retrieval IT2T / T2I R@5, R@10 per dataset, LLM and translation engine (and `labels`, and whichever
    of bridge, layer, k differ between runs)."""
    return _per_dataset(runs, RETRIEVAL_COLS, "Table 5.3: Retrieval results for CC3M and MSCOCO.", 1, ranked=True,
                        labels=labels)


def table_5_4(runs: Sequence[RunMetrics], labels: Sequence[str] = ()) -> str:
    """Captioning BLEU-1..4 and METEOR (English mode, the thesis' number) per dataset, LLM and engine."""
    return _per_dataset(runs, CAPTION_COLS, "Table 5.4: Captioning results on CC3M and MSCOCO.", 1, labels=labels)


BASELINE_STATUS = "baseline"


def _visdial_baselines(group: Sequence[RunMetrics]) -> list[tuple[str, RunMetrics, Mapping[str, Any]]]:
    """(LLM label, run, metrics) of every distinct baseline row of these runs: the no-image row of each LLM
    and engine, the length row of each engine (the same LLM on the same rounds gives the same figures, so a
    row is shown once however many runs share it)."""
    seen: set[tuple] = set()
    rows = []
    for kind in ("no_image", "length"):
        for r in group:
            metrics = r.get("baselines", {}).get("visdial", {}).get(kind)
            if not metrics:
                continue
            label = f"{llm_label(r)}, no image" if kind == "no_image" else "options by length (no model)"
            key = (label, str(r.get("engine")), tuple(sorted(metrics.items())))
            if key not in seen:
                seen.add(key)
                rows.append((label, r, metrics))
    return rows


def _collisions_note(group: Sequence[RunMetrics]) -> str | None:
    """Translation collisions are a property of the data: one count per engine, naming the runs it was
    measured in."""
    by: dict[tuple[str, int], list[str]] = {}
    for r in group:
        c = _value(r, "visdial", "it2t_translation_collisions")
        if c is not None:
            by.setdefault((engine_label(r["engine"]), int(c)), []).append(md_cell(run_name(r)))
    if not by:
        return None
    return ("Translation collisions (rounds whose ground-truth PT option equals another option): "
            + "; ".join(f"{engine} {n} (run{'s' if len(names) > 1 else ''} {', '.join(names)})"
                        for (engine, n), names in by.items()) + ".")


def table_5_5(runs: Sequence[RunMetrics], labels: Sequence[str] = ()) -> str:
    """Zero-shot VisDial per run: IT2T R@5, R@10 under the summed-loss (thesis) and mean-loss rankings, T2I
    R@5, R@10, then the no-image and length-only baseline rows."""
    group = _group(runs, "visdial")
    fields = _label_fields(group, labels)
    for r in group:
        _require(r, ("llm", "engine", *fields))
    base = _visdial_baselines(group)
    values = [[_value(r, "visdial", k) for _, k in VISDIAL_COLS] for r in group]
    values += [[m.get(k) for _, k in VISDIAL_COLS] for _, _, m in base]
    pess = [_pess(r, "visdial", VISDIAL_COLS) for r in group]
    pess += [[m.get(f"{k}_pess") for _, k in VISDIAL_COLS] for _, _, m in base]
    cells = _rows_with_best(values, 1, pess)
    rows = []
    for r, c in zip(group, cells[:len(group)], strict=True):
        who, state = _run_cells(r, "visdial", fields)
        rows.append([*who, *state, *c])
    for (label, r, _), c in zip(base, cells[len(group):], strict=True):
        rows.append([md_cell(label), *[DASH] * len(fields), engine_label(r["engine"]), DASH, BASELINE_STATUS, *c])
    notes = scoring_notes(group, ["visdial"]) + (VISDIAL_NOTES if group else [])
    collisions = _collisions_note(group)
    if collisions:
        notes.append(collisions)
    return _markdown(["LLM Backbone", *[FIELD_HEADERS[f] for f in fields], "Data Language", "Steps", "Status",
                      *[h for h, _ in VISDIAL_COLS]], rows,
                     _subset_caption(group, "Table 5.5: Zero-shot results on VisDial (IT2T and T2I)."), notes)


VQA_COLS = [("overall", "overall"), ("yes/no", "yes/no"), ("number", "number"), ("other", "other")]


def table_vqa(runs: Sequence[RunMetrics], labels: Sequence[str] = ()) -> str:
    """VQAv2 accuracy per LLM and engine, with the answer-matching mode of every row."""
    group = _group(runs, "vqav2")
    fields = _label_fields(group, labels)
    for r in group:
        _require(r, ("llm", "engine", *fields))
    cells = _rows_with_best([[_value(r, "vqav2", k) for _, k in VQA_COLS] for r in group], 2)
    rows = []
    for r, c in zip(group, cells, strict=True):
        who, state = _run_cells(r, "vqav2", fields)
        mode = r.get("scoring", {}).get("vqav2", {}).get("vqa_mode", "unlabelled" if "vqav2" in r["metrics"] else DASH)
        rows.append([*who, mode, *state, *c])
    return _markdown(["LLM", *[FIELD_HEADERS[f] for f in fields], "Data Language", "VQA mode", "Steps", "Status",
                      *[h for h, _ in VQA_COLS]], rows,
                     _subset_caption(group, "VQAv2 accuracy (zero-shot)."), scoring_notes(group, ["vqav2"]))


def ablation_table(runs: Sequence[RunMetrics], benchmark: str, kind: str, caption: str | None = None) -> str:
    """One row per run, labelled by its LLM and the fields that vary among the runs (bridge, layer, k), with
    steps and status, as tables 6.x/7.x. kind: captioning | retrieval | cc3m (captioning + retrieval,
    tables 6.1/7.1) | vqa."""
    if kind not in ABLATION_COLS:
        raise ValueError(f"kind must be one of {sorted(ABLATION_COLS)}, not {kind!r}")
    group = _group(runs, benchmark)
    for r in group:
        _require(r, ABLATION_FIELDS)
    varying = [f for f in ABLATION_FIELDS if len({str(r[f]) for r in group}) > 1] or ["bridge"]
    if len({_key(r, varying) for r in group}) < len({run_name(r) for r in group}):
        varying.append("run")
    cols = ABLATION_COLS[kind]
    ranked = kind in ("retrieval", "cc3m")
    cells = _rows_with_best([[_value(r, benchmark, k) for _, k in cols] for r in group], 2,
                            [_pess(r, benchmark, cols) for r in group] if ranked else None)
    rows = [[md_cell(llm_label(r)), *[_label(r, f) for f in varying], steps_label(r),
             md_cell(status_label(r, benchmark)), *c] for r, c in zip(group, cells, strict=True)]
    title = caption or f"{BENCHMARK_LABELS.get(benchmark, benchmark)} {kind} metrics by {', '.join(varying)}."
    notes = scoring_notes(group, [benchmark]) if ranked or kind == "vqa" else []
    return _markdown(["LLM", *[FIELD_HEADERS[f] for f in varying], "Steps", "Status", *[h for h, _ in cols]],
                     rows, title, notes)
