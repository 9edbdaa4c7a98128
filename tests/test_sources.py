"""Official files the user already has: `ptvl sources import` (checksums, placement, provenance, cards),
one line per unreachable source, and the profile checked per stage.

The manifests here are toy copies of the real ones (data_manifests/*.toml) whose URLs point at a closed
loopback port: a run that tried to fetch anything would fail, so a run that succeeds fetched nothing.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline import manifests, source_import
from pipeline.cards import write_dataset_card
from pipeline.cli import app
from pipeline.run_stage import Scheduler, plan_run
from pipeline.settings import ConfigError, load_settings
from tests.helpers import free_port

REPO = Path(__file__).resolve().parent.parent
TRAIN = "".join(f"a photo of thing {i}\thttp://img.example/{i}.jpg\n" for i in range(5)).encode()
VAL = "".join(f"a picture of {i}\thttp://img.example/v{i}.jpg\n" for i in range(4)).encode()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _manifest(name: str, port: int, files: list[tuple[str, str, bytes, int]]) -> str:
    text = textwrap.dedent(f"""
        name = "{name}"
        description = "toy {name}"
        licence = "toy"
        citation = "@misc{{{name}}}"
        homepage = "http://127.0.0.1:{port}/"
    """)
    for fname, url_path, data, rows in files:
        text += textwrap.dedent(f"""
            [[files]]
            name = "{fname}"
            url = "http://127.0.0.1:{port}/{url_path}"
            kind = "tsv"
            size = {len(data)}
            sha256 = "{_sha(data)}"
            rows = {rows}
        """)
    return text


@pytest.fixture
def world(tmp_path: Path, monkeypatch):
    """Toy cc3m and coco manifests on a closed port, the user's own files, and two profiles."""
    port = free_port()  # nothing listens there
    mdir = tmp_path / "manifests"
    mdir.mkdir()
    (mdir / "cc3m.toml").write_text(_manifest("cc3m", port, [
        ("Train_GCC-training.tsv", "gcc-data/Train/GCC-training.tsv", TRAIN, 5),
        ("Validation_GCC-1.1.0-Validation.tsv", "gcc-data/Validation/GCC-1.1.0-Validation.tsv", VAL, 4)]))
    (mdir / "coco.toml").write_text(_manifest("coco", port, [("dataset_coco.json.tsv", "x.tsv", VAL, 4)]))
    monkeypatch.setattr(manifests, "MANIFEST_DIR", mdir)
    monkeypatch.setattr(source_import, "MANIFEST_DIR", mdir)
    user = tmp_path / "user"
    user.mkdir()
    (user / "GCC-training.tsv").write_bytes(TRAIN[: len(TRAIN) // 2].rsplit(b"\n", 1)[0] + b"\n")  # truncated
    (user / "Validation_GCC-1.1.0-Validation.tsv").write_bytes(VAL)
    base = f'[run]\nroot = "{tmp_path / "run"}"\n[datasets.visdial]\nenabled = false\n[datasets.vqav2]\nenabled = false\n'
    cc3m = tmp_path / "cc3m.toml"
    cc3m.write_text(base + "[datasets.coco]\nenabled = false\n")
    both = tmp_path / "both.toml"
    both.write_text(base + "[datasets.coco]\nsplits = [\"val\"]\n")
    return {"port": port, "mdir": mdir, "user": user, "cc3m": cc3m, "both": both, "root": tmp_path / "run"}


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "400"}, terminal_width=400)


def _ptvl(*args: str, mdir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "COLUMNS": "400", "PTVL_MANIFEST_DIR": str(mdir)}, cwd=REPO)


