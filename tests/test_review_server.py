"""The `ptvl review` process as a person starts it: `python -m pipeline.cli review ...` hands over to a light
server process of its own (pipeline/review/launch.py): no torch, a small resident size that 300 MB bodies
do not grow, the token printed once and never on a command line; and the options checked at start, each
with one line (a blank reviewer, a wildcard --allow-host, a short token)."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from tests.helpers import free_port
from tests.test_review_app import build_root

REPO = Path(__file__).resolve().parent.parent
MAX_IDLE_RSS_KB = 250 * 1024
SET_TOKEN = "a-token-the-person-set-0123456789"


def _config(tmp_path: Path) -> Path:
    root = build_root(tmp_path / "run", engines=("reference",))
    config = tmp_path / "review.toml"
    config.write_text(f'[run]\nroot = "{root}"\n\n[datasets.cc3m]\nsplits = ["train"]\n\n'
                      '[datasets.visdial]\nsplits = ["val"]\n')
    return config


def _rss_kb(pid: int) -> int:
    return int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1))


@pytest.fixture
def review_process(tmp_path):
    """`ptvl review` on a free port, the token set by the person in $PTVL_REVIEW_TOKEN; (process, port, log)."""
    config, port = _config(tmp_path), free_port()
    log = tmp_path / "review.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "review", "--config", str(config),
                                 "--port", str(port), "--reviewer", "ana"], cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, "PTVL_REVIEW_TOKEN": SET_TOKEN})
    try:
        deadline = time.monotonic() + 90
        while "?token=" not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ptvl review did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        _get(f"http://127.0.0.1:{port}/api/queues", SET_TOKEN)  # answering
        yield proc, port, log
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _get(url: str, token: str | None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"} if token else {})
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _push(port: int, head: str, chunks: int, chunk: bytes) -> str:
    """Send `head`, then `chunks` x `chunk` until the server stops reading; its answer."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(head.encode())
        try:
            for _ in range(chunks):
                s.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        s.settimeout(5)
        try:
            return s.recv(4096).decode("utf-8", "replace")
        except (ConnectionResetError, TimeoutError):
            return ""


def test_the_server_process_is_light_and_300_mb_bodies_do_not_grow_it(review_process) -> None:
    proc, port, log = review_process
    maps = Path(f"/proc/{proc.pid}/maps").read_text()
    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
    assert b"pipeline.review" in cmdline  # the CLI handed over to the server process (same pid)
    assert "torch" not in maps and "libcuda" not in maps, "the review process loaded torch"
    assert _get(f"http://127.0.0.1:{port}/", None) == 401
    for path in ("/", "/q/sample/0", "/image/cc3m/train/cc3m/train/1"):  # a page and an image served first
        assert _get(f"http://127.0.0.1:{port}{path}", SET_TOKEN) == 200, path
    idle = _rss_kb(proc.pid)
    assert idle <= MAX_IDLE_RSS_KB, f"idle RSS {idle / 1024:.0f} MB"
    assert "pyarrow/_dataset" not in Path(f"/proc/{proc.pid}/maps").read_text()  # ~50 MB, never needed here
    peak = [idle]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_kb(proc.pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    head = (f"POST /api/correct HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: token {SET_TOKEN}\r\n"
            "Content-Type: application/json\r\n")
    mb = b"[" * (1 << 20)
    declared = _push(port, head + "Content-Length: 314572800\r\n\r\n", 300, mb)
    streamed = _push(port, head + "Transfer-Encoding: chunked\r\n\r\n", 300, b"100000\r\n" + mb + b"\r\n")
    done.set()
    sampler.join()
    assert declared.startswith("HTTP/1.1 413") and "refused unread" in declared
    assert streamed.startswith("HTTP/1.1 413") and "refused while it streamed" in streamed
    assert peak[0] <= 2 * idle, f"RSS {idle / 1024:.0f} MB idle, {peak[0] / 1024:.0f} MB under 300 MB bodies"
    assert _get(f"http://127.0.0.1:{port}/api/queues", SET_TOKEN) == 200  # still serving


def test_the_token_is_printed_once_and_never_on_a_command_line(review_process) -> None:
    proc, port, log = review_process
    out = log.read_text()
    assert out.count(SET_TOKEN) == 1 and f"open http://127.0.0.1:{port}/?token={SET_TOKEN}" in out
    assert SET_TOKEN.encode() not in Path(f"/proc/{proc.pid}/cmdline").read_bytes()
    assert _get(f"http://127.0.0.1:{port}/api/queues", SET_TOKEN) == 200
    assert _get(f"http://127.0.0.1:{port}/api/queues", "not-the-token-0123456789") == 401
    assert log.read_text().count(SET_TOKEN) == 1  # requests log nothing of it


@pytest.fixture
def no_exec(monkeypatch) -> list:
    """The CLI's hand-over, recorded instead of replacing the test process."""
    calls: list = []

    def execve(path, argv, env):
        calls.append((argv, env))
        raise SystemExit(0)

    monkeypatch.setattr(os, "execve", execve)
    return calls


@pytest.mark.parametrize("args,env,message", [
    (["--reviewer", " "], {}, "--reviewer is blank"),
    (["--reviewer", "ana\x1b[2J"], {}, "--reviewer has U+001B (ESC, a control character) at position 3"),
    (["--allow-host", "*"], {}, "--allow-host '*' is not a host name"),
    (["--allow-host", "http://proxy:8080"], {}, "is not a host name"),
    ([], {"PTVL_REVIEW_TOKEN": "short"}, "$PTVL_REVIEW_TOKEN must be 16 to 256 characters"),
    (["--token-file", "/nonexistent/token"], {}, "cannot read the token file /nonexistent/token"),
])
def test_bad_options_fail_at_start_in_one_line(tmp_path, no_exec, args, env, message) -> None:
    res = CliRunner().invoke(app, ["review", "--config", str(_config(tmp_path)), *args],
                             env={"COLUMNS": "300", **env})
    assert res.exit_code == 2 and message in " ".join(res.output.split()), res.output
    assert "Traceback" not in res.output and not no_exec


def test_good_options_hand_over_without_the_token(tmp_path, no_exec) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(SET_TOKEN + "\n")
    res = CliRunner().invoke(app, ["review", "--config", str(_config(tmp_path)), "--reviewer", " rui ",
                                   "--host", "0.0.0.0", "--allow-host", "Review.Lab", "--token-file", str(token_file)])
    assert res.exit_code == 0, res.output
    (argv, env), = no_exec
    assert argv[1:3] == ["-m", "pipeline.review"] and SET_TOKEN not in " ".join(argv)
    joined = " ".join(argv)
    assert "--reviewer rui " in joined and "--allow-host review.lab" in joined and "--split cc3m/train" in joined
    assert str(REPO) in env["PYTHONPATH"].split(os.pathsep)
