"""Issue 11 items 4-5: hub engine ids name the resolved snapshot; memory exports keep scores exact and the
per-text input_truncated flag (also in files made before the column existed)."""
from __future__ import annotations

import pytest

from translation.engines.hf import hub_snapshot
from translation.engines.seq2seq import EngineConfigError
from translation.memory import MemoryRow, TranslationMemory, memory_key
from translation.quality import QualityThresholds, detect_low_score


def _fake_cache(root, repo: str, commits: dict[str, bytes], main: str):
    """A Hugging Face hub cache laid out as huggingface_hub writes it: blobs, snapshots/<commit>, refs/main."""
    repo_dir = root / f"models--{repo.replace('/', '--')}"
    for commit, config in commits.items():
        snap = repo_dir / "snapshots" / commit
        snap.mkdir(parents=True)
        (snap / "config.json").write_bytes(config)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(main)


def test_hub_engine_identity_is_the_resolved_snapshot_commit(tmp_path):
    a, b = "a" * 40, "0123456789abcdef" * 2 + "01234567"
    _fake_cache(tmp_path, "org/model", {a: b'{"v": 1}', b: b'{"v": 2}'}, main=a)
    assert hub_snapshot("org/model", cache_dir=tmp_path) == a
    (tmp_path / "models--org--model" / "refs" / "main").write_text(b)  # a new revision is pulled
    assert hub_snapshot("org/model", cache_dir=tmp_path) == b  # so the engine id changes
    with pytest.raises(EngineConfigError, match="not-cached/model"):
        hub_snapshot("not-cached/model", cache_dir=tmp_path)


@pytest.mark.parametrize("score", [-1.5 - 1e-9, -1.5000000476837158 + 1e-12])
def test_memory_parquet_round_trip_keeps_scores_exact_at_the_low_score_threshold(tmp_path, score):
    import numpy as np
    import pyarrow.parquet as pq

    th = QualityThresholds(min_score=-1.5)
    # The case the float32 export got wrong: the cast moves the score across the threshold.
    assert (detect_low_score(score, th) is None) != (detect_low_score(float(np.float32(score)), th) is None)
    text = "a dog on a beach"
    with TranslationMemory(tmp_path / "a.sqlite") as mem:
        mem.put_batch("e:1", [MemoryRow(memory_key(text), text, "um cão numa praia", score)])
        assert mem.export_parquet(tmp_path / "m.parquet") == 1
    assert pq.read_schema(tmp_path / "m.parquet").field("score").type == "double"
    with TranslationMemory(tmp_path / "b.sqlite") as other:
        other.import_parquet(tmp_path / "m.parquet", engine_id="e:1")
        back = other.lookup("e:1", [memory_key(text)])[memory_key(text)].score
    assert back == score
    assert (detect_low_score(back, th) is None) == (detect_low_score(score, th) is None)


OLD_SCHEMA = """CREATE TABLE memory (engine_id TEXT NOT NULL, text_hash TEXT NOT NULL, text_en TEXT NOT NULL,
    context TEXT, text_pt TEXT NOT NULL, score REAL, billed_chars INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL, PRIMARY KEY (engine_id, text_hash)) WITHOUT ROWID"""


def test_input_truncated_round_trips_and_old_files_read_as_unknown(tmp_path):
    import sqlite3

    from translation.memory import MemoryStack

    # A memory written before the column existed (a colleague's file, an earlier run).
    old = tmp_path / "old.sqlite"
    with sqlite3.connect(old) as db:
        db.execute(OLD_SCHEMA)
        db.execute("INSERT INTO memory VALUES ('e', ?, 'old', NULL, 'velho', -0.5, 0, 0)", [memory_key("old")])
    with TranslationMemory(old, read_only=True) as ro:  # read-only: no migration, the flag is unknown
        assert ro.lookup("e", [memory_key("old")])[memory_key("old")].input_truncated is None
    texts = {"cut": True, "whole": False, "deepl": None}
    with TranslationMemory(tmp_path / "new.sqlite") as new:
        new.put_batch("e", [MemoryRow(memory_key(t), t, t.upper(), input_truncated=v) for t, v in texts.items()])
        with MemoryStack(new, [TranslationMemory(old, read_only=True)]) as stack:
            assert stack.export_parquet(tmp_path / "all.parquet", "e") == 4
    with TranslationMemory(old) as migrated:  # opened for writing: the column is added, old rows stay unknown
        migrated.put_batch("e", [MemoryRow(memory_key("x"), "x", "X", input_truncated=True)])
        got = migrated.lookup("e", [memory_key("old"), memory_key("x")])
        assert (got[memory_key("old")].input_truncated, got[memory_key("x")].input_truncated) == (None, True)
    with TranslationMemory(tmp_path / "back.sqlite") as back:
        assert back.import_parquet(tmp_path / "all.parquet", "e").inserted == 4
        rows = back.lookup("e", [memory_key(t) for t in [*texts, "old"]])
    assert {r.text_en: r.input_truncated for r in rows.values()} == {**texts, "old": None}