def test_unreachable_sources_are_one_line_each(world) -> None:
    res = _ptvl("run", "--config", str(world["both"]), "--until", "images", mdir=world["mdir"])
    out = res.stdout + res.stderr
    assert res.returncode == 2, out
    lines = [x for x in out.splitlines() if x.strip() and not x.startswith("ptvl run")]
    assert len(lines) == 2, out  # one per source, no traceback, no Luigi summary
    assert lines[0].startswith(f"error: cc3m: cannot reach 127.0.0.1 (Connection refused); if you have its files: "
                               f"ptvl sources import cc3m DIR/Train_GCC-training.tsv DIR/Validation_GCC-1.1.0-Validation.tsv "
                               f"--config {world['both']}")
    assert lines[1].startswith("coco: cannot reach 127.0.0.1 (Connection refused)")
    assert "Traceback" not in out and "Luigi" not in out and not (world["root"] / "segments").exists()


def test_import_checks_places_and_records_then_nothing_is_fetched(world) -> None:
    user, root, cfg = world["user"], world["root"], str(world["cc3m"])
    train, val = user / "GCC-training.tsv", user / "Validation_GCC-1.1.0-Validation.tsv"
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (train, val)}
    dest = root / "sources" / "cc3m"

    # A truncated training file: refused, both hashes and the likely cause named, nothing placed.
    res = _invoke("sources", "import", "cc3m", str(train), "--config", cfg)
    assert res.exit_code == 2
    line = " ".join(res.output.split())
    assert f"sha256 {_sha(train.read_bytes())} is not the manifest's {_sha(TRAIN)}" in line
    assert "bytes shorter: probably truncated" in line and "--accept-checksum" in line
    assert not (dest / "Train_GCC-training.tsv").exists()

    # Accepted on purpose: placed by a hard link under the manifest's name, its counts reported.
    res = _invoke("sources", "import", "cc3m", str(train), "--accept-checksum", "--config", cfg)
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert "cc3m/Train_GCC-training.tsv: hardlink of" in out and "differs from the manifest's, accepted" in out
    assert "expected 5 rows, found 2" in out
    assert "still missing Validation_GCC-1.1.0-Validation.tsv; `ptvl run` fetches them from 127.0.0.1" in out
    assert (dest / "Train_GCC-training.tsv").stat().st_ino == train.stat().st_ino
    assert not (dest / "_FETCHED.json").exists()

    res = _invoke("sources", "import", "cc3m", str(val), "--config", cfg)
    assert res.exit_code == 0, res.output
    assert "every official file is present and verified" in " ".join(res.output.split())
    marker = json.loads((dest / "_FETCHED.json").read_text())
    files = {f["path"]: f for f in marker["files"]}
    assert files["Train_GCC-training.tsv"]["status"] == "imported"
    assert files["Train_GCC-training.tsv"]["checksum_accepted"] is True
    assert files["Train_GCC-training.tsv"]["sha256"] == _sha(train.read_bytes())
    assert files["Train_GCC-training.tsv"]["sha256_expected"] == _sha(TRAIN)
    assert files["Train_GCC-training.tsv"]["imported_from"] == str(train)
    assert files["Validation_GCC-1.1.0-Validation.tsv"]["checksum_accepted"] is False
    assert files["Validation_GCC-1.1.0-Validation.tsv"]["counts"] == {"Validation_GCC-1.1.0-Validation.tsv": 4}

    # The run reads them; the official host (a closed port) is never asked.
    res = _ptvl("run", "--config", cfg, "--until", "segments", mdir=world["mdir"])
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    import polars as pl

    assert pl.read_parquet(root / "segments" / "cc3m" / "train.parquet").height == 2
    assert pl.read_parquet(root / "segments" / "cc3m" / "validation.parquet").height == 4
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (train, val)} == before  # never modified

    # The dataset card says where each file came from.
    card = write_dataset_card(root / "card", dataset="cc3m", split="train", engine="reference", engine_id="ref",
                              layout="x", policy=None, stats={"total": 2, "kept": 2}, availability_md=None,
                              sources_marker=dest / "_FETCHED.json").read_text()
    row = next(x for x in card.splitlines() if x.startswith("| `Train_GCC-training.tsv` |"))
    assert f"| `{_sha(train.read_bytes())}` |" in row and f"imported by the user from `{train}`" in row
    assert f"**not the manifest's sha256** (`{_sha(TRAIN)}`), accepted with --accept-checksum" in row
    assert "expected 5 rows, found 2" in row
    val_row = next(x for x in card.splitlines() if x.startswith("| `Validation_GCC-1.1.0-Validation.tsv` |"))
    assert "; sha256 as in the manifest" in val_row and "(hardlink)" in val_row


