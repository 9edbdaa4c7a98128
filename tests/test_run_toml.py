"""run.toml and the `ptvl train` profile copy are written with tomli_w: whatever a setting holds (control
characters, quotes, non-ASCII keys, None in lists or inline tables) reads back with tomllib as written,
None left out."""
from __future__ import annotations

import math
import random
import tomllib
from pathlib import Path
from typing import Any

import pytest

from pipeline.settings import load_settings
from training.config import (
    ModelConfig,
    RunConfig,
    RunInputs,
    drop_none,
    read_run_toml,
    to_toml,
    write_run_toml,
)

REPO = Path(__file__).resolve().parent.parent

# Characters the hand-made writer got wrong (\r, \x07, \x00, DEL were written raw; non-ASCII keys bare) and
# the ones any TOML string must escape.
NASTY = ["\r", "\x07", "\x00", "\x7f", "\x1b", "\b", "\f", "\t", "\n", "\r\n", '"', "'", "\\", '\\"', "'''",
         '"""', "#", "=", "[", "]", "{", "}", ".", " ", "ç", "ã", "€", "😀", "\u2028", "\ufeff", "\u0085"]
KEYS = ["a", "bare_key-1", "", " ", "com espaço", "ação", "日本", "a.b", "a=b", '"q"', "\\", "\r", "\x07", "#k",
        "1", "true", "😀"]


def _string(rng: random.Random) -> str:
    return "".join(rng.choice(NASTY + ["x", "Y", "0"]) for _ in range(rng.randint(0, 8)))


def _scalar(rng: random.Random) -> Any:
    kind = rng.randrange(6)
    if kind == 0:
        return _string(rng)
    if kind == 1:
        return rng.randint(-(2**63), 2**63 - 1)
    if kind == 2:
        return rng.choice([0.0, -0.0, 1e-300, 3e-4, -1.5e30, 1 / 0.07, math.inf, -math.inf])
    if kind == 3:
        return rng.choice([True, False])
    return None  # kinds 4 and 5: TOML has no null, so None is the case most worth covering


def _value(rng: random.Random, depth: int) -> Any:
    kind = rng.randrange(4) if depth < 3 else 0
    if kind == 0:
        return _scalar(rng)
    if kind == 1:  # arrays of scalars (None among them)
        return [_scalar(rng) for _ in range(rng.randint(0, 4))]
    if kind == 2:  # arrays of tables (written inline or as [[...]])
        return [_table(rng, depth + 1) for _ in range(rng.randint(1, 3))]
    return _table(rng, depth + 1)


def _table(rng: random.Random, depth: int) -> dict[str, Any]:
    return {rng.choice(KEYS) + _string(rng)[:2]: _value(rng, depth) for _ in range(rng.randint(0, 4))}


@pytest.mark.parametrize("seed", range(300))
def test_any_nested_data_round_trips_with_none_left_out(seed: int) -> None:
    data = _table(random.Random(seed), 0)
    text = to_toml(data, header=f"seed {seed}")
    assert tomllib.loads(text) == drop_none(data)
    assert text.startswith(f"# seed {seed}\n")


@pytest.mark.parametrize("s", NASTY + ["".join(NASTY), "C:\\runs\\a\rb", "linha\u0007sino"])
def test_nasty_strings_round_trip_as_values_and_as_keys(s: str) -> None:
    data = {"model": {"llm": s, s: [s, None, s], "bridge_kwargs": {s: s, "gone": None}}}
    assert tomllib.loads(to_toml(data)) == {"model": {"llm": s, s: [s, s], "bridge_kwargs": {s: s}}}


def test_none_is_dropped_recursively_from_tables_and_lists() -> None:
    data = {"run": None, "model": {"compile": None, "bridge_kwargs": {"drop": None, "queries": [1, None, 2],
                                                                      "nested": {"x": None, "y": [None]}}},
            "list_of_tables": [{"a": None, "b": 1}, None]}
    want = {"model": {"bridge_kwargs": {"queries": [1, 2], "nested": {"y": []}}},
            "list_of_tables": [{"b": 1}]}
    assert drop_none(data) == want
    assert tomllib.loads(to_toml(data)) == want
    assert drop_none(("a", None)) == ["a"]  # tuples (pydantic's betas) become arrays, as tomllib reads them


def test_header_lines_stay_comments_even_with_control_characters() -> None:
    text = to_toml({"t": {"a": 1}}, header="first line\nC:\\perfil\x07.toml\twith tab\n\nação")
    assert text.splitlines()[:4] == ["# first line", "# C:\\perfil\\x07.toml\twith tab", "# ", "# ação"]
    assert tomllib.loads(text) == {"t": {"a": 1}}
    assert not to_toml({"t": {"a": 1}}).startswith("#")  # no header: no comment line


def test_the_sample_profile_round_trips_as_ptvl_train_writes_it() -> None:
    """pipeline.cli.train_profile writes the user's whole profile back (nested tables, inline tables)."""
    data = tomllib.loads((REPO / "configs" / "sample.toml").read_text(encoding="utf-8"))
    assert tomllib.loads(to_toml(data, header="configs/sample.toml with the overrides of `ptvl train`")) == data


def test_a_run_toml_of_the_sample_profile_round_trips(tmp_path: Path) -> None:
    """The run.toml the Train step writes for the sample profile (settings resolved as training.train
    resolves them on a CPU) reads back as the same RunConfig, also with awkward paths and bridge kwargs."""
    s = load_settings(REPO / "configs" / "sample.toml")
    models = tmp_path / "ráiz\r#1" / "models"
    model = s.model.model_copy(update={"llm": s.model.llm.replace("{models}", str(models)),
                                       "clip": s.model.clip.replace("{models}", str(models)),
                                       "compile": False, "fused_pass": False})
    shard = tmp_path / 'shards "pt"' / "part-00000.parquet"
    inputs = RunInputs(shards=[str(shard)], shard_bytes=[123], features=None, device=None,
                       run_dir=str(tmp_path / "train" / "vgloria"), root=str(tmp_path), profile="configs/sample.toml")
    cfg = RunConfig(model=model, train=s.train, inputs=inputs)
    path = write_run_toml(cfg, tmp_path / "train" / "vgloria" / "run.toml",
                          header="V-Glória run; `ptvl train --config run.toml` reproduces it")
    assert read_run_toml(path) == cfg
    assert path.read_text(encoding="utf-8").startswith("# V-Glória run; `ptvl train --config run.toml` reproduces it\n")
    assert [p.name for p in path.parent.iterdir()] == ["run.toml"]  # no temporary file left beside it

    # bridge_kwargs can hold None (an argument left at the bridge's default): left out, read back without it
    odd = cfg.model_copy(update={"model": model.model_copy(update={"bridge_kwargs": {
        "head_dim": 64, "dropout": None, "names": ["a", None, "b\x07"], "opts": {"é": None, "ok": "\r"}}})})
    back = read_run_toml(write_run_toml(odd, tmp_path / "odd.toml"))
    assert back.model.bridge_kwargs == {"head_dim": 64, "names": ["a", "b\x07"], "opts": {"ok": "\r"}}
    assert back.train == cfg.train and back.inputs == cfg.inputs
    assert ModelConfig.model_validate(back.model.model_dump()) == back.model
