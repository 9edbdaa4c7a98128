"""Scale-out through a real `luigid`: two `ptvl run` processes share one DAG.

The two processes read the same profile content from two different paths (two machines mounting the
profile at different places), so the test also proves that task identity is the profile's content.
luigid runs with the repository's configs/luigid.cfg, whose task history (SQLite) records every
RUNNING event: no task may appear there twice.  Both processes must exit 0, both must have run part
of the DAG, and the shards must equal, byte for byte, those of a single-process run of the profile.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import free_port, running_luigid
from tests.test_pipeline import PTVL, SMALL, ptvl
from tests.test_repeatable import _tables

pytestmark = pytest.mark.timeout(1200)  # three runs up to shards: minutes on a loaded 2-core machine

REPO = Path(__file__).resolve().parent.parent
LUIGID = Path(sys.executable).parent / "luigid"

PROFILE = SMALL + """
[datasets.cc3m]
splits = ["train", "validation"]

[datasets.coco]
splits = ["val"]
url_base = "file://{sources}/coco"

[datasets.visdial]
enabled = false

[datasets.vqav2]
enabled = false
"""


@pytest.fixture
def luigid(tmp_path: Path, request):
    """A real luigid on a free local port, its state, logs and task history inside tmp_path, with
    configs/luigid.cfg (a test may lower its retry_delay through `@pytest.mark.retry_delay(s)`)."""
    pytest.importorskip("sqlalchemy", reason="luigid's task history needs SQLAlchemy (pip install 'ptvl[luigid]')")
    cfg = (REPO / "configs" / "luigid.cfg").read_text()
    mark = request.node.get_closest_marker("retry_delay")
    if mark:
        cfg = cfg.replace("retry_delay = 60", f"retry_delay = {mark.args[0]}")
    home = tmp_path / "luigid"
    with running_luigid(home, cfg) as port:
        yield port, home / "luigid-history.sqlite"


def _runs_per_task(history: Path) -> Counter:
    """RUNNING events per task, keyed by family and parameters *without* the profile's path: a task
    run once per machine because its id held the path would count twice here."""
    db = sqlite3.connect(history)
    try:
        params: dict[int, list] = {}
        for record, name, value in db.execute("SELECT task_id, name, value FROM task_parameters"):
            if name != "config":
                params.setdefault(record, []).append((name, value))
        runs = Counter()
        for record, family in db.execute(
            "SELECT t.id, t.name FROM task_events e JOIN tasks t ON t.id = e.task_id WHERE e.event_name = 'RUNNING'"
        ):
            runs[(family, tuple(sorted(params.get(record, []))))] += 1
        return runs
    finally:
        db.close()


def test_task_identity_is_the_profile_content_not_its_path(tmp_path: Path) -> None:
    from pipeline.settings import load_settings
    from pipeline.tasks import STAGES

    text = PROFILE.replace("{root}", str(tmp_path / "run"))
    paths = [tmp_path / "a" / "profile.toml", tmp_path / "b" / "c" / "other-name.toml", tmp_path / "changed.toml"]
    for p in paths[:2]:
        p.parent.mkdir(parents=True)
        p.write_text(text)
    paths[2].write_text(text.replace("timeout = 2", "timeout = 3"))  # one setting differs

    def ids(path: Path) -> list[str]:
        return sorted(t.task_id for t in STAGES["shards"][1](str(path), load_settings(path)))

    assert ids(paths[0]) == ids(paths[1])
    assert not set(ids(paths[0])) & set(ids(paths[2]))
    assert str(paths[0]) not in " ".join(ids(paths[0]))


def _ran(output: str) -> int:
    """Tasks this process ran, from `ptvl run`'s closing line."""
    return int(output.split("stage shards complete: ")[1].split(" ")[0])


