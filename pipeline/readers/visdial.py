"""VisDial v1.0 reader: global question/answer lists as segments (each string translated once), dialogs
kept as indices into them, dense relevance annotations joined by image id.

A dialog with a missing key, an index that is not an integer (JSON `true` included) or is out of
range, or a gt_index that does not point at its answer is quarantined (line = its index in
data.dialogs); the rest of the file is kept.

The official test file differs from train and val: a dialog stops at its `round_id`, every round
before the last has a question and an answer, and only the last round has the 100 answer_options
(and no answer or gt_index).

Memory and time at full size (train: 123,287 dialogs x 10 rounds x 100 options): while the JSON is
parsed, each round's answer_options list is packed into a 4-byte `array("i")` (`_pack_options`), so the
123M option indices are never held as Python ints; each dialog's options are then checked against the
usable answers in one numpy lookup, and only a dialog that fails goes through the per-option check that
names its first bad option.  The DIALOGS table is built from columns, not from per-row dicts.
"""
from __future__ import annotations

import json
import math
from array import array
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.contracts import DIALOG_ROUND, DIALOGS
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
Round = tuple[int, int | None, "array[int] | None", int | None]  # question, answer, answer_options, gt_index


def _pack_options(obj: dict[str, Any]) -> dict[str, Any]:
    """json object_hook: a dict's answer_options list of plain ints in int32 range becomes an array("i")
    (4 bytes an index instead of a 28-byte int and an 8-byte pointer).  A list holding anything else
    (a float, a string, null, JSON true / false, which array() would take as 1 / 0, an index past
    int32) stays a list, for the per-option check to name."""
    opts = obj.get("answer_options")
    if type(opts) is list:
        types = set(map(type, opts))
        if types <= {int}:
            try:
                obj["answer_options"] = array("i", opts)
            except OverflowError:
                pass
    return obj


