"""What `ptvl retrain` and `ptvl table` say about each run: its LLM (name, model_type, parameters), steps
trained and status, from the files in the run folder, and a retrain that fails part-way still prints its
tables, listing the failure with its one-line error. Luigi is replaced by a fake build that leaves the files
a real one would, so these tests take seconds."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eval.failures import FAILED_NAME, clear_failure, one_line, read_failure, write_failure
from eval.llm_facts import format_params, llm_facts, short_name
from eval.run_records import run_record, trained_steps
from pipeline import train_runs
from pipeline.cli import app
from pipeline.tasks.model import Evaluate, Train
from pipeline.tasks.scheduling import LocalBuild
from ptvl_io import write_json_atomic
from training.config import ModelConfig, RunConfig, TrainConfig, write_run_toml

BENCHMARKS = ["coco", "visdial", "vqav2"]
METRICS = {"coco": {"i2t_r5": 0.5, "t2i_r5": 0.4, "bleu1": 0.3}, "visdial": {"it2t_r5": 0.2, "it2t_meanloss_r5": 0.3},
           "vqav2": {"overall": 0.25}}


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    """A GPT-Neo config without weights: all llm_facts reads (the parameters are counted on `meta`)."""
    from transformers import GPTNeoConfig

    folder = tmp_path_factory.mktemp("models") / "tiny-lm"
    GPTNeoConfig(vocab_size=300, hidden_size=32, num_layers=2, num_heads=4, max_position_embeddings=64,
                 attention_types=[[["global", "local"], 1]]).save_pretrained(folder)
    return folder


def make_run(run: Path, llm: Path, *, layer: int = -1, planned: int = 500, done: int | None = 500,
             evals: tuple[str, ...] = tuple(BENCHMARKS), expected: list[str] | None = BENCHMARKS) -> Path:
    """A run folder as training and evaluation leave it: run.toml, _DONE.json, eval/<b>/metrics.json."""
    write_run_toml(RunConfig(model=ModelConfig(llm=str(llm), bridge="cls", k=1, layer=layer),
                             train=TrainConfig(steps=planned)), run / "run.toml")
    if done is not None:
        write_json_atomic(run / "_DONE.json", {"steps": done})
    for bench in evals:
        record = {"run": str(run), "llm": str(llm), "engine": "reference", "bridge": "cls", "layer": layer, "k": 1,
                  "benchmark": bench, "scoring": {}, "metrics": METRICS[bench]}
        if expected is not None:
            record["profile_benchmarks"] = expected
        write_json_atomic(run / "eval" / bench / "metrics.json", record)
    return run


def test_llm_facts_name_type_and_parameters_without_weights(tiny_lm):
    facts = llm_facts(str(tiny_lm))
    assert (facts.name, facts.model_type, facts.params) == ("tiny-lm", "gpt_neo", 36_928)
    assert llm_facts(str(tiny_lm.parent / "missing")).as_dict() == {"name": "missing", "model_type": None,
                                                                    "params": None}
    assert short_name("Qwen/Qwen2.5-1.5B") == "Qwen2.5-1.5B" and short_name("/m/tiny-lm/") == "tiny-lm"
    assert [format_params(n) for n in (36_928, 1_234_567, 125_000_000, 1_300_000_000, 950, None)] == \
        ["36.9K", "1.2M", "125M", "1.3B", "950", "?"]


def test_failure_records_are_one_line_and_cleared_by_a_success(tmp_path):
    assert one_line(RuntimeError("CUDA out of memory.\n  Traceback (most recent call last)")) == \
        "RuntimeError: CUDA out of memory."
    assert one_line(ValueError()) == "ValueError" and len(one_line("x" * 1000)) == 300
    write_failure(tmp_path / "eval" / "coco", "evaluation", KeyError("image_id"), expected=["coco"], engine="deepl")
    record = read_failure(tmp_path / "eval" / "coco")
    assert record["error"] == "KeyError: 'image_id'" and record["expected"] == ["coco"] and record["engine"] == "deepl"
    (tmp_path / FAILED_NAME).write_text("{not json")
    assert read_failure(tmp_path)["error"].startswith("unreadable _FAILED.json")
    clear_failure(tmp_path / "eval" / "coco")
    assert read_failure(tmp_path / "eval" / "coco") is None


def test_status_steps_and_errors_from_the_run_folder(tmp_path, tiny_lm):
    finished = run_record(make_run(tmp_path / "finished", tiny_lm))
    assert (finished["status"], finished["steps"], finished["steps_planned"], finished["errors"]) == \
        ("finished", 500, 500, {})
    assert finished["llm_facts"] == {"name": "tiny-lm", "model_type": "gpt_neo", "params": 36_928}
    assert run_record(make_run(tmp_path / "short", tiny_lm, done=20))["status"] == "partial"
    # One benchmark failed: the others are results, the run is partial, the error is kept.
    run = make_run(tmp_path / "partial", tiny_lm, evals=("coco", "visdial"))
    write_failure(run / "eval" / "vqav2", "evaluation", RuntimeError("boom\nstack"))
    rec = run_record(run)
    assert rec["status"] == "partial" and rec["errors"] == {"vqav2": "evaluation failed: RuntimeError: boom"}
    # An expected benchmark that was never evaluated (no record either) also leaves the run partial.
    assert run_record(make_run(tmp_path / "missing", tiny_lm, evals=("coco",)))["status"] == "partial"
    # Training failed: no metrics; what the table needs comes from run.toml and the failure record.
    run = make_run(tmp_path / "failed", tiny_lm, done=None, evals=())
    write_failure(run, "training", MemoryError("no memory"), expected=BENCHMARKS, engine="madlad")
    rec = run_record(run)
    assert (rec["status"], rec["engine"], rec["expected"], rec["steps"], rec["llm"]) == \
        ("failed", "madlad", BENCHMARKS, None, str(tiny_lm))
    assert rec["errors"] == {"training": "training failed: MemoryError: no memory"}
    # Killed mid-training: the newest checkpoint says how far it got.
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "step-00000200.pt").write_bytes(b"")
    assert trained_steps(run) == 200
    # A metrics.json wins over an older failure record of the same benchmark.
    run = make_run(tmp_path / "rerun", tiny_lm)
    write_failure(run / "eval" / "coco", "evaluation", "old failure")
    assert run_record(run)["errors"] == {} and run_record(run)["status"] == "finished"
    # Records from before `profile_benchmarks`: a run is judged on what it evaluated.
    assert run_record(make_run(tmp_path / "old", tiny_lm, evals=("coco",), expected=None))["status"] == "finished"
    with pytest.raises(FileNotFoundError, match="no failure recorded; run `ptvl eval` first"):
        run_record(make_run(tmp_path / "untouched", tiny_lm, evals=()))


PROFILE = """
[run]
root = "{root}"

