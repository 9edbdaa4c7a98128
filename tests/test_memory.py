"""The translation memory: keys, first-write-wins, atomic batches, SQLite durability settings, Parquet exchange."""
from __future__ import annotations

import sqlite3

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from translation.cost import estimate
from translation.errors import MemoryIntegrityError
from translation.memory import PARQUET_SCHEMA, MemoryRow, TranslationMemory, memory_key
from translation.textkey import text_hash

E = "deepl:en>pt-pt:split=off:formality=default:glossary=none:context=off"


def row(en: str, pt: str | None = None, billed: int | None = None, ctx: str | None = None) -> MemoryRow:
    return MemoryRow(memory_key(en, ctx), en, pt if pt is not None else f"pt:{en}", None,
                     len(en) if billed is None else billed, ctx)


@pytest.fixture()
def mem(tmp_path):
    with TranslationMemory(tmp_path / "memory.sqlite") as m:
        yield m


def test_put_lookup_missing_and_stats(mem):
    assert mem.put_batch(E, [row("a dog"), row("yes"), row("no")]) == 3
    hashes = [text_hash(t) for t in ["yes", "a cat", "a dog", "a cat", "maybe"]]
    assert mem.missing(E, hashes) == [text_hash("a cat"), text_hash("maybe")]  # unique, first-seen order
    found = mem.lookup(E, hashes)
    assert set(found) == {text_hash("yes"), text_hash("a dog")}
    assert found[text_hash("yes")].text_pt == "pt:yes" and found[text_hash("yes")].billed_chars == 3
    assert found[text_hash("yes")].created_at is not None
    assert mem.missing("another-engine", hashes) == list(dict.fromkeys(hashes))  # engines never mix
    st = mem.stats(E)
    assert (st.rows, st.chars_en, st.billed_chars) == (3, 5 + 3 + 2, 10)


def test_lookup_many_hashes_spans_sql_chunks(mem):
    texts = [f"caption {i}" for i in range(2500)]
    mem.put_batch(E, [row(t) for t in texts[::2]])
    hashes = [text_hash(t) for t in texts]
    assert len(mem.lookup(E, hashes)) == 1250
    assert mem.missing(E, hashes) == hashes[1::2]


def test_first_paid_translation_wins(mem):
    mem.put_batch(E, [row("a dog", "um cão")])
    assert mem.put_batch(E, [row("a dog", "uma cadela"), row("a cat", "um gato")]) == 1
    assert mem.lookup(E, [text_hash("a dog")])[text_hash("a dog")].text_pt == "um cão"


def test_batch_is_atomic_on_a_bad_row(mem):
    bad = MemoryRow(text_hash("something else"), "a dog", "um cão")
    with pytest.raises(MemoryIntegrityError, match="put_batch row 1"):
        mem.put_batch(E, [row("a cat"), bad])
    assert mem.stats(E).rows == 0


