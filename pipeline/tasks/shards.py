"""BuildShards: the trainer's and evaluators' Parquet shards, one task per (engine, dataset, split)."""
from __future__ import annotations

import json
import os
from collections import Counter

import luigi
import polars as pl

from pipeline.cards import split_note, write_dataset_card
from pipeline.contracts import SET_ASIDE
from pipeline.human_review import apply_review, digest_for, load_review, review_fingerprint
from pipeline.io import write_json_atomic
from pipeline.shards import build_caption_shards, build_visdial_shards, build_vqa_shards
from pipeline.tasks.acquire import AvailabilityReport, DownloadImages, IngestSegments
from pipeline.tasks.base import PtvlTask, log
from pipeline.tasks.neural import QEScores
from pipeline.tasks.translate import Translate
from translation.overlay import empty_digest
from translation.textkey import text_hash

# Which layout each dataset/split gets: training rows, or evaluation rows with every reference.
EVAL_SPLITS = {("coco", "val"), ("coco", "test"), ("cc3m", "validation")}


# The TRANSLATED columns the shard builders and the review overlay read (not score, flag_reasons, engine).
SHARD_INPUT_COLUMNS = ["segment_id", "dataset", "split", "item_id", "field", "text_en", "text_hash", "engine_id",
                       "text_pt", "flags"]


def shard_dir(root, engine: str, dataset: str, split: str):
    return root / "shards" / engine / dataset / split


class BuildShards(PtvlTask):
    engine = luigi.Parameter()
    dataset = luigi.Parameter()
    split = luigi.Parameter()

    def requires(self):
        args = dict(config=self.config, dataset=self.dataset, split=self.split)
        needs = {
            "translated": Translate(engine=self.engine, **args),
            "images": DownloadImages(**args),
            "segments": IngestSegments(**args),
            "availability": AvailabilityReport(config=self.config),
        }
        if self.settings.shards.min_qe is not None:  # [shards] min_qe drops captions by their QE
            needs["qe"] = QEScores(config=self.config, engine=self.engine)
        return needs

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(shard_dir(self.root, str(self.engine), str(self.dataset), str(self.split)) / "_SHARDS.json"))

    def complete(self) -> bool:
        if not super().complete():
            return False
        with open(self.output().path) as f:
            summary = json.load(f)
        # VisDial shards built under the other translate.visdial_context policy are rebuilt, not reused.
        if self.dataset == "visdial" and summary.get("visdial_context", False) != self.settings.translate.visdial_context:
            return False
        # Caption shards built under another [shards] min_qe are rebuilt (VisDial and VQA take no QE filter).
        if self.dataset not in ("visdial", "vqav2") and summary.get("min_qe") != self.settings.shards.min_qe:
            return False
        # A review since the build (a correction or flag verdict for this engine id) rebuilds the folder;
        # other engines' shards are not touched.  A folder built before the overlay existed records no
        # digest: it stays complete while the run has no review for it.

        recorded = summary.get("human_overlay")
        engine_id = summary.get("engine_id")
        if recorded is None or engine_id is None:
            return digest_for(self.root, None) == empty_digest()
        if recorded == digest_for(self.root, engine_id):
            return True  # nothing reviewed for this engine since the build: the cheap, common answer
        # Something was reviewed for this engine: rebuild only if it touches this folder's strings.
        return summary.get("human_review") == self._review_fingerprint(engine_id)

    def _review_fingerprint(self, engine_id: str) -> str:

        path = self.requires()["translated"].output().path
        if not os.path.exists(path):
            return ""  # never equal to a recorded fingerprint: rebuild (after Translate) like a missing output
        hashes = pl.read_parquet(path, columns=["text_hash"])["text_hash"]
        corrections, verdicts = load_review(self.root, engine_id)
        return review_fingerprint(corrections, verdicts, hashes.to_list())

    def run(self) -> None:

        engine, dataset, split = str(self.engine), str(self.dataset), str(self.split)
        out = shard_dir(self.root, engine, dataset, split)
        out.mkdir(parents=True, exist_ok=True)
        for old in out.glob("part-*.parquet"):  # a rebuild replaces every part, never mixes runs
            old.unlink()
        # Only the columns shards use: at CC3M size score, flag_reasons and engine are ~1 GB of the peak.
        translated = pl.read_parquet(self.requires()["translated"].output().path, columns=SHARD_INPUT_COLUMNS)
        engine_id = translated["engine_id"][0] if translated.height else engine
        # People's corrections and flag verdicts (ptvl review) for this engine id, applied by text_hash;
        # the digest read before the table, so a review written meanwhile triggers another rebuild.
        overlay_digest = digest_for(self.root, engine_id)
        corrections, verdicts = load_review(self.root, engine_id)
        translated = apply_review(translated, corrections, verdicts)
        images_dir = self.root / "images" / dataset / split
        availability = pl.read_parquet(images_dir / "availability.parquet")
        rows = self.settings.shards.rows_per_shard
        aside = _set_aside(self.root, engine, dataset, split)
        dropped_aside: Counter = Counter()
        if dataset == "visdial":
            dialogs = pl.read_parquet(self.root / "sources" / dataset / split / "dialogs.parquet")
            dialogs, dropped_aside = _without_set_aside_dialogs(dialogs, aside)
            # translate.visdial_context: history from the caption-context translations (Translate wrote them).
            context = (pl.read_parquet(self.layout.context_translated(engine, split))
                       if self.settings.translate.visdial_context else None)
            stats = build_visdial_shards(translated, dialogs, availability, images_dir, out, engine=engine,
                                         rows_per_shard=rows, context_translated=context,
                                         empty_segments=_empty_visdial_strings(self.root, split))
            layout, policy = "one row per dialog (VISDIAL_SHARD): caption, 10 rounds, 100 options, dense relevance", None
            if context is not None:
                layout += ("; each round's question and answer translated with the dialog's caption as "
                           "context, the 100 options context-free (translate.visdial_context)")
        elif dataset == "vqav2":
            questions = pl.read_parquet(self.root / "sources" / dataset / split / "questions.parquet")
            questions, dropped_aside = _without_set_aside_questions(questions, aside)
            stats = build_vqa_shards(translated, questions, availability, images_dir, out, engine=engine,
                                     rows_per_shard=rows)
            layout, policy = "one row per question (VQA_SHARD): PT question, 10 PT answers, answer type", None
        else:
            group = (dataset, split) in EVAL_SPLITS
            policy = self.settings.shards.policy_for(engine)
            min_qe = self.settings.shards.min_qe
            qe = pl.read_parquet(self.layout.qe_scores(engine)) if min_qe is not None else None
            stats = build_caption_shards(translated, availability, images_dir, out, engine=engine, policy=policy,
                                         rows_per_shard=rows, group_by_image=group, qe=qe, min_qe=min_qe)
            layout = (
                "one row per image with all its references (EVAL_CAPTION_SHARD)" if group
                else "one row per (image, caption) (CAPTION_SHARD)"
            )
            policy = list(policy.drop) + ([f"qe < {min_qe:g}"] if min_qe is not None else [])
            captions = aside.filter(pl.col("field") == "caption")
            dropped_aside = Counter(captions["reason"].to_list())
        # Texts set aside by the translation (never sent: too long, control characters, ...) take their
        # rows out of the shards, counted by reason in the card.
        for reason, n in dropped_aside.items():
            stats.dropped[f"set_aside_{reason}"] += n
            stats.total += n
        summary = stats.as_dict()
        summary["engine_id"] = engine_id
        summary["min_qe"] = self.settings.shards.min_qe
        summary["human_overlay"] = overlay_digest
        summary["human_review"] = review_fingerprint(corrections, verdicts, translated["text_hash"].to_list())
        if dataset == "visdial":
            summary["visdial_context"] = self.settings.translate.visdial_context
        log.info("shards %s/%s/%s: kept %d of %d (%s)", engine, dataset, split, stats.kept, stats.total,
                 ", ".join(f"{k} {v}" for k, v in summary.items() if k.startswith("dropped_")) or "none dropped")
        availability_md = (self.root / "reports" / "availability.md").read_text()
        write_dataset_card(out, dataset=dataset, split=split, engine=engine,
                           engine_id=engine_id, layout=layout,
                           policy=policy, stats=summary, availability_md=availability_md,
                           source_note=split_note(dataset, split, self.settings.datasets.coco.fold_restval),
                           sources_marker=self.layout.source_marker(dataset))
        write_json_atomic(self.output().path, summary)


