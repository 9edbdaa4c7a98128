"""Scoring engines against the gold PT-PT set: corpus chrF/BLEU (sacrebleu), their paired-bootstrap intervals and
significance, and flag precision/recall."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import polars as pl
from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.significance import PairedTest

from translation.quality import BRAZILIAN, UNTRANSLATED, QualityThresholds, flag_row, normalise


def score_against_gold(hyps: Sequence[str], refs: Sequence[str]) -> dict:
    """Corpus-level chrF and BLEU of `hyps` against one reference each (sacrebleu defaults).

    Returns {"chrf", "bleu", "n", "chrf_signature", "bleu_signature"}; the signatures (e.g.
    "nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0") make a score reproducible.
    """
    if len(hyps) != len(refs):
        raise ValueError(f"score_against_gold: {len(hyps)} hypotheses but {len(refs)} references")
    if not hyps:
        raise ValueError("score_against_gold: nothing to score")
    hyps = [h if h is not None else "" for h in hyps]  # a missing output scores as empty, not as an error
    chrf, bleu = CHRF(), BLEU()
    c, b = chrf.corpus_score(hyps, [list(refs)]), bleu.corpus_score(hyps, [list(refs)])
    return {
        "chrf": round(c.score, 2),
        "bleu": round(b.score, 2),
        "n": len(hyps),
        "chrf_signature": str(chrf.get_signature()),
        "bleu_signature": str(bleu.get_signature()),
    }


# Resamples of sacrebleu's paired bootstrap (its own default; 1,000 gives p-values down to 0.001).
BOOTSTRAP_SAMPLES = 1000


def compare_on_gold(hyps: Mapping[str, Sequence[str]], refs: Sequence[str], *,
                    yardsticks: Mapping[str, Sequence[str]] | None = None,
                    n_samples: int = BOOTSTRAP_SAMPLES) -> dict[str, dict]:
    """`score_against_gold` for every system, plus sacrebleu's paired bootstrap (`PairedTest`, test_type "bs"):
    per metric the bootstrap mean and 95% interval, the best engine of `hyps` (`yardsticks` are scored and
    tested but never the best) and each system's p-value against it.

    Per system: the `score_against_gold` keys and, for m in chrf and bleu: `m_mean`, `m_ci` (the half-width
    of the 95% interval: mean +- ci), `m_best` (the best engine's name), `m_p` (None for the best itself) and
    `m_differs` (p < 0.05: significantly different from the best). The resamples come from sacrebleu's fixed
    seed (SACREBLEU_SEED, 12345), so every system is resampled alike and the figures are reproducible.
    """
    systems = {**hyps, **(yardsticks or {})}
    out = {name: score_against_gold(h, refs) for name, h in systems.items()}
    if not hyps:
        return out
    for key, metric in (("chrf", CHRF), ("bleu", BLEU)):
        best = max(hyps, key=lambda name: (out[name][key], name))
        named = [(best, _as_text(systems[best]))] + [(n, _as_text(h)) for n, h in systems.items() if n != best]
        _, results = PairedTest(named, {key: metric()}, [list(refs)], test_type="bs", n_samples=n_samples)()
        scores = next(v for k, v in results.items() if k != "System")  # keyed by sacrebleu's name ("chrF2")
        for (name, _), result in zip(named, scores, strict=True):
            out[name] |= {f"{key}_mean": round(float(result.mean), 2), f"{key}_ci": round(float(result.ci), 2),
                          f"{key}_best": best, f"{key}_p": None if name == best else float(result.p_value),
                          f"{key}_differs": name != best and float(result.p_value) < 0.05}
    return out


def _as_text(hyps: Sequence[str | None]) -> list[str]:
    return [h if h is not None else "" for h in hyps]


def precision_recall(predict: Callable[[str], bool], positives: Sequence[str], negatives: Sequence[str],
                     examples: int = 0) -> dict:
    """Precision, recall and the confusion counts of a binary detector on labelled examples; with
    `examples` > 0 also the first false alarms and misses (what limits the figures)."""
    hits = [bool(predict(x)) for x in positives]
    alarms = [bool(predict(x)) for x in negatives]
    tp, fp = sum(hits), sum(alarms)
    fn = len(positives) - tp
    out = {
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / len(positives) if positives else 0.0,
        "tp": tp, "fp": fp, "fn": fn, "tn": len(negatives) - fp,
        "positives": len(positives), "negatives": len(negatives),
    }
    if examples:
        out["false_alarms"] = [x for x, a in zip(negatives, alarms, strict=True) if a][:examples]
        out["misses"] = [x for x, h in zip(positives, hits, strict=True) if not h][:examples]
    return out


def flag_precision_recall(gold: pl.DataFrame, thresholds: QualityThresholds | None = None) -> dict[str, dict]:
    """Precision/recall of the `brazilian` and `untranslated` flags on the gold set.

    brazilian: positives = pt_br rows that differ from pt_pt, negatives = every pt_pt row.
    untranslated: positives = the English copied as the output, negatives = every pt_pt row; rows whose
    English and PT-PT are the same after normalisation ('2', 'ok') are left out of both sets.
    """
    rows = gold.select("en", "pt_pt", "pt_br").rows()
    th = thresholds or QualityThresholds()
    br_pos = [pb for _, pp, pb in rows if pb != pp]
    br_neg = [pp for _, pp, _ in rows]
    by_output = {pp: en for en, pp, _ in rows} | {pb: en for en, _, pb in rows}
    distinct = [(en, pp) for en, pp, _ in rows if normalise(en) != normalise(pp)]
    return {
        BRAZILIAN: precision_recall(lambda t: BRAZILIAN in flag_row(by_output[t], t, None, th), br_pos, br_neg),
        UNTRANSLATED: precision_recall(
            lambda pair: UNTRANSLATED in flag_row(pair[0], pair[1], None, th),
            [(en, en) for en, _ in distinct], [(en, pp) for en, pp in distinct],
        ),
    }


def flag_case_precision_recall(cases: pl.DataFrame, thresholds: QualityThresholds | None = None,
                               examples: int = 0) -> dict[str, dict]:
    """Per flag of labelled cases (translation.gold.load_flag_cases): precision, recall and counts of
    `flag in flag_row(en, pt)` against `label` (and up to `examples` (en, pt) false alarms and misses).
    Flags in the order they first appear."""
    th = thresholds or QualityThresholds()
    out: dict[str, dict] = {}
    for flag in dict.fromkeys(cases["flag"].to_list()):
        sub = cases.filter(pl.col("flag") == flag)
        pairs = list(zip(sub["en"].to_list(), sub["pt"].to_list(), sub["label"].to_list(), strict=True))
        out[flag] = precision_recall(
            lambda pair, f=flag: f in flag_row(pair[0], pair[1], None, th),
            [(e, p) for e, p, lab in pairs if lab], [(e, p) for e, p, lab in pairs if not lab], examples,
        )
    return out
