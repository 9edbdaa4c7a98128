"""Benchmarks of a trained run: read the evaluation shards, feed the runners, write metrics and pages.

`evaluate(run_dir, benchmark, shard_dir, out_dir)` is what `ptvl eval` and the Luigi `Evaluate` task
call.  Features come from a CLS cache when it holds what the bridge needs (exactly what the frozen
CLIP would compute: preprocessing is deterministic), otherwise the encoder runs on the shard's JPEGs.
"""
from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import polars as pl
import torch
from PIL import Image

from eval import qualitative
from eval.common_subset import ITEMS_NAME
from eval.failures import clear_failure
from eval.llm_facts import llm_facts
from eval.run_records import run_record
from eval.runners import (
    CaptionedImage,
    Dialog,
    DialogRound,
    VQAQuestion,
    run_captioning,
    run_retrieval,
    run_visdial,
    run_vqa,
)
from eval.settings import EvalSettings
from ptvl_io import write_text_atomic
from training import checkpoint as ckpt
from training.config import read_run_toml
from training.features import FeatureStore
from training.model import clip_preprocess
from training.modelcard import refresh_model_card
from training.train import load_run

BENCHMARKS = ("cc3m-val", "coco", "visdial", "vqav2")
# benchmark -> (dataset, split preference) in the shards tree shards/<engine>/<dataset>/<split>/
BENCHMARK_DATA = {
    "cc3m-val": ("cc3m", ("validation",)),
    "coco": ("coco", ("test", "val")),  # the Karpathy 5k test split when present
    "visdial": ("visdial", ("val",)),
    "vqav2": ("vqav2", ("val",)),
}


def shard_folder(shards_root: Path, engine: str, benchmark: str) -> Path:
    """The shard folder a benchmark reads (first split present in preference order)."""
    dataset, splits = BENCHMARK_DATA[benchmark]
    for split in splits:
        folder = Path(shards_root) / engine / dataset / split
        if any(folder.glob("part-*.parquet")):
            return folder
    raise FileNotFoundError(
        f"no {dataset} shards for benchmark {benchmark!r} under {shards_root}/{engine}/{dataset}/"
        f"({'|'.join(splits)}); build them with `ptvl run --until shards`"
    )


def _read(folder: Path) -> pl.DataFrame:
    return pl.read_parquet(sorted(folder.glob("part-*.parquet")))


def _run_key(run_dir: Path) -> str:
    """Identifies the checkpoint, so cached embedding indexes are rebuilt when the weights change."""
    last = ckpt.latest_checkpoint(run_dir)
    return hashlib.sha256(f"{last}:{last.stat().st_mtime_ns if last else 0}".encode()).hexdigest()[:16]


class FeatureSource:
    """features_for(image_ids) for the runners: from a CLS cache when it serves the bridge, else online."""

    def __init__(self, model, images: dict[str, bytes], features_dir: Path | None, device: str):
        self.model, self.images, self.device = model, images, device
        self.store = None
        if features_dir is not None:
            store = FeatureStore(features_dir)
            if store.has(model.bridge.needs()) and all(i in store for i in images):
                self.store = store
        if self.store is None and model.visual is None:
            raise ValueError("the bridge's features are not cached and the model has no CLIP encoder loaded")
        self._preprocess = None

    def __call__(self, image_ids: Sequence[str]):
        if self.store is not None:
            feats = self.store.features(list(image_ids), self.model.bridge.needs())
            return {kind: {layer: t.to(self.device) for layer, t in d.items()} for kind, d in feats.items()}
        if self._preprocess is None:
            self._preprocess = clip_preprocess(self.model.cfg)
        pixels = torch.stack(
            [self._preprocess(Image.open(io.BytesIO(self.images[i])).convert("RGB")) for i in image_ids]
        ).to(self.device)
        with torch.no_grad():
            return self.model.encode_images(pixels)


def load_model(run_dir: Path, features_dir: Path | None, device: str):
    """The trained run, without its CLIP when a feature cache can stand in for it."""
    if features_dir is not None and (Path(features_dir) / "meta.json").exists():
        store = FeatureStore(features_dir)
        model = load_run(run_dir, device, load_visual=False, vis_dim=store.width, n_tokens=store.n_tokens)
        if store.has(model.bridge.needs()):
            return model
    return load_run(run_dir, device)


def run_info(run_dir: Path, engine: str) -> dict:
    """What a results table needs to label a row (LLM with its name, model_type and parameter count, engine,
    bridge, layer, k) and which checkpoint step was evaluated."""
    cfg = read_run_toml(Path(run_dir) / "run.toml").model
    found = ckpt.list_checkpoints(run_dir)
    return {"run": str(run_dir), "llm": cfg.llm, "llm_facts": llm_facts(cfg.llm).as_dict(), "engine": engine,
            "bridge": cfg.bridge, "layer": cfg.layer, "k": cfg.k, "clip": cfg.clip,
            "checkpoint_step": found[-1][0] if found else None}


