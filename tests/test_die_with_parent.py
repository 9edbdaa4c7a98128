"""ptvl_io.lifetime: processes a library spawns die with the process that spawned them, even after SIGKILL.

The script below stands for ptvl running img2dataset: a "spawn" pool whose workers write their pid and
then work for a minute.  The parent is killed with SIGKILL; inside `spawned_children_die_with_me` the
workers are gone at once, without it they live on (the bug this fixes, shown here so the test can fail).
"""
from __future__ import annotations

import multiprocessing.spawn
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ptvl_io.lifetime import spawned_children_die_with_me

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; die_with_parent "
                                "uses Linux's prctl")

SCRIPT = textwrap.dedent("""
    import multiprocessing, os, sys, time
    from contextlib import nullcontext
    from pathlib import Path
    from ptvl_io.lifetime import spawned_children_die_with_me

    def quick(i):
        return i

    def work(folder):
        Path(folder, str(os.getpid())).write_text("")
        print("worker", os.getpid(), "says hello", flush=True)
        time.sleep(60)

    if __name__ == "__main__":
        folder, tie, log = sys.argv[1], sys.argv[2] == "tie", sys.argv[3]
        with spawned_children_die_with_me(output=log) if tie else nullcontext():
            # maxtasksperchild=1, as img2dataset's 5: the second pair of workers is forked by the pool's
            # worker-handler thread, not by the main thread
            with multiprocessing.get_context("spawn").Pool(2, maxtasksperchild=1) as pool:
                pool.map(quick, [0, 1], chunksize=1)
                pool.map(work, [folder, folder], chunksize=1)
""")


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for whoever adopted it to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _kill_parent_once_workers_run(tmp_path: Path, tie: bool) -> tuple[list[int], str]:
    script = tmp_path / "spawner.py"
    script.write_text(SCRIPT)
    pids = tmp_path / ("tied" if tie else "free")
    pids.mkdir()
    log, console = tmp_path / "workers.log", tmp_path / "console.txt"
    # The console is a file, not a pipe: orphans would hold a pipe open and block the read.
    with console.open("w") as out:
        proc = subprocess.Popen([sys.executable, str(script), str(pids), "tie" if tie else "free", str(log)],
                                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 120  # two interpreters start and import the script on a loaded machine
    while len(list(pids.iterdir())) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, console.read_text()
        time.sleep(0.05)
    time.sleep(0.2)  # the workers' print follows the pid file
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return [int(p.name) for p in pids.iterdir()], console.read_text()


def test_spawned_workers_die_with_a_parent_killed_by_sigkill(tmp_path: Path) -> None:
    workers, console = _kill_parent_once_workers_run(tmp_path, tie=True)
    deadline = time.monotonic() + 2
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(_alive(p) for p in workers)
    # their output went to the log, not to the parent's console
    log = (tmp_path / "workers.log").read_text()
    assert all(f"worker {p} says hello" in log for p in workers)
    assert "says hello" not in console


def test_without_the_tie_the_workers_outlive_their_parent(tmp_path: Path) -> None:
    """The failure the tie prevents, on this machine: the test above would fail without it."""
    workers, console = _kill_parent_once_workers_run(tmp_path, tie=False)
    try:
        time.sleep(2)
        assert all(_alive(p) for p in workers)
        assert "says hello" in console
    finally:
        for p in workers:
            if _alive(p):
                os.kill(p, signal.SIGKILL)


def test_a_pool_that_replaces_workers_still_terminates(tmp_path: Path) -> None:
    """img2dataset's pool replaces a worker every 5 tasks from its handler thread, then terminates.  A tie
    to the forking thread killed those workers when that thread ended, one holding the task-queue lock,
    and terminate() waited for ever (the 200k-URL bench hung there).  In this process, with a timeout."""
    before = multiprocessing.spawn.get_executable()
    script = tmp_path / "pool.py"
    script.write_text(textwrap.dedent("""
        import multiprocessing, time
        from ptvl_io.lifetime import spawned_children_die_with_me

        def double(i):
            return 2 * i

        if __name__ == "__main__":
            with spawned_children_die_with_me():
                pool = multiprocessing.get_context("spawn").Pool(2, maxtasksperchild=1)
                print(sorted(pool.imap_unordered(double, range(6))), flush=True)
                time.sleep(3)  # the replacement workers wait for tasks, one holding the queue's lock
                pool.terminate()
                pool.join()
                del pool
            print("terminated", flush=True)
    """))
    # The tie to the forking thread hung here until this timeout.
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.stdout.split("\n")[:2] == ["[0, 2, 4, 6, 8, 10]", "terminated"], res.stderr[-2000:]
    with spawned_children_die_with_me(output=tmp_path / "x.log"):
        launcher = Path(os.fsdecode(multiprocessing.spawn.get_executable()))
        assert launcher != Path(os.fsdecode(before)) and launcher.is_file()
        assert f"--parent {os.getpid()}" in launcher.read_text()
    assert multiprocessing.spawn.get_executable() == before
    assert not launcher.exists()


def test_die_with_parent_in_a_child_started_any_way(tmp_path: Path) -> None:
    """A child that calls die_with_parent() itself (subprocess, not multiprocessing) dies with its parent;
    one whose parent is already gone when it calls it dies at once."""
    child = ("from ptvl_io.lifetime import die_with_parent; die_with_parent(); print('tied', flush=True); "
             "import time; time.sleep(60)")
    parent = (f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', {child!r}]); "
              "print(p.pid, flush=True); time.sleep(60)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True, env=env)
    pid = int(proc.stdout.readline())  # type: ignore[union-attr]
    assert proc.stdout.readline().strip() == "tied"  # type: ignore[union-attr]  # the child shares the pipe
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(pid)

    late = subprocess.run([sys.executable, "-c", "from ptvl_io.lifetime import die_with_parent; "
                           "die_with_parent(parent_pid=1); print('still here')"], capture_output=True, text=True,
                          env=env, timeout=60)
    assert late.returncode == -signal.SIGKILL and "still here" not in late.stdout


def test_a_forked_child_starts_its_own_spawner(tmp_path: Path) -> None:
    """Luigi runs tasks in forked processes: a block used in the parent must not leave the child waiting on
    the parent's spawner thread, which a fork does not copy."""
    script = tmp_path / "forked.py"
    script.write_text(textwrap.dedent("""
        import multiprocessing, os, signal, sys
        from ptvl_io.lifetime import spawned_children_die_with_me

        def triple(i):
            return 3 * i

        def run():
            with spawned_children_die_with_me():
                with multiprocessing.get_context("spawn").Pool(1) as pool:
                    return pool.map(triple, [1, 2])

        if __name__ == "__main__":
            print("parent", run(), flush=True)
            pid = os.fork()
            if pid == 0:
                signal.alarm(60)  # a hang ends here, not as an orphan
                print("child", run(), flush=True)
                os._exit(0)
            os.waitpid(pid, 0)
    """))
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.stdout.splitlines() == ["parent [3, 6]", "child [3, 6]"], res.stderr[-2000:]
