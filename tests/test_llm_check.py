"""The LLM pre-flight (training/llm_check.py): five checks that pass on a family ptvl handles, that fail on the
bugs they exist for (a decoder without positions, a cache shared where it cannot be), and a refusal that is
one line with exit code 2 before anything is written, from `ptvl check-llm`, `ptvl train` and `ptvl retrain`."""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pipeline.cli import app
from tests.test_llm_families import build_folder
from training import decoding, scoring
from training.config import ModelConfig
from training.llm_access import load_llm
from training.llm_check import CHECKS, check_llm

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, str]:
    """Tiny random LLM folders: Llama (passes), Bamba (a hybrid cache), Mamba (a state-space cache), Gemma-4
    (refused: its body maps input embeddings back to token ids)."""
    from training.lm_pretrain import train_tokenizer

    root = tmp_path_factory.mktemp("llms")
    train_tokenizer(["um gato preto em cima de uma mesa", "duas pessoas numa praia"] * 20,
                    vocab_size=300).save_pretrained(root / "tok")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {f: build_folder(f, root / "tok", root / f) for f in ("llama", "bamba", "mamba", "gemma4_text")}


def _check(folder: str, **kw) -> object:
    return check_llm(ModelConfig(llm=folder, dtype="fp32"), "cpu", **kw)


def test_a_supported_llm_passes_every_check_in_seconds(folders, one_torch_thread):
    start = time.perf_counter()
    report = _check(folders["llama"])
    took = time.perf_counter() - start
    assert [c.name for c in report.checks] == list(CHECKS)
    assert [c.status for c in report.checks] == ["ok"] * 5, report.checks
    assert report.ok and report.failure() is None and report.model_type == "llama"
    lm, _ = load_llm(ModelConfig(llm=folders["llama"], dtype="fp32"), "cpu")
    assert report.params == sum(p.numel() for p in lm.parameters())
    assert took < 20, f"the pre-flight of a tiny LM took {took:.1f} s"  # ~1 s on an idle core


def test_the_llm_loaded_by_the_preflight_is_handed_to_the_training_once(folders, monkeypatch, one_torch_thread):
    """keep=True: the training's load of the same LLM, dtype and device takes the pre-flight's model (one read
    of a 7B checkpoint, not two); once, and only that LLM."""
    from transformers import AutoModelForCausalLM

    reads = []
    original = AutoModelForCausalLM.from_pretrained.__func__
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained",
                        classmethod(lambda cls, *a, **kw: reads.append(a[0]) or original(cls, *a, **kw)))
    cfg = ModelConfig(llm=folders["llama"], dtype="fp32")
    assert _check(folders["llama"], keep=True).ok and len(reads) == 1
    load_llm(cfg, "cpu")
    assert len(reads) == 1  # handed over
    load_llm(cfg, "cpu")
    assert len(reads) == 2  # taken once: the next load reads the checkpoint
    _check(folders["llama"], keep=True)
    lm, _ = load_llm(cfg.model_copy(update={"dtype": "bf16"}), "cpu")  # another dtype: another LLM
    assert len(reads) == 4 and lm.dtype == torch.bfloat16
    _check(folders["gemma4_text"], keep=True)  # a refused LLM is not kept, and drops what was
    load_llm(cfg, "cpu")
    assert len(reads) == 6


def test_decoding_without_positions_is_caught(folders, monkeypatch, one_torch_thread):
    """The bug the decoding check exists for: Bamba decoded without explicit positions reads its hybrid
    cache's length as 0 and decodes every token at position 0. The check fails; with positions it passes."""
    assert _check(folders["bamba"]).ok
    monkeypatch.setattr(decoding, "takes_positions", lambda body: False)
    report = _check(folders["bamba"])
    assert [c.status for c in report.checks][:3] == ["ok"] * 3
    assert report.checks[3].status == "failed"
    assert "'decoding' failed: cached decoding differs from the uncached forward" in report.failure()


def test_a_state_space_cache_is_never_shared_between_options(folders, monkeypatch, one_torch_thread):
    """Mamba's cache holds a recurrent state, not keys and values: scoring must not copy it across options.
    Forced to, the VisDial check fails; as shipped, the options are scored by full forwards and it passes."""
    assert _check(folders["mamba"]).ok
    monkeypatch.setattr(scoring, "shareable", lambda model, cache: True)
    report = _check(folders["mamba"])
    assert report.checks[-1].name == "visdial" and report.checks[-1].status == "failed", report.checks


