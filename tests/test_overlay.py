"""The human-review overlay: append-only logs, latest wins, concurrent edits kept, validation, durability,
Parquet export/import round trip (translation/overlay.py)."""
from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from dataclasses import asdict

import pyarrow.parquet as pq
import pytest

from translation.overlay import HumanOverlay, open_overlay_if_present, overlay_digest
from translation.textkey import text_hash

E = "deepl:en>pt-pt:split=off:formality=default:glossary=none:context=off"
E2 = "opus:en>pt:beam=4"
EN = "a dog runs on the beach"
H = text_hash(EN)


def _edit(ov: HumanOverlay, pt: str, replaces: str, who: str = "ana", engine: str = E, en: str = EN):
    return ov.record_correction(engine_id=engine, text_hash=text_hash(en), text_en=en, text_pt=pt,
                                replaces=replaces, who=who)


@pytest.fixture()
def ov(tmp_path):
    with HumanOverlay(tmp_path / "memory" / "human.sqlite") as o:
        yield o


def test_append_only_latest_wins_and_history_keeps_every_edit(ov):
    a = _edit(ov, "um cão corre na praia", replaces="um cachorro corre na praia")
    b = _edit(ov, "um cão a correr na praia", replaces="um cão corre na praia", who="rui")
    assert (a.superseded, b.superseded) == (None, None)  # each saw the text it replaced
    cur = ov.corrections(E)
    assert list(cur) == [H] and cur[H].text_pt == "um cão a correr na praia" and cur[H].who == "rui"
    assert cur[H].replaces == "um cão corre na praia" and cur[H].created_at.tzinfo is not None
    hist = ov.history(E, H)
    assert [r.text_pt for r in hist] == ["um cão corre na praia", "um cão a correr na praia"]
    assert hist[0].replaces == "um cachorro corre na praia"  # the machine text it replaced, kept
    assert ov.corrections(E2) == {} and ov.corrections(E, [text_hash("other")]) == {}
    assert ov._db.execute("SELECT COUNT(*) FROM corrections").fetchone()[0] == 2


def test_accept_records_the_source_engine(ov):
    r = ov.record_correction(engine_id=E, text_hash=H, text_en=EN, text_pt="um cão corre na praia",
                             replaces="um cachorro corre na praia", who="ana", action="accept", source_engine=E2)
    assert (r.action, r.source_engine) == ("accept", E2)
    assert ov.corrections(E, [H, text_hash("x")])[H].source_engine == E2


def test_concurrent_edit_is_stored_and_the_overridden_row_named(ov):
    machine = "um cachorro corre na praia"
    first = _edit(ov, "um cão corre na praia", replaces=machine, who="tab1")
    # tab 2 still shows the machine text: its write wins, is stored, and names the row it overrode
    second = _edit(ov, "cão a correr na praia", replaces=machine, who="tab2")
    assert second.superseded == first.id
    assert ov.corrections(E)[H].text_pt == "cão a correr na praia"
    assert [r.who for r in ov.history(E, H)] == ["tab1", "tab2"]


