"""The human-review overlay: people's corrections, flag verdicts and gold rows, as append-only logs.

A person reviewing translations (`ptvl review`) never overwrites the machine output in the translation
memory: what they do is stored here, beside it, with who and when, in one SQLite file per run root
(``memory/human.sqlite``).  Three logs:

- ``corrections``: one engine's translation of one source string, corrected (``edit``: typed text) or
  approved (``accept``: an engine's output taken as is; ``source_engine`` names that engine).
  ``replaces`` is the text the person saw as current when they acted (the machine text or an earlier
  human text): provenance, and how a concurrent edit is detected.
- ``verdicts``: a person's verdict on one quality flag of one row, ``false_alarm`` or ``confirmed``.
- ``gold``: a row promoted to the gold set (EN source, approved PT-PT text, gold style).

Nothing is ever updated or deleted, so no edit is lost: the current state of a key is its latest row,
ordered by (``created_at``, ``id``).  ``created_at`` is made strictly increasing within a file when a
row is recorded, so within one file this is the autoincrement order ("last write wins"); rows
imported from a colleague's file keep their own ``created_at``, so a merge keeps the later edit
whichever file it came from.  Every superseded row stays in the log.

Two browser tabs (threads or processes) editing the same row: each write is one ``BEGIN IMMEDIATE``
transaction (writers queue on the lock, ``busy_timeout``), both rows are stored, the later one wins,
and when the person had not seen the row it overrode (``seen``: the id of the correction they saw, or
else ``replaces`` compared by text), the record's ``superseded`` names that row's id, so the caller
can log or tell the person that an unseen edit was overridden.  With ``strict`` (an accept: one
keypress must not replace a person's text unseen) such a write is refused instead (`NotCurrent`).

One current human text: a gold row added from an engine's row follows that row's later corrections
(`record_correction` appends the gold row again, with the new text, in the same transaction), so the
gold set and the shards never disagree on what a person approved.

Durability: rollback journal (``journal_mode=DELETE``, safe on NFS for the single review server) and
``synchronous=FULL``, like the pipeline's memory files: a row is on disk when its method returns.

Keys: ``engine_id`` is the full engine id of the translated tables (as in the translation memory) and
``text_hash`` is `translation.textkey.text_hash` of the EN text (the segments' key).  Translations of
VisDial dialog texts made with caption context (``translate.visdial_context``) are not covered.

Exchange: `HumanOverlay.export_parquet` writes every log row of every kind to one Parquet file
(`PARQUET_SCHEMA`, a ``kind`` column tells them apart); `HumanOverlay.import_parquet` appends a
file's rows, skipping rows already present (each row carries a content ``uid``), so importing the
same file twice stores it once.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ptvl_io import atomic_path
from translation.gold import GOLD_STYLES
from translation.sqlite_store import DEFAULT_BUSY_TIMEOUT_S, SQL_CHUNK, SQLiteFile
from translation.textkey import text_hash

ACTIONS = ("edit", "accept")
VERDICTS = ("false_alarm", "confirmed")
KINDS = ("correction", "verdict", "gold")


_SCHEMA_SQL = (
    """
    CREATE TABLE IF NOT EXISTS corrections (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        uid           TEXT    NOT NULL UNIQUE,  -- content hash: an imported row already present is skipped
        engine_id     TEXT    NOT NULL,
        text_hash     TEXT    NOT NULL,
        text_en       TEXT    NOT NULL,
        text_pt       TEXT    NOT NULL,
        replaces      TEXT,
        action        TEXT    NOT NULL,
        source_engine TEXT,
        who           TEXT    NOT NULL,
        created_at    INTEGER NOT NULL,  -- microseconds since the Unix epoch, UTC
        superseded    INTEGER             -- id of the row this one overrode unseen (concurrent edit)
    )""",
    "CREATE INDEX IF NOT EXISTS corrections_key ON corrections (engine_id, text_hash)",
    """
    CREATE TABLE IF NOT EXISTS verdicts (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        uid        TEXT    NOT NULL UNIQUE,
        engine_id  TEXT    NOT NULL,
        text_hash  TEXT    NOT NULL,
        flag       TEXT    NOT NULL,
        verdict    TEXT    NOT NULL,
        who        TEXT    NOT NULL,
        created_at INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS verdicts_key ON verdicts (engine_id, text_hash, flag)",
    """
    CREATE TABLE IF NOT EXISTS gold (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        uid         TEXT    NOT NULL UNIQUE,
        text_hash   TEXT    NOT NULL,
        text_en     TEXT    NOT NULL,
        text_pt     TEXT    NOT NULL,
        style       TEXT    NOT NULL,
        from_engine TEXT,
        who         TEXT    NOT NULL,
        created_at  INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS gold_key ON gold (text_hash)",
    # MAX(created_at) at every write (HumanOverlay._next_time) is an index look-up, not a scan.
    "CREATE INDEX IF NOT EXISTS corrections_time ON corrections (created_at)",
    "CREATE INDEX IF NOT EXISTS verdicts_time ON verdicts (created_at)",
    "CREATE INDEX IF NOT EXISTS gold_time ON gold (created_at)",
)

# The exchange format: every kind in one file; columns a kind does not use are null.
PARQUET_SCHEMA = pa.schema(
    [
        ("kind", pa.string()),  # "correction", "verdict" or "gold"
        ("id", pa.int64()),  # the row's id in the exporting file (import assigns new ids)
        ("uid", pa.string()),
        ("engine_id", pa.string()),  # null for gold
        ("text_hash", pa.string()),
        ("text_en", pa.string()),  # null for verdicts
        ("text_pt", pa.string()),  # null for verdicts
        ("replaces", pa.string()),
        ("action", pa.string()),
        ("source_engine", pa.string()),  # correction: the engine accepted; gold: the engine it came from
        ("flag", pa.string()),
        ("verdict", pa.string()),
        ("style", pa.string()),
        ("who", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("superseded_uid", pa.string()),  # uid of the row a correction overrode unseen (ids change on import)
    ]
)

_CORR_COLS = ("id", "engine_id", "text_hash", "text_en", "text_pt", "replaces", "action", "source_engine", "who",
              "created_at", "superseded")
_VERDICT_COLS = ("id", "engine_id", "text_hash", "flag", "verdict", "who", "created_at")
_GOLD_COLS = ("id", "text_hash", "text_en", "text_pt", "style", "from_engine", "who", "created_at")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _to_datetime(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _uid(kind: str, *fields: Any) -> str:
    """Content key of a log row: the same row exported and imported twice is stored once."""
    payload = json.dumps([kind, *fields], ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(payload.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


@dataclass(frozen=True)
class HumanRecord:
    """One correction of one engine's translation of one source string."""

    id: int
    engine_id: str
    text_hash: str
    text_en: str
    text_pt: str
    replaces: str | None
    action: str  # "edit" or "accept"
    source_engine: str | None  # for "accept": the engine whose output was taken
    who: str
    created_at: datetime  # UTC
    superseded: int | None  # id of the latest row this one overrode although the person had not seen it


@dataclass(frozen=True)
class VerdictRecord:
    """One person's verdict on one quality flag of one row."""

    id: int
    engine_id: str
    text_hash: str
    flag: str
    verdict: str  # "false_alarm" or "confirmed"
    who: str
    created_at: datetime


@dataclass(frozen=True)
class GoldRecord:
    """A row promoted to the gold set."""

    id: int
    text_hash: str
    text_en: str
    text_pt: str
    style: str  # one of translation.gold.GOLD_STYLES
    from_engine: str | None
    who: str
    created_at: datetime


@dataclass(frozen=True)
class ImportStats:
    """What `HumanOverlay.import_parquet` did."""

    rows: int  # rows in the file
    inserted: int  # new rows stored
    already_present: int  # rows whose uid was stored before


class NotCurrent(Exception):
    """A strict correction (`record_correction(strict=True)`) named a current text that is no longer
    current: someone changed the row since the person saw it.  `current` is the row's latest correction."""

    def __init__(self, current: HumanRecord) -> None:
        super().__init__(f"the row's current text is correction #{current.id} by {current.who} "
                         f"({current.text_pt[:80]!r}), not the one you saw")
        self.current = current


_UNSEEN = object()  # `seen` not given: compare `replaces` by text, as before ids were sent


def _require(value: str | None, name: str) -> str:
    if value is None or not str(value).strip():
        raise ValueError(f"{name} must not be empty")
    return value


def _check_hash(h: str, text_en: str) -> None:
    if h != text_hash(text_en):
        raise ValueError(f"text_hash {h!r} is not the hash of text_en {text_en[:60]!r} "
                         f"(expected {text_hash(text_en)!r})")


class HumanOverlay(SQLiteFile):
    """The overlay file; see the module docstring.  Thread-safe within a process; open one per process."""

    what = "human overlay"

    def __init__(self, path: str | os.PathLike[str], *, read_only: bool = False,
                 busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> None:
        super().__init__(path, schema=_SCHEMA_SQL, journal="delete", read_only=read_only,
                         busy_timeout_s=busy_timeout_s)

    @staticmethod
    def _next_time(db: sqlite3.Connection, table: str) -> int:
        """Now, or just after the file's latest row of `table` if the clock went back: within one file the
        order of `created_at` is the order of writes, so "latest" never depends on a clock step."""
        last = db.execute(f"SELECT MAX(created_at) FROM {table}").fetchone()[0]
        now = time.time_ns() // 1000
        return now if last is None or now > last else last + 1

    # -- corrections ------------------------------------------------------------------------------

    def record_correction(self, *, engine_id: str, text_hash: str, text_en: str, text_pt: str,
                          replaces: str | None, who: str, action: str = "edit",
                          source_engine: str | None = None, seen: int | None | object = _UNSEEN,
                          strict: bool = False) -> HumanRecord:
        """Append a correction; the returned record is now the current one for (engine_id, text_hash).

        `replaces`: the text the person saw as current (provenance).  `seen`: the id of the correction they
        saw as current, None for the machine text; a write over any other row is stored with
        ``superseded`` set, or with `strict` refused with `NotCurrent` (checked inside the write
        transaction, so two tabs cannot both pass).  A gold row of this string taken from this engine
        is appended again with the new text (see the module docstring).

        ValueError on an unknown action, an empty engine_id/text_pt/who, an ``accept`` without
        source_engine, or a text_hash that is not the hash of text_en.
        """
        _require(engine_id, "engine_id")
        _require(who, "who")
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r} (expected one of {ACTIONS})")
        if text_pt is None or not text_pt.strip():
            raise ValueError("text_pt must not be empty")
        if action == "accept" and not source_engine:
            raise ValueError("an 'accept' needs source_engine: the engine whose output was accepted")
        _check_hash(text_hash, text_en)
        with self._write() as db:
            prev = db.execute(
                f"SELECT {', '.join(_CORR_COLS)} FROM corrections WHERE engine_id = ? AND text_hash = ? "
                "ORDER BY created_at DESC, id DESC LIMIT 1", [engine_id, text_hash]).fetchone()
            if seen is _UNSEEN:
                unseen = prev is not None and prev[4] != replaces
            elif prev is None and seen is not None:
                raise ValueError(f"correction #{seen} is not one of this row's: the row has no correction yet")
            else:
                unseen = (prev[0] if prev is not None else None) != seen
            if unseen and strict:
                raise NotCurrent(self._record(prev))
            # Another tab wrote a human text the person did not see: store anyway (last write wins), say so.
            superseded = prev[0] if unseen else None
            created = self._next_time(db, "corrections")
            uid = _uid("correction", engine_id, text_hash, text_en, text_pt, replaces, action, source_engine, who,
                       created)
            cur = db.execute(
                "INSERT INTO corrections (uid, engine_id, text_hash, text_en, text_pt, replaces, action, "
                "source_engine, who, created_at, superseded) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [uid, engine_id, text_hash, text_en, text_pt, replaces, action, source_engine, who, created,
                 superseded])
            row_id = int(cur.lastrowid)
            self._follow_gold(db, engine_id, text_hash, text_pt, who)
        return HumanRecord(row_id, engine_id, text_hash, text_en, text_pt, replaces, action, source_engine, who,
                           _to_datetime(created), superseded)

    def _follow_gold(self, db: sqlite3.Connection, engine_id: str, text_hash: str, text_pt: str, who: str) -> None:
        """The gold row of `text_hash`, when it came from `engine_id` and holds another text, appended again
        with `text_pt` (inside the correction's transaction): the gold set reads the current human text."""
        gold = db.execute(f"SELECT {', '.join(_GOLD_COLS)} FROM gold WHERE text_hash = ? "
                          "ORDER BY created_at DESC, id DESC LIMIT 1", [text_hash]).fetchone()
        if gold is None or gold[5] != engine_id or gold[3] == text_pt:
            return
        created = self._next_time(db, "gold")
        uid = _uid("gold", text_hash, gold[2], text_pt, gold[4], engine_id, who, created)
        db.execute("INSERT INTO gold (uid, text_hash, text_en, text_pt, style, from_engine, who, created_at) "
                   "VALUES (?,?,?,?,?,?,?,?)", [uid, text_hash, gold[2], text_pt, gold[4], engine_id, who, created])

    @staticmethod
    def _record(row: tuple) -> HumanRecord:
        rid, eid, h, en, pt, rep, action, src, who, created, sup = row
        return HumanRecord(rid, eid, h, en, pt, rep, action, src, who, _to_datetime(created), sup)

    def corrections(self, engine_id: str, hashes: Sequence[str] | None = None) -> dict[str, HumanRecord]:
        """The current (latest) correction per text_hash of `engine_id`, among `hashes` (None: all)."""
        cols = ", ".join(_CORR_COLS)
        rows: list[tuple] = []
        with self._lock:
            if hashes is None:
                rows = self._db.execute(f"SELECT {cols} FROM corrections WHERE engine_id = ?", [engine_id]).fetchall()
            else:
                unique = list(dict.fromkeys(hashes))
                for i in range(0, len(unique), SQL_CHUNK):
                    chunk = unique[i: i + SQL_CHUNK]
                    rows += self._db.execute(
                        f"SELECT {cols} FROM corrections WHERE engine_id = ? AND text_hash IN "
                        f"({','.join('?' * len(chunk))})", [engine_id, *chunk]).fetchall()
        out: dict[str, HumanRecord] = {}
        for row in sorted(rows, key=lambda r: (r[9], r[0])):  # oldest first: the latest is written last
            out[row[2]] = self._record(row)
        return out

    def history(self, engine_id: str, text_hash: str) -> list[HumanRecord]:
        """Every correction of one key, oldest first (the last one is current)."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(_CORR_COLS)} FROM corrections WHERE engine_id = ? AND text_hash = ? "
                "ORDER BY created_at, id", [engine_id, text_hash]).fetchall()
        return [self._record(r) for r in rows]

    # -- flag verdicts ----------------------------------------------------------------------------

    def record_verdict(self, *, engine_id: str, text_hash: str, flag: str, verdict: str, who: str) -> int:
        """Append a verdict on `flag` of one row; returns its id.  ValueError on an unknown verdict or an
        empty engine_id/text_hash/flag/who."""
        _require(engine_id, "engine_id")
        _require(text_hash, "text_hash")
        _require(flag, "flag")
        _require(who, "who")
        if verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {verdict!r} (expected one of {VERDICTS})")
        with self._write() as db:
            created = self._next_time(db, "verdicts")
            uid = _uid("verdict", engine_id, text_hash, flag, verdict, who, created)
            cur = db.execute("INSERT INTO verdicts (uid, engine_id, text_hash, flag, verdict, who, created_at) "
                             "VALUES (?,?,?,?,?,?,?)", [uid, engine_id, text_hash, flag, verdict, who, created])
            return int(cur.lastrowid)

    def verdict_records(self, engine_id: str | None = None) -> list[VerdictRecord]:
        """Every verdict row (of one engine, or all), oldest first."""
        where, params = ("WHERE engine_id = ?", [engine_id]) if engine_id is not None else ("", [])
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(_VERDICT_COLS)} FROM verdicts {where} "
                                    "ORDER BY created_at, id", params).fetchall()
        return [VerdictRecord(r[0], r[1], r[2], r[3], r[4], r[5], _to_datetime(r[6])) for r in rows]

    def verdicts(self, engine_id: str) -> dict[tuple[str, str], str]:
        """The current verdict per (text_hash, flag) of `engine_id`."""
        return {(v.text_hash, v.flag): v.verdict for v in self.verdict_records(engine_id)}

    # -- gold -------------------------------------------------------------------------------------

    def add_gold(self, *, text_hash: str, text_en: str, text_pt: str, style: str, who: str,
                 from_engine: str | None) -> int:
        """Append a gold row; returns its id.  ValueError on an unknown style, empty text_pt/who or a
        text_hash that is not the hash of text_en."""
        _require(who, "who")
        if style not in GOLD_STYLES:
            raise ValueError(f"unknown gold style {style!r} (expected one of {sorted(GOLD_STYLES)})")
        if text_pt is None or not text_pt.strip():
            raise ValueError("text_pt must not be empty")
        _check_hash(text_hash, text_en)
        with self._write() as db:
            created = self._next_time(db, "gold")
            uid = _uid("gold", text_hash, text_en, text_pt, style, from_engine, who, created)
            cur = db.execute("INSERT INTO gold (uid, text_hash, text_en, text_pt, style, from_engine, who, "
                             "created_at) VALUES (?,?,?,?,?,?,?,?)",
                             [uid, text_hash, text_en, text_pt, style, from_engine, who, created])
            return int(cur.lastrowid)

    def gold(self) -> list[GoldRecord]:
        """The current gold row per text_hash, in the order they were first added."""
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(_GOLD_COLS)} FROM gold ORDER BY created_at, id").fetchall()
        latest: dict[str, GoldRecord] = {}
        first: dict[str, int] = {}
        for r in rows:
            first.setdefault(r[1], len(first))
            latest[r[1]] = GoldRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], _to_datetime(r[7]))
        return sorted(latest.values(), key=lambda g: first[g.text_hash])

    # -- fingerprint ------------------------------------------------------------------------------

    def digest(self, engine_id: str | None = None) -> str:
        """Fingerprint of the overlay for `engine_id` (its corrections and verdicts) or, with None, of the
        whole file (gold included).  Append-only logs: row count plus max id and max created_at change
        with every write or import, so a task that records it re-runs exactly when it changed."""
        parts: list[Any] = []
        with self._lock:
            for table in ("corrections", "verdicts", "gold"):
                if engine_id is not None and table == "gold":
                    continue
                where, params = ("WHERE engine_id = ?", [engine_id]) if engine_id is not None else ("", [])
                parts.append(self._db.execute(
                    f"SELECT COUNT(*), COALESCE(MAX(id), 0), COALESCE(MAX(created_at), 0) FROM {table} {where}",
                    params).fetchone())
        return _digest_of(engine_id, parts)

    def is_empty(self) -> bool:
        with self._lock:
            return all(self._db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] == 0
                       for t in ("corrections", "verdicts", "gold"))

    # -- Parquet exchange -------------------------------------------------------------------------

    def export_parquet(self, path: str | os.PathLike[str]) -> int:
        """Every log row of every kind, oldest first per kind, to one `PARQUET_SCHEMA` file, atomically.
        Returns the number of rows."""

        with self._lock:
            corr = self._db.execute(f"SELECT uid, {', '.join(_CORR_COLS)} FROM corrections "
                                    "ORDER BY created_at, id").fetchall()
            verd = self._db.execute(f"SELECT uid, {', '.join(_VERDICT_COLS)} FROM verdicts "
                                    "ORDER BY created_at, id").fetchall()
            gold = self._db.execute(f"SELECT uid, {', '.join(_GOLD_COLS)} FROM gold ORDER BY created_at, id").fetchall()
        uid_of = {r[1]: r[0] for r in corr}
        records: list[dict[str, Any]] = []
        for uid, rid, eid, h, en, pt, rep, action, src, who, created, sup in corr:
            records.append(dict(kind="correction", id=rid, uid=uid, engine_id=eid, text_hash=h, text_en=en,
                                text_pt=pt, replaces=rep, action=action, source_engine=src, who=who,
                                created_at=created, superseded_uid=uid_of.get(sup) if sup is not None else None))
        for uid, rid, eid, h, flag, verdict, who, created in verd:
            records.append(dict(kind="verdict", id=rid, uid=uid, engine_id=eid, text_hash=h, flag=flag,
                                verdict=verdict, who=who, created_at=created))
        for uid, rid, h, en, pt, style, src, who, created in gold:
            records.append(dict(kind="gold", id=rid, uid=uid, text_hash=h, text_en=en, text_pt=pt, style=style,
                                source_engine=src, who=who, created_at=created))
        arrays = []
        for field in PARQUET_SCHEMA:
            values = [r.get(field.name) for r in records]
            if field.name == "created_at":
                arrays.append(pa.array(values, type=pa.int64()).cast(field.type))
            else:
                arrays.append(pa.array(values, type=field.type))
        table = pa.Table.from_arrays(arrays, schema=PARQUET_SCHEMA)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, compression="zstd")
        return len(records)

    def import_parquet(self, path: str | os.PathLike[str]) -> ImportStats:
        """Append the rows of an exported overlay file, in one transaction (all rows or none).

        Rows whose uid is already stored are skipped, so importing a file twice stores it once.  Every
        row is validated like a recorded one (ValueError naming the file and row); ``superseded`` links
        are re-pointed at the new ids through ``superseded_uid``.
        """
        path = Path(path)
        table = pq.read_table(path)
        absent = [c for c in ("kind", "uid", "text_hash", "who", "created_at") if c not in table.column_names]
        if absent:
            raise ValueError(f"{path}: not a human overlay export, missing column(s) {absent}")
        ts_type = PARQUET_SCHEMA.field("created_at").type
        created = table.column("created_at").cast(ts_type).cast(pa.int64()).to_pylist()
        cols = {c: table.column(c).to_pylist() if c in table.column_names else [None] * table.num_rows
                for c in PARQUET_SCHEMA.names if c != "created_at"}
        rows = [{c: cols[c][i] for c in cols} | {"created_at": created[i]} for i in range(table.num_rows)]
        for i, r in enumerate(rows):
            _check_import_row(r, f"{path} row {i}")
        # Oldest first, so ids in this file follow the original order (a fresh file gets the same ids).
        rows.sort(key=lambda r: (r["created_at"], r["id"] if r["id"] is not None else 0))
        inserted = 0
        with self._write() as db:
            new_id: dict[str, int] = {}
            for r in rows:
                if r["kind"] == "correction":
                    sup_uid = r["superseded_uid"]
                    sup = new_id.get(sup_uid) if sup_uid else None
                    if sup_uid and sup is None:
                        got = db.execute("SELECT id FROM corrections WHERE uid = ?", [sup_uid]).fetchone()
                        sup = got[0] if got else None
                    cur = db.execute(
                        "INSERT INTO corrections (uid, engine_id, text_hash, text_en, text_pt, replaces, action, "
                        "source_engine, who, created_at, superseded) VALUES (?,?,?,?,?,?,?,?,?,?,?) "
                        "ON CONFLICT (uid) DO NOTHING",
                        [r["uid"], r["engine_id"], r["text_hash"], r["text_en"], r["text_pt"], r["replaces"],
                         r["action"], r["source_engine"], r["who"], r["created_at"], sup])
                    if cur.rowcount:
                        new_id[r["uid"]] = int(cur.lastrowid)
                elif r["kind"] == "verdict":
                    cur = db.execute(
                        "INSERT INTO verdicts (uid, engine_id, text_hash, flag, verdict, who, created_at) "
                        "VALUES (?,?,?,?,?,?,?) ON CONFLICT (uid) DO NOTHING",
                        [r["uid"], r["engine_id"], r["text_hash"], r["flag"], r["verdict"], r["who"],
                         r["created_at"]])
                else:
                    cur = db.execute(
                        "INSERT INTO gold (uid, text_hash, text_en, text_pt, style, from_engine, who, created_at) "
                        "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (uid) DO NOTHING",
                        [r["uid"], r["text_hash"], r["text_en"], r["text_pt"], r["style"], r["source_engine"],
                         r["who"], r["created_at"]])
                inserted += cur.rowcount
        return ImportStats(rows=len(rows), inserted=inserted, already_present=len(rows) - inserted)


def _check_import_row(r: dict[str, Any], where: str) -> None:
    try:
        kind = r["kind"]
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r} (expected one of {KINDS})")
        _require(r["uid"], "uid")
        _require(r["who"], "who")
        if r["created_at"] is None:
            raise ValueError("created_at is null")
        if kind in ("correction", "verdict"):
            _require(r["engine_id"], "engine_id")
        if kind == "verdict":
            _require(r["text_hash"], "text_hash")
            _require(r["flag"], "flag")
            if r["verdict"] not in VERDICTS:
                raise ValueError(f"unknown verdict {r['verdict']!r} (expected one of {VERDICTS})")
            return
        if r["text_en"] is None:
            raise ValueError("text_en is null")
        if r["text_pt"] is None or not r["text_pt"].strip():
            raise ValueError("text_pt must not be empty")
        _check_hash(r["text_hash"], r["text_en"])
        if kind == "correction" and r["action"] not in ACTIONS:
            raise ValueError(f"unknown action {r['action']!r} (expected one of {ACTIONS})")
        if kind == "gold" and r["style"] not in GOLD_STYLES:
            raise ValueError(f"unknown gold style {r['style']!r} (expected one of {sorted(GOLD_STYLES)})")
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def _digest_of(engine_id: str | None, parts: list[Any]) -> str:
    payload = json.dumps([engine_id, [list(p) for p in parts]])
    return hashlib.blake2b(payload.encode(), digest_size=8).hexdigest()


def empty_digest(engine_id: str | None = None) -> str:
    """The digest of an overlay with nothing (for `engine_id`) in it."""
    return _digest_of(engine_id, [(0, 0, 0)] * (2 if engine_id is not None else 3))


def overlay_digest(path: str | os.PathLike[str], engine_id: str | None = None) -> str:
    """`HumanOverlay.digest` of the file at `path`, without creating it: a missing file has the digest of
    an empty overlay, so a run that never had a review does not re-run anything."""
    path = Path(path)
    if not path.exists():
        return empty_digest(engine_id)
    with HumanOverlay(path, read_only=True) as ov:
        return ov.digest(engine_id)


def open_overlay_if_present(path: str | os.PathLike[str]) -> HumanOverlay | None:
    """A read-only overlay, or None when the run has none (never reviewed)."""
    path = Path(path)
    return HumanOverlay(path, read_only=True) if path.exists() else None
