"""Benchmark runners: drive a model (the `EvalModel` protocol, e.g. training.model.VGloria) over a benchmark.

Each runner takes the model, a `features_for(image_ids) -> feats` callable (cached CLIP features, or images
the model encodes itself) and the benchmark rows, and returns metrics plus what the qualitative pages show.
Retrieval embedding indexes are cached per benchmark in a folder (npy + ids JSON), so re-running an
evaluation, or VisDial T2I after COCO, does not re-embed. The cache folder must belong to ONE model
checkpoint; `model_key` (e.g. the checkpoint's hash) is stored beside the index and a mismatch rebuilds it.

Prompt formats (documented constants, see `visdial_prefix`):
- VisDial IT2T: "[image] <caption> Q: <q1> A: <a1> ... Q: <q_r> A:" and each option scored as " <option>"
  (leading space: in running text the answer follows "A: ", and BPE tokenizers fold that space into the
  answer's first token). The headline ranks options by summed token loss (the thesis' ranking), lower is
  better; beside it the mean token loss (length-normalised), and two baselines from the same rounds: the
  same LLM with no visual tokens, and options ranked by length alone (no model). Summed loss favours short
  options, and VisDial's right answers are short, so a figure means something only where it beats both.
- VisDial T2I: "<caption> Q: <q1> A: <a1> ... Q: <q10> A: <a10>" (+[RET], which text_embeddings appends),
  ranked against ALL the benchmark's images (text-to-image, as the task's name says; FROMAGe's script
  ranks dialogs per image instead).
- VQA: `EvalSettings.vqa_prompt` ("Q: {question} A:") after the image; greedy answer.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from eval.metrics.caption import caption_scores
from eval.metrics.retrieval import retrieval_metrics_from_embeddings
from eval.metrics.visdial import (
    VISDIAL_RANKINGS,
    gt_standing,
    ndcg_per_round,
    option_lengths,
    ranking_keys,
    translation_collisions,
    visdial_metrics,
)
from eval.metrics.vqa import VQAScored, vqa_metrics
from eval.settings import EvalSettings
from ptvl_io import atomic_write

Progress = Callable[[str, int, int], None]  # (stage, done, total)
FeaturesFor = Callable[[list[str]], Any]
RET_TEXT = "[RET]"


@runtime_checkable
class EvalModel(Protocol):
    """What a runner needs from a model (training.model.VGloria implements it)."""

    def image_embeddings(self, feats: Any) -> Tensor:
        """(N, q) L2-normalised retrieval embeddings of N images."""
        ...

    def text_embeddings(self, texts: list[str]) -> Tensor:
        """(N, q) L2-normalised retrieval embeddings of N texts ([RET] appended by the model)."""
        ...

    def caption(self, feats: Any, max_new_tokens: int, num_beams: int = 1) -> list[str]:
        """One generated caption per image."""
        ...

    def option_losses(self, feats: Any, prefix_texts: list[str], options: list[list[str]], chunk: int = 100, *,
                      image: bool = True, reduce: Literal["sum", "mean"] = "sum") -> Tensor:
        """(N, n_options) loss of each option's tokens after [image] prefix_text (lower = better): "sum" the
        summed token cross-entropy (the thesis' ranking), "mean" the mean token loss (length-normalised).
        image=False: the same prefix with no visual tokens (`feats` is then ignored)."""
        ...

    def answer(self, feats: Any, prompt: str) -> str:
        """Free-form continuation of [image] prompt (first image of feats)."""
        ...


class BenchmarkInputError(ValueError):
    """Benchmark rows are malformed (duplicate ids, missing captions, a bad gt index, ...)."""


# ---------------------------------------------------------------------- benchmark rows


@dataclass(frozen=True)
class CaptionedImage:
    """One retrieval / captioning image with its reference captions (COCO: 5, CC3M: 1)."""

    image_id: str
    captions: tuple[str, ...]
    captions_en: tuple[str, ...] | None = None  # the sources: what identifies a reference across engines


def caption_keys(row: CaptionedImage) -> list[str]:
    """Engine-independent key of each reference: image id + English source (+ #n when an image repeats a
    source), or image id + position without sources. Common-subset comparisons match on it."""
    if row.captions_en is None or len(row.captions_en) != len(row.captions):
        return [f"{row.image_id}#{n}" for n in range(len(row.captions))]
    seen: dict[str, int] = {}
    keys = []
    for en in row.captions_en:
        seen[en] = seen.get(en, 0) + 1
        keys.append(f"{row.image_id}\t{en}" + (f"#{seen[en]}" if seen[en] > 1 else ""))
    return keys


@dataclass(frozen=True)
class DialogRound:
    question: str
    answer: str
    options: tuple[str, ...]  # 100 answer options in VisDial v1.0
    gt_index: int  # the ground-truth option (its EN string is the answer; with translate.visdial_context the
    # PT history answer is a context translation and may be worded differently from options[gt_index])


@dataclass(frozen=True)
class Dialog:
    image_id: str
    caption: str
    rounds: tuple[DialogRound, ...]
    dense_round: int | None = None  # 1-based round with dense relevance annotations
    dense_relevance: tuple[float, ...] | None = None


@dataclass(frozen=True)
class VQAQuestion:
    question_id: str
    image_id: str
    question: str
    answers: tuple[str, ...]  # the 10 human answers
    answer_type: str  # yes/no | number | other


# ---------------------------------------------------------------------- embedding index cache


def _digest(items: Sequence[str]) -> str:
    h = hashlib.sha256()
    for s in items:
        h.update(s.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def _atomic_write(path: Path, write: Callable[[Any], None], mode: str) -> None:
    with atomic_write(path, mode, encoding="utf-8" if "b" not in mode else None) as f:
        write(f)


def cached_embeddings(cache_dir: Path | None, name: str, keys: Sequence[str],
                      embed: Callable[[list[int]], Tensor], batch_size: int, *, model_key: str | None = None,
                      progress: Progress | None = None) -> np.ndarray:
    """(len(keys), q) float32 embeddings, from `<cache_dir>/<name>.npy` when its ids JSON matches `keys`
    and `model_key`, else computed `batch_size` positions at a time with embed(positions) and cached.
    The JSON is written after the array, so it marks a complete index."""
    meta = {"name": name, "n": len(keys), "digest": _digest(keys), "model_key": model_key}
    if cache_dir is not None:
        arr_path, meta_path = Path(cache_dir) / f"{name}.npy", Path(cache_dir) / f"{name}.ids.json"
        if arr_path.exists() and meta_path.exists():
            try:
                old = json.loads(meta_path.read_text())
            except (OSError, json.JSONDecodeError):
                old = None
            if old is not None and {k: old.get(k) for k in meta} == meta:
                arr = np.load(arr_path)
                if arr.shape[0] == len(keys):
                    return arr
    parts = []
    total = -(-len(keys) // batch_size)
    for b, s in enumerate(range(0, len(keys), batch_size)):
        with torch.no_grad():
            parts.append(embed(list(range(s, min(s + batch_size, len(keys))))).detach().float().cpu().numpy())
        if progress:
            progress(name, b + 1, total)
    arr = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 0), np.float32)
    if cache_dir is not None:
        _atomic_write(arr_path, lambda f: np.save(f, arr), "wb")
        _atomic_write(meta_path, lambda f: f.write(json.dumps({**meta, "ids": list(keys)})), "w")
    return arr


# ---------------------------------------------------------------------- retrieval


@dataclass
class RetrievalResult:
    metrics: dict[str, float]
    image_ids: list[str]
    texts: list[str]
    text_to_image: np.ndarray
    image_emb: np.ndarray = field(repr=False)
    text_emb: np.ndarray = field(repr=False)
    text_keys: list[str] = field(default_factory=list)  # caption_keys of every text, in order
    text_rows: list[int] = field(default_factory=list)  # row of every text in the (distinct) text index

    def items(self) -> dict:
        """What eval.common_subset needs to re-score a subset (with the cached index)."""
        return {"image_ids": self.image_ids, "text_keys": self.text_keys,
                "text_to_image": self.text_to_image.tolist(), "text_rows": self.text_rows}

    def top_texts(self, image: int, k: int = 5) -> list[tuple[str, float, bool]]:
        """The k best texts for image #image: (text, similarity, is one of its captions)."""
        sim = self.text_emb @ self.image_emb[image]
        order = np.argsort(-sim, kind="stable")[:k]
        return [(self.texts[t], float(sim[t]), bool(self.text_to_image[t] == image)) for t in order]

    def top_images(self, text: int, k: int = 5) -> list[tuple[str, float, bool]]:
        """The k best images for text #text: (image id, similarity, is its image)."""
        sim = self.image_emb @ self.text_emb[text]
        order = np.argsort(-sim, kind="stable")[:k]
        return [(self.image_ids[i], float(sim[i]), bool(i == self.text_to_image[text])) for i in order]


def _unique_ids(ids: Sequence[str], what: str) -> None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise BenchmarkInputError(f"duplicate {what} id {i!r}")
        seen.add(i)


def _image_index(model: EvalModel, features_for: FeaturesFor, image_ids: list[str], cache_dir: Path | None,
                 settings: EvalSettings, model_key: str | None, progress: Progress | None) -> np.ndarray:
    return cached_embeddings(
        cache_dir, "images", image_ids,
        lambda pos: model.image_embeddings(features_for([image_ids[p] for p in pos])),
        settings.image_batch_size, model_key=model_key, progress=progress)


def _text_index(model: EvalModel, texts: list[str], keys: list[str], name: str, cache_dir: Path | None,
                settings: EvalSettings, model_key: str | None, progress: Progress | None) -> np.ndarray:
    # The key of a text includes its content: another translation engine gives another index.
    keyed = [f"{k}\t{t}" for k, t in zip(keys, texts, strict=True)]
    return cached_embeddings(cache_dir, name, keyed, lambda pos: model.text_embeddings([texts[p] for p in pos]),
                             settings.text_batch_size, model_key=model_key, progress=progress)


def run_retrieval(model: EvalModel, features_for: FeaturesFor, rows: Sequence[CaptionedImage], *,
                  settings: EvalSettings | None = None, cache_dir: Path | None = None,
                  model_key: str | None = None, progress: Progress | None = None) -> RetrievalResult:
    """Image->text and text->image R@1/5/10 (fractions) over `rows` (every caption is a text query)."""
    settings = settings or EvalSettings()
    if not rows:
        raise BenchmarkInputError("no images to evaluate")
    image_ids = [r.image_id for r in rows]
    _unique_ids(image_ids, "image")
    texts, t2i, keys = [], [], []
    for i, r in enumerate(rows):
        if not r.captions:
            raise BenchmarkInputError(f"image {r.image_id!r} has no caption")
        texts += r.captions
        t2i += [i] * len(r.captions)
        keys += caption_keys(r)
    img = _image_index(model, features_for, image_ids, cache_dir, settings, model_key, progress)
    # Each distinct text is embedded once: equal PT captions get one embedding, so they tie exactly.
    distinct = list(dict.fromkeys(texts))
    txt = _text_index(model, distinct, distinct, "texts", cache_dir, settings, model_key, progress)
    row_of = {t: n for n, t in enumerate(distinct)}
    rows_idx = [row_of[t] for t in texts]
    txt = txt[rows_idx]
    t2i_arr = np.asarray(t2i, dtype=np.int64)
    metrics = retrieval_metrics_from_embeddings(img, txt, t2i_arr, chunk=settings.retrieval_chunk)
    return RetrievalResult(metrics, image_ids, texts, t2i_arr, img, txt, keys, rows_idx)


# ---------------------------------------------------------------------- captioning


@dataclass
class CaptioningResult:
    metrics: dict[str, float]
    captions: dict[str, str]  # image id -> generated caption
    references: dict[str, list[str]]


def run_captioning(model: EvalModel, features_for: FeaturesFor, rows: Sequence[CaptionedImage], *,
                   settings: EvalSettings | None = None, progress: Progress | None = None) -> CaptioningResult:
    """Generate one caption per image and score it against the image's references (caption_scores)."""
    settings = settings or EvalSettings()
    if not rows:
        raise BenchmarkInputError("no images to caption")
    _unique_ids([r.image_id for r in rows], "image")
    generated: dict[str, str] = {}
    bs = settings.image_batch_size
    total = -(-len(rows) // bs)
    for b, s in enumerate(range(0, len(rows), bs)):
        ids = [r.image_id for r in rows[s : s + bs]]
        with torch.no_grad():
            caps = model.caption(features_for(ids), settings.caption_max_new_tokens, settings.caption_num_beams)
        if len(caps) != len(ids):
            raise RuntimeError(f"model.caption returned {len(caps)} captions for {len(ids)} images")
        generated.update(zip(ids, (c.replace(RET_TEXT, "").strip() for c in caps), strict=True))
        if progress:
            progress("captions", b + 1, total)
    refs = {r.image_id: list(r.captions) for r in rows}
    metrics = caption_scores(refs, generated, settings.meteor_mode, meteor_timeout_s=settings.meteor_timeout_s,
                             java=settings.java)
    return CaptioningResult(metrics, generated, refs)


# ---------------------------------------------------------------------- VisDial


def visdial_prefix(caption: str, history: Sequence[DialogRound], question: str, *, q_tag: str = "Q:",
                   a_tag: str = "A:") -> str:
    """IT2T context: '<caption> Q: <q1> A: <a1> ... Q: <question> A:' (the image precedes it)."""
    turns = [f"{q_tag} {r.question.strip()} {a_tag} {r.answer.strip()}" for r in history]
    return " ".join([caption.strip(), *turns, f"{q_tag} {question.strip()} {a_tag}"])


def dialog_text(d: Dialog, *, q_tag: str = "Q:", a_tag: str = "A:") -> str:
    """T2I query: the caption and every round of the dialogue."""
    turns = [f"{q_tag} {r.question.strip()} {a_tag} {r.answer.strip()}" for r in d.rounds]
    return " ".join([d.caption.strip(), *turns])


def _check_dialog(d: Dialog) -> None:
    if not d.rounds:
        raise BenchmarkInputError(f"dialog of {d.image_id!r} has no rounds")
    for k, r in enumerate(d.rounds, 1):
        if not r.options or not 0 <= r.gt_index < len(r.options):
            raise BenchmarkInputError(f"dialog of {d.image_id!r}, round {k}: gt_index {r.gt_index} outside "
                                      f"its {len(r.options)} options")
    n_opts = {len(r.options) for r in d.rounds}
    if len(n_opts) != 1:
        raise BenchmarkInputError(f"dialog of {d.image_id!r}: rounds have different option counts {n_opts}")
    if d.dense_round is not None:
        if not 1 <= d.dense_round <= len(d.rounds):
            raise BenchmarkInputError(f"dialog of {d.image_id!r}: dense_round {d.dense_round} outside "
                                      f"1..{len(d.rounds)}")
        if d.dense_relevance is None or len(d.dense_relevance) != len(d.rounds[d.dense_round - 1].options):
            raise BenchmarkInputError(f"dialog of {d.image_id!r}: dense_relevance must have one value per option")


@dataclass
class Ranking:
    """One way of ranking every round's options, scored: its metrics (unprefixed, as visdial_metrics returns
    them), each round's (image id, 1-based round, a, w) ground-truth standing and each dense dialog's NDCG
    (None: no relevant option): what a common-subset comparison re-scores."""

    metrics: dict[str, float]
    rounds: list[tuple[str, int, int, int]]
    dense_ndcg: dict[str, float | None]

    def items(self) -> dict:
        return {"rounds": [list(r) for r in self.rounds], "dense_ndcg": self.dense_ndcg}


@dataclass
class VisDialResult:
    metrics: dict[str, float]  # it2t_* (summed loss: r1, r5, r10, mean_rank, mrr, ndcg, _pess twins, collisions),
    # it2t_meanloss_* (mean token loss), t2i_*
    losses: dict[str, np.ndarray]  # image id -> (n_rounds, n_options) summed losses (equal option texts share one)
    chosen: dict[str, list[str]]  # image id -> the lowest-summed-loss option of every round
    t2i_top: dict[str, list[str]]  # image id -> its dialog's 5 best images
    # What a common-subset comparison re-scores: the headline ranking's standings (`round_standings`,
    # `dense_ndcg`) and every other ranking's (`rankings`); the T2I candidates and queries.
    round_standings: list[tuple[str, int, int, int]] = field(default_factory=list)
    dense_ndcg: dict[str, float | None] = field(default_factory=dict)
    candidates: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)  # T2I queries (dialog image ids), in index order
    image_emb: np.ndarray | None = field(default=None, repr=False)
    dialog_emb: np.ndarray | None = field(default=None, repr=False)
    # Baseline records, never the model's own figures: "no_image" (it2t_*, it2t_meanloss_*), "length" (it2t_*).
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    rankings: dict[str, Ranking] = field(default_factory=dict)  # VISDIAL_RANKINGS name -> scored, "sum" excepted

    def items(self) -> dict:
        """What eval.common_subset needs to re-score a subset (with the cached indexes)."""
        return {"rounds": [list(r) for r in self.round_standings], "dense_ndcg": self.dense_ndcg,
                "rankings": {name: r.items() for name, r in self.rankings.items()},
                "dialogs": self.dialogs, "candidates": self.candidates}


def share_equal_options(losses: np.ndarray, options: Sequence[Sequence[str]]) -> np.ndarray:
    """Every option of a round gets the mean loss of the options with the same (stripped) text: two EN
    options translated to one PT string are one answer, and must tie exactly whatever their positions
    (batched scoring need not give equal strings bit-equal losses)."""
    out = losses.copy()
    for r, opts in enumerate(options):
        groups: dict[str, list[int]] = {}
        for i, o in enumerate(opts):
            groups.setdefault(o.strip(), []).append(i)
        for idx in groups.values():
            if len(idx) > 1:
                out[r, idx] = losses[r, idx].mean()
    return out


def rank_rounds(scores: Sequence[np.ndarray], dialogs: Sequence[Dialog]) -> Ranking:
    """Score one ranking: `scores` holds one (n_rounds, n_options) lower-is-better array per dialog."""
    gt = [r.gt_index for d in dialogs for r in d.rounds]
    dense = [(d.image_id, s[d.dense_round - 1], d.dense_relevance) for d, s in zip(dialogs, scores, strict=True)
             if d.dense_round is not None and d.dense_relevance is not None]
    dense_scores = np.stack([s for _, s, _ in dense]) if dense else None
    dense_rel = np.asarray([list(r) for _, _, r in dense]) if dense else None
    flat = np.concatenate(scores)
    metrics = visdial_metrics(flat, gt, higher_is_better=False, dense_scores=dense_scores, dense_relevance=dense_rel)
    standing = gt_standing(flat, torch.as_tensor(gt), higher_is_better=False)
    round_ids = [(d.image_id, k) for d in dialogs for k in range(1, len(d.rounds) + 1)]
    rounds = [(i, k, int(a), int(w)) for (i, k), (a, w, _) in zip(round_ids, standing.tolist(), strict=True)]
    ndcg = (dict(zip([i for i, _, _ in dense], ndcg_per_round(dense_scores, dense_rel, higher_is_better=False),
                     strict=True)) if dense else {})
    return Ranking(metrics, rounds, ndcg)


# The model passes behind each model ranking: (option_losses image, reduce). "length" needs no model.
_PASSES: dict[str, tuple[bool, Literal["sum", "mean"]]] = {
    "sum": (True, "sum"), "mean": (True, "mean"), "no_image": (False, "sum"), "no_image_mean": (False, "mean")}


def run_visdial(model: EvalModel, features_for: FeaturesFor, dialogs: Sequence[Dialog], *,
                image_ids: Sequence[str] | None = None, settings: EvalSettings | None = None,
                cache_dir: Path | None = None, model_key: str | None = None,
                progress: Progress | None = None) -> VisDialResult:
    """Zero-shot VisDial: IT2T ranks each round's options by summed answer-token loss (the headline; all rounds
    of a dialog in one option_losses call: 10 prefixes x 100 options), by mean token loss, and, as baseline
    records, with no image (unless `settings.visdial_no_image_baseline` is off) and by length alone;
    T2I retrieves each dialog's image among `image_ids` (default: every dialog's image, i.e. all validation
    images)."""
    settings = settings or EvalSettings()
    if not dialogs:
        raise BenchmarkInputError("no dialogs to evaluate")
    _unique_ids([d.image_id for d in dialogs], "dialog image")
    for d in dialogs:
        _check_dialog(d)
    tags = {"q_tag": settings.visdial_question_tag, "a_tag": settings.visdial_answer_tag}
    passes = {name: p for name, p in _PASSES.items() if p[0] or settings.visdial_no_image_baseline}

    scores: dict[str, list[np.ndarray]] = {name: [] for name in passes}
    for n, d in enumerate(dialogs):
        prefixes = [visdial_prefix(d.caption, d.rounds[:k], r.question, **tags) for k, r in enumerate(d.rounds)]
        options = [[" " + o.strip() for o in r.options] for r in d.rounds]
        feats = features_for([d.image_id] * len(d.rounds))
        for name, (image, reduce) in passes.items():
            with torch.no_grad():
                out = model.option_losses(feats, prefixes, options, image=image, reduce=reduce)
            arr = out.detach().float().cpu().numpy()
            if arr.shape != (len(d.rounds), len(d.rounds[0].options)):
                raise RuntimeError(f"option_losses (image={image}, reduce={reduce!r}) returned shape {arr.shape} "
                                   f"for {len(d.rounds)} rounds x {len(d.rounds[0].options)} options")
            scores[name].append(share_equal_options(arr, [r.options for r in d.rounds]))
        if progress:
            progress("visdial it2t", n + 1, len(dialogs))
    scores["length"] = [option_lengths([r.options for r in d.rounds]) for d in dialogs]
    ranked = {name: rank_rounds(arrs, dialogs) for name, arrs in scores.items()}

    metrics: dict[str, float] = {}
    baselines: dict[str, dict[str, float]] = {}
    for name, ranking in ranked.items():
        record = VISDIAL_RANKINGS[name][0]
        (baselines.setdefault(record, {}) if record else metrics).update(ranking_keys(name, ranking.metrics))
    metrics["it2t_translation_collisions"] = float(translation_collisions(
        [r.options for d in dialogs for r in d.rounds], [r.gt_index for d in dialogs for r in d.rounds]))
    losses = {d.image_id: arr for d, arr in zip(dialogs, scores["sum"], strict=True)}
    chosen = {d.image_id: [r.options[int(np.argmin(a))] for r, a in zip(d.rounds, arr, strict=True)]
              for d, arr in zip(dialogs, scores["sum"], strict=True)}

    candidates = list(image_ids) if image_ids is not None else [d.image_id for d in dialogs]
    _unique_ids(candidates, "candidate image")
    where = {i: n for n, i in enumerate(candidates)}
    missing = [d.image_id for d in dialogs if d.image_id not in where]
    if missing:
        raise BenchmarkInputError(f"{len(missing)} dialog images are not among the candidates (e.g. {missing[:3]})")
    img = _image_index(model, features_for, candidates, cache_dir, settings, model_key, progress)
    queries = [dialog_text(d, **tags) for d in dialogs]
    txt = _text_index(model, queries, [d.image_id for d in dialogs], "dialogs", cache_dir, settings, model_key,
                      progress)
    t2i_idx = np.asarray([where[d.image_id] for d in dialogs], dtype=np.int64)
    ret = retrieval_metrics_from_embeddings(img, txt, t2i_idx, chunk=settings.retrieval_chunk)
    metrics.update({k: v for k, v in ret.items() if k.startswith("t2i_")})
    top = np.argsort(-(txt @ img.T), axis=1, kind="stable")[:, :5]
    t2i_top = {d.image_id: [candidates[j] for j in row] for d, row in zip(dialogs, top, strict=True)}
    head = ranked.pop("sum")
    return VisDialResult(metrics, losses, chosen, t2i_top, head.rounds, head.dense_ndcg, candidates,
                         [d.image_id for d in dialogs], img, txt, baselines, ranked)


# ---------------------------------------------------------------------- VQA


@dataclass
class VQAResult:
    metrics: dict[str, float]  # overall, yes/no, number, other (fractions), n
    scored: list[VQAScored]
    mode: str = "official"  # EvalSettings.vqa_mode it was scored with

    def items(self) -> dict:
        """What eval.common_subset needs to re-score a subset."""
        return {"vqa_mode": self.mode, "questions": [[s.question_id, s.answer_type, s.accuracy] for s in self.scored]}


def run_vqa(model: EvalModel, features_for: FeaturesFor, questions: Sequence[VQAQuestion], *,
            settings: EvalSettings | None = None, progress: Progress | None = None) -> VQAResult:
    """Answer each question greedily after [image] + prompt; VQAv2 accuracy per answer type, answers matched
    as `settings.vqa_mode` says (official vqaEval.py or the Portuguese mode)."""
    settings = settings or EvalSettings()
    if not questions:
        raise BenchmarkInputError("no questions to evaluate")
    _unique_ids([q.question_id for q in questions], "question")
    predictions: dict[str, str] = {}
    for n, q in enumerate(questions):
        with torch.no_grad():
            text = model.answer(features_for([q.image_id]), settings.vqa_prompt.format(question=q.question.strip()))
        predictions[q.question_id] = text.replace(RET_TEXT, " ").strip()
        if progress:
            progress("vqa", n + 1, len(questions))
    metrics, scored = vqa_metrics(predictions, {q.question_id: list(q.answers) for q in questions},
                                  {q.question_id: q.answer_type for q in questions}, mode=settings.vqa_mode)
    return VQAResult(metrics, scored, settings.vqa_mode)
