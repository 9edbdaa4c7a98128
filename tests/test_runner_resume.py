"""Crash and resume: `kill -9` during a DeepL translate run, then a rerun; and two processes on one memory."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import deepl.http_client
import pytest

from tests.fake_deepl import FakeDeepL
from translation.engines.deepl_api import DeepLEngine, DeepLSettings
from translation.memory import TranslationMemory
from translation.runner import translate_missing, translations_for
from translation.secrets import Secret

ROOT = Path(__file__).resolve().parents[1]
KEY = "resume-test-key:fx"
BATCH = 10

TRANSLATE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from translation.engines.deepl_api import DeepLEngine, DeepLSettings
    from translation.memory import TranslationMemory
    from translation.runner import translate_missing

    url, mem_path, texts_path, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    texts = json.loads(open(texts_path, encoding="utf-8").read())
    # key from DEEPL_AUTH_KEY; requests of `batch` texts (DeepL fills requests to this limit)
    engine = DeepLEngine(DeepLSettings(server_url=url, max_texts_per_request=batch))
    with TranslationMemory(mem_path) as mem:
        stats = translate_missing(texts, engine, mem, batch_size=batch)
    print(json.dumps(stats.__dict__))
    """
)

WRITER_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from translation.engines.base import BaseEngine, Result
    from translation.memory import TranslationMemory
    from translation.runner import translate_missing

    class Upper(BaseEngine):  # a local engine: no server needed to exercise concurrent writes
        engine_id = "upper:v1"
        def translate(self, texts, context=None):
            time.sleep(0.01)  # a request's latency: the other writer commits meanwhile
            return [Result(t.upper(), None, len(t)) for t in texts]

    mem_path, prefix, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    open(go + "." + prefix, "w").close()  # ready: imports done
    while not os.path.exists(go):  # start both writers together
        time.sleep(0.005)
    with TranslationMemory(mem_path, busy_timeout_s=60) as mem:
        stats = translate_missing([f"{prefix} {i}" for i in range(n)], Upper(), mem, batch_size=2)
    assert stats.sent == n, stats
    """
)


def _env() -> dict[str, str]:
    return {**os.environ, "DEEPL_AUTH_KEY": KEY, "PYTHONPATH": str(ROOT)}


def _rows(mem_path: Path) -> int:
    try:
        with sqlite3.connect(mem_path, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM memory").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def _texts() -> list[str]:
    answers = ["yes", "no", "i can't tell", "2", "white"]
    uniq = [f"a person number {i} holds a {'big ' * (i % 4)}umbrella in the rain" for i in range(120)]
    return uniq[:60] + answers * 20 + uniq[60:] + uniq[::7]  # duplicates everywhere


def _stored(mem: TranslationMemory, engine_id: str, texts: list[str]) -> list[tuple]:
    return [(r.text_hash, r.text_en, r.text_pt, r.billed_chars) for r in translations_for(texts, engine_id, mem)]


@pytest.fixture(autouse=True)
def _restore_client_globals(monkeypatch):
    monkeypatch.setattr(deepl.http_client, "max_network_retries", deepl.http_client.max_network_retries)
    monkeypatch.setattr(deepl.http_client, "min_connection_timeout", deepl.http_client.min_connection_timeout)


def test_kill_9_then_rerun_equals_uninterrupted_and_pays_nothing_twice(tmp_path):
    texts = _texts()
    distinct = list(dict.fromkeys(texts))
    texts_path = tmp_path / "texts.json"
    texts_path.write_text(json.dumps(texts))

    # Reference: one uninterrupted run.
    with FakeDeepL(KEY) as ref_server, TranslationMemory(tmp_path / "ref.sqlite") as ref_mem:
        ref_engine = DeepLEngine(DeepLSettings(server_url=ref_server.url, max_texts_per_request=BATCH),
                                 auth_key=Secret(KEY))
        translate_missing(texts, ref_engine, ref_mem, batch_size=BATCH)
        expected = _stored(ref_mem, ref_engine.engine_id, texts)

    mem_path = tmp_path / "memory.sqlite"
    with FakeDeepL(KEY, slow_s=0.15) as server:
        proc = subprocess.Popen(
            [sys.executable, "-c", TRANSLATE_SCRIPT, server.url, str(mem_path), str(texts_path), str(BATCH)],
            env=_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while _rows(mem_path) < 4 * BATCH:  # some batches stored, more to come
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "translate run made no progress"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        n_before = len(server.requests)

        with TranslationMemory(mem_path) as mem:
            engine = DeepLEngine(DeepLSettings(server_url=server.url, max_texts_per_request=BATCH),
                                 auth_key=Secret(KEY))
            stored_at_kill = mem.stats(engine.engine_id).rows
            assert 4 * BATCH <= stored_at_kill < len(distinct)
            stored_texts = {r.text_en for r in mem.lookup(engine.engine_id, [r[0] for r in expected]).values()}

            server.slow_s = 0.0
            stats = translate_missing(texts, engine, mem, batch_size=BATCH)  # the rerun
            assert (stats.hits, stats.sent) == (stored_at_kill, len(distinct) - stored_at_kill)

            # Outputs equal the uninterrupted run's, row for row (billed characters included).
            assert _stored(mem, engine.engine_id, texts) == expected
            # No text stored before the kill was sent again.
            resent = [t for r in server.requests[n_before:] for t in r.texts]
            assert not stored_texts & set(resent)
            # At most the one batch in flight at the kill was paid twice.
            paid = server.sent_texts()
            twice = [t for t in distinct if paid.count(t) > 1]
            assert len(twice) <= BATCH and all(paid.count(t) == 2 for t in twice)
            assert server.character_count - mem.stats(engine.engine_id).billed_chars == sum(map(len, twice))


def test_two_processes_write_one_memory_concurrently(tmp_path):
    mem_path, go = tmp_path / "shared.sqlite", tmp_path / "go"
    TranslationMemory(mem_path).close()  # create the schema once, as the pipeline does before fanning out
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(mem_path), prefix, "150", str(go)],
                         env=_env(), cwd=ROOT, stderr=subprocess.PIPE)
        for prefix in ("shard-a", "shard-b")
    ]
    deadline = time.monotonic() + 60
    while not all(Path(f"{go}.{p}").exists() for p in ("shard-a", "shard-b")):  # both imported
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.01)
    go.touch()  # release both at once
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    with TranslationMemory(mem_path) as mem:
        st = mem.stats("upper:v1")
        assert st.rows == 300
        texts = [f"shard-{s} {i}" for s in "ab" for i in range(150)]
        rows = translations_for(texts, "upper:v1", mem)
        assert [r.text_pt for r in rows] == [t.upper() for t in texts]
        # The writers really overlapped in time (their commits interleave), so this tested contention.
        a, b = [r.created_at for r in rows[:150]], [r.created_at for r in rows[150:]]
        assert max(min(a), min(b)) < min(max(a), max(b))
