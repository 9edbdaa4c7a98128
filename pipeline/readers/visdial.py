"""VisDial v1.0 reader: global question/answer lists as segments (each string translated once), dialogs
kept as indices into them, dense relevance annotations joined by image id.

A dialog with a missing key, an index that is not an integer (JSON `true` included) or is out of
range, or a gt_index that does not point at its answer is quarantined (line = its index in
data.dialogs); the rest of the file is kept.

The official test file differs from train and val: a dialog stops at its `round_id`, every round
before the last has a question and an answer, and only the last round has the 100 answer_options
(and no answer or gt_index).
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.contracts import DIALOGS
from pipeline.readers.common import (
    MAX_TEXT_CHARS,
    Quarantine,
    ReadResult,
    SourceFormatError,
    check_text,
    is_fetchable_url,
    items_table,
    load_json,
    require,
    segments_table,
)

ROUNDS = 10  # train and val dialogs have exactly 10 rounds; test dialogs stop at a random round
OPTIONS = 100  # answer options per round
ImageUrl = str | Callable[[int], str]


def _official_image(split: str, image_id: int) -> str:
    """Where an image sits in the official VisualDialog_<split>2018.zip (val and test only)."""
    return f"VisualDialog_{split}2018/VisualDialog_{split}2018_{image_id:012d}.jpg"


def _url_function(path: Path, split: str, template: ImageUrl | None) -> Callable[[int], str]:
    """Turn the image URL setting into a function of the VisDial image id, failing early on a bad template."""
    if template is None:
        if split == "train":
            raise ValueError(
                "VisDial train images are COCO 2014 images from train2014 and val2014: pass image_url_template, "
                "e.g. coco_urls_by_id([captions_train2014.json, captions_val2014.json]).__getitem__"
            )
        folder = path.resolve().parent / f"VisualDialog_{split}2018"
        template = folder.as_uri() + f"/VisualDialog_{split}2018_{{image_id:012d}}.jpg"
    if callable(template):
        return template
    try:
        template.format(image_id=0)
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"bad image_url_template {template!r}: use {{image_id}} (e.g. {{image_id:012d}}): {e}") from None
    return lambda image_id: template.format(image_id=image_id)


def _global_list(
    strings: list[Any], kind: str, q: Quarantine, max_chars: int
) -> tuple[list[int], list[str], set[int]]:
    """Indices and clean texts of the usable entries of data.questions / data.answers, and the set of
    indices a dialog may point at (a usable string or an empty one, which rebuilds as ""; a dialog
    pointing at a non-string, a lone surrogate or an over-long string is quarantined)."""
    idx, texts, valid = [], [], set()
    for i, s in enumerate(strings):
        if not isinstance(s, str):
            q.add(i, f"bad_{kind}", f"data.{kind}s[{i}] is {type(s).__name__}, not a string", s)
            continue
        text, reason, detail, cleaned = check_text(s, max_chars)
        if reason is not None:
            q.add(i, reason, f"data.{kind}s[{i}]: {detail}", s)
            continue
        valid.add(i)
        if not text:
            q.add(i, f"empty_{kind}", f"data.{kind}s[{i}] is empty; not a segment", s)
            continue
        if cleaned:
            q.cleaned.append(i)
        idx.append(i)
        texts.append(text)
    return idx, texts, valid


def _index(v: Any, valid: set[int]) -> bool:
    """An index into a global list: an int (type(), since JSON `true` is a bool and so an int) in `valid`."""
    return type(v) is int and v in valid


def _check_round(
    r: Any, k: int, split: str, valid_q: set[int], valid_a: set[int], last: bool
) -> tuple[dict[str, Any] | None, str | None]:
    """A round as a DIALOG_ROUND dict, or (None, why it is unusable).

    Train / val: every round has question, answer, 100 answer_options and gt_index.  Test: the rounds
    before the last have question and answer only; the last has question and answer_options only.
    """
    if not isinstance(r, dict):
        return None, f"round {k} is {type(r).__name__}"
    test = split == "test"
    q_i, a_i, opts, gt = r.get("question"), r.get("answer"), r.get("answer_options"), r.get("gt_index")
    if not _index(q_i, valid_q):
        return None, f"round {k}: question index {q_i!r} missing, not an integer, out of range or quarantined"
    if not test or last or opts is not None:
        if not isinstance(opts, list) or len(opts) != OPTIONS:
            return None, f"round {k}: answer_options should be a list of {OPTIONS}, found {_describe(opts)}"
        bad = [o for o in opts if not _index(o, valid_a)]
        if bad:
            return None, f"round {k}: answer option {bad[0]!r} not an integer, out of range or quarantined"
    if not test or not last or a_i is not None:
        if not _index(a_i, valid_a):
            return None, f"round {k}: answer index {a_i!r} missing, not an integer, out of range or quarantined"
    if not test or gt is not None:
        if type(gt) is not int or opts is None or not 0 <= gt < len(opts):
            return None, f"round {k}: gt_index {gt!r} missing, not an integer or out of range"
        if opts[gt] != a_i:
            return None, f"round {k}: answer_options[gt_index={gt}] is {opts[gt]}, not the answer {a_i}"
    return {"question": q_i, "answer": a_i, "answer_options": opts, "gt_index": gt}, None


def _describe(v: Any) -> str:
    return f"{len(v)} items" if isinstance(v, list) else type(v).__name__


def _read_dense(
    dense_path: Path, known: dict[int, int], q: Quarantine
) -> dict[int, tuple[int, list[float]]]:
    """image_id -> (1-based round, relevance) from a dense annotations file (a JSON list of records)."""
    doc = load_json(dense_path)
    if not isinstance(doc, list):
        raise SourceFormatError(dense_path, f"dense annotations should be a JSON list, found {type(doc).__name__}")
    dense: dict[int, tuple[int, list[float]]] = {}
    for i, rec in enumerate(doc):
        rel = rec.get("gt_relevance", rec.get("relevance")) if isinstance(rec, dict) else None
        image_id = rec.get("image_id") if isinstance(rec, dict) else None
        round_id = rec.get("round_id") if isinstance(rec, dict) else None
        problem = None
        if type(image_id) is not int or type(round_id) is not int:
            problem = "missing or non-integer image_id / round_id"
        elif image_id not in known:
            problem = f"image_id {image_id} has no usable dialog"
        elif not 1 <= round_id <= known[image_id]:
            problem = f"round_id {round_id} outside 1..{known[image_id]}"
        elif not isinstance(rel, list) or len(rel) != OPTIONS or not all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in rel
        ):
            problem = f"gt_relevance should be {OPTIONS} numbers, found {_describe(rel)}"
        elif not all(math.isfinite(x) for x in rel):  # json reads NaN / Infinity literals
            bad = next(j for j, x in enumerate(rel) if not math.isfinite(x))
            problem = f"gt_relevance[{bad}] is {rel[bad]} (relevance must be a finite number)"
        elif image_id in dense:
            problem = f"second dense record for image_id {image_id}"
        if problem is not None:
            q.add(i, "bad_dense", f"dense[{i}]: {problem}", rec, source_file=dense_path)
            continue
        dense[image_id] = (round_id, [float(x) for x in rel])
    return dense


def read_visdial(
    path: str | Path,
    split: str,
    dense_path: str | Path | None = None,
    image_url_template: ImageUrl | None = None,
    *,
    max_chars: int = MAX_TEXT_CHARS,
) -> ReadResult:
    """Read a VisDial v1.0 JSON (train, val or test) and optionally its dense annotations.

    `image_url_template` is a format string with ``{image_id}`` (e.g.
    ``file:///data/visdial/VisualDialog_val2018/VisualDialog_val2018_{image_id:012d}.jpg``) or a
    function of the image id.  Default for val / test: the official zip's layout extracted beside
    the JSON; train must be given one (its images are COCO images from two folders).
    """
    path = Path(path)
    url_of = _url_function(path, split, image_url_template)
    doc = load_json(path)
    data = require(doc, "data", dict, path, "the top level")
    questions = require(data, "questions", list, path, "data")
    answers = require(data, "answers", list, path, "data")
    dialogs = require(data, "dialogs", list, path, "data")
    file_split = doc.get("split")
    if isinstance(file_split, str) and not file_split.startswith(split):
        raise SourceFormatError(path, f"file is split {file_split!r}, but was read as {split!r}")

    q = Quarantine("visdial", split, path)
    q_idx, q_texts, valid_q = _global_list(questions, "question", q, max_chars)
    a_idx, a_texts, valid_a = _global_list(answers, "answer", q, max_chars)
    lost: Counter = Counter()

    rows: list[dict[str, Any]] = []
    cap_ids, cap_items, cap_texts = [], [], []
    item_ids, urls, source_paths = [], [], []
    known: dict[int, int] = {}  # image id -> number of rounds, for the dense join
    for d_i, dia in enumerate(dialogs):
        problem, reason = None, "bad_dialog"
        if not isinstance(dia, dict):
            problem = f"dialog is {type(dia).__name__}"
        elif type(dia.get("image_id")) is not int:
            problem = "missing or non-integer image_id"
        elif not isinstance(dia.get("caption"), str):
            problem = "missing caption"
        elif not isinstance(dia.get("dialog"), list) or not dia["dialog"]:
            problem = "missing or empty dialog"
        elif split != "test" and len(dia["dialog"]) != ROUNDS:
            problem = f"{len(dia['dialog'])} rounds, expected {ROUNDS}"
        elif split == "test" and "round_id" in dia and dia["round_id"] != len(dia["dialog"]):
            problem = f"round_id {dia['round_id']!r} but {len(dia['dialog'])} rounds"
        elif dia["image_id"] in known:
            problem, reason = f"image_id {dia['image_id']} seen before", "duplicate_id"
        caption = None
        if problem is None:
            caption, reason, detail, cleaned = check_text(dia["caption"], max_chars)
            if reason is None and not caption:
                reason, detail = "empty_caption", "caption is empty"
            if reason is not None:
                problem = f"caption: {detail}" if reason != "empty_caption" else detail
            elif cleaned:
                q.cleaned.append(d_i)
            reason = reason or "bad_dialog"
        rounds: list[dict[str, Any]] = []
        if problem is None:
            n_rounds = len(dia["dialog"])
            for k, r in enumerate(dia["dialog"], 1):
                checked, problem = _check_round(r, k, split, valid_q, valid_a, last=k == n_rounds)
                if checked is None:
                    break
                rounds.append(checked)
        url = None
        if problem is None:
            try:
                url = url_of(dia["image_id"])
            except (KeyError, LookupError):
                problem, reason = f"no image URL for image_id {dia['image_id']}", "no_image_url"
            else:
                if not isinstance(url, str) or not is_fetchable_url(url):
                    problem, reason = f"image URL {url!r} is not http(s):// or file://", "bad_url"
        if problem is not None:
            q.add(d_i, reason, f"data.dialogs[{d_i}]: {problem}", dia)
            lost[reason] += 1
            continue
        image_id = dia["image_id"]
        known[image_id] = len(rounds)
        cap_id = f"visdial/{split}/caption/{image_id}"
        cap_ids.append(cap_id)
        cap_items.append(f"visdial/{image_id}")
        cap_texts.append(caption)
        item_ids.append(f"visdial/{image_id}")
        urls.append(url)
        source_paths.append(_official_image(split, image_id) if split in ("val", "test") else None)
        rows.append(
            {
                "image_id": f"visdial/{image_id}",
                "visdial_image_id": image_id,
                "caption_segment_id": cap_id,
                "rounds": rounds,
                "dense_round": None,
                "dense_relevance": None,
            }
        )

    dense = _read_dense(Path(dense_path), known, q) if dense_path is not None else {}
    for row in rows:
        hit = dense.get(row["visdial_image_id"])
        if hit is not None:
            row["dense_round"], row["dense_relevance"] = hit

    segments = pa.concat_tables(
        [
            segments_table(cap_ids, "visdial", split, cap_items, "caption", cap_texts),
            segments_table(
                [f"visdial/{split}/question/{i}" for i in q_idx], "visdial", split,
                f"visdial/{split}/questions", "question", q_texts,
            ),
            segments_table(
                [f"visdial/{split}/answer/{i}" for i in a_idx], "visdial", split,
                f"visdial/{split}/answers", "answer", a_texts,
            ),
        ]
    )
    stats = {
        "dialogs": len(dialogs),
        "dialogs_ok": len(rows),
        "questions": len(questions),
        "answers": len(answers),
        "dense_rounds": len(dense),
        "segments": segments.num_rows,
        "quarantined": len(q.rows),
        **q.counts(),
    }
    q.log_cleaned()
    return ReadResult(
        segments,
        items_table(item_ids, "visdial", split, urls, source_paths),
        q.table(),
        pa.Table.from_pylist(rows, schema=DIALOGS),
        stats,
        original=len(dialogs),
        lost=dict(lost),
    )


def rebuild_dialog(row: dict[str, Any], questions: list[str], answers: list[str]) -> list[tuple[str, str | None, list[str]]]:
    """(question, answer, options) strings of one DIALOGS row, from the global lists (for checks and
    for evaluation code that wants text)."""
    return [
        (
            questions[r["question"]],
            answers[r["answer"]] if r["answer"] is not None else None,
            [answers[o] for o in r["answer_options"] or []],  # test: only the last round has options
        )
        for r in row["rounds"]
    ]