def _set_aside(root, engine: str, dataset: str, split: str) -> pl.DataFrame:
    """The split's segments the translation set aside (SET_ASIDE rows; empty when there are none)."""

    path = root / "translated" / engine / dataset / f"{split}.set_aside.parquet"
    return pl.read_parquet(path) if path.exists() else pl.from_arrow(SET_ASIDE.empty_table())


def _without_set_aside_dialogs(dialogs: pl.DataFrame, aside: pl.DataFrame) -> tuple[pl.DataFrame, Counter]:
    """Dialogs that use no set-aside string (caption, question, answer or option), and the dropped
    dialogs counted by the reason of the first set-aside string each uses."""
    if not aside.height:
        return dialogs, Counter()
    reason = dict(zip(aside["segment_id"].to_list(), aside["reason"].to_list(), strict=True))
    keep, dropped = [], Counter()
    for d in dialogs.iter_rows(named=True):
        base = "visdial/" + d["caption_segment_id"].split("/")[1]
        ids = [d["caption_segment_id"]] + [f"{base}/{f}/{i}" for r in d["rounds"]
                                            for f, idx in (("question", [r["question"]]), ("answer",
                                                           [r["answer"], *r["answer_options"]]))
                                            for i in idx if i is not None]
        hit = next((reason[i] for i in ids if i in reason), None)
        keep.append(hit is None)
        if hit is not None:
            dropped[hit] += 1
    return dialogs.filter(pl.Series(keep)), dropped


def _without_set_aside_questions(questions: pl.DataFrame, aside: pl.DataFrame) -> tuple[pl.DataFrame, Counter]:
    """VQA questions whose question and 10 answers were all translated, and the others by reason."""

    if not aside.height:
        return questions, Counter()
    by_id = dict(zip(aside["segment_id"].to_list(), aside["reason"].to_list(), strict=True))
    by_hash = dict(zip(aside["text_hash"].to_list(), aside["reason"].to_list(), strict=True))
    keep, dropped = [], Counter()
    for q in questions.iter_rows(named=True):
        hit = by_id.get(q["question_segment_id"]) or next(
            (by_hash[h] for h in (text_hash(a) for a in q["answers"]) if h in by_hash), None)
        keep.append(hit is None)
        if hit is not None:
            dropped[hit] += 1
    return questions.filter(pl.Series(keep)), dropped


def _empty_visdial_strings(root, split: str) -> frozenset[str]:
    """Segment ids of the empty global question/answer strings the reader quarantined (not segments,
    yet dialogs may point at them; the reader records the list index as the quarantine `line`)."""
    path = root / "sources" / "visdial" / split / "quarantine.parquet"
    if not path.exists():
        return frozenset()
    q = pl.read_parquet(path, columns=["reason", "line"])
    rows = q.filter(pl.col("reason").is_in(["empty_question", "empty_answer"])).iter_rows()
    return frozenset(f"visdial/{split}/{reason.removeprefix('empty_')}/{line}" for reason, line in rows)
