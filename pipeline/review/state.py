"""What the review app's routes share: the run's tables and queues, the overlay, where context is looked
up, and the reviewer's name; and the progress figures the pages and the API show."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.review.queues import Queue, Queues
from pipeline.review.rows import Context
from pipeline.review.tables import RunTables
from translation.overlay import HumanOverlay

Acted = tuple[set[str], set[tuple[str, str]]]


@dataclass
class Review:
    root: Path
    tables: RunTables
    queues: Queues
    overlay: HumanOverlay
    context: Context
    who: str

    def acted_on(self) -> Acted:
        """What people did so far, read once per page: the strings with a correction or a gold row, and
        the (string, flag) pairs with a verdict (people act on thousands, queues may hold millions)."""
        eid = self.tables.chosen.engine_id
        done = set(self.overlay.corrections(eid)) | {g.text_hash for g in self.overlay.gold()}
        return done, set(self.overlay.verdicts(eid))

    def progress(self, queue: Queue, acted: Acted | None = None) -> dict:
        """The queue's progress: its rows a person has acted on (a correction, a gold row, or a verdict;
        for a flag queue, a verdict on that flag).  `acted`: `acted_on()`, when several queues share it."""
        done, verdicts = acted or self.acted_on()
        done = done | {h for (h, f) in verdicts if queue.flag is None or f == queue.flag}
        return {"name": queue.name, "title": queue.title, "total": len(queue.hashes),
                "reviewed": len(done & set(queue.hashes)), "note": queue.note}

    def all_progress(self, build_disagree: bool = False) -> list[dict]:
        """Every queue's progress, in the index's order; the disagreement queue only once it is built
        (or `build_disagree`): its total is None until then."""
        out, acted = [], self.acted_on()
        for name in self.queues.names():
            q = self.queues.get(name) if build_disagree else self.queues.peek(name)
            out.append(self.progress(q, acted) if q is not None else
                       {"name": name, "title": "engines disagree", "total": None, "reviewed": None,
                        "note": "chrF between engines, computed when first opened"})
        return out