def _load_packed(path: Path) -> Any:
    """The JSON document with answer_options packed; a file that does not read or parse goes through
    load_json, so it fails with the same SourceFormatError as every other reader."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
        return json.loads(text, object_hook=_pack_options)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return load_json(path)


def _plain(v: Any) -> Any:
    """A parsed value as json.loads gives it (packed answer_options back to lists), for messages and
    quarantine rows; only called on rejected data."""
    if isinstance(v, array):
        return v.tolist()
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def _options_valid(rounds: list[Any], usable: np.ndarray) -> bool:
    """True when every round's answer_options (if any) is packed and every index in them is a usable
    answer, checked in one numpy lookup for the whole dialog.  `usable` has one entry per answer plus a
    final False that every out-of-range index (negatives too, as uint32) is clipped to.  False sends
    the dialog through the per-option check, which finds and names the first bad option."""
    packed = []
    for r in rounds:
        opts = r.get("answer_options") if type(r) is dict else None
        if opts is None:
            continue  # a test round without options, or not a dict: _check_round says what is wrong
        if type(opts) is not array:
            return False
        packed.append(opts)
    if not packed:
        return True
    idx = np.frombuffer(b"".join(packed), dtype=np.int32).view(np.uint32)
    return bool(usable[np.minimum(idx, len(usable) - 1)].all())


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
            q.add(i, f"bad_{kind}", f"data.{kind}s[{i}] is {type(s).__name__}, not a string", _plain(s))
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
    r: Any, k: int, split: str, valid_q: set[int], valid_a: set[int], last: bool, options_ok: bool = False
) -> tuple[Round | None, str | None]:
    """A round as a DIALOG_ROUND tuple (question, answer, answer_options, gt_index), or (None, why it is
    unusable).

    Train / val: every round has question, answer, 100 answer_options and gt_index.  Test: the rounds
    before the last have question and answer only; the last has question and answer_options only.
    `options_ok`: _options_valid has already found every option index usable (the per-option check
    would find nothing).
    """
    if not isinstance(r, dict):
        return None, f"round {k} is {type(r).__name__}"
    test = split == "test"
    q_i, a_i, opts, gt = r.get("question"), r.get("answer"), r.get("answer_options"), r.get("gt_index")
    if not _index(q_i, valid_q):
        return None, f"round {k}: question index {_plain(q_i)!r} missing, not an integer, out of range or quarantined"
    if not test or last or opts is not None:
        if not isinstance(opts, list | array) or len(opts) != OPTIONS:
            return None, f"round {k}: answer_options should be a list of {OPTIONS}, found {_describe(opts)}"
        if not options_ok:
            bad = [o for o in opts if not _index(o, valid_a)]
            if bad:
                return None, f"round {k}: answer option {_plain(bad[0])!r} not an integer, out of range or quarantined"
    if not test or not last or a_i is not None:
        if not _index(a_i, valid_a):
            return None, f"round {k}: answer index {_plain(a_i)!r} missing, not an integer, out of range or quarantined"
    if not test or gt is not None:
        if type(gt) is not int or opts is None or not 0 <= gt < len(opts):
            return None, f"round {k}: gt_index {_plain(gt)!r} missing, not an integer or out of range"
        if opts[gt] != a_i:
            return None, f"round {k}: answer_options[gt_index={gt}] is {opts[gt]}, not the answer {a_i}"
    return (q_i, a_i, opts, gt), None


def _describe(v: Any) -> str:
    return f"{len(v)} items" if isinstance(v, list | array) else type(v).__name__


def _rounds_array(rounds: list[Round], per_dialog: list[int]) -> pa.Array:
    """The DIALOGS.rounds column from the kept dialogs' rounds (in order) and their round counts.
    Options are joined as bytes into one int32 buffer; a round without options (test) is a null list."""
    opts = [r[2] for r in rounds]
    lengths = np.fromiter((0 if o is None else len(o) for o in opts), dtype=np.int64, count=len(opts))
    offsets = np.zeros(len(opts) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = np.frombuffer(b"".join(o if type(o) is array else array("i", o) for o in opts if o is not None),
                           dtype=np.int32)
    options = pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(values), type=DIALOG_ROUND.field("answer_options").type,
        mask=pa.array([o is None for o in opts], pa.bool_()),
    )
    struct = pa.StructArray.from_arrays(
        [pa.array([r[0] for r in rounds], pa.int32()), pa.array([r[1] for r in rounds], pa.int32()),
         options, pa.array([r[3] for r in rounds], pa.int32())],
        fields=list(DIALOG_ROUND),
    )
    dialog_offsets = np.zeros(len(per_dialog) + 1, dtype=np.int32)
    np.cumsum(np.asarray(per_dialog, dtype=np.int64), out=dialog_offsets[1:])
    return pa.ListArray.from_arrays(pa.array(dialog_offsets), struct, type=DIALOGS.field("rounds").type)


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
    doc = _load_packed(path)
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
    usable = np.zeros(len(answers) + 1, dtype=bool)  # + a final False for out-of-range indices
    usable[list(valid_a)] = True
    lost: Counter = Counter()

    kept_ids: list[int] = []
    kept_rounds: list[Round] = []
    rounds_per_dialog: list[int] = []
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
            problem = f"round_id {_plain(dia['round_id'])!r} but {len(dia['dialog'])} rounds"
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
        rounds: list[Round] = []
        if problem is None:
            n_rounds = len(dia["dialog"])
            options_ok = _options_valid(dia["dialog"], usable)
            for k, r in enumerate(dia["dialog"], 1):
                checked, problem = _check_round(r, k, split, valid_q, valid_a, last=k == n_rounds, options_ok=options_ok)
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
            q.add(d_i, reason, f"data.dialogs[{d_i}]: {problem}", _plain(dia))
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
        kept_ids.append(image_id)
        kept_rounds.extend(rounds)
        rounds_per_dialog.append(len(rounds))

    dense = _read_dense(Path(dense_path), known, q) if dense_path is not None else {}
    hits = [dense.get(i) for i in kept_ids]
    dialogs_table = pa.Table.from_arrays(
        [
            pa.array(item_ids, pa.string()),  # visdial/<image_id>, as the items
            pa.array(kept_ids, pa.int64()),
            pa.array(cap_ids, pa.string()),
            _rounds_array(kept_rounds, rounds_per_dialog),
            pa.array([h[0] if h else None for h in hits], pa.int32()),
            pa.array([h[1] if h else None for h in hits], pa.list_(pa.float32())),
        ],
        schema=DIALOGS,
    )
    del kept_rounds

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
        "dialogs_ok": len(kept_ids),
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
        dialogs_table,
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
