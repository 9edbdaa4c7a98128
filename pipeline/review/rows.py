"""Everything one review row shows: the EN source, every engine's PT side by side with its flags, the
current human text (the overlay's latest correction) and its history, where the string occurs, the
images of its CC3M/COCO occurrences, and for VisDial the dialog around it (caption and earlier rounds).
"""
from __future__ import annotations

import threading
from pathlib import Path

import polars as pl

from pipeline.layout import RunLayout
from pipeline.review.tables import RunTables
from translation.overlay import HumanOverlay

IMAGE_DATASETS = ("cc3m", "coco")  # the datasets whose rows show their image (VisDial shows the dialog)
MAX_IMAGES = 4
MAX_DIALOGS = 2


def gold_style(dataset: str, field: str) -> str | None:
    """The gold set's style for a row (translation.gold.GOLD_STYLES), None where it has none (VQAv2)."""
    if dataset in ("cc3m", "coco"):
        return dataset
    if dataset == "visdial":
        return {"caption": "coco", "question": "visdial_q", "answer": "visdial_a"}.get(field)
    return None


class DialogIndex:
    """VisDial rounds, one row per (dialog, round), read from sources/visdial/<split>/dialogs.parquet the
    first time a split's context is asked for."""

    def __init__(self, root: Path):
        self.root = root
        self._lock = threading.Lock()
        self._rounds: dict[str, pl.DataFrame] = {}

    def rounds(self, split: str) -> pl.DataFrame:
        with self._lock:
            if split not in self._rounds:
                path = RunLayout(self.root).source_split("visdial", split) / "dialogs.parquet"
                if not path.is_file():
                    self._rounds[split] = pl.DataFrame()
                else:
                    d = pl.read_parquet(path, columns=["image_id", "caption_segment_id", "rounds"])
                    self._rounds[split] = (
                        d.explode("rounds")
                        .with_columns((pl.int_range(pl.len()).over("image_id") + 1).alias("round"))
                        .with_columns(pl.col("rounds").struct.field("question"),
                                      pl.col("rounds").struct.field("answer"))
                        .drop("rounds"))
            return self._rounds[split]


def dialog_context(tables: RunTables, overlay: HumanOverlay | None, dialogs: DialogIndex, occurrence: dict,
                   limit: int = MAX_DIALOGS) -> list[dict]:
    """Dialogs where a VisDial string occurs: the caption and the rounds up to the one that uses it
    (the string's round marked), or the first three rounds for a caption."""
    split, field = occurrence["split"], occurrence["field"]
    rounds = dialogs.rounds(split)
    if not rounds.height:
        return []
    if field == "caption":
        hits = rounds.filter((pl.col("image_id") == occurrence["item_id"]) & (pl.col("round") <= 3))
        at = {occurrence["item_id"]: 0}
    else:
        index = int(occurrence["segment_id"].rsplit("/", 1)[1])
        first = (rounds.filter(pl.col(field) == index).group_by("image_id", maintain_order=True)
                 .agg(pl.col("round").min()).head(limit))
        at = dict(first.iter_rows())
        hits = rounds.join(first.rename({"round": "_at"}), on="image_id").filter(pl.col("round") <= pl.col("_at"))
    if not hits.height:
        return []
    ids = set(hits["caption_segment_id"].to_list())
    for f in ("question", "answer"):
        ids |= {f"visdial/{split}/{f}/{i}" for i in hits[f].drop_nulls().to_list()}
    texts = tables.by_segment(tables.chosen.name, "visdial", split, sorted(ids))
    human = overlay.corrections(tables.chosen.engine_id, [t["text_hash"] for t in texts.values()]) if overlay else {}

    def text(segment_id: str) -> dict:
        t = texts.get(segment_id)
        if t is None:
            return {"en": "", "pt": ""}
        h = human.get(t["text_hash"])
        return {"en": t["text_en"], "pt": h.text_pt if h else t["text_pt"], "human": h is not None}

    out = []
    for image_id, group in hits.group_by("image_id", maintain_order=True):
        image_id = image_id[0]
        group = group.sort("round")
        out.append({
            "image_id": image_id,
            "caption": text(group["caption_segment_id"][0]),
            "rounds": [{"round": r["round"], "marked": r["round"] == at.get(image_id),
                        "question": text(f"visdial/{split}/question/{r['question']}"),
                        "answer": text(f"visdial/{split}/answer/{r['answer']}") if r["answer"] is not None else None}
                       for r in group.iter_rows(named=True)],
        })
    return out[:limit]


def row_view(tables: RunTables, overlay: HumanOverlay | None, dialogs: DialogIndex, text_hash: str) -> dict | None:
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
    for o in occurrences:
        if o["dataset"] == "visdial" and len(dialog_rows) < MAX_DIALOGS:
            dialog_rows += dialog_context(tables, overlay, dialogs, o, MAX_DIALOGS - len(dialog_rows))
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
        "history": [_record(r) for r in history],
        "verdicts": verdicts,
        "gold": {"text_pt": gold.text_pt, "who": gold.who, "created_at": gold.created_at.isoformat()} if gold else None,
        "gold_style": next((st for o in occurrences if (st := gold_style(o["dataset"], o["field"]))), None),
        "uses": base["uses"],
        "occurrences": occurrences,
        "images": images,
        "dialogs": dialog_rows,
    }


def _record(r) -> dict:
    return {"id": r.id, "text_pt": r.text_pt, "replaces": r.replaces, "action": r.action,
            "source_engine": r.source_engine, "who": r.who, "created_at": r.created_at.isoformat(timespec="seconds"),
            "superseded": r.superseded}
