"""One results-table record per run folder: what the run is (LLM, engine, bridge, layer, k), how far it got
(steps trained, status, one-line errors) and its results, from the files training and evaluation leave there.

Status, exactly:
- "finished": trained all the steps run.toml asks for, and every benchmark the profile asked for (`expected`)
  has its metrics.json;
- "partial": some benchmark has metrics, but training stopped short or an expected benchmark has none
  (failed, with its error, or not evaluated);
- "failed": no benchmark has metrics, and a failure was recorded (eval/failures.py): training's, or every
  evaluation's.
A run folder with neither metrics nor a failure record is not a result (still training, or never
evaluated): `run_record` refuses it, naming `ptvl eval`.

`expected` comes from the caller (`ptvl retrain` knows its profile), else from what evaluation and failures
recorded (`profile_benchmarks`, `expected`), else it is what was evaluated (older records carry neither).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eval.failures import FAILED_NAME, read_failure
from eval.llm_facts import llm_facts
from training import checkpoint as ckpt
from training.config import read_run_toml
from training.modelcard import CARD_FACTS

DONE_NAME = "_DONE.json"
STATUSES = ("finished", "partial", "failed")


def trained_steps(run_dir: Path) -> int | None:
    """Optimizer steps the run's newest weights have: from _DONE.json or card.json (written when training
    ends), else the newest checkpoint (training stopped early); None when nothing was trained."""
    for name in (DONE_NAME, CARD_FACTS):
        path = Path(run_dir) / name
        if path.exists():
            try:
                return int(json.loads(path.read_text(encoding="utf-8"))["steps"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
    found = ckpt.list_checkpoints(run_dir)
    return found[-1][0] if found else None


def run_status(steps: int | None, planned: int | None, expected: Sequence[str], evaluated: Sequence[str]) -> str:
    """finished / partial / failed, as the module says. Unknown steps (a record made without run.toml) do not
    count against a run."""
    if not evaluated:
        return "failed"
    trained = steps is None or planned is None or steps >= planned
    return "finished" if trained and set(expected) <= set(evaluated) else "partial"


def _run_toml_facts(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "run.toml"
    if not path.exists():
        return {}
    cfg = read_run_toml(path)
    return {"llm": cfg.model.llm, "bridge": cfg.model.bridge, "layer": cfg.model.layer, "k": cfg.model.k,
            "steps_planned": cfg.train.steps}


def run_record(run_dir: Path, expected: Sequence[str] | None = None) -> dict[str, Any]:
    """{run, run_name, llm, llm_facts, engine, bridge, layer, k, steps, steps_planned, status, errors,
    expected, metrics, baselines, scoring, eval_dirs} of one run folder (see the module for status).
    errors: {"training" | benchmark: one-line error} of the steps that failed and have no result."""
    run_dir = Path(run_dir)
    found = sorted(run_dir.glob("eval/*/metrics.json"))
    evals = [json.loads(p.read_text(encoding="utf-8")) for p in found]
    evaluated = [e["benchmark"] for e in evals]
    train_failure = read_failure(run_dir)
    eval_failures = {p.parent.name: read_failure(p.parent) for p in sorted(run_dir.glob(f"eval/*/{FAILED_NAME}"))
                     if p.parent.name not in evaluated}
    if not evals and train_failure is None and not eval_failures:
        raise FileNotFoundError(f"{run_dir}: no eval/<benchmark>/metrics.json and no failure recorded; "
                                "run `ptvl eval` first")
    facts = _run_toml_facts(run_dir)
    recorded = [*(e.get("profile_benchmarks") or [] for e in evals),
                *(f.get("expected") or [] for f in [train_failure, *eval_failures.values()] if f)]
    if expected is None:
        expected = sorted({b for names in recorded for b in names}) or evaluated
    head: dict[str, Any] = {"run": str(run_dir), "llm": facts.get("llm"), "engine": None,
                            "bridge": facts.get("bridge"), "layer": facts.get("layer"), "k": facts.get("k")}
    if evals:  # what evaluation recorded wins: it is what the numbers were measured with
        head.update({k: evals[0][k] for k in ("run", "llm", "engine", "bridge", "layer", "k") if k in evals[0]})
    else:
        head["engine"] = next((f["engine"] for f in [train_failure, *eval_failures.values()] if f and "engine" in f),
                              None)
    described = next((e["llm_facts"] for e in evals if "llm_facts" in e), None)
    if described is None and head["llm"] is not None:
        described = llm_facts(str(head["llm"])).as_dict()
    errors = {b: f"{f.get('stage', 'evaluation')} failed: {f['error']}" for b, f in eval_failures.items() if f}
    if train_failure is not None:
        errors["training"] = f"{train_failure.get('stage', 'training')} failed: {train_failure['error']}"
    steps = trained_steps(run_dir)
    return {**head, "run_name": run_dir.name, "llm_facts": described, "steps": steps,
            "steps_planned": facts.get("steps_planned"),
            "status": run_status(steps, facts.get("steps_planned"), expected, evaluated),
            "errors": errors, "expected": list(expected),
            "metrics": {e["benchmark"]: e["metrics"] for e in evals},
            "baselines": {e["benchmark"]: e["baselines"] for e in evals if e.get("baselines")},
            "scoring": {e["benchmark"]: e.get("scoring", {}) for e in evals},
            "eval_dirs": {e["benchmark"]: str(p.parent) for e, p in zip(evals, found, strict=True)}}


def has_result(run_dir: Path) -> bool:
    """Whether `run_record` can describe the folder: some metrics.json, or a recorded failure."""
    run_dir = Path(run_dir)
    return (any(run_dir.glob("eval/*/metrics.json")) or (run_dir / FAILED_NAME).exists()
            or any(run_dir.glob(f"eval/*/{FAILED_NAME}")))