def test_two_threads_editing_the_same_row_lose_nothing(tmp_path):
    path = tmp_path / "human.sqlite"
    HumanOverlay(path).close()
    n = 40
    barrier = threading.Barrier(2)

    def worker(tab: str) -> None:
        with HumanOverlay(path) as o:  # one connection per tab, like two server processes
            barrier.wait()
            for i in range(n):
                _edit(o, f"{tab} texto {i}", replaces="um cachorro corre na praia", who=tab)

    threads = [threading.Thread(target=worker, args=(t,)) for t in ("tab1", "tab2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with HumanOverlay(path) as o:
        hist = o.history(E, H)
        assert len(hist) == 2 * n  # nothing lost
        assert {r.text_pt for r in hist} == {f"{t} texto {i}" for t in ("tab1", "tab2") for i in range(n)}
        assert o.corrections(E)[H].id == max(r.id for r in hist)  # the last write is current
        # every write after the first overrode a row its writer had not seen (it replaced the machine text)
        assert sum(r.superseded is not None for r in hist) == 2 * n - 1


def _proc_writer(path: str, tab: str, n: int) -> None:
    with HumanOverlay(path) as o:
        for i in range(n):
            _edit(o, f"{tab} texto {i}", replaces="x", who=tab)
            o.record_verdict(engine_id=E, text_hash=H, flag="brazilian", verdict="false_alarm", who=tab)


def test_two_processes_writing_queue_and_lose_nothing(tmp_path):
    path = str(tmp_path / "human.sqlite")
    HumanOverlay(path).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_proc_writer, args=(path, t, 15)) for t in ("p1", "p2")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with HumanOverlay(path, read_only=True) as o:
        assert len(o.history(E, H)) == 30
        assert len(o.verdict_records(E)) == 30


def test_verdicts_latest_wins_per_row_and_flag(ov):
    ov.record_verdict(engine_id=E, text_hash=H, flag="brazilian", verdict="confirmed", who="ana")
    ov.record_verdict(engine_id=E, text_hash=H, flag="brazilian", verdict="false_alarm", who="rui")
    ov.record_verdict(engine_id=E, text_hash=H, flag="truncated", verdict="confirmed", who="ana")
    ov.record_verdict(engine_id=E2, text_hash=H, flag="brazilian", verdict="confirmed", who="ana")
    assert ov.verdicts(E) == {(H, "brazilian"): "false_alarm", (H, "truncated"): "confirmed"}
    assert ov.verdicts(E2) == {(H, "brazilian"): "confirmed"}
    assert len(ov.verdict_records()) == 4


def test_gold_latest_per_hash_in_first_added_order(ov):
    other = "two cats on a sofa"
    ov.add_gold(text_hash=H, text_en=EN, text_pt="um cão corre na praia", style="cc3m", who="ana", from_engine=E)
    ov.add_gold(text_hash=text_hash(other), text_en=other, text_pt="dois gatos num sofá", style="coco", who="ana",
                from_engine=None)
    ov.add_gold(text_hash=H, text_en=EN, text_pt="um cão a correr na praia", style="cc3m", who="rui", from_engine=E2)
    gold = ov.gold()
    assert [(g.text_en, g.text_pt, g.who) for g in gold] == [
        (EN, "um cão a correr na praia", "rui"), (other, "dois gatos num sofá", "ana")]


@pytest.mark.parametrize("call, match", [
    (lambda o: o.record_correction(engine_id=E, text_hash=H, text_en=EN, text_pt="x", replaces="y", who="a",
                                   action="overwrite"), "unknown action 'overwrite'"),
    (lambda o: o.record_correction(engine_id=E, text_hash=H, text_en=EN, text_pt="  ", replaces="y", who="a"),
     "text_pt must not be empty"),
    (lambda o: o.record_correction(engine_id=E, text_hash=text_hash("other"), text_en=EN, text_pt="x",
                                   replaces="y", who="a"), "is not the hash of text_en"),
    (lambda o: o.record_correction(engine_id=E, text_hash=H, text_en=EN, text_pt="x", replaces="y", who="a",
                                   action="accept"), "needs source_engine"),
    (lambda o: o.record_correction(engine_id="", text_hash=H, text_en=EN, text_pt="x", replaces="y", who="a"),
     "engine_id must not be empty"),
    (lambda o: o.record_verdict(engine_id=E, text_hash=H, flag="brazilian", verdict="maybe", who="a"),
     "unknown verdict 'maybe'"),
    (lambda o: o.add_gold(text_hash=H, text_en=EN, text_pt="x", style="poetry", who="a", from_engine=None),
     "unknown gold style 'poetry'"),
    (lambda o: o.add_gold(text_hash=H, text_en=EN, text_pt="", style="cc3m", who="a", from_engine=None),
     "text_pt must not be empty"),
])
def test_validation_errors_store_nothing(ov, call, match):
    before = ov.digest()
    with pytest.raises(ValueError, match=match):
        call(ov)
    assert ov.digest() == before and ov.is_empty()


def test_durable_after_reopen_and_rollback_journal(tmp_path):
    path = tmp_path / "human.sqlite"
    with HumanOverlay(path) as o:
        _edit(o, "um cão corre na praia", replaces="m")
        assert o._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: fsync at every COMMIT
        digest = o.digest(E)
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    with HumanOverlay(path, read_only=True) as o:
        assert o.corrections(E)[H].text_pt == "um cão corre na praia"
        assert o.digest(E) == digest
        with pytest.raises(sqlite3.OperationalError):  # read-only really is
            _edit(o, "x", replaces="m")
    with pytest.raises(FileNotFoundError):
        HumanOverlay(tmp_path / "absent.sqlite", read_only=True)
    assert open_overlay_if_present(tmp_path / "absent.sqlite") is None


def test_digest_changes_per_engine_and_missing_file_equals_empty(tmp_path):
    path = tmp_path / "human.sqlite"
    absent_e, absent_all = overlay_digest(path, E), overlay_digest(path)
    assert not path.exists()  # computing it created nothing
    with HumanOverlay(path) as o:
        assert (o.digest(E), o.digest()) == (absent_e, absent_all)
        d_e2 = o.digest(E2)
        _edit(o, "um cão corre na praia", replaces="m")
        assert o.digest(E) != absent_e and o.digest(E2) == d_e2  # another engine's shards are unaffected
        d_e = o.digest(E)
        o.record_verdict(engine_id=E, text_hash=H, flag="brazilian", verdict="false_alarm", who="a")
        assert o.digest(E) != d_e
        d_e, d_all = o.digest(E), o.digest()
        o.add_gold(text_hash=H, text_en=EN, text_pt="um cão", style="cc3m", who="a", from_engine=E)
        assert o.digest(E) == d_e and o.digest() != d_all  # gold is not engine-specific
    assert overlay_digest(path, E) == d_e


def _fill(o: HumanOverlay) -> None:
    m = "um cachorro corre na praia"
    _edit(o, "um cão corre na praia", replaces=m, who="tab1")
    _edit(o, "cão a correr na praia", replaces=m, who="tab2")  # concurrent: superseded set
    _edit(o, "dois gatos num sofá", replaces="dois gatos em um sofá", engine=E2, en="two cats on a sofa")
    o.record_verdict(engine_id=E, text_hash=H, flag="brazilian", verdict="false_alarm", who="ana")
    o.add_gold(text_hash=H, text_en=EN, text_pt="um cão a correr na praia", style="cc3m", who="ana", from_engine=E)


def _state(o: HumanOverlay) -> tuple:
    return ([asdict(r) for r in o.history(E, H)],
            {k: asdict(v) for k, v in o.corrections(E2).items()},
            o.verdicts(E), [asdict(g) for g in o.gold()], o.digest())


def test_export_import_round_trip_is_equal_and_idempotent(tmp_path):
    src = tmp_path / "a.sqlite"
    with HumanOverlay(src) as o:
        _fill(o)
        assert o.export_parquet(tmp_path / "x.parquet") == 5
        expected = _state(o)
    assert pq.read_table(tmp_path / "x.parquet").column("kind").to_pylist().count("correction") == 3
    with HumanOverlay(tmp_path / "b.sqlite") as fresh:
        st = fresh.import_parquet(tmp_path / "x.parquet")
        assert (st.rows, st.inserted, st.already_present) == (5, 5, 0)
        assert _state(fresh) == expected  # same ids, texts, times, superseded link
        assert fresh.history(E, H)[1].superseded == fresh.history(E, H)[0].id
        st = fresh.import_parquet(tmp_path / "x.parquet")
        assert (st.inserted, st.already_present) == (0, 5)
        assert _state(fresh) == expected


def test_import_merges_by_time_and_rejects_a_bad_file(tmp_path):
    with HumanOverlay(tmp_path / "a.sqlite") as a:
        _edit(a, "texto de ana", replaces="m", who="ana")
        a.export_parquet(tmp_path / "ana.parquet")
    with HumanOverlay(tmp_path / "b.sqlite") as b:
        _edit(b, "texto de rui, mais tarde", replaces="m", who="rui")
        b.import_parquet(tmp_path / "ana.parquet")  # older edit imported after: the later edit still wins
        assert b.corrections(E)[H].who == "rui"
        assert len(b.history(E, H)) == 2
        table = pq.read_table(tmp_path / "ana.parquet")
        bad = table.set_column(table.column_names.index("text_hash"), "text_hash",
                               [[text_hash("something else")]])
        pq.write_table(bad, tmp_path / "bad.parquet")
        before = b.digest()
        with pytest.raises(ValueError, match=r"bad.parquet row 0: text_hash .* is not the hash"):
            b.import_parquet(tmp_path / "bad.parquet")
        assert b.digest() == before
        pq.write_table(table.drop(["uid"]), tmp_path / "nouid.parquet")
        with pytest.raises(ValueError, match="not a human overlay export"):
            b.import_parquet(tmp_path / "nouid.parquet")


def test_a_strict_write_over_an_unseen_text_is_refused_inside_the_transaction(ov):
    """An accept names the correction it replaces (`seen`); any other current row refuses it (NotCurrent),
    a plain edit is stored and names the row it overrode."""
    from translation.overlay import NotCurrent

    first = ov.record_correction(engine_id=E, text_hash=H, text_en=EN, text_pt="um cão corre na praia",
                                 replaces="machine", who="ana", seen=None)
    with pytest.raises(NotCurrent, match=f"#{first.id} by ana") as e:
        ov.record_correction(engine_id=E, text_hash=H, text_en=EN, text_pt="machine", replaces="machine",
                             who="rui", action="accept", source_engine=E, seen=None, strict=True)
    assert e.value.current == first
    assert [r.id for r in ov.history(E, H)] == [first.id]
    ok = ov.record_correction(engine_id=E, text_hash=H, text_en=EN, text_pt="machine", replaces=first.text_pt,
                              who="rui", action="accept", source_engine=E, seen=first.id, strict=True)
    assert ok.superseded is None and ov.corrections(E)[H].text_pt == "machine"
    stale = ov.record_correction(engine_id=E, text_hash=H, text_en=EN, text_pt="um cão", replaces=first.text_pt,
                                 who="ana", seen=first.id)
    assert stale.superseded == ok.id
    with pytest.raises(ValueError, match="#7 is not one of this row's"):
        ov.record_correction(engine_id=E2, text_hash=H, text_en=EN, text_pt="x", replaces="", who="a", seen=7)


def test_a_gold_row_follows_its_engines_current_text(ov):
    """The gold set and the shards read one current text: a correction after the row went gold appends the
    gold row again (same style) with the new text; another engine's correction leaves it alone."""
    ov.record_correction(engine_id=E, text_hash=H, text_en=EN, text_pt="um cão editado", replaces="m", who="ana")
    ov.add_gold(text_hash=H, text_en=EN, text_pt="um cão editado", style="cc3m", who="ana", from_engine=E)
    ov.record_correction(engine_id=E2, text_hash=H, text_en=EN, text_pt="outro motor", replaces="m", who="ana")
    assert [(g.text_pt, g.from_engine) for g in ov.gold()] == [("um cão editado", E)]
    ov.record_correction(engine_id=E, text_hash=H, text_en=EN, text_pt="um cão na praia", replaces="um cão editado",
                         who="rui", action="accept", source_engine=E2)
    assert [(g.text_pt, g.style, g.who, g.from_engine) for g in ov.gold()] == [("um cão na praia", "cc3m", "rui", E)]
    assert ov.gold()[0].text_pt == ov.corrections(E)[H].text_pt
