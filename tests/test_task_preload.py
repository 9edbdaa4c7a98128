"""A task's slow imports (PtvlTask.preload) happen once, in the worker, before Luigi forks the task processes.

With `--workers N` Luigi forks one process per task. A module that each task imported itself would be imported
again in every task process (torch, transformers and open_clip take seconds each); imported once in the worker
before the fork, every task process inherits it. The probe module below appends its importer's pid to a file
each time it is imported, so the test counts real imports, not time.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

PROBE = """
import os
with open(os.environ["PROBE_LOG"], "a") as f:
    f.write(f"{os.getpid()}\\n")
"""

DAG = """
import json
import os
import sys

import luigi

from pipeline.tasks.base import PtvlTask
from pipeline.tasks.scheduling import run_dag


class Uses(PtvlTask):
    n = luigi.IntParameter()
    preload = ("ptvl_preload_probe",)

    def output(self):
        return self.target(f"uses-{self.n}.json")

    def run(self):
        inherited = "ptvl_preload_probe" in sys.modules
        import ptvl_preload_probe  # noqa: F401 - what run() needs
        with self.output().open("w") as f:
            json.dump({"pid": os.getpid(), "inherited": inherited}, f)


class All(PtvlTask):
    def requires(self):
        return [Uses(config=self.config, n=i) for i in range(3)]

    def output(self):
        return self.target("all.done")

    def run(self):
        self.output().open("w").close()


if __name__ == "__main__":
    print(os.getpid())
    outcome = run_dag([All(config=sys.argv[1])], workers=int(sys.argv[2]))
    sys.exit(0 if outcome.complete else 1)
"""


@pytest.mark.parametrize("workers", [1, 3])
def test_a_task_preload_is_imported_once_before_the_fork(tmp_path: Path, workers: int) -> None:
    (tmp_path / "ptvl_preload_probe.py").write_text(PROBE)
    (tmp_path / "dag.py").write_text(DAG)
    cfg = tmp_path / "profile.toml"
    cfg.write_text(f'[run]\nroot = "{tmp_path / "run"}"\n')
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}", "PROBE_LOG": str(tmp_path / "imports.log")}
    res = subprocess.run([sys.executable, str(tmp_path / "dag.py"), str(cfg), str(workers)], capture_output=True,
                         text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    worker_pid = int(res.stdout.split()[0])
    imports = (tmp_path / "imports.log").read_text().split()
    runs = [json.loads(p.read_text()) for p in sorted((tmp_path / "run").glob("uses-*.json"))]
    assert len(runs) == 3
    # Once in all: in the worker. With one worker the tasks run in it (nothing is forked, nothing preloaded:
    # the first task imports it); with three, each task process is forked after the worker imported it.
    assert imports == [str(worker_pid)]
    if workers == 1:
        assert {r["pid"] for r in runs} == {worker_pid} and sorted(r["inherited"] for r in runs) == [False, True, True]
    else:
        assert worker_pid not in {r["pid"] for r in runs} and all(r["inherited"] for r in runs)
