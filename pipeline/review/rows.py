"""Everything one review row shows: the EN source, every engine's PT side by side with its flags, the
current human text (the overlay's latest correction) and its history, where the string occurs, the
images of its CC3M/COCO occurrences, for VisDial the dialog around it (caption and earlier rounds, and
its image), for VQAv2 the image, the question and its 10 answers.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.review.dialogs import MAX_DIALOGS, DialogIndex, dialog_context
from pipeline.review.images import ImageStore
from pipeline.review.tables import RunTables
from pipeline.review.vqa import MAX_QUESTIONS, QuestionIndex, vqa_context
from translation.overlay import HumanOverlay

IMAGE_DATASETS = ("cc3m", "coco")  # the datasets whose rows show their image (VisDial and VQAv2: their context)
MAX_IMAGES = 4


@dataclass
class Context:
    """Where a row's context is looked up: images, VisDial dialogs, VQAv2 questions."""

    images: ImageStore
    dialogs: DialogIndex
    questions: QuestionIndex


def gold_style(dataset: str, field: str) -> str | None:
    """The gold set's style for a row (translation.gold.GOLD_STYLES), None where it has none (VQAv2)."""
    if dataset in ("cc3m", "coco"):
        return dataset
    if dataset == "visdial":
        return {"caption": "coco", "question": "visdial_q", "answer": "visdial_a"}.get(field)
    return None


def row_view(tables: RunTables, overlay: HumanOverlay | None, context: Context, text_hash: str) -> dict | None:
    """The page's data for one distinct source string of the reviewed engine; None if it has none."""
    chosen = tables.chosen
    base = chosen.row(text_hash)
    if base is None:
        return None
    machine = []
    for name, table in tables.engines.items():
        r = base if name == chosen.name else table.row(text_hash)
        if r is None:
            continue
        machine.append({"engine": name, "engine_id": table.engine_id, "text_pt": r["text_pt"] or "",
                        "score": r["score"], "reviewed": name == chosen.name,
                        "flags": [{"flag": f, "reason": why} for f, why in
                                  zip(r["flags"] or [], r["flag_reasons"] or [], strict=False)]})
    history = overlay.history(chosen.engine_id, text_hash) if overlay else []
    verdicts = ({f: v for (h, f), v in overlay.verdicts(chosen.engine_id).items() if h == text_hash}
                if overlay else {})
    gold = next((g for g in overlay.gold() if g.text_hash == text_hash), None) if overlay else None
    occurrences = tables.occurrences(text_hash)
    images = [{"dataset": o["dataset"], "split": o["split"], "image_id": o["item_id"]}
              for o in occurrences if o["dataset"] in IMAGE_DATASETS]
    images = list({i["image_id"]: i for i in images}.values())[:MAX_IMAGES]
    dialog_rows: list[dict] = []
    questions: list[dict] = []
    for o in occurrences:
        if o["dataset"] == "visdial" and len(dialog_rows) < MAX_DIALOGS:
            dialog_rows += dialog_context(tables, overlay, context.dialogs, o, MAX_DIALOGS - len(dialog_rows))
        elif o["dataset"] == "vqav2" and len(questions) < MAX_QUESTIONS:
            questions += vqa_context(tables, overlay, context.questions, o, base["text_en"],
                                     MAX_QUESTIONS - len(questions))
    for d, dataset in [(d, "visdial") for d in dialog_rows] + [(q, "vqav2") for q in questions]:
        d["image"] = (f"/image/{dataset}/{d['split']}/{d['image_id']}"
                      if context.images.has(dataset, d["split"], d["image_id"]) else None)
    current = history[-1] if history else None
    return {
        "text_hash": text_hash,
        "text_en": base["text_en"],
        "engine": chosen.name,
        "engine_id": chosen.engine_id,
        "machine": machine,
        "machine_text": base["text_pt"] or "",
        # what the person sees as current (and what an edit replaces): the latest human text, else the machine's
        "current": current.text_pt if current else (base["text_pt"] or ""),
        "human": _record(current) if current else None,
        "human_id": current.id if current else None,
        "history": [_record(r) for r in history],
        "verdicts": verdicts,
        "gold": {"text_pt": gold.text_pt, "who": gold.who, "created_at": gold.created_at.isoformat()} if gold else None,
        "gold_style": next((st for o in occurrences if (st := gold_style(o["dataset"], o["field"]))), None),
        "uses": base["uses"],
        "occurrences": occurrences,
        "images": images,
        "dialogs": dialog_rows,
        "vqa": questions,
    }


def _record(r) -> dict:
    return {"id": r.id, "text_pt": r.text_pt, "replaces": r.replaces, "action": r.action,
            "source_engine": r.source_engine, "who": r.who, "created_at": r.created_at.isoformat(timespec="seconds"),
            "superseded": r.superseded}