def test_two_processes_share_one_dag_through_luigid(luigid, tmp_path: Path) -> None:
    port, history = luigid
    text = PROFILE.replace("{root}", str(tmp_path / "run"))
    configs = [tmp_path / "machine-a" / "profile.toml", tmp_path / "machine-b" / "mnt" / "ptvl.toml"]
    for cfg in configs:
        cfg.parent.mkdir(parents=True)
        cfg.write_text(text)
    env = {**os.environ, "COLUMNS": "200"}
    procs = [
        subprocess.Popen([*PTVL, "run", "--config", str(cfg), "--until", "shards", "--scheduler-host", "127.0.0.1",
                          "--scheduler-port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, env=env)
        for cfg in configs
    ]
    outputs = [p.communicate(timeout=1100)[0] for p in procs]
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-4000:]
        assert "stage shards complete" in out

    runs = _runs_per_task(history)
    twice = {task: n for task, n in runs.items() if n > 1}
    assert not twice, f"tasks run more than once: {twice}"
    ran = [_ran(out) for out in outputs]
    # Each process's own list of what it ran: no task id in both (ids are the same on both machines, as
    # they come from the profile's content).  The history's count is not compared exactly: once, on a
    # heavily loaded machine, two runs reported by the processes had no RUNNING event in luigid's history.
    ran_ids = [line.strip() for out in outputs for line in out.splitlines() if line.strip().startswith("ran ")]
    assert len(ran_ids) == sum(ran) and len(set(ran_ids)) == len(ran_ids), f"a task ran in both: {ran_ids}"
    assert min(ran) >= 1 and sum(ran) >= len(runs), f"tasks run by each process: {ran}; history: {sorted(runs)}"

    # The same profile in one process: the same tasks, and the same shards, byte for byte.
    shutil.move(tmp_path / "run", tmp_path / "shared-run")
    single = ptvl("run", "--config", str(configs[0]), "--until", "shards")
    assert single.returncode == 0, single.stderr[-4000:]
    assert _ran(single.stdout + single.stderr) == len(runs) > 10
    shared, alone = _tables(tmp_path / "shared-run"), _tables(tmp_path / "run")
    assert shared.keys() == alone.keys() and any(k.startswith("shards/") for k in shared)
    for name, table in shared.items():
        assert table.equals(alone[name]), name
    for part in (tmp_path / "run").glob("shards/**/part-*.parquet"):
        assert part.read_bytes() == (tmp_path / "shared-run" / part.relative_to(tmp_path / "run")).read_bytes()


FAILING_DAG = """
import sys

import luigi

from pipeline.tasks.base import PtvlTask
from pipeline.tasks.scheduling import run_dag


class Broken(PtvlTask):
    def output(self):
        return self.target("broken.done")

    def run(self):
        raise RuntimeError("this task always fails")


class After(PtvlTask):
    def requires(self):
        return Broken(config=self.config)

    def output(self):
        return self.target("after.done")

    def run(self):
        self.output().open("w").close()


if __name__ == "__main__":
    outcome = run_dag([After(config=sys.argv[1])], scheduler_host="127.0.0.1", scheduler_port=int(sys.argv[2]),
                      wait_interval=0.2, wait_jitter=0.3)
    print("complete" if outcome.complete else f"incomplete {outcome.incomplete} failed here {outcome.failed_here}")
    sys.exit(0 if outcome.complete else 1)
"""


@pytest.mark.retry_delay(1)
def test_a_task_that_always_fails_is_retried_then_both_processes_stop(luigid, tmp_path: Path) -> None:
    """Kept-alive processes must not wait forever on a task that fails every time: luigid offers it
    again (here after 1 s), disables it after base.RETRY_COUNT failures, and both exit non-zero."""
    from pipeline.tasks.base import RETRY_COUNT

    port, history = luigid
    cfg = tmp_path / "profile.toml"
    cfg.write_text(f'[run]\nroot = "{tmp_path / "run"}"\n')
    script = tmp_path / "failing_dag.py"
    script.write_text(FAILING_DAG)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, str(script), str(cfg), str(port)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=env) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 1, out[-3000:]
        assert "incomplete" in out.splitlines()[-1]
    runs = _runs_per_task(history)
    assert [n for (family, _), n in runs.items() if family == "Broken"] == [RETRY_COUNT]
    assert not [family for family, _ in runs if family == "After"]
    assert not (tmp_path / "run" / "after.done").exists()


def test_unreachable_luigid_is_a_one_line_error_before_any_task(tmp_path: Path) -> None:
    cfg = tmp_path / "profile.toml"
    cfg.write_text(PROFILE.replace("{root}", str(tmp_path / "run")))
    res = ptvl("run", "--config", str(cfg), "--scheduler-host", "127.0.0.1", "--scheduler-port", str(free_port()))
    assert res.returncode == 2
    assert "cannot reach luigid at 127.0.0.1" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "run").exists()
