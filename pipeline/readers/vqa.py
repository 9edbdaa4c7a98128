"""VQAv2 reader: the official questions and annotations JSON pair joined by question_id.

Ids (pipeline/contracts.py VQA_QUESTIONS): image ``vqav2/<image_id>``; question segment
``vqav2/<split>/question/<question_id>`` (item id the image); every distinct answer string is ONE
segment ``vqav2/<split>/answer/<text_hash>`` (item id ``vqav2/<split>/answers``): VQAv2 val has 2.1M
answers but far fewer distinct strings, and "yes" / "no" alone are a third of them.

A malformed question or annotation, a question without its annotation (or the reverse) and an
annotation without exactly 10 answers are quarantined (line = index in the file's JSON array,
source_file = the file the record is in); the rest is kept.  A question whose annotation is
quarantined is not reported a second time: the annotation's row is the one reason it is lost.  A truncated file or one without the
top-level `questions` / `annotations` list raises SourceFormatError.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.contracts import VQA_QUESTIONS
from pipeline.readers.common import (
    MAX_TEXT_CHARS,
    Quarantine,
    ReadResult,
    check_text,
    is_fetchable_url,
    items_table,
    load_json,
    require,
    segments_table,
)
from translation.textkey import text_hash

ANSWERS_PER_QUESTION = 10
ANSWER_TYPES = ("yes/no", "number", "other")
COCO_VAL2014 = "http://images.cocodataset.org/val2014/COCO_val2014_{image_id:012d}.jpg"


def answer_segment_id(split: str, answer: str) -> str:
    """The segment id of an (already stripped) answer string: keyed by its text, not by a position."""
    return f"vqav2/{split}/answer/{text_hash(answer)}"


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _question_problem(rec: Any) -> tuple[str, str] | None:
    """(reason, detail) of what is wrong with a questions[] record, or None."""
    if not isinstance(rec, dict):
        return "bad_question", f"record is {type(rec).__name__}, not an object"
    for key in ("question_id", "image_id"):
        if not _int(rec.get(key)):
            return "bad_question", f"missing or non-integer {key!r}"
    if not isinstance(rec.get("question"), str):
        return "bad_question", "missing or non-string 'question'"
    if not rec["question"].strip():
        return "empty_question", "question is empty"
    return None


def _annotation_problem(rec: Any, max_chars: int) -> tuple[str, str] | None:
    """(reason, detail) of what is wrong with an annotations[] record, or None."""
    if not isinstance(rec, dict):
        return "bad_annotation", f"record is {type(rec).__name__}, not an object"
    for key in ("question_id", "image_id"):
        if not _int(rec.get(key)):
            return "bad_annotation", f"missing or non-integer {key!r}"
    if rec.get("answer_type") not in ANSWER_TYPES:
        return "bad_annotation", f"answer_type {rec.get('answer_type')!r} is not one of {ANSWER_TYPES}"
    if not isinstance(rec.get("multiple_choice_answer"), str):
        return "bad_annotation", "missing or non-string 'multiple_choice_answer'"
    answers = rec.get("answers")
    if not isinstance(answers, list):
        return "bad_annotation", "missing or non-list 'answers'"
    if len(answers) != ANSWERS_PER_QUESTION:
        return "wrong_answer_count", f"{len(answers)} answers, expected {ANSWERS_PER_QUESTION}"
    for k, a in enumerate(answers):
        if not isinstance(a, dict) or not isinstance(a.get("answer"), str):
            return "bad_annotation", f"answers[{k}] has no string 'answer'"
    for what, text in [("multiple_choice_answer", rec["multiple_choice_answer"])] + [
        (f"answers[{k}]", a["answer"]) for k, a in enumerate(answers)
    ]:
        reason, detail = check_text(text, max_chars)[1:3]
        if reason is not None:
            return reason, f"{what}: {detail}"
    return None


def _answer(text: str, max_chars: int) -> str:
    """An answer as kept: control characters removed, ends trimmed (already checked to be usable)."""
    return check_text(text, max_chars)[0]


def _url_function(template: str):
    try:
        template.format(image_id=0)
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"bad image_url_template {template!r}: use {{image_id}} (e.g. {{image_id:012d}}): {e}") from None
    return lambda image_id: template.format(image_id=image_id)


def read_vqav2(
    questions_path: str | Path,
    annotations_path: str | Path,
    split: str = "val",
    image_url_template: str = COCO_VAL2014,
    *,
    max_chars: int = MAX_TEXT_CHARS,
) -> ReadResult:
    """Read a VQAv2 `v2_OpenEnded_mscoco_<split>2014_questions.json` and its
    `v2_mscoco_<split>2014_annotations.json`.

    `image_url_template` is a format string with ``{image_id}``: the COCO host by default, or a local
    mirror such as ``file:///data/coco/val2014/COCO_val2014_{image_id:012d}.jpg``.
    Returns segments, items (one per image with a usable question), quarantine, and the
    VQA_QUESTIONS table in `ReadResult.extra` (`dialogs` stays None).
    """
    questions_path, annotations_path = Path(questions_path), Path(annotations_path)
    url_of = _url_function(image_url_template)
    questions = require(load_json(questions_path), "questions", list, questions_path, "the top level")
    annotations = require(load_json(annotations_path), "annotations", list, annotations_path, "the top level")
    q = Quarantine("vqav2", split, questions_path)

    by_qid: dict[int, tuple[int, dict[str, Any]]] = {}  # question_id -> (index, annotation)
    rejected: dict[int, str] = {}  # question_id -> reason its (first) annotation was quarantined
    for i, ann in enumerate(annotations):
        problem = _annotation_problem(ann, max_chars)
        if problem is None and ann["question_id"] in by_qid:
            problem = "duplicate_id", f"question_id {ann['question_id']} annotated before"
        if problem is not None:
            q.add(i, problem[0], f"annotations[{i}]: {problem[1]}", ann, source_file=annotations_path)
            if isinstance(ann, dict) and _int(ann.get("question_id")) and ann["question_id"] not in by_qid:
                rejected.setdefault(ann["question_id"], problem[0])
            continue
        by_qid[ann["question_id"]] = (i, ann)

    rows: list[dict[str, Any]] = []
    q_ids, q_items, q_texts = [], [], []
    answer_texts: dict[str, None] = {}  # distinct answers in first-seen order (a dict keeps order)
    item_ids, urls, source_paths = [], [], []
    seen_images: set[int] = set()
    used: set[int] = set()
    image_loss: dict[int, str] = {}  # image id -> reason of its first lost question (Table 4.1)
    folder = f"{split}2014"
    for i, rec in enumerate(questions):
        problem = _question_problem(rec)
        if problem is None and rec["question_id"] in used:
            problem = "duplicate_id", f"question_id {rec['question_id']} seen before"
        if problem is None and rec["question_id"] not in by_qid and rec["question_id"] in rejected:
            image_loss.setdefault(rec["image_id"], rejected[rec["question_id"]])
            continue  # its annotation's quarantine row is the one reason this question is lost
        if problem is None and rec["question_id"] not in by_qid:
            problem = "no_annotation", f"question_id {rec['question_id']} has no annotation"
        if problem is None and by_qid[rec["question_id"]][1]["image_id"] != rec["image_id"]:
            ann_image = by_qid[rec["question_id"]][1]["image_id"]
            problem = "image_mismatch", f"image_id {rec['image_id']}, but its annotation says {ann_image}"
        text = None
        if problem is None:
            text, reason, detail, cleaned = check_text(rec["question"], max_chars)
            if reason is not None:
                problem = reason, f"question: {detail}"
            elif not text:
                problem = "empty_question", "question is empty once control characters are removed"
            elif cleaned:
                q.cleaned.append(i)
        image_id = rec["image_id"] if problem is None else None
        if problem is None and image_id not in seen_images:
            url = url_of(image_id)
            if not is_fetchable_url(url):
                problem = "bad_url", f"image URL {url!r} is not http(s):// or file://"
            else:
                seen_images.add(image_id)
                item_ids.append(f"vqav2/{image_id}")
                urls.append(url)
                source_paths.append(f"{folder}/COCO_{folder}_{image_id:012d}.jpg" if split in ("train", "val") else None)
        if problem is not None:
            q.add(i, problem[0], f"questions[{i}]: {problem[1]}", rec)
            if isinstance(rec, dict) and _int(rec.get("image_id")):
                image_loss.setdefault(rec["image_id"], problem[0])
            continue
        qid = rec["question_id"]
        used.add(qid)
        ann = by_qid[qid][1]
        # Whitespace around an answer is noise from collection, not meaning: one segment for " yes" and "yes".
        answers = [_answer(a["answer"], max_chars) for a in ann["answers"]]
        mc = _answer(ann["multiple_choice_answer"], max_chars)
        for a in (*answers, mc):
            if a:  # an empty answer has nothing to translate; the shard keeps it empty
                answer_texts.setdefault(a, None)
        seg_id = f"vqav2/{split}/question/{qid}"
        q_ids.append(seg_id)
        q_items.append(f"vqav2/{image_id}")
        q_texts.append(text)
        rows.append(
            {
                "question_id": qid,
                "image_id": f"vqav2/{image_id}",
                "question_segment_id": seg_id,
                "answer_type": ann["answer_type"],
                "answers": answers,
                "multiple_choice_answer": mc,
            }
        )
    # An annotation no question record names at all is orphaned (one whose question was quarantined is
    # already reported there, once).
    named = {rec["question_id"] for rec in questions if isinstance(rec, dict) and _int(rec.get("question_id"))}
    for qid, (i, ann) in by_qid.items():
        if qid not in named:
            q.add(i, "no_question", f"annotations[{i}]: question_id {qid} is not in the questions file", ann,
                  source_file=annotations_path)

    q.log_cleaned()
    lost = Counter(reason for image, reason in image_loss.items() if image not in seen_images)
    texts = list(answer_texts)
    hashes = [text_hash(t) for t in texts]
    segments = pa.concat_tables(
        [
            segments_table(q_ids, "vqav2", split, q_items, "question", q_texts),
            segments_table([f"vqav2/{split}/answer/{h}" for h in hashes], "vqav2", split,
                           f"vqav2/{split}/answers", "answer", texts, hashes),
        ]
    )
    stats = {
        "questions": len(questions),
        "annotations": len(annotations),
        "questions_ok": len(rows),
        "question_segments": len(q_ids),
        "answer_segments": len(texts),
        "segments": segments.num_rows,
        "items": len(item_ids),
        "quarantined": len(q.rows),
        **q.counts(),
    }
    return ReadResult(
        segments,
        items_table(item_ids, "vqav2", split, urls, source_paths),
        q.table(),
        None,
        stats,
        extra=pa.Table.from_pylist(rows, schema=VQA_QUESTIONS),
        original=len(item_ids) + sum(lost.values()),
        lost=dict(lost),
    )