[model]
llm = "{llm}"
bridge = "cls"
k = 1

[train]
steps = 500

[eval]
benchmarks = ["coco", "visdial", "vqav2"]
"""


def _profile(tmp_path: Path, tiny_lm: Path) -> Path:
    config = tmp_path / "profile.toml"
    config.write_text(PROFILE.format(root=tmp_path / "run", llm=tiny_lm))
    make_run(tmp_path / "run" / "train" / "earlier", tiny_lm)  # a finished run of the same root
    return config


def _fake_build(evaluated: tuple[str, ...], fail: str | None, trained: bool = True, *, monkeypatch):
    """luigi's build, replaced: train (run.toml, _DONE.json), evaluate `evaluated`, and let `fail` raise, as
    Luigi would, through the task's own on_failure.  The LLM pre-flight (tests/test_llm_check.py checks it on
    a real tiny LM; this one has no weights) is replaced by a record that it ran before the build."""
    calls: list[str] = []
    monkeypatch.setattr(train_runs, "_preflight", lambda settings, config, workers: calls.append(settings.model.llm))

    def build(tasks: list[Evaluate], workers: int) -> LocalBuild:
        assert calls == [tasks[0].settings.model.llm]  # pre-flighted once, before anything was built
        run, model = Train(config=tasks[0].config).run_dir(), tasks[0].settings.model
        make_run(run, Path(model.llm), layer=model.layer, done=500 if trained else None, evals=evaluated)
        for task in tasks:
            if task.benchmark == fail:
                task.on_failure(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB\nTraceback ..."))
        return LocalBuild(ok=fail is None and trained, status="FAILED", summary_text="")

    return build


def test_a_retrain_with_a_failed_evaluation_prints_its_partial_results(tmp_path, tiny_lm, monkeypatch):
    config = _profile(tmp_path, tiny_lm)
    monkeypatch.setattr(train_runs, "build_local", _fake_build(("coco", "visdial"), fail="vqav2", monkeypatch=monkeypatch))
    res = CliRunner().invoke(app, ["retrain", "--config", str(config), "--llm", str(tiny_lm),
                                                "--layer", "-2", "--steps", "500"])
    assert res.exit_code == 1, res.output  # not finished: scripts see it
    out = res.output
    assert "partial (1 earlier run(s)" in " ".join(out.split())
    run = tmp_path / "run" / "train" / "tiny-lm-cls-k1-l-2"
    assert json.loads((run / "eval" / "vqav2" / FAILED_NAME).read_text())["error"] == \
        "RuntimeError: CUDA out of memory. Tried to allocate 2 GiB"
    vqa = out[out.index("VQAv2 accuracy"):]
    assert "| tiny-lm (gpt_neo, 36.9K) | cls | L | PT-PT reference | unlabelled | 500 | finished | 25.00 | – |" in vqa
    assert ("| tiny-lm (gpt_neo, 36.9K) | cls | L-1 | PT-PT reference | – | 500 | partial: evaluation failed: "
            "RuntimeError: CUDA out of memory. Tried to allocate 2 GiB | – | – | – | – |") in vqa
    t55 = out[out.index("Table 5.5"):out.index("VQAv2 accuracy")]
    assert "| tiny-lm (gpt_neo, 36.9K) | cls | L-1 | PT-PT reference | 500 | partial | **20.0** | – | **30.0** |" in t55


def test_a_retrain_whose_training_died_silently_is_listed_as_failed(tmp_path, tiny_lm, monkeypatch):
    config = _profile(tmp_path, tiny_lm)
    monkeypatch.setattr(train_runs, "build_local", _fake_build((), fail=None, trained=False, monkeypatch=monkeypatch))
    done = train_runs.retrain(config, {"llm": str(tiny_lm)}, 500, "dead", 1, tmp_path / "tables.md")
    assert done.status == "failed" and done.earlier == 1
    error = read_failure(done.run_dir)["error"]
    assert error.startswith("did not finish (Luigi: FAILED) and recorded no error")
    # Same LLM, bridge and layer as the earlier run: the run folder tells the rows apart.
    row = f"| tiny-lm (gpt_neo, 36.9K) | cls | L | dead | PT-PT reference | – | failed: training failed: {error} |"
    assert row in done.tables and "| earlier | PT-PT reference | 500 | finished |" in done.tables
    assert (tmp_path / "tables.md").read_text() == done.tables
    assert not (done.run_dir / "eval").exists()  # no evaluation could start: none is blamed
