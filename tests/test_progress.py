"""Progress displays go through ptvl_io.progress: without a terminal (a batch job, luigid's log) each one
logs a line every PTVL_PROGRESS_EVERY_S seconds, so no long step is silent there.  Source fetching is
checked in tests/test_fetch.py."""
from __future__ import annotations

import io
import json
import time
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console

from ptvl_io.progress import BYTES, ProgressReporter


@pytest.fixture
def batch_log(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """No terminal (rich reads TTY_COMPATIBLE), a line at every change, progress lines captured."""
    monkeypatch.setenv("TTY_COMPATIBLE", "0")
    monkeypatch.setenv("PTVL_PROGRESS_EVERY_S", "0")
    caplog.set_level("INFO", logger="ptvl.progress")
    return caplog


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "ptvl.progress"]


def test_bytes_show_as_sizes_with_a_speed_and_a_total_may_come_later(batch_log) -> None:
    pipe = Console(file=io.StringIO(), force_terminal=False)
    with ProgressReporter("coco/val.zip", None, unit=BYTES, console=pipe) as p:
        p.update(1_500)
        p.set_total(3_000_000)
        p.update(2_000_000)
    first, second = _lines(batch_log)
    assert first.startswith("coco/val.zip: 1.5 kB, ") and "%" not in first  # total unknown: no share
    assert second.startswith("coco/val.zip: 2.0 MB/3.0 MB (67%), ") and "/s, elapsed" in second
    tty = Console(file=io.StringIO(), force_terminal=True, width=120)
    with ProgressReporter("coco/val.zip", 3_000_000, unit=BYTES, console=tty) as p:
        p.update(3_000_000)
    assert "3.0/3.0 MB" in tty.file.getvalue()  # the bar shows sizes (rich's DownloadColumn)


def test_image_download_progress_logs_urls_covered_without_a_terminal(batch_log, tmp_path: Path) -> None:
    from pipeline.images.download import _DownloadProgress

    shards = tmp_path / "images" / "cc3m" / "train" / "shards"
    shards.mkdir(parents=True)
    with _DownloadProgress("images cc3m/train", shards, 10, poll_s=0.01) as progress:
        (shards / "00000_stats.json").write_text(json.dumps({"count": 6}))  # img2dataset closed a shard
        deadline = time.monotonic() + 10
        while progress.bar.completed < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        (shards / "00001_stats.json").write_text(json.dumps({"count": 4}))
    lines = _lines(batch_log)
    assert any(line.startswith("images cc3m/train: 6/10 URLs (60%)") for line in lines), lines
    assert lines[-1].startswith("images cc3m/train: 10/10 URLs (100%)")


def test_feature_caching_task_logs_images_encoded_without_a_terminal(batch_log, tmp_path: Path, monkeypatch) -> None:
    import training.features
    from pipeline.tasks.model import CacheFeatures
    from pipeline.tasks.shards import shard_dir

    text = (Path(__file__).resolve().parent.parent / "configs" / "sample.toml").read_text()
    config = tmp_path / "run.toml"
    config.write_text(text.replace('root = "runs/sample"', f'root = "{tmp_path / "run"}"'))
    task = CacheFeatures(config=str(config), engine="reference", dataset="cc3m", split="train")
    shards = shard_dir(task.root, "reference", "cc3m", "train")
    shards.mkdir(parents=True)
    pl.DataFrame({"image_id": [f"i{n}" for n in range(6)], "image": [b"jpg"] * 6}).write_parquet(
        shards / "part-00000.parquet")

    def fake_cache_features(images, encoder, preprocess, out_dir, *, progress, n_images, **kw):
        for consumed in (2, 4, 6):  # cache_features reports rows consumed so far, after each batch
            progress(consumed)
        return out_dir

    monkeypatch.setattr(training.features, "load_clip", lambda *a, **kw: (None, None))
    monkeypatch.setattr(training.features, "VisualEncoder", lambda *a, **kw: None)
    monkeypatch.setattr(training.features, "cache_features", fake_cache_features)
    task.run()
    assert [line.split(",")[0] for line in _lines(batch_log)] == [
        "CLIP features cc3m/train: 2/6 images (33%)",
        "CLIP features cc3m/train: 4/6 images (67%)",
        "CLIP features cc3m/train: 6/6 images (100%)",
    ]
