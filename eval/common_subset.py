"""Score several runs on the evaluation items they ALL have, so translation engines compare on the same work.

Each engine's filter policy keeps its own set of references (a caption flagged `untranslated` for one engine
is dropped from that engine's shards only), so the plain numbers of two engines are measured on different
queries and candidates. `evaluate` stores, beside metrics.json, what is needed to re-score any subset
(`items.json`, plus the embedding indexes for retrieval); this module intersects the runs' items by
engine-independent keys and re-scores each run on the intersection:
- cc3m-val / coco retrieval: images by id, references by image id + English source (`caption_keys`); both
  directions recomputed from the cached embeddings over the common images and references only;
- visdial: IT2T rounds by (image id, round) from their stored (a, w) standings, NDCG over the common dense
  dialogs, for every ranking all the runs stored (summed and mean loss, and the baselines: no image, length),
  T2I recomputed over the common dialogs and candidate images;
- vqav2: questions by id, from their stored accuracies (the runs must share one VQA mode).
Captioning scores are not re-scored here (they need the Java tokenizer and METEOR): tables show them on
each engine's own references only.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from eval.metrics.retrieval import retrieval_metrics_from_embeddings
from eval.metrics.visdial import VISDIAL_RANKINGS, ranking_keys, standing_metrics
from eval.metrics.vqa import VQAScored, summarize_vqa

ITEMS_NAME = "items.json"


class CommonSubsetError(ValueError):
    """Runs cannot be compared on a common subset (missing items, no overlap, different VQA modes)."""


def _load(eval_dir: Path) -> dict:
    path = Path(eval_dir) / ITEMS_NAME
    if not path.exists():
        raise CommonSubsetError(f"{path} is missing: re-run `ptvl eval` to store per-item scores")
    return json.loads(path.read_text(encoding="utf-8"))


def _index(eval_dir: Path, name: str) -> np.ndarray:
    return np.load(Path(eval_dir) / "index" / f"{name}.npy")


def _retrieval(eval_dirs: Mapping[str, Path], items: Mapping[str, dict]) -> dict[str, dict[str, float]]:
    images = set.intersection(*(set(it["image_ids"]) for it in items.values()))
    texts = set.intersection(*(set(it["text_keys"]) for it in items.values()))
    out = {}
    for run, it in items.items():
        img_pos = [n for n, i in enumerate(it["image_ids"]) if i in images]
        where = {it["image_ids"][p]: k for k, p in enumerate(img_pos)}
        txt_pos = [n for n, k in enumerate(it["text_keys"])
                   if k in texts and it["image_ids"][it["text_to_image"][n]] in images]
        if not img_pos or not txt_pos:
            raise CommonSubsetError("the runs share no images with references")
        img = _index(eval_dirs[run], "images")[img_pos]
        txt = _index(eval_dirs[run], "texts")[[it["text_rows"][n] for n in txt_pos]]
        t2i = np.asarray([where[it["image_ids"][it["text_to_image"][n]]] for n in txt_pos])
        out[run] = retrieval_metrics_from_embeddings(img, txt, t2i)
    return out


def _rescore(ranking: dict, rounds: set, dense: set) -> dict[str, float]:
    """One ranking's metrics (unprefixed) over the common rounds and dense dialogs, from its stored standings."""
    standing = torch.tensor([[a, w, 1] for i, k, a, w in ranking["rounds"] if (i, k) in rounds], dtype=torch.int64)
    m = standing_metrics(standing)
    values = [v for i, v in ranking["dense_ndcg"].items() if i in dense and v is not None]
    if values:
        m["ndcg"] = float(np.mean(values))
    return m


