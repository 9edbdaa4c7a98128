"""translate.visdial_context through the real Luigi pipeline, with the DeepL engine on the fake server.

One small VisDial-only run root is translated and sharded twice: first context-free (the default,
unchanged behaviour), then with the option on.  The second pass must send only the dialogs' history
Q/A, each with its dialog's caption as context, re-use every context-free translation, and rebuild
the VisDial shards with context translations in the history and context-free options around an
unchanged gt index.  A rerun pays nothing.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.settings import ConfigError, load_settings
from tests.fake_deepl import FakeDeepL, fake_translation
from tests.test_pipeline import ptvl
from translation.gold import load_gold
from translation.memory import memory_key

# Importing the CLI in process imports luigi, which warns about a config default on import.
pytestmark = pytest.mark.filterwarnings(r"ignore:\s*Autoloading range tasks:DeprecationWarning")


KEY = "visdial-ctx-key-0000:fx"
CONFIG = """
[run]
name = "visdial-context"
root = "{root}"

[sample]
enabled = true
n_train = 4
n_val = 2
n_coco = 2
n_dialogs = 3
n_vqa = 2
image_size = 32

[download]
processes_count = 1
thread_count = 2
image_size = 32
number_sample_per_shard = 100
timeout = 2
min_image_size = 12

[datasets.cc3m]
enabled = false
[datasets.coco]
enabled = false
[datasets.vqav2]
enabled = false
[datasets.visdial]
splits = ["val"]

[translate]
engines = ["deepl"]
visdial_context = {context}

[engines.deepl]
engine = "deepl"
server_url = "{url}"

