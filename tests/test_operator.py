"""What the person running ptvl sees: reports that link only what exists, cards that say what is in the
folder, one-line errors before any work, help texts that keep their brackets, files the team can read,
progress without a terminal, quiet third-party chatter, a run root that never lands in site-packages,
and `ptvl retrain` as one command."""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from tests.operator_run import UMASK, TinyRun, ptvl
from training.shards import EVAL_CAPTION_SHARD, VQA_SHARD

# The shared tiny whole run (tests/operator_run.py) is set up by the first test that needs it: a few
# minutes on an idle 2-core machine, far more on a loaded one.
pytestmark = pytest.mark.timeout(2400)

REPO = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\(([^)#]+)\)")


# ------------------------------------------------------------------ atomic writes respect the umask


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_writes_respect_the_umask(tmp_path: Path, umask: int) -> None:
    """Every writer goes through ptvl_io.temp_beside: its files get 0666 & ~umask, as open() gives, not
    mkstemp's 0600 (which made a shared run root unreadable to the rest of the team)."""
    import pyarrow as pa

    from eval.qualitative import write_page
    from pipeline.io import write_json_atomic, write_parquet_atomic, write_text_atomic
    from ptvl_io import atomic_write
    from translation.memory import TranslationMemory

    old = os.umask(umask)
    try:
        write_text_atomic(tmp_path / "a.md", "x")
        write_json_atomic(tmp_path / "b.json", {"a": 1})
        write_parquet_atomic(tmp_path / "c.parquet", pa.table({"a": [1]}))
        with atomic_write(tmp_path / "d.bin") as f:
            f.write(b"x")
        write_page(tmp_path / "e.html", "t", "<p>x</p>")
        with TranslationMemory(tmp_path / "mem.sqlite") as mem:
            mem.export_parquet(tmp_path / "f.parquet")
    finally:
        os.umask(old)
    want = 0o666 & ~umask
    for name in ("a.md", "b.json", "c.parquet", "d.bin", "e.html", "f.parquet"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == want, name
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file may be left behind"


def test_atomic_write_leaves_the_old_file_on_error(tmp_path: Path) -> None:
    from ptvl_io import atomic_write

    dest = tmp_path / "out.txt"
    dest.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(dest, "w", encoding="utf-8") as f:
        f.write("half")
        raise RuntimeError("killed")
    assert dest.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


# ------------------------------------------------------------------ help texts keep [brackets]


def _commands(group, prefix=()):
    import click

    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*prefix, name))
        else:
            yield (*prefix, name), cmd


def test_help_texts_keep_their_brackets() -> None:
    """Rich markup ate every [...] ("Name of an  table in the config"); every `ptvl <cmd> --help` must
    show each bracketed config name its source help has."""
    import typer.main

    root = typer.main.get_command(app)
    runner = CliRunner()
    checked = 0
    for path, cmd in _commands(root):
        texts = [cmd.help or ""] + [p.help or "" for p in cmd.params if getattr(p, "help", None)]
        wanted = {m.replace("\\[", "[") for t in texts for m in re.findall(r"\\?\[[^\]\s]+\]", t)}
        res = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "300"}, terminal_width=300)
        assert res.exit_code == 0, res.output
        flat = " ".join(res.output.replace("│", " ").split())
        for w in wanted:
            checked += 1
            assert w in flat, f"`ptvl {' '.join(path)} --help` lost {w!r}:\n{res.output}"
    assert checked >= 7  # translate --engine, train --llm/--run-name, retrain (3), eval --engine
    res = runner.invoke(app, ["translate", "--help"], env={"COLUMNS": "300"}, terminal_width=300)
    assert "Name of an [engines.<name>] table in the config." in " ".join(res.output.split())


# ------------------------------------------------------------------ one-line errors before any work


