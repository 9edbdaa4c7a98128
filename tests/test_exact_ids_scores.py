"""Item 5 of issue 11: hub engine ids name the resolved snapshot; memory exports keep scores exact."""
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
