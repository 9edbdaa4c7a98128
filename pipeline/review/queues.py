"""The review queues: ordered lists of distinct source strings (text_hash) of the engine under review.

- ``flag:<name>``: every row raising that quality flag (translation.quality), lowest score first;
- ``worst``: the `size` rows with the lowest engine score (mean token log-prob; engines without a
  score have none, and the queue says so);
- ``disagree``: the `size` rows whose translations differ most between engines: chrF of the reviewed
  engine's output against each other engine's output for the same source string, lowest (most
  different) first; needs a second engine's translated tables;
- ``qe``: the `size` rows with the lowest QE score ([curate] qe_model, e.g. CometKiwi; read from
  neural/<engine>/qe.parquet, which the curate stage writes; without it the queue says how to get it);
- ``sample``: `size` rows drawn at random with a fixed seed, stable across restarts and row order
  (ranked by a hash of seed and text_hash, not by position).

Flag, worst and sample queues are cheap polars sorts, built when the app starts; the chrF of the
disagreement queue costs about 0.1 ms a string pair, so it is computed the first time the queue is
opened (a minute or two per million strings) and kept for the server's life.
"""
from __future__ import annotations

import functools
import hashlib
import threading
from dataclasses import dataclass

import polars as pl

from pipeline.layout import RunLayout
from pipeline.review.tables import RunTables
from translation.quality import FLAG_NAMES

FIXED_QUEUES = ("worst", "qe", "disagree", "sample")


@dataclass(frozen=True)
class Queue:
    name: str  # flag:<flag> | worst | disagree | sample
    title: str
    hashes: tuple[str, ...]
    note: str = ""  # why a queue is empty, or how it is ordered
    flag: str | None = None  # the flag of a flag queue
    scores: tuple[float, ...] = ()  # disagree: the chrF behind each row's place


def sample_rank(seed: int, text_hash: str) -> str:
    """The random sample's order key: a hash of the seed and the string's key, so the sample depends on
    neither the table's row order nor the process (Python's hash() is salted per process)."""
    return hashlib.blake2b(f"{seed}:{text_hash}".encode(), digest_size=8).hexdigest()


@functools.cache
def _chrf_metric():
    from sacrebleu.metrics import CHRF  # deferred: sacrebleu (+ lxml, ~10 MB) only for the disagreement queue

    return CHRF()


def chrf(hypothesis: str, reference: str) -> float:
    """Sentence chrF (sacrebleu's defaults: character 6-grams, beta 2), 0..100."""
    return _chrf_metric().sentence_score(hypothesis, [reference]).score


class Queues:
    """Every queue of the reviewed engine; `get(name)` builds the disagreement queue on first use."""

    def __init__(self, tables: RunTables, *, size: int = 500, seed: int = 0):
        self.tables, self.size, self.seed = tables, size, seed
        self._lock = threading.Lock()
        rows = tables.chosen.rows
        self.flag_queues: dict[str, Queue] = {}
        flagged = rows.select("text_hash", "score", "flags").explode("flags").drop_nulls("flags")
        present = set(flagged["flags"].unique().to_list())
        for flag in [f for f in FLAG_NAMES if f in present] + sorted(present - set(FLAG_NAMES)):
            hashes = (flagged.filter(pl.col("flags") == flag).unique("text_hash")
                      .sort(["score", "text_hash"], nulls_last=True)["text_hash"].to_list())
            self.flag_queues[flag] = Queue(f"flag:{flag}", f"flag: {flag}", tuple(hashes), flag=flag,
                                           note="every row with this flag, lowest score first")
        scored = rows.filter(pl.col("score").is_not_null()).sort(["score", "text_hash"])
        self.worst = Queue("worst", "worst by score", tuple(scored["text_hash"].head(size).to_list()),
                           note=(f"the {size} lowest engine scores (mean token log-prob)" if scored.height else
                                 f"engine {tables.chosen.name!r} gives no scores, so there is nothing to rank"))
        self.qe = _qe_queue(tables, size)
        ranked = sorted(rows["text_hash"].to_list(), key=lambda h: sample_rank(seed, h))[:size]
        self.sample = Queue("sample", "random sample", tuple(ranked),
                            note=f"{len(ranked)} rows drawn with seed {seed} (the same on every start)")
        self._disagree: Queue | None = None

    def names(self) -> list[str]:
        return [q.name for q in self.flag_queues.values()] + list(FIXED_QUEUES)

    def get(self, name: str) -> Queue:
        if name.startswith("flag:"):
            try:
                return self.flag_queues[name.removeprefix("flag:")]
            except KeyError:
                raise KeyError(f"no queue {name!r}: engine {self.tables.chosen.name!r} has no row with flag "
                               f"{name.removeprefix('flag:')!r} (flag queues: "
                               f"{', '.join(self.flag_queues) or 'none'})") from None
        if name == "worst":
            return self.worst
        if name == "sample":
            return self.sample
        if name == "qe":
            return self.qe
        if name == "disagree":
            with self._lock:  # two first requests compute it once
                if self._disagree is None:
                    self._disagree = self._build_disagree()
            return self._disagree
        raise KeyError(f"no queue {name!r}; queues are flag:<flag>, {', '.join(FIXED_QUEUES)}")

    def peek(self, name: str) -> Queue | None:
        """A queue if it is built (the index page does not trigger the chrF computation)."""
        if name == "disagree":
            return self._disagree
        return self.get(name)

    def _build_disagree(self) -> Queue:
        chosen = self.tables.chosen
        others = [t for n, t in self.tables.engines.items() if n != chosen.name]
        if not others:
            return Queue("disagree", "engines disagree", (),
                         note=f"needs a second engine: only {chosen.name!r} has translated tables (add one to "
                              "translate.engines and run the translate stage)")
        base = chosen.rows.select("text_hash", "text_pt")
        worst: dict[str, float] = {}
        for other in others:
            pairs = base.join(other.rows.select("text_hash", pl.col("text_pt").alias("other")), on="text_hash")
            for h, mine, theirs in pairs.iter_rows():
                score = chrf(mine or "", theirs or "")
                worst[h] = min(score, worst.get(h, score))
        ordered = sorted(worst.items(), key=lambda kv: (kv[1], kv[0]))[: self.size]
        names = ", ".join(t.name for t in others)
        return Queue("disagree", "engines disagree", tuple(h for h, _ in ordered),
                     note=f"lowest chrF of {chosen.name!r} against {names} ({len(worst):,} shared strings)",
                     scores=tuple(s for _, s in ordered))


def _qe_queue(tables: RunTables, size: int) -> Queue:
    """The chosen engine's strings with the lowest QE, lowest first (ties by text_hash)."""
    path = RunLayout(tables.root).qe_scores(tables.chosen.name)
    if not path.is_file():
        return Queue("qe", "lowest QE", (), note="no QE scores: set [curate] qe_model (e.g. Unbabel/wmt22-cometkiwi-da) "
                     "and run the curate stage")
    qe = pl.read_parquet(path).join(tables.chosen.rows.select("text_hash"), on="text_hash", how="semi")
    lowest = qe.drop_nulls("qe").sort(["qe", "text_hash"]).head(size)
    return Queue("qe", "lowest QE", tuple(lowest["text_hash"].to_list()),
                 note=f"the {lowest.height} lowest QE scores of {qe.height:,} scored strings")