def test_sqlite_is_in_wal_with_full_sync(mem):
    db = sqlite3.connect(mem.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # synchronous is per connection: check ours (2 = FULL: every COMMIT fsyncs the WAL).
    assert mem._db.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert mem._db.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000


def test_context_changes_the_key_and_is_checked(mem):
    assert memory_key("yes") == text_hash("yes")
    k1, k2 = memory_key("yes", "a man with a dog"), memory_key("yes", "a red car")
    assert len({k1, k2, text_hash("yes")}) == 3
    mem.put_batch(E, [row("yes", ctx="a man with a dog")])
    assert mem.missing(E, [k1, k2, text_hash("yes")]) == [k2, text_hash("yes")]
    with pytest.raises(MemoryIntegrityError, match="with context"):
        mem.put_batch(E, [MemoryRow(text_hash("yes"), "yes", "sim", context="a red car")])


def test_export_import_roundtrip(tmp_path, mem):
    mem.put_batch(E, [row("a dog"), row("yes", ctx="a man"), MemoryRow(text_hash("ã"), "ã", "ã", -0.5, 1)])
    mem.put_batch("other", [row("a dog")])
    out = tmp_path / "export" / "deepl.parquet"
    assert mem.export_parquet(out, engine_id=E) == 3
    table = pq.read_table(out)
    assert table.schema.equals(PARQUET_SCHEMA)
    assert set(table.column("engine_id").to_pylist()) == {E}
    assert not list(out.parent.glob(".*.tmp"))  # atomic write left no temp file
    with TranslationMemory(tmp_path / "copy.sqlite") as other:
        st = other.import_parquet(out, E)
        assert (st.rows, st.inserted, st.already_present) == (3, 3, 0)
        assert other.import_parquet(out, E).already_present == 3  # importing twice is harmless
        keys = [memory_key("a dog"), memory_key("yes", "a man"), text_hash("ã")]
        a, b = mem.lookup(E, keys), other.lookup(E, keys)
        assert a == b  # every field, created_at included, survives the trip
        assert b[text_hash("ã")].score == -0.5
    assert mem.export_parquet(tmp_path / "all.parquet") == 4


def test_import_minimal_reference_memory(tmp_path, mem):
    # The sample's `reference` memory: only text_hash, text_en, text_pt.
    ref = pa.table({"text_hash": [text_hash("a red circle"), text_hash("yes")],
                    "text_en": ["a red circle", "yes"], "text_pt": ["um círculo vermelho", "sim"]})
    pq.write_table(ref, tmp_path / "reference.parquet")
    st = mem.import_parquet(tmp_path / "reference.parquet", "reference")
    assert st.inserted == 2
    r = mem.lookup("reference", [text_hash("yes")])[text_hash("yes")]
    assert (r.text_pt, r.score, r.billed_chars, r.context) == ("sim", None, 0, None)
    assert estimate(["yes", "yes", "no"], mem, "reference", 20.0).chars == 2


def test_import_rejects_wrong_hash_and_stores_nothing(tmp_path, mem):
    bad = pa.table({"text_hash": [text_hash("a"), "0" * 32, text_hash("c")],
                    "text_en": ["a", "b", "c"], "text_pt": ["A", "B", "C"]})
    path = tmp_path / "bad.parquet"
    pq.write_table(bad, path)
    with pytest.raises(MemoryIntegrityError, match=r"bad\.parquet row 1: text_hash '0{32}' does not match"):
        mem.import_parquet(path, "reference")
    assert mem.stats("reference").rows == 0


def test_import_streams_batches_yet_stores_all_or_nothing(tmp_path, mem, monkeypatch):
    """Import reads the file in batches (bounded memory at millions of rows) inside one transaction: a bad
    key in a later batch leaves nothing stored, a good file is stored whole, row numbers count across batches."""
    import translation.memory as memory

    monkeypatch.setattr(memory, "_IMPORT_BATCH", 4)
    texts = [f"caption {i}" for i in range(10)]
    hashes = [text_hash(t) for t in texts]
    path = tmp_path / "batched.parquet"
    pq.write_table(pa.table({"text_hash": hashes[:9] + ["f" * 32], "text_en": texts, "text_pt": texts}), path,
                   row_group_size=3)
    with pytest.raises(MemoryIntegrityError, match=r"batched\.parquet row 9: text_hash 'f{32}'"):
        mem.import_parquet(path, "reference")
    assert mem.stats("reference").rows == 0  # the first two batches were rolled back with the third
    pq.write_table(pa.table({"text_hash": hashes, "text_en": texts, "text_pt": texts}), path, row_group_size=3)
    st = mem.import_parquet(path, "reference")
    assert (st.rows, st.inserted, st.already_present) == (10, 10, 0)
    assert mem.import_parquet(path, "reference").already_present == 10
    assert mem.lookup("reference", hashes[7:8])[hashes[7]].text_pt == "caption 7"


def test_import_rejects_other_engine_rows_and_missing_columns(tmp_path, mem):
    mem.put_batch(E, [row("a dog")])
    mem.export_parquet(tmp_path / "m.parquet", E)
    with pytest.raises(MemoryIntegrityError, match="belong to engine id"):
        mem.import_parquet(tmp_path / "m.parquet", "madlad")
    pq.write_table(pa.table({"text_en": ["a"], "text_pt": ["b"]}), tmp_path / "x.parquet")
    with pytest.raises(MemoryIntegrityError, match=r"missing column\(s\) \['text_hash'\]"):
        mem.import_parquet(tmp_path / "x.parquet", "reference")


def test_cost_estimate_counts_only_missing_unique(mem):
    texts = ["yes", "no", "yes", "a man riding a horse", "yes", "no"]
    full = estimate(texts, mem, E, 20.0)
    assert (full.rows, full.unique, full.unique_missing, full.chars) == (6, 3, 3, 3 + 2 + 20)
    assert full.eur == pytest.approx(25 * 20.0 / 1e6)
    mem.put_batch(E, [row("yes")])
    part = estimate(texts, mem, E, 20.0)
    assert (part.unique_missing, part.chars) == (2, 22)
    ctx = estimate(["yes", "yes"], mem, E, 20.0, contexts=["c1", "c2"])
    assert (ctx.unique_missing, ctx.chars) == (2, 6)  # context is free but keys the memory


def test_memory_stack_reads_all_files_writes_one(tmp_path):
    """The pipeline's layout: a part writes its own file (rollback journal, NFS-safe: no -wal/-shm) and
    reads the others; a key stored in several files counts once."""
    from translation.memory import MemoryStack

    with TranslationMemory(tmp_path / "shared.sqlite", journal="delete") as shared:
        shared.put_batch("e", [MemoryRow(text_hash("a"), "a", "A0", billed_chars=1), MemoryRow(text_hash("b"), "b", "B", billed_chars=1)])
    readers = [TranslationMemory(tmp_path / "shared.sqlite", read_only=True)]
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        readers[0]._insert([("e", text_hash("z"), "z", None, "Z", None, 0, None, 0)])
    with MemoryStack(TranslationMemory(tmp_path / "part.sqlite", journal="delete"), readers) as mem:
        assert mem.missing("e", [text_hash(t) for t in "abc"]) == [text_hash("c")]
        mem.put_batch("e", [MemoryRow(text_hash("c"), "c", "C", billed_chars=1),
                            MemoryRow(text_hash("a"), "a", "A1", billed_chars=1)])
        found = mem.lookup("e", [text_hash(t) for t in "abc"])
        assert {found[text_hash(t)].text_pt for t in "abc"} == {"A1", "B", "C"}  # the writer's row first
        assert mem.stats("e").rows == 3 and mem.stats("e").billed_chars == 3  # "a" once
        assert mem.export_parquet(tmp_path / "all.parquet") == 3
    assert not list(tmp_path.glob("*-wal")) and not list(tmp_path.glob("*-shm"))
    with pytest.raises(FileNotFoundError):
        TranslationMemory(tmp_path / "absent.sqlite", read_only=True)


@pytest.mark.parametrize("scan_from", [10**9, 1])  # chunked IN (...) look-ups, then one streamed scan
def test_lookup_frame_equals_lookup_on_both_paths(tmp_path, monkeypatch, scan_from):
    """The bulk look-up (polars, for the translate join) returns exactly what `lookup` does, whichever
    path it takes: the same rows, float64 scores, input_truncated as bool/null, only the asked columns."""
    import translation.memory as memory

    monkeypatch.setattr(memory, "_SCAN_FROM", scan_from)
    monkeypatch.setattr(memory, "_SCAN_BATCH", 7)  # several scan batches
    rows = [MemoryRow(text_hash(f"t{i}"), f"t{i}", f"p{i}", score=-0.1 * i - 1e-12, billed_chars=i,
                      input_truncated=[None, True, False][i % 3]) for i in range(40)]
    with TranslationMemory(tmp_path / "m.sqlite") as mem:
        mem.put_batch(E, rows)
        mem.put_batch("other", [MemoryRow(text_hash("t1"), "t1", "other engine")])
        wanted = [text_hash(f"t{i}") for i in range(0, 60, 2)] + [text_hash("t2")]  # 10 absent, 1 twice
        table = mem.lookup_frame(E, wanted)
        assert table.columns == ["text_hash", "text_pt", "score", "billed_chars", "input_truncated"]
        assert (table.schema["score"], table.schema["input_truncated"]) == (pl.Float64, pl.Boolean)
        got = {r["text_hash"]: r for r in table.to_dicts()}
        ref = mem.lookup(E, wanted)
        assert len(got) == table.height == len(ref) == 20
        for h, r in ref.items():
            assert (got[h]["text_pt"], got[h]["score"], got[h]["billed_chars"], got[h]["input_truncated"]) == (
                r.text_pt, r.score, r.billed_chars, r.input_truncated)
        ctx = mem.lookup_frame(E, wanted[:3], ("text_hash", "text_en", "context"))
        assert sorted(ctx.to_dicts(), key=lambda r: r["text_en"]) == [
            {"text_hash": text_hash(t), "text_en": t, "context": None} for t in ("t0", "t2", "t4")]
        assert mem.lookup_frame(E, []).height == 0
        with pytest.raises(ValueError, match="start with text_hash"):
            mem.lookup_frame(E, wanted, ("text_pt",))


def test_memory_stack_lookup_frame_takes_the_first_file_per_key(tmp_path, monkeypatch):
    from translation.memory import MemoryStack

    with TranslationMemory(tmp_path / "shared.sqlite", journal="delete") as shared:
        shared.put_batch("e", [MemoryRow(text_hash(t), t, t.upper() + "0") for t in "abd"])
    with MemoryStack(TranslationMemory(tmp_path / "part.sqlite", journal="delete"),
                     [TranslationMemory(tmp_path / "shared.sqlite", read_only=True)]) as mem:
        mem.put_batch("e", [MemoryRow(text_hash(t), t, t.upper() + "1") for t in "ac"])
        table = mem.lookup_frame("e", [text_hash(t) for t in "abcx"])
    assert sorted(table["text_pt"].to_list()) == ["A1", "B0", "C1"]  # the writer's "a"; no "d", "x"