def _visdial_scored(eval_dirs: Mapping[str, Path], items: Mapping[str, dict]
                    ) -> dict[str, tuple[dict[str, float], dict[str, dict[str, float]]]]:
    """run -> (metrics, baseline records) on the common subset. A ranking some run did not store (evaluated
    before it existed, or with the no-image baseline off) is left out for every run."""
    rounds = set.intersection(*({(i, k) for i, k, _, _ in it["rounds"]} for it in items.values()))
    dense = set.intersection(*(set(it["dense_ndcg"]) for it in items.values()))
    dialogs = set.intersection(*(set(it["dialogs"]) for it in items.values()))
    candidates = set.intersection(*(set(it["candidates"]) for it in items.values()))
    dialogs &= candidates
    if not rounds:
        raise CommonSubsetError("the runs share no VisDial rounds")
    shared = set.intersection(*(set(it.get("rankings", {})) for it in items.values()))
    out = {}
    for run, it in items.items():
        m = ranking_keys("sum", _rescore(it, rounds, dense))
        baselines: dict[str, dict[str, float]] = {}
        for name in (n for n in VISDIAL_RANKINGS if n in shared):
            record = VISDIAL_RANKINGS[name][0]
            (baselines.setdefault(record, {}) if record else m).update(
                ranking_keys(name, _rescore(it["rankings"][name], rounds, dense)))
        cand_pos = [n for n, i in enumerate(it["candidates"]) if i in candidates]
        where = {it["candidates"][p]: k for k, p in enumerate(cand_pos)}
        q_pos = [n for n, i in enumerate(it["dialogs"]) if i in dialogs]
        if q_pos:
            ret = retrieval_metrics_from_embeddings(_index(eval_dirs[run], "images")[cand_pos],
                                                    _index(eval_dirs[run], "dialogs")[q_pos],
                                                    np.asarray([where[it["dialogs"][n]] for n in q_pos]))
            m.update({k: v for k, v in ret.items() if k.startswith("t2i_")})
        out[run] = (m, baselines)
    return out


def _visdial(eval_dirs: Mapping[str, Path], items: Mapping[str, dict]) -> dict[str, dict[str, float]]:
    return {run: m for run, (m, _) in _visdial_scored(eval_dirs, items).items()}


def _vqa(items: Mapping[str, dict]) -> dict[str, dict[str, float]]:
    modes = {it["vqa_mode"] for it in items.values()}
    if len(modes) > 1:
        raise CommonSubsetError(f"the runs scored VQA in different modes {sorted(modes)}; re-evaluate with one")
    common = set.intersection(*({q for q, _, _ in it["questions"]} for it in items.values()))
    if not common:
        raise CommonSubsetError("the runs share no VQA questions")
    return {run: summarize_vqa([VQAScored(q, t, "", "", acc) for q, t, acc in it["questions"] if q in common])
            for run, it in items.items()}


def common_subset_metrics(eval_dirs: Mapping[str, Path], benchmark: str) -> dict[str, dict[str, float]]:
    """run label -> metrics re-scored on the items every run has (`eval_dirs`: run label -> the run's
    eval/<benchmark> folder). Keys as in the runs' own metrics (captioning scores excepted)."""
    if len(eval_dirs) < 2:
        raise CommonSubsetError("a common subset needs at least two runs")
    items = {run: _load(d) for run, d in eval_dirs.items()}
    if benchmark in ("cc3m-val", "coco"):
        return _retrieval(eval_dirs, items)
    if benchmark == "visdial":
        return _visdial(eval_dirs, items)
    if benchmark == "vqav2":
        return _vqa(items)
    raise CommonSubsetError(f"unknown benchmark {benchmark!r}")


def common_subset_runs(runs: list[dict]) -> list[dict]:
    """Run records (as eval.benchmarks.collect_runs gives them) re-scored on the common subset of every
    benchmark that two or more runs of DIFFERENT engines have; `subset` is "common". Empty when fewer than
    two engines are compared. `expected` is emptied: the subset tables show what was re-scored, not what
    a run lacks (its own tables do)."""
    if len({r.get("engine") for r in runs}) < 2:
        return []
    out = [{**r, "metrics": {}, "baselines": {}, "expected": [], "subset": "common"} for r in runs]
    benchmarks = sorted({b for r in runs for b in r.get("metrics", {})})
    for bench in benchmarks:
        having = [n for n, r in enumerate(runs) if bench in r.get("eval_dirs", {})]
        if len({runs[n].get("engine") for n in having}) < 2:
            continue
        dirs = {str(n): Path(runs[n]["eval_dirs"][bench]) for n in having}
        if bench == "visdial":  # with its baseline records
            scored = _visdial_scored(dirs, {run: _load(d) for run, d in dirs.items()})
            for n in having:
                out[n]["metrics"][bench], base = scored[str(n)]
                if base:
                    out[n]["baselines"][bench] = base
            continue
        metrics = common_subset_metrics(dirs, bench)
        for n in having:
            out[n]["metrics"][bench] = metrics[str(n)]
    return [r for r in out if r["metrics"]]