def test_a_file_changed_after_import_is_not_used(world) -> None:
    """A hard link shares the user's file: edited in place afterwards, it no longer passes."""
    val = world["user"] / "Validation_GCC-1.1.0-Validation.tsv"
    settings = load_settings(world["cc3m"])
    source_import.import_sources(settings, "cc3m", [val])
    with val.open("ab") as f:
        f.write(b"one more\thttp://x/y.jpg\n")
    with pytest.raises(ConfigError, match="changed since it was imported"):
        source_import.import_sources(settings, "cc3m", [world["user"] / "GCC-training.tsv"], accept_checksum=True)


def test_import_copies_across_filesystems_and_refuses_what_it_cannot_match(world, monkeypatch) -> None:
    settings = load_settings(world["cc3m"])
    val = world["user"] / "Validation_GCC-1.1.0-Validation.tsv"

    def no_link(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    lines = source_import.import_sources(settings, "cc3m", [val])
    placed = world["root"] / "sources" / "cc3m" / val.name
    assert lines[0].startswith(f"cc3m/{val.name}: copy of {val}")
    assert placed.read_bytes() == VAL and placed.stat().st_ino != val.stat().st_ino

    other = world["user"] / "captions.tsv"
    other.write_bytes(VAL)
    with pytest.raises(ConfigError, match=r"captions.tsv: not a file of cc3m; its official files are "
                                          r"Train_GCC-training.tsv \(or GCC-training.tsv\)"):
        source_import.import_sources(settings, "cc3m", [other])
    with pytest.raises(ConfigError, match="given more than once"):
        source_import.import_sources(settings, "cc3m", [val, val])
    with pytest.raises(ConfigError, match="no manifest for 'cc3n'; datasets: cc3m, coco"):
        source_import.import_sources(settings, "cc3n", [val])
    sample = world["root"].parent / "sample.toml"
    sample.write_text(f'[run]\nroot = "{world["root"]}"\n[sample]\nenabled = true\n')
    with pytest.raises(ConfigError, match="embedded sample"):
        source_import.import_sources(load_settings(sample), "cc3m", [val])


def test_each_stage_checks_only_what_it_and_its_upstream_need(tmp_path: Path) -> None:
    """A profile with only cc3m/validation (and the default [training] data = cc3m/train) loads and plans
    every stage up to shards; from features on, [training] is checked, one clear line each."""
    cfg = tmp_path / "val.toml"
    cfg.write_text(f'[run]\nroot = "{tmp_path / "run"}"\n[sample]\nenabled = true\n[datasets.cc3m]\n'
                   'splits = ["validation"]\n[datasets.coco]\nenabled = false\n[datasets.visdial]\nenabled = false\n'
                   '[datasets.vqav2]\nenabled = false\n')
    settings = load_settings(cfg)
    for stage in ("sources", "segments", "images", "translate", "curate", "shards", "features"):
        assert plan_run(settings, str(cfg), stage, Scheduler()).stage == stage
    with pytest.raises(ConfigError, match=r"^training.data names 'cc3m/train', which is not an enabled "
                                          r"dataset/split \(enabled: cc3m/validation\)$"):
        plan_run(settings, str(cfg), "train", Scheduler())
    other = tmp_path / "engine.toml"
    other.write_text(cfg.read_text() + '[training]\nengine = "deepl"\ndata = ["cc3m/validation"]\n')
    settings = load_settings(other)
    assert plan_run(settings, str(other), "shards", Scheduler()).stage == "shards"
    with pytest.raises(ConfigError, match=r"^training.engine 'deepl' is not in translate.engines \(reference\)$"):
        plan_run(settings, str(other), "features", Scheduler())
    res = _invoke("run", "--config", str(other), "--until", "train")
    assert res.exit_code == 2 and res.output.strip().startswith("error: training.engine 'deepl'")
