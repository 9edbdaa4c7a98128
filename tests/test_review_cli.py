"""`ptvl memory export` / `ptvl memory import` carry the human-review overlay beside the translation memory."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.layout import RunLayout
from pipeline.memory_files import open_memory
from translation.memory import MemoryRow
from translation.overlay import HumanOverlay
from translation.textkey import text_hash

E = "opus:en>pt:beam=4"
TEXTS = {"a dog": "um cachorro", "two cats": "dois gatos"}


def _invoke(*args: str):
    res = CliRunner().invoke(app, list(args), env={"COLUMNS": "300"}, terminal_width=300)
    return res.exit_code, res.output


def _config(tmp_path: Path, name: str) -> tuple[Path, Path]:
    cfg = tmp_path / f"{name}.toml"
    root = tmp_path / name
    cfg.write_text(f'[run]\nroot = "{root}"\n')
    return cfg, root


def _state(path: Path) -> tuple:
    with HumanOverlay(path, read_only=True) as ov:
        return ([asdict(r) for r in ov.history(E, text_hash("a dog"))], ov.verdicts(E),
                [asdict(g) for g in ov.gold()], ov.digest())


def test_memory_export_import_carries_the_overlay(tmp_path):
    cfg_a, root_a = _config(tmp_path, "a")
    with open_memory(RunLayout(root_a).shared_memory) as mem:
        mem.put_batch(E, [MemoryRow(text_hash(en), en, pt) for en, pt in TEXTS.items()])
    with HumanOverlay(RunLayout(root_a).human_overlay) as ov:
        ov.record_correction(engine_id=E, text_hash=text_hash("a dog"), text_en="a dog", text_pt="um cão",
                             replaces="um cachorro", who="ana")
        ov.record_verdict(engine_id=E, text_hash=text_hash("a dog"), flag="brazilian", verdict="confirmed", who="ana")
        ov.add_gold(text_hash=text_hash("a dog"), text_en="a dog", text_pt="um cão", style="cc3m", who="ana",
                    from_engine=E)
    expected = _state(RunLayout(root_a).human_overlay)

    out = tmp_path / "share" / "mem.parquet"
    out.parent.mkdir()
    code, text = _invoke("memory", "export", str(out), "--config", str(cfg_a))
    assert code == 0, text
    assert "exported 2 translations" in text and "exported 3 human-review rows" in text
    assert (tmp_path / "share" / "mem.human.parquet").is_file()

    cfg_b, root_b = _config(tmp_path, "b")
    code, text = _invoke("memory", "import", str(out), "--engine-id", E, "--config", str(cfg_b))
    assert code == 0, text
    assert "2 rows: 2 new" in text and "3 human-review rows: 3 new, 0 already present" in text
    assert _state(RunLayout(root_b).human_overlay) == expected
    with open_memory(RunLayout(root_b).shared_memory, read_only=True) as mem:  # the machine text is untouched
        assert mem.lookup(E, [text_hash("a dog")])[text_hash("a dog")].text_pt == "um cachorro"
    # again: nothing new, nothing changed
    code, text = _invoke("memory", "import", str(out), "--engine-id", E, "--config", str(cfg_b))
    assert code == 0 and "3 human-review rows: 0 new, 3 already present" in text
    assert _state(RunLayout(root_b).human_overlay) == expected

    # the overlay file alone (no --engine-id needed: it names its engines), into a third run
    cfg_c, root_c = _config(tmp_path, "c")
    code, text = _invoke("memory", "import", str(tmp_path / "share" / "mem.human.parquet"), "--config", str(cfg_c))
    assert code == 0, text
    assert _state(RunLayout(root_c).human_overlay) == expected


def test_no_human_and_runs_without_overlay(tmp_path):
    cfg, root = _config(tmp_path, "a")
    with open_memory(RunLayout(root).shared_memory) as mem:
        mem.put_batch(E, [MemoryRow(text_hash("a dog"), "a dog", "um cão")])
    code, text = _invoke("memory", "export", str(tmp_path / "m.parquet"), "--config", str(cfg))
    assert code == 0 and "human-review" not in text and not (tmp_path / "m.human.parquet").exists()
    HumanOverlay(RunLayout(root).human_overlay).close()
    code, text = _invoke("memory", "export", str(tmp_path / "n.parquet"), "--no-human", "--config", str(cfg))
    assert code == 0 and not (tmp_path / "n.human.parquet").exists()
    cfg_b, root_b = _config(tmp_path, "b")
    code, text = _invoke("memory", "import", str(tmp_path / "m.parquet"), "--config", str(cfg_b))
    assert code == 2 and "--engine-id is required" in text
    assert not RunLayout(root_b).human_overlay.exists()


def test_a_bad_overlay_file_is_a_clear_error_and_imports_nothing(tmp_path):
    import pyarrow.parquet as pq

    cfg, root = _config(tmp_path, "a")
    with HumanOverlay(tmp_path / "src.sqlite") as ov:
        ov.record_verdict(engine_id=E, text_hash=text_hash("a dog"), flag="brazilian", verdict="confirmed", who="a")
        ov.export_parquet(tmp_path / "x.human.parquet")
    t = pq.read_table(tmp_path / "x.human.parquet")
    pq.write_table(t.set_column(t.column_names.index("verdict"), "verdict", [["perhaps"]]), tmp_path / "bad.parquet")
    code, text = _invoke("memory", "import", str(tmp_path / "bad.parquet"), "--config", str(cfg))
    assert code == 2 and "unknown verdict 'perhaps'" in text and "Traceback" not in text
    with HumanOverlay(RunLayout(root).human_overlay, read_only=True) as ov:
        assert ov.is_empty()