def _one_line_error(res) -> str:
    out = (getattr(res, "stderr", None) or "") + (res.stdout or "")
    assert res.returncode == 2 if hasattr(res, "returncode") else res.exit_code == 2, out
    assert "Traceback" not in out, out
    lines = [x for x in out.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out
    return lines[0]


def _invoke(*args: str, env: dict | None = None):
    res = CliRunner().invoke(app, list(args), env={"COLUMNS": "300", **(env or {})}, terminal_width=300)

    class R:  # the shape of subprocess.CompletedProcess, for _one_line_error
        returncode, stdout, stderr = res.exit_code, res.output, ""

    return R


def test_config_pointing_at_a_folder(tmp_path: Path) -> None:
    line = _one_line_error(_invoke("run", "--config", str(tmp_path)))
    assert "is a folder" in line and str(tmp_path) in line


def test_memory_import_of_a_missing_file(tmp_path: Path) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text(f'[run]\nroot = "{tmp_path / "run"}"\n')
    line = _one_line_error(_invoke("memory", "import", str(tmp_path / "nope.parquet"), "--engine-id", "x",
                                   "--config", str(cfg)))
    assert "nope.parquet: no such file" in line
    assert not (tmp_path / "run").exists(), "no memory may be created for a failed import"


def test_convert_model_from_a_missing_folder_or_an_unreachable_hub_id(tmp_path: Path) -> None:
    dest = str(tmp_path / "out")
    line = _one_line_error(_invoke("convert-model", "madlad", "--from", str(tmp_path / "missing"), "--to", dest))
    assert "no such folder" in line
    (tmp_path / "empty").mkdir()
    line = _one_line_error(_invoke("convert-model", "madlad", "--from", str(tmp_path / "empty"), "--to", dest))
    assert "no config.json" in line
    # Offline (HF_HUB_OFFLINE=1, as in every test) and not cached.
    line = _one_line_error(ptvl("convert-model", "madlad", "--from", "example-org/not-cached-mt", "--to", dest))
    assert "not in the local Hugging Face cache" in line
    # Online, but the hub cannot be reached (nothing listens on port 9).
    line = _one_line_error(ptvl("convert-model", "madlad", "--from", "example-org/unreachable-mt", "--to", dest,
                                env={"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}))
    assert "cannot be reached" in line
    assert not Path(dest).exists()


def test_unknown_bridge_fails_at_start_up(tmp_path: Path) -> None:
    """Before: the typo surfaced only after sources, images, translation, shards and features had run."""
    cfg = tmp_path / "p.toml"
    cfg.write_text(f'[run]\nroot = "{tmp_path / "run"}"\n[sample]\nenabled = true\n[model]\nbridge = "crossatn"\n')
    line = _one_line_error(_invoke("run", "--config", str(cfg)))
    assert "unknown bridge 'crossatn'" in line and "crossattn" in line
    line = _one_line_error(_invoke("train", "--config", str(cfg), "--bridge", "clss"))
    assert "unknown bridge 'clss'" in line
    assert not (tmp_path / "run").exists(), "nothing may run with an unknown bridge"


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux `unshare` for a read-only mount")
def test_read_only_run_root(tmp_path: Path) -> None:
    """A run root on a read-only file system (a bind mount remounted ro in a private mount namespace)."""
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"user+mount namespaces unavailable here: {probe.stderr.decode().strip()}")
    ro = tmp_path / "ro"
    ro.mkdir()
    cfg = tmp_path / "p.toml"
    cfg.write_text(f'[run]\nroot = "{ro / "run"}"\n[sample]\nenabled = true\n')
    cmd = (f"mount --bind {ro} {ro} && mount -o remount,bind,ro {ro} && "
           f"exec {sys.executable} -m pipeline run --config {cfg} --until segments")
    res = subprocess.run(["unshare", "-rm", "sh", "-c", cmd], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "COLUMNS": "300"})
    line = _one_line_error(res)
    assert f"run root {ro / 'run'} is not writable" in line and "Read-only file system" in line


# ------------------------------------------------------------------ run.root from a wheel install


def test_run_root_from_a_wheel_install_is_the_working_directory(tmp_path: Path) -> None:
    """A non-editable install must never write runs/ into site-packages: a relative run.root resolves
    against the working directory."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(wheels)], check=True, capture_output=True, timeout=300, cwd=tmp_path)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                    *map(str, wheels.glob("ptvl-*.whl"))], check=True, capture_output=True, timeout=300)
    work = tmp_path / "work"
    work.mkdir()
    (work / "p.toml").write_text('[run]\nroot = "runs/mine"\n[sample]\nenabled = true\nn_train = 20\nn_val = 5\n'
                                 "n_coco = 4\nn_dialogs = 2\nn_vqa = 2\nimage_size = 16\n")
    env = {**os.environ, "PYTHONPATH": str(target), "COLUMNS": "200"}
    code = ("import pipeline, pipeline.settings as s; print(pipeline.__file__); "
            "print(s.load_settings('p.toml').root)")
    out = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0].startswith(str(target)), "the test must run the installed wheel, not the worktree"
    assert out[1] == str(work / "runs" / "mine")
    res = subprocess.run([sys.executable, "-m", "pipeline", "run", "--config", "p.toml", "--until", "sources"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (work / "runs" / "mine" / "sources").is_dir()
    assert not list(target.rglob("runs")), "nothing may be written into the installed package"


# ------------------------------------------------------------------ the tiny whole run


def _links(md: Path) -> list[Path]:
    return [(md.parent / href).resolve() for href in LINK.findall(md.read_text()) if "://" not in href]


def test_report_links_only_what_exists(tiny_run: TinyRun) -> None:
    report = tiny_run.root / "reports" / "README.md"
    links = _links(report)
    assert links and all(p.exists() for p in links), [p for p in links if not p.exists()]
    text = report.read_text()
    # Every card that was built is linked, and only those: this profile has no coco/test, cc3m/validation.
    built = sorted(p.parent.relative_to(tiny_run.root / "shards").as_posix()
                   for p in (tiny_run.root / "shards").glob("*/*/*/README.md"))
    linked = sorted(re.findall(r"\[([\w-]+/[\w-]+/[\w-]+)\]\(\.\./shards/", text))
    assert linked == built and "reference/coco/val" in built
    assert "coco/test" not in text and "cc3m/validation" not in text
    for page in ("coco/captions.html", "coco/retrieval.html", "visdial/visdial.html", "vqav2/vqa.html"):
        assert f"[{page}]" in text


def test_counts_print_with_thousands_separators(tiny_run: TinyRun) -> None:
    from eval.tables import format_metric

    assert format_metric("n", 90000.0) == "90,000"
    assert format_metric("it2t_n_rounds", 1234.0) == "1,234"
    assert format_metric("t2i_r5", 0.25) == "0.250"
    text = (tiny_run.root / "reports" / "README.md").read_text()
    vqa = json.loads((tiny_run.root / "train" / "vgloria" / "eval" / "vqav2" / "metrics.json").read_text())
    n = int(vqa["metrics"]["n"])
    assert f"n {n:,}," in text or f"n {n:,} " in text
    assert not re.search(r"\bn \d+\.\d{3}", text), "a count printed as a float"


def test_dataset_cards_list_columns_and_types(tiny_run: TinyRun) -> None:
    from pipeline.cards import type_name

    for folder, schema in (("reference/coco/val", EVAL_CAPTION_SHARD), ("reference/vqav2/val", VQA_SHARD)):
        card = (tiny_run.root / "shards" / folder / "README.md").read_text()
        assert "## Columns" in card
        for field in schema:
            assert f"| `{field.name}` | `{type_name(field.type)}` |" in card, (folder, field)
        assert pq.read_schema(next((tiny_run.root / "shards" / folder).glob("part-*.parquet"))).names == schema.names
    assert type_name(EVAL_CAPTION_SHARD.field("captions").type) == "list<string>"
    contracts = (REPO / "pipeline" / "contracts.py").read_text()
    assert "ARCHITECTURE.md" not in contracts and "training/shards.py" in contracts


def test_model_card_shows_every_evaluation(tiny_run: TinyRun) -> None:
    from eval.tables import is_count

    card = (tiny_run.root / "train" / "vgloria" / "README.md").read_text()
    assert "(none run)" not in card and "Not evaluated yet" not in card
    for bench in ("coco", "visdial", "vqav2"):
        metrics = json.loads((tiny_run.root / "train" / "vgloria" / "eval" / bench / "metrics.json").read_text())
        assert f"### {bench}" in card
        for key, value in metrics["metrics"].items():
            if isinstance(value, float) and not is_count(key):
                assert f"| {key} | {value:.4f} |" in card, (bench, key)
            elif is_count(key):
                assert f"| {key} | {int(value):,} |" in card, (bench, key)
    assert "| n | 12 |" in card  # 4 VQA images x 3 questions: a count, not 12.0000
    assert "{'" not in card and "shard files" not in card and "1 shard file" in card


def test_quarantined_rows_are_reported(tiny_run: TinyRun) -> None:
    q = pl.read_parquet(tiny_run.root / "sources" / "cc3m" / "train" / "quarantine.parquet")
    assert q.height > 0  # the sample breaks a few CC3M lines on purpose
    md = (tiny_run.root / "reports" / "quarantine.md").read_text()
    for reason, n in q.group_by("reason").len().iter_rows():
        assert re.search(rf"\| {reason} \| {n} \|", md), reason
    assert f"quarantined ({q.height:,})" in (tiny_run.root / "reports" / "README.md").read_text()


def test_vqa_has_a_qualitative_page(tiny_run: TinyRun) -> None:
    page = (tiny_run.root / "train" / "vgloria" / "eval" / "vqav2" / "vqa.html").read_text()
    shard = pl.read_parquet(next((tiny_run.root / "shards" / "reference" / "vqav2" / "val").glob("part-*.parquet")))
    import html

    for q in shard["question"].to_list():
        assert html.escape(q) in page
    assert page.count("<img ") == shard["image_id"].n_unique()


def test_run_root_is_readable_by_the_team(tiny_run: TinyRun) -> None:
    """The run ran under umask 002: no output may be 0600."""
    want = 0o666 & ~UMASK
    checked = [p for p in tiny_run.root.rglob("*") if p.is_file() and p.suffix in (".parquet", ".md", ".json",
                                                                                     ".html", ".png")]
    assert len(checked) > 50
    bad = [p for p in checked if stat.S_IMODE(p.stat().st_mode) & want != want]
    assert not bad, [(str(p), oct(p.stat().st_mode)) for p in bad[:5]]


def test_batch_job_sees_progress_and_no_chatter(tiny_run: TinyRun) -> None:
    log = tiny_run.log
    # Without a terminal each long step logs progress lines (here every update: PTVL_PROGRESS_EVERY_S=0).
    assert re.search(r"train: 1/3 steps \(33%\), loss \d", log), log[-3000:]
    assert re.search(r"train: 3/3 steps \(100%\)", log)
    assert re.search(r"sample LM pretraining: 3/3 steps", log)
    assert re.search(r"images cc3m/train: \d+/40 URLs", log)
    assert re.search(r"eval coco: captions: \d+/\d+", log)
    assert re.search(r"eval vqav2: vqa: 12/12", log)
    # Third-party chatter stays behind -v.
    for noise in ("Parsing model identifier", "Loaded model config", "PTBTokenizer tokenized", "Untokenizable",
                  "generated new fontManager", "No path found after",
                  # img2dataset's own lines (its pool, logger and bar) go to images/<ds>/<split>/img2dataset.log
                  "Starting the downloading of this file", "Sharding file number", "worker  - success"):
        assert noise not in log, noise
    assert "worker  - success" in (tiny_run.root / "images" / "cc3m" / "train" / "img2dataset.log").read_text()


def test_retrain_is_one_command(tiny_run: TinyRun) -> None:
    """`ptvl retrain` trains, evaluates every benchmark and prints the tables beside the earlier run; the
    two runs differ only in the ViT layer, and the rows say so."""
    from eval.llm_facts import format_params, llm_facts

    lm = tiny_run.root / "models" / "tiny-lm"
    res = ptvl("retrain", "--config", str(tiny_run.config), "--llm", str(lm), "--layer", "-2", "--steps", "2")
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    run = tiny_run.root / "train" / "tiny-lm-cls-k1-l-2"
    for bench in ("coco", "visdial", "vqav2"):
        assert (run / "eval" / bench / "metrics.json").is_file()
    out = res.stdout  # the tables; the run line is console output (stderr)
    assert re.search(r"tiny-lm-cls-k1-l-2, finished \(1 earlier", " ".join(res.stderr.split()))
    facts = llm_facts(str(lm))
    name = f"tiny-lm ({facts.model_type}, {format_params(facts.params)})"  # e.g. tiny-lm (gpt_neo, 25.1K)
    assert facts.model_type == "gpt_neo" and facts.params and facts.params > 1000
    t53 = out[out.index("Table 5.3"):out.index("Table 5.4")]
    assert "| LLM | Bridge | Layer | Data Language | Steps | Status | IT2T R@5" in t53
    assert f"| MSCOCO | {name} | cls | L | PT-PT reference | 3 | finished |" in t53  # the earlier run first
    assert f"|  | {name} | cls | L-1 | PT-PT reference | 2 | finished |" in t53  # then the retrained one
    t55 = out[out.index("Table 5.5"):]
    assert "| LLM Backbone | Bridge | Layer |" in t55 and "| cls | L-1 |" in t55 and "| cls | L |" in t55
    # The same LLM without the image, and the options by length alone, scored by the same code: one row each.
    assert t55.count(f"| {name}, no image | – | – | PT-PT reference | – | baseline |") == 1
    assert t55.count("| options by length (no model) | – | – | PT-PT reference | – | baseline |") == 1
    card = (run / "README.md").read_text()
    assert "### vqav2" in card and "ViT layer -2" in card


# ------------------------------------------------------------------ progress without a terminal


def test_progress_logs_lines_without_a_terminal_and_draws_a_bar_on_one(caplog) -> None:
    import io

    from rich.console import Console

    from ptvl_io.progress import ProgressReporter

    caplog.set_level("INFO", logger="ptvl.progress")
    pipe = Console(file=io.StringIO(), force_terminal=False)
    with ProgressReporter("train", 4, unit="steps", fields_fmt="loss {loss:.2f}", console=pipe, every_s=0) as p:
        for step in range(1, 5):
            p.update(step, loss=1.0 / step)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("train: 1/4 steps (25%), loss 1.00, elapsed 00:00")
    assert lines[-1].startswith("train: 4/4 steps (100%), loss 0.25")
    assert len(lines) == 4  # one per update, none repeated at close
    caplog.clear()
    with ProgressReporter("slow", 100, console=pipe, every_s=3600) as p:
        for n in range(1, 101):
            p.update(n)
    assert [r.getMessage()[:21] for r in caplog.records] == ["slow: 100/100 (100%),"]  # only the end
    caplog.clear()
    tty = Console(file=io.StringIO(), force_terminal=True, width=100)
    with ProgressReporter("train", 4, console=tty, every_s=0) as p:
        p.update(4)
    assert not caplog.records and "4/4" in tty.file.getvalue()


# ------------------------------------------------------------------ chatter behind -v, not deleted


def test_third_party_info_is_shown_only_with_verbose() -> None:
    import logging

    from pipeline import console

    def shown(verbose: bool, name: str, level: int) -> bool:
        console.setup_logging(verbose)
        handler = logging.getLogger().handlers[0]
        record = logging.LogRecord(name, level, __file__, 1, "Parsing model identifier", None, None)
        return logging.getLogger().isEnabledFor(level) and all(f.filter(record) for f in handler.filters)

    try:
        assert not shown(False, "root", logging.INFO)  # open_clip logs on the root logger
        assert shown(True, "root", logging.INFO)
        assert shown(False, "root", logging.WARNING)  # warnings always reach the console
        assert shown(False, "ptvl", logging.INFO) and shown(False, "training.train", logging.INFO)
        assert not shown(False, "eval.metrics.caption", logging.DEBUG)
        assert shown(True, "eval.metrics.caption", logging.DEBUG)
    finally:
        logging.basicConfig(force=True)


@pytest.mark.skipif(shutil.which("java") is None, reason="PTBTokenizer needs java")
def test_ptb_tokenizer_stderr_goes_to_the_debug_log(caplog, capfd) -> None:
    from eval.metrics.caption import ptb_tokenize

    caplog.set_level("DEBUG", logger="eval.metrics.caption")
    refs, hyps = ptb_tokenize({1: ["um cão à porta"]}, {1: "gato \ufffd"})
    assert refs == {1: ["um cão à porta"]} and hyps[1][0].startswith("gato")
    relayed = [r.getMessage() for r in caplog.records if r.name == "eval.metrics.caption"]
    assert any("PTBTokenizer tokenized" in m for m in relayed), relayed
    assert "PTBTokenizer" not in capfd.readouterr().err  # nothing straight from the JVM to the console
