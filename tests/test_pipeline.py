"""The Luigi DAG end to end on a small embedded sample, and the CLI's start-up checks.

These run the real stages (sample writer, readers, img2dataset, translation memory, quality flags,
reports, shard builder) through `ptvl`'s own entry points.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from pipeline.contracts import AVAILABILITY, SEGMENTS, TRANSLATED
from pipeline.settings import ConfigError, load_settings
from tests.fake_deepl import FakeDeepL
from training.shards import CAPTION_SHARD, EVAL_CAPTION_SHARD, VISDIAL_SHARD, VQA_SHARD

PTVL = [sys.executable, "-m", "pipeline"]

SMALL = """
[run]
name = "small"
root = "{root}"

[sample]
enabled = true
n_train = 60
n_val = 20
n_coco = 10
n_dialogs = 6
n_vqa = 6
image_size = 32

[download]
processes_count = 1
thread_count = 4
image_size = 32
number_sample_per_shard = 100
timeout = 2
min_image_size = 12
"""
DATASETS = """
[datasets.coco]
splits = ["val"]
url_base = "file://{sources}/coco"

[datasets.visdial]
splits = ["val"]

[datasets.vqav2]
image_url_template = "file://{sources}/vqav2/val2014/COCO_val2014_{image_id:012d}.jpg"
"""


def ptvl(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*PTVL, *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def write_config(tmp_path: Path, extra: str = "", datasets: str = DATASETS) -> Path:
    cfg = tmp_path / "small.toml"
    cfg.write_text(SMALL.format(root=tmp_path / "run") + datasets + extra)
    return cfg


def test_unknown_key_is_a_clear_error(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "\n[translate]\nbatch_sise = 10\n")
    with pytest.raises(ConfigError, match=r"translate.batch_sise.*unknown key"):
        load_settings(cfg)
    res = ptvl("run", "--config", str(cfg))
    assert res.returncode == 2
    assert "unknown key" in res.stderr and "Traceback" not in res.stderr


def test_engine_without_key_fails_before_any_task(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, '\n[translate]\nengines = ["reference", "deepl"]\n\n[engines.deepl]\nengine = "deepl"\n')
    env = {k: v for k, v in os.environ.items() if k != "DEEPL_AUTH_KEY"}
    res = subprocess.run([*PTVL, "run", "--config", str(cfg)], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2
    assert "DEEPL_AUTH_KEY" in res.stderr
    assert not (tmp_path / "run").exists(), "nothing may run when an engine cannot start"


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("dag")
    cfg = write_config(tmp)
    res = ptvl("run", "--config", str(cfg), "--until", "shards", "--workers", "2")
    assert res.returncode == 0, res.stderr[-4000:]
    return tmp


def test_dag_until_shards_writes_every_contract(small_run: Path) -> None:
    root = small_run / "run"
    for d, s in [("cc3m", "train"), ("cc3m", "validation"), ("coco", "val"), ("visdial", "val"), ("vqav2", "val")]:
        assert pq.read_schema(root / "segments" / d / f"{s}.parquet").equals(SEGMENTS, check_metadata=False)
        assert pq.read_schema(root / "translated" / "reference" / d / f"{s}.parquet").equals(
            TRANSLATED, check_metadata=False
        )
        avail = root / "images" / d / s / "availability.parquet"
        assert pq.read_schema(avail).equals(AVAILABILITY, check_metadata=False)
        card = (root / "shards" / "reference" / d / s / "README.md").read_text()
        assert "Licence" in card and "rows kept" in card

    # Table 4.1: the sample breaks ~10% of CC3M URLs on purpose; every lost URL has a reason.
    train = pl.read_parquet(root / "images" / "cc3m" / "train" / "availability.parquet")
    assert train.height == 60
    lost = train.filter(pl.col("status") != "success")
    assert 3 <= lost.height <= 9
    assert set(lost["reason"]) <= {"file_not_found", "not_an_image", "decode_error", "too_small"}
    report = (root / "reports" / "availability.md").read_text()
    # original: every line of the TSV (60 rows + the 6 malformed lines the sample inserts), the reader's
    # losses as read:<reason> rows beside the download reasons
    assert "| original | 66 |" in report.replace("  ", " ")
    assert "| read:bad_utf8 | 1 (1.5%) |" in report and "| ok |" not in report

    # Training shards: one row per kept caption whose image downloaded, JPEG bytes included.
    shard = pl.read_parquet(root / "shards" / "reference" / "cc3m" / "train" / "part-00000.parquet")
    assert pq.read_schema(root / "shards" / "reference" / "cc3m" / "train" / "part-00000.parquet").equals(
        CAPTION_SHARD, check_metadata=False
    )
    assert shard.height == train.height - lost.height
    assert all(img[:2] == b"\xff\xd8" for img in shard["image"].to_list())
    stats = json.loads((root / "shards" / "reference" / "cc3m" / "train" / "_SHARDS.json").read_text())
    assert stats["dropped_image_unavailable"] == lost.height

    coco = root / "shards" / "reference" / "coco" / "val" / "part-00000.parquet"
    assert pq.read_schema(coco).equals(EVAL_CAPTION_SHARD, check_metadata=False)
    assert set(pl.read_parquet(coco)["captions"].list.len()) == {5}
    vd = root / "shards" / "reference" / "visdial" / "val" / "part-00000.parquet"
    assert pq.read_schema(vd).equals(VISDIAL_SHARD, check_metadata=False)
    dialogs = pl.read_parquet(vd)
    assert dialogs.height == 6
    assert all(len(r["answer_options"]) == 100 for d in dialogs["rounds"].to_list() for r in d)

    vqa = root / "shards" / "reference" / "vqav2" / "val" / "part-00000.parquet"
    assert pq.read_schema(vqa).equals(VQA_SHARD, check_metadata=False)
    questions = pl.read_parquet(vqa)
    assert questions.height == 18 and set(questions["answers"].list.len()) == {10}
    assert {"sim", "não"} & set(questions["answers"].explode().to_list())

    # Reports of the curate stage ran too (shards require them only through translate; run them here).
    res = ptvl("compare", "--config", str(small_run / "small.toml"))
    assert res.returncode == 0, res.stderr[-3000:]
    html = (root / "reports" / "compare" / "comparison.html").read_text()
    assert "reference" in html and "data:image/png;base64" in html


def test_shards_load_with_datasets_and_polars(small_run: Path) -> None:
    import datasets

    files = sorted(str(p) for p in (small_run / "run" / "shards" / "reference" / "cc3m" / "train").glob("part-*.parquet"))
    ds = datasets.load_dataset("parquet", data_files=files, split="train")
    lf = pl.scan_parquet(files).collect()
    assert len(ds) == lf.height > 0
    assert ds[0]["caption"] == lf["caption"][0]
    assert ds[0]["image"][:2] == b"\xff\xd8"


def test_rerun_is_a_no_op(small_run: Path) -> None:
    root = small_run / "run"
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*.parquet")}
    res = ptvl("run", "--config", str(small_run / "small.toml"), "--until", "shards")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "complete ones were encountered" in res.stderr + res.stdout
    after = {p: p.stat().st_mtime_ns for p in root.rglob("*.parquet")}
    assert after == before


def test_deepl_through_the_pipeline_pays_once(small_run: Path, tmp_path: Path) -> None:
    """The DeepL engine inside the DAG: dry-run prices only missing texts, a run pays each unique string
    once, a rerun sends nothing, and the key is in no output."""
    key = "s3cr3t-key-0000:fx"
    with FakeDeepL(key) as server:
        cfg = write_config(
            tmp_path,
            f'\n[translate]\nengines = ["deepl"]\n\n[engines.deepl]\nengine = "deepl"\nserver_url = "{server.url}"\n'
            '\n[training]\nengine = "deepl"\ndata = ["cc3m/validation"]\n'
            '\n[curate]\ngold = false\n',  # the gold set would be in the unique strings too
            datasets='\n[datasets.cc3m]\nsplits = ["validation"]\n[datasets.coco]\nenabled = false\n'
            "[datasets.visdial]\nenabled = false\n[datasets.vqav2]\nenabled = false\n",
        )
        env = {"DEEPL_AUTH_KEY": key}
        dry = ptvl("translate", "--engine", "deepl", "--config", str(cfg), "--dry-run", env=env)
        assert dry.returncode == 0, dry.stderr[-3000:]
        assert server.translate_requests() == []
        seg = pl.read_parquet(tmp_path / "run" / "segments" / "cc3m" / "validation.parquet")
        unique_chars = sum(len(t) for t in seg["text_en"].unique().to_list())
        assert f"{unique_chars:,}" in dry.stdout + dry.stderr

        res = ptvl("translate", "--engine", "deepl", "--config", str(cfg), env=env)
        assert res.returncode == 0, res.stderr[-3000:]
        assert server.character_count == unique_chars
        sent = server.sent_texts()
        assert len(sent) == len(set(sent)) == seg["text_en"].n_unique()
        out = pl.read_parquet(tmp_path / "run" / "translated" / "deepl" / "cc3m" / "validation.parquet")
        assert out["text_pt"].to_list() == [f"PT[{t}]" for t in out["text_en"].to_list()]

        again = ptvl("translate", "--engine", "deepl", "--config", str(cfg), env=env)
        assert again.returncode == 0
        assert server.character_count == unique_chars  # nothing paid twice
    for p in (tmp_path / "run").rglob("*"):
        if p.is_file():
            assert key.encode() not in p.read_bytes(), p
    for text in (dry.stdout, dry.stderr, res.stdout, res.stderr):
        assert key not in text


def test_review_rebuilds_only_the_shards_it_touches(small_run: Path) -> None:
    """A correction recorded in the human overlay: `ptvl run --until shards` rebuilds exactly the folders
    holding that string (by text_hash: a CC3M caption and a VisDial question), their rows carry the human
    text, the cards count them, and the other folders are not touched.  Runs last: it adds an overlay to
    the shared run."""
    from pipeline.layout import RunLayout
    from translation.overlay import HumanOverlay

    root = small_run / "run"
    folders = {p.parent.relative_to(root / "shards" / "reference").as_posix(): p.stat().st_mtime_ns
               for p in (root / "shards" / "reference").glob("*/*/_SHARDS.json")}
    caption = pl.read_parquet(root / "translated" / "reference" / "cc3m" / "train.parquet").row(0, named=True)
    question = (pl.read_parquet(root / "translated" / "reference" / "visdial" / "val.parquet")
                .filter(pl.col("field") == "question").row(0, named=True))
    with HumanOverlay(RunLayout(root).human_overlay) as ov:
        for r in (caption, question):
            ov.record_correction(engine_id=r["engine_id"], text_hash=r["text_hash"], text_en=r["text_en"],
                                 text_pt="REVISTO: " + r["text_pt"], replaces=r["text_pt"], who="test")
    touched = {f for f in folders
               if caption["text_hash"] in set(pl.read_parquet(root / "translated" / "reference" / f"{f}.parquet",
                                                              columns=["text_hash"])["text_hash"])} | {"visdial/val"}
    res = ptvl("run", "--config", str(small_run / "small.toml"), "--until", "shards")
    assert res.returncode == 0, res.stderr[-3000:]
    after = {f: (root / "shards" / "reference" / f / "_SHARDS.json").stat().st_mtime_ns for f in folders}
    assert {f for f in folders if after[f] != folders[f]} == touched

    train = pl.read_parquet(root / "shards" / "reference" / "cc3m" / "train" / "part-*.parquet")
    row = train.filter(pl.col("sample_id") == caption["segment_id"]).row(0, named=True)
    assert (row["caption"], row["text_source"], row["caption_machine"]) == (
        "REVISTO: " + caption["text_pt"], "human", caption["text_pt"])
    n_human = train.filter(pl.col("text_source") == "human").height
    stats = json.loads((root / "shards" / "reference" / "cc3m" / "train" / "_SHARDS.json").read_text())
    assert stats["human_corrected"] == n_human >= 1
    assert f"| human-corrected rows | {n_human} (" in (root / "shards" / "reference" / "cc3m" / "train" / "README.md").read_text()

    dialogs = pl.read_parquet(root / "shards" / "reference" / "visdial" / "val" / "part-*.parquet")
    revised = "REVISTO: " + question["text_pt"]
    uses = sum(any(r["question"] == revised for r in d) for d in dialogs["rounds"].to_list())
    vd = json.loads((root / "shards" / "reference" / "visdial" / "val" / "_SHARDS.json").read_text())
    assert uses >= 1 and vd["human_corrected"] == uses
    assert question["text_pt"] not in {r["question"] for d in dialogs["rounds"].to_list() for r in d}

    again = ptvl("run", "--config", str(small_run / "small.toml"), "--until", "shards")
    assert again.returncode == 0 and "complete ones were encountered" in again.stderr + again.stdout


def test_comparison_reruns_after_a_review(small_run: Path) -> None:
    """`ptvl compare` re-runs when the overlay changes (a reviewed gold row here) and shows the reviewed-gold
    score; unchanged overlay, no re-run."""
    from pipeline.layout import RunLayout
    from translation.overlay import HumanOverlay

    root, cfg = small_run / "run", str(small_run / "small.toml")
    report = root / "reports" / "compare" / "comparison.md"
    assert ptvl("compare", "--config", cfg).returncode == 0
    before = report.stat().st_mtime_ns
    row = pl.read_parquet(root / "translated" / "reference" / "cc3m" / "validation.parquet").row(0, named=True)
    with HumanOverlay(RunLayout(root).human_overlay) as ov:
        ov.add_gold(text_hash=row["text_hash"], text_en=row["text_en"], text_pt=row["text_pt"], style="cc3m",
                    who="test", from_engine=row["engine_id"])
    res = ptvl("compare", "--config", cfg)
    assert res.returncode == 0, res.stderr[-3000:]
    assert report.stat().st_mtime_ns != before
    md = report.read_text()
    assert "reviewed gold (1 rows added in review" in md
    assert "| reference | 100.00 | 100.00 | 1 |" in md  # the approved text is the engine's own
    after = report.stat().st_mtime_ns
    assert ptvl("compare", "--config", cfg).returncode == 0 and report.stat().st_mtime_ns == after