def evaluate(
    run_dir: Path,
    benchmark: str,
    shard_dir: Path,
    out_dir: Path,
    *,
    engine: str,
    settings: EvalSettings | None = None,
    features_dir: Path | None = None,
    device: str = "cpu",
    progress: Callable | None = None,
    expected: Sequence[str] | None = None,
) -> dict:
    """Evaluate `run_dir` on one benchmark; writes out_dir/metrics.json and qualitative HTML pages.

    Returns the metrics dict (fractions; the tables print them x100), labelled with run_info(), the scoring
    labels, VisDial's baseline records and `expected` (the profile's benchmarks, recorded as
    `profile_benchmarks`: what a finished run must have evaluated)."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; expected one of {', '.join(BENCHMARKS)}")
    settings = settings or EvalSettings()
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = _read(Path(shard_dir))
    images = dict(zip(rows["image_id"].to_list(), rows["image"].to_list(), strict=True))
    model = load_model(run_dir, features_dir, device).eval()
    features_for = FeatureSource(model, images, features_dir, device)
    key = _run_key(run_dir)
    cache = out_dir / "index"
    n = settings.qualitative_examples
    metrics: dict[str, object] = {}
    baselines: dict[str, dict[str, float]] = {}
    scored_items: dict = {}
    with torch.no_grad():
        if benchmark in ("cc3m-val", "coco"):
            sources = rows["captions_en"].to_list() if "captions_en" in rows.columns else [None] * rows.height
            items = [CaptionedImage(i, tuple(c), tuple(en) if en is not None else None)
                     for i, c, en in zip(rows["image_id"], rows["captions"], sources, strict=True)]
            ret = run_retrieval(model, features_for, items, settings=settings, cache_dir=cache, model_key=key,
                                progress=progress)
            cap = run_captioning(model, features_for, items, settings=settings, progress=progress)
            metrics = {**ret.metrics, **cap.metrics}
            scored_items = ret.items()
            qualitative.retrieval_page(ret, images.get, out_dir / "retrieval.html", n=n)
            qualitative.captions_page(cap, images.get, out_dir / "captions.html", n=n)
            _write_json(out_dir / "captions.json", cap.captions)
        elif benchmark == "visdial":
            dialogs = [
                Dialog(
                    image_id=r["image_id"],
                    caption=r["caption"],
                    rounds=tuple(
                        DialogRound(x["question"], x["answer"], tuple(x["answer_options"]), x["gt_index"])
                        for x in r["rounds"]
                    ),
                    dense_round=r["dense_round"],
                    dense_relevance=tuple(r["dense_relevance"]) if r["dense_relevance"] is not None else None,
                )
                for r in rows.iter_rows(named=True)
            ]
            vd = run_visdial(model, features_for, dialogs, settings=settings, cache_dir=cache, model_key=key,
                             progress=progress)
            metrics = dict(vd.metrics)
            baselines = vd.baselines
            scored_items = vd.items()
            qualitative.visdial_page(vd, dialogs, images.get, out_dir / "visdial.html", n=n)
        else:
            questions = [
                VQAQuestion(str(r["question_id"]), r["image_id"], r["question"], tuple(r["answers"]), r["answer_type"])
                for r in rows.iter_rows(named=True)
            ]
            vqa = run_vqa(model, features_for, questions, settings=settings, progress=progress)
            metrics = dict(vqa.metrics)
            scored_items = vqa.items()
            qualitative.vqa_page(vqa, questions, images.get, out_dir / "vqa.html", n=n)
    labels = settings.scoring_labels()
    scoring = ({k: labels[k] for k in ("vqa_mode", "vqa_rule")} if benchmark == "vqav2"
               else {"tie_rule": labels["tie_rule"]})
    if benchmark == "visdial":
        scoring.update(settings.visdial_labels())
    result = {**run_info(run_dir, engine), "benchmark": benchmark, "shards": str(shard_dir),
              "images": len(images), "scoring": scoring, "metrics": metrics}
    if baselines:
        result["baselines"] = baselines
    if expected is not None:
        result["profile_benchmarks"] = list(expected)
    # Per-item scores first, metrics.json last: metrics.json marks a complete evaluation.
    _write_json(out_dir / ITEMS_NAME, scored_items)
    _write_json(out_dir / "metrics.json", result)
    clear_failure(out_dir)  # an earlier failure of this benchmark is history now
    refresh_model_card(run_dir)  # the card's Results section now includes this benchmark
    return result


def _write_json(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False, default=float) + "\n")


def collect_runs(run_dirs: Sequence[Path], expected: Sequence[str] | None = None) -> list[dict]:
    """One table record per run (eval.run_records.run_record): {run, llm, llm_facts, engine, bridge, layer, k,
    steps, steps_planned, status, errors, expected, metrics: {benchmark: {...}}, baselines, scoring:
    {benchmark: labels}, eval_dirs: {benchmark: folder}}, from every run's eval/<benchmark>/metrics.json and
    failure records. `expected`: the benchmarks a finished run must have (default: what the runs recorded)."""
    return [run_record(Path(d), expected) for d in run_dirs]