def test_a_refusal_is_one_line_and_the_rest_is_skipped(folders, one_torch_thread):
    report = _check(folders["gemma4_text"])
    assert [c.status for c in report.checks] == ["failed", "skipped", "skipped", "skipped", "skipped"]
    line = report.failure()
    assert "\n" not in line and line.startswith(f"LLM {folders['gemma4_text']} (gemma4_text) cannot be used: "
                                                "the pre-flight check 'load' failed: ")
    assert "refuses input rows that are not rows of its embedding table" in line


def _profile(tmp_path: Path, llm: str | None = None) -> Path:
    text = (REPO / "configs" / "sample.toml").read_text().replace('root = "runs/sample"', f'root = "{tmp_path / "root"}"')
    if llm is not None:
        text = text.replace('llm = "{models}/tiny-lm"', f'llm = "{llm}"')
    path = tmp_path / "profile.toml"
    path.write_text(text)
    return path


def test_cli_check_llm_prints_the_table_and_exits_2_on_a_refusal(folders, one_torch_thread):
    ok = CliRunner().invoke(app, ["check-llm", folders["llama"], "--dtype", "fp32", "--device", "cpu"])
    assert ok.exit_code == 0, ok.output
    assert all(name in ok.output for name in CHECKS) and ok.output.count(" ok ") == 5
    bad = CliRunner().invoke(app, ["check-llm", folders["gemma4_text"], "--dtype", "fp32", "--device", "cpu"])
    assert bad.exit_code == 2
    errors = [line for line in bad.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "(gemma4_text)" in errors[0] and "'load' failed" in errors[0]
    assert "Traceback" not in bad.output
    missing = CliRunner().invoke(app, ["check-llm", "/no/such/llm"])
    assert missing.exit_code == 2 and "no such folder" in missing.output


@pytest.mark.parametrize("command", ["train", "retrain", "run"])
def test_train_retrain_and_run_refuse_before_anything_is_written(folders, tmp_path, command, one_torch_thread):
    """A refused LLM stops `ptvl train`, `ptvl retrain` and `ptvl run` (reaching train) in one line (exit 2), not
    in a Luigi traceback ending "rerun to resume", and nothing is written under the run root."""
    llm = folders["gemma4_text"]
    if command == "run":
        args = ["run", "--config", str(_profile(tmp_path, llm)), "--until", "train"]
    else:
        args = [command, "--config", str(_profile(tmp_path)), "--llm", llm, "--run-name", "new"]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 2, out.output
    assert "(gemma4_text) cannot be used: the pre-flight check 'load' failed" in out.output
    assert "Traceback" not in out.output and "rerun" not in out.output
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize("llm", ["llama", "gemma4_text"])
def test_run_checks_the_llm_the_run_builds_once_built_and_before_training(folders, tmp_path, monkeypatch, llm,
                                                                          one_torch_thread):
    """The sample's LLM is built by the DAG itself (PrepareSampleModels): `ptvl run` builds it first, then
    pre-flights it, then runs the rest; a refusal stops the run there, in one line."""
    import shutil

    from pipeline import run_stage
    from pipeline.settings import ConfigError, load_settings
    from pipeline.tasks.model import PrepareSampleModels

    config = _profile(tmp_path)
    settings = load_settings(config)
    built = []

    def build_the_llm(tasks, **kw):
        built.extend(tasks)
        shutil.copytree(folders[llm], settings.root / "models" / "tiny-lm")
        return run_stage.DagOutcome(complete=True)

    monkeypatch.setattr(run_stage, "run_dag", build_the_llm)
    plan = run_stage.PlannedRun("train", [], translates=False, trains=True)
    kw = dict(workers=1, scheduler=run_stage.Scheduler(), allow_partial=False)
    if llm == "gemma4_text":
        with pytest.raises(ConfigError, match=r"\(gemma4_text\) cannot be used: the pre-flight check 'load'"):
            run_stage.preflight_run(settings, str(config), plan, **kw)
    else:
        lines = run_stage.preflight_run(settings, str(config), plan, **kw)
        assert len(lines) == 1 and "(llama, " in lines[0] and "5 checks passed" in lines[0]
    assert [type(t) for t in built] == [PrepareSampleModels]
    assert not (settings.root / "train").exists()