[training]
engine = "deepl"
data = ["visdial/val"]
"""


def write(tmp: Path, name: str, url: str, context: bool, extra: str = "") -> Path:
    cfg = tmp / name
    cfg.write_text(CONFIG.format(root=tmp / "run", url=url, context=str(context).lower()) + extra)
    return cfg


def source_dialogs(root: Path) -> list[dict]:
    """The sample's VisDial JSON read directly (the test's own oracle, not the reader): per dialog its
    image id, EN caption and per round (question, answer, options, gt_index) as stripped strings."""
    doc = json.loads((root / "sources" / "visdial" / "visdial_1.0_val.json").read_text())["data"]
    qs, ans = doc["questions"], doc["answers"]
    return [
        {
            "image_id": f"visdial/{d['image_id']}",
            "caption": d["caption"].strip(),
            "rounds": [(qs[r["question"]].strip(), ans[r["answer"]].strip(),
                        [ans[o].strip() for o in r["answer_options"]], r["gt_index"]) for r in d["dialog"]],
        }
        for d in doc["dialogs"]
    ]


def memory_rows(root: Path) -> list[tuple]:
    """Every row of the DeepL engine id's memory files (one per translation part; the folder is named by the
    engine id, whose ENGINE_ID file names it)."""
    out = []
    (folder,) = [d for d in (root / "memory").iterdir()
                 if (d / "ENGINE_ID").exists() and (d / "ENGINE_ID").read_text().startswith("deepl:")]
    for f in sorted(folder.glob("part-*.sqlite")):
        with sqlite3.connect(f) as db:
            out += db.execute("SELECT engine_id, text_hash, text_en, context, text_pt FROM memory").fetchall()
    return out


def shard_dialogs(root: Path) -> dict[str, dict]:
    files = sorted((root / "shards" / "deepl" / "visdial" / "val").glob("part-*.parquet"))
    return {d["image_id"]: d for d in pl.read_parquet(files).to_dicts()}


def run_ok(*args: str) -> str:
    res = ptvl(*args, env={"DEEPL_AUTH_KEY": KEY})
    assert res.returncode == 0, res.stderr[-4000:]
    return res.stdout + res.stderr


def dry_run_row(out: str, label: str) -> list[str]:
    """The cells of the dry-run table row starting with `label` (rich draws cells between │)."""
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if cells and cells[0] == label:
            return cells
    raise AssertionError(f"no dry-run row {label!r} in:\n{out}")


def test_visdial_context_end_to_end(tmp_path: Path) -> None:
    with FakeDeepL(KEY) as server:
        off = write(tmp_path, "off.toml", server.url, context=False)
        on = write(tmp_path, "on.toml", server.url, context=True)
        root = tmp_path / "run"

        # -- context off: the behaviour before the option existed ---------------------------------
        run_ok("run", "--config", str(off), "--until", "shards")
        dialogs = source_dialogs(root)
        assert len(dialogs) == 3
        seg = pl.read_parquet(root / "segments" / "visdial" / "val.parquet")
        free_requests = server.translate_requests()
        assert free_requests and all(r.context is None for r in free_requests)
        # Every distinct string of the run once: the segments and the gold set (curated later, but in the
        # unique-string table, so paid once with the rest and shown by the dry run).
        wanted = set(seg["text_en"].to_list()) | set(load_gold()["en"].to_list())
        assert sorted(server.sent_texts()) == sorted(wanted)
        free_chars = server.character_count
        assert free_chars == sum(len(t) for t in wanted)
        shards = shard_dialogs(root)
        for d in dialogs:
            rounds = shards[d["image_id"]]["rounds"]
            for r, (q, a, opts, gt) in zip(rounds, d["rounds"], strict=True):
                assert r["question"] == fake_translation(q) and r["answer"] == fake_translation(a)
                assert r["answer_options"] == [fake_translation(o) for o in opts]
                assert r["gt_index"] == gt and r["answer_options"][gt] == r["answer"]
        assert not (root / "translated" / "deepl" / "visdial" / "val.context.parquet").exists()

        # -- what the option will send: each dialog's Q and gt A with its caption, distinct pairs -------
        pairs = {(t, d["caption"]) for d in dialogs for q, a, _, _ in d["rounds"] for t in (q, a)}
        pair_chars = sum(len(t) for t, _ in pairs)  # context is not billed

        # In process (the CLI's own function; it only reads the ingested files and the memory).
        res = CliRunner().invoke(app, ["translate", "--engine", "deepl", "--config", str(on), "--dry-run"])
        assert res.exit_code == 0, res.output[-3000:]
        dry = res.output
        assert len(server.translate_requests()) == len(free_requests)  # a dry run sends nothing
        assert dry_run_row(dry, "visdial/val")[3:5] == ["0", "0"]  # context-free strings: all in memory
        ctx_row = dry_run_row(dry, "visdial/val dialogs, caption context")
        assert ctx_row[1:5] == [f"{3 * 20:,}", f"{len(pairs):,}", f"{len(pairs):,}", f"{pair_chars:,}"]
        assert dry_run_row(dry, "all (shared strings once)")[4] == f"{pair_chars:,}"

        # -- context on, same run root: only the dialog text is sent, each with its caption -------------
        run_ok("run", "--config", str(on), "--until", "shards")
        new = server.translate_requests()[len(free_requests):]
        captions = {d["caption"] for d in dialogs}
        assert new and all(r.context in captions for r in new)  # no context-free request at all
        sent = [(t, r.context) for r in new for t in r.texts]
        assert len(sent) == len(set(sent)) and set(sent) == pairs  # each (text, caption) paid once
        assert len(new) == len(captions)  # one request per dialog (well under 50 texts each)
        assert server.character_count == free_chars + pair_chars

        # Memory: context rows under the context engine id, keyed by (text, caption); the rest untouched.
        rows = memory_rows(root)
        ids = {e for e, *_ in rows}
        free_id, ctx_id = sorted(ids)
        assert free_id.endswith("context=off") and ctx_id.endswith("context=on")
        ctx_rows = [r for r in rows if r[0] == ctx_id]
        assert {(en, c) for _, _, en, c, _ in ctx_rows} == pairs
        assert all(h == memory_key(en, c) and pt == fake_translation(en, c) for _, h, en, c, pt in ctx_rows)
        free_rows = [r for r in rows if r[0] == free_id]
        assert len(free_rows) == len(wanted) and all(c is None for _, _, _, c, _ in free_rows)

        # Shards rebuilt under the new policy: history with context, options context-free, same gt index.
        card = json.loads((root / "shards" / "deepl" / "visdial" / "val" / "_SHARDS.json").read_text())
        assert card["visdial_context"] is True and card["kept"] == 3
        shards = shard_dialogs(root)
        for d in dialogs:
            row = shards[d["image_id"]]
            assert row["caption"] == fake_translation(d["caption"]) and row["caption_en"] == d["caption"]
            for r, (q, a, opts, gt) in zip(row["rounds"], d["rounds"], strict=True):
                assert r["question"] == fake_translation(q, d["caption"])
                assert r["answer"] == fake_translation(a, d["caption"])
                assert r["answer_options"] == [fake_translation(o) for o in opts]
                assert r["gt_index"] == gt and opts[gt] == a
                # The gt option is the context-free translation of the same EN answer as the history's.
                assert r["answer_options"][gt] == fake_translation(a) != r["answer"]
        context_table = pl.read_parquet(root / "translated" / "deepl" / "visdial" / "val.context.parquet")
        assert context_table.height == 3 * 20 and set(context_table["engine_id"]) == {ctx_id}

        # -- rerun: the context tasks run again from scratch, and pay nothing ---------------------------
        n_requests = len(server.translate_requests(status=None))
        for p in (root / "translated" / "deepl" / "visdial").glob("*context*"):
            p.unlink()
        for p in (root / "translated" / "deepl" / "_parts").glob("*.json"):
            p.unlink()  # the parts run again too: all memory hits
        out = run_ok("translate", "--engine", "deepl", "--config", str(on))
        part = json.loads(next((root / "translated" / "deepl" / "_parts").glob("*.json")).read_text())
        assert (part["hits"], part["sent"], part["billed_chars"], part["deepl_billed_chars"]) == (
            len(wanted) + len(pairs), 0, 0, 0)
        stats = json.loads((root / "translated" / "deepl" / "visdial" / "_val.stats.json").read_text())
        assert stats["context"]["billed_chars"] == pair_chars  # the memory's count of the split's pairs
        # The final summary: the memory's count beside DeepL's own, over every part attempt of the run.
        total = free_chars + pair_chars
        assert f"billed (memory) {total:,} chars, billed (DeepL) {total:,} chars" in out
        # Nothing translated again (the pre-flight and the audit read /v2/usage, which costs nothing).
        assert len(server.translate_requests(status=None)) == n_requests
        assert server.character_count == free_chars + pair_chars
        again = pl.read_parquet(root / "translated" / "deepl" / "visdial" / "val.context.parquet")
        assert again["text_pt"].to_list() == context_table["text_pt"].to_list()

        # -- the comparison report bills both memory ids: everything the server counted, nothing twice --
        no_gold = write(tmp_path, "on-nogold.toml", server.url, True, "\n[curate]\ngold = false\n")
        run_ok("run", "--config", str(no_gold), "--until", "curate")
        md = (root / "reports" / "compare" / "comparison.md").read_text()
        section = md.split("## Characters billed and estimated cost")[1].split("##")[0]
        billed = dry_run_row(section.replace("|", "│"), "deepl")
        assert "billed (memory) | billed (DeepL)" in section
        assert [int(billed[i].replace(",", "")) for i in (1, 2, 3)] == [server.character_count] * 2 + [0], billed
        assert server.character_count == free_chars + pair_chars


def test_settings_refuse_engines_without_context(tmp_path: Path) -> None:
    """Engines that cannot take a context are refused at start-up, never silently run context-free."""
    url = "http://127.0.0.1:9"
    # `ptvl translate --engine reference` (the always-configured import) with the option on: exit 2 at once.
    res = CliRunner().invoke(app, ["translate", "--engine", "reference", "--config",
                                   str(write(tmp_path, "on.toml", url, context=True)), "--dry-run"])
    assert res.exit_code == 2 and "cannot take a translation context" in res.output
    assert not (tmp_path / "run").exists(), "nothing may run"
    bad = write(tmp_path, "bad.toml", url, context=True).read_text().replace(
        'engines = ["deepl"]', 'engines = ["deepl", "reference"]')
    (tmp_path / "bad.toml").write_text(bad)
    with pytest.raises(ConfigError, match=r"only DeepL engines accept.*'reference' \(engine 'reference'\)"):
        load_settings(tmp_path / "bad.toml")
    own = write(tmp_path, "own.toml", url, context=False).read_text().replace(
        'engine = "deepl"\nserver_url', 'engine = "deepl"\nuse_context = true\nserver_url')
    (tmp_path / "own.toml").write_text(own)
    with pytest.raises(ConfigError, match=r"engines.deepl.use_context.*translate.visdial_context"):
        load_settings(tmp_path / "own.toml")
    assert load_settings(write(tmp_path, "ok.toml", url, context=True)).translate.visdial_context is True


def test_shard_builder_never_falls_back_to_context_free(tmp_path: Path) -> None:
    """A history text without its caption-context translation stops the build; it is not replaced by the
    context-free string (which sits right there in `translated`)."""
    from pipeline.shards import build_visdial_shards

    translated = pl.DataFrame({
        "segment_id": ["visdial/val/caption/7", "visdial/val/question/0", "visdial/val/answer/0"],
        "text_en": ["a cat", "is it red?", "yes"], "text_pt": ["um gato", "é vermelho?", "sim"],
    })
    dialogs = pl.DataFrame({
        "image_id": ["visdial/7"], "caption_segment_id": ["visdial/val/caption/7"],
        "rounds": [[{"question": 0, "answer": 0, "answer_options": [0], "gt_index": 0}]],
        "dense_round": [None], "dense_relevance": [None],
    })
    availability = pl.DataFrame({"image_id": ["visdial/7"], "status": ["success"], "shards_dir": ["shards"],
                                 "key": ["000000000"]})
    context = pl.DataFrame({"image_id": ["visdial/7"], "round": [1], "field": ["question"],
                            "text_pt": ["é vermelho (gato)?"]})  # the round's answer is missing
    with pytest.raises(ValueError, match=r"visdial/7 round 1 answer: no translation with caption context"):
        build_visdial_shards(translated, dialogs, availability, tmp_path, tmp_path, engine="deepl",
                             rows_per_shard=10, context_translated=context)


def test_empty_global_strings_rebuild_as_empty_and_unknown_ids_are_named(tmp_path: Path) -> None:
    """VisDial's global lists may hold empty strings: not segments, yet dialogs may point at them. The
    quarantine records them, and the builder treats exactly those ids as "" (any other gap is an error)."""
    from pipeline.contracts import QUARANTINE
    from pipeline.io import write_parquet_atomic
    from pipeline.shards import build_visdial_shards
    from pipeline.tasks.shards import _empty_visdial_strings

    side = tmp_path / "sources" / "visdial" / "val"
    side.mkdir(parents=True)
    rows = [("visdial", "val", "v.json", 3, "empty_answer", "data.answers[3] is empty", ""),
            ("visdial", "val", "v.json", 5, "empty_question", "data.questions[5] is empty", " "),
            ("visdial", "val", "v.json", 9, "bad_dialog", "dialog 9 ...", "{}")]
    table = pl.DataFrame(rows, schema=QUARANTINE.names, orient="row").to_arrow().cast(QUARANTINE)
    write_parquet_atomic(side / "quarantine.parquet", table, QUARANTINE)
    empty = _empty_visdial_strings(tmp_path, "val")
    assert empty == {"visdial/val/answer/3", "visdial/val/question/5"}
    assert _empty_visdial_strings(tmp_path, "test") == frozenset()

    translated = pl.DataFrame({
        "segment_id": ["visdial/val/caption/7", "visdial/val/question/0", "visdial/val/answer/0"],
        "text_en": ["a cat", "is it red?", "yes"], "text_pt": ["um gato", "é vermelho?", "sim"],
    })
    dialogs = pl.DataFrame({
        "image_id": ["visdial/7"], "caption_segment_id": ["visdial/val/caption/7"],
        "rounds": [[{"question": 0, "answer": 0, "answer_options": [0, 3, 4], "gt_index": 0}]],
        "dense_round": [None], "dense_relevance": [None],
    })
    availability = pl.DataFrame({"image_id": ["visdial/7"], "status": ["success"], "shards_dir": ["shards"],
                                 "key": ["000000000"]})
    # Option 3 is a known empty string and passes; option 4 is neither translated nor empty: named.
    with pytest.raises(ValueError, match=r"^visdial/val/answer/4: no translation"):
        build_visdial_shards(translated, dialogs, availability, tmp_path, tmp_path, engine="deepl",
                             rows_per_shard=10, empty_segments=empty)
    with pytest.raises(ValueError, match=r"^visdial/val/answer/3: no translation"):
        build_visdial_shards(translated, dialogs, availability, tmp_path, tmp_path, engine="deepl",
                             rows_per_shard=10)
