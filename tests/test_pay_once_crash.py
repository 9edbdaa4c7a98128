"""Pay once after a crash, and when two runs start at once (issue #23), judged by the fake DeepL server's own
log of every text it billed (`FakeDeepL.sent_texts`, `character_count`), never by ptvl's own figures.

A small run root is written directly (segments only, no sample, no images), so each `ptvl translate` is a
few seconds: 240 captions, DeepL requests of 5 texts, a slow server so requests are in flight when killed.

- kill -9 of `ptvl translate --workers 4`: its workers send nothing after the kill (they finish the request
  in flight, store it and stop), and the rerun pays no text twice;
- kill -9 of a one-process run (the request in flight is lost), then a rerun with another part count: at
  most that request is paid twice, and the summary says exactly how much, closing the killed attempt;
- two `ptvl translate` at once on one root: no text paid twice;
- a renamed engine table, and a root laid out by table name: nothing paid again; a table whose settings
  differ is named a new engine by the pre-flight;
- an unexplained difference (another client on the key): exit code 3, `ptvl status`, acknowledged with
  `--accept-billing-difference`; a failed run still prints what it billed.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import deepl.http_client
import polars as pl
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.contracts import SEGMENTS
from pipeline.io import write_parquet_atomic
from pipeline.ledger import read_attempts
from tests.fake_deepl import FakeDeepL
from tests.helpers import running_luigid
from tests.test_pipeline import PTVL
from translation.textkey import text_hash

pytestmark = pytest.mark.filterwarnings(r"ignore:\s*Autoloading range tasks:DeprecationWarning")

KEY = "crash-test-key-0000:fx"
N_TEXTS = 240
PER_REQUEST = 5
CONFIG = """
[run]
name = "crash"
root = "{root}"
[sample]
enabled = false
[datasets.cc3m]
splits = {splits}
[datasets.coco]
enabled = false
[datasets.visdial]
enabled = false
[datasets.vqav2]
enabled = false
[translate]
engines = ["{table}"]
parts = {parts}
[curate]
gold = false
[engines.{table}]
engine = "deepl"
server_url = "{url}"
max_texts_per_request = {per_request}
{extra}
[training]
engine = "{table}"
data = ["cc3m/train"]
"""


def texts() -> list[str]:
    return [f"a photo of thing number {i} on a {'very ' * (i % 3)}sunny day" for i in range(N_TEXTS)]


def profile(tmp: Path, url: str, *, parts: int, table: str = "deepl", extra: str = "", name: str = "p.toml",
            splits: str = '["train"]') -> Path:
    root = tmp / "run"
    seg = root / "segments" / "cc3m" / "train.parquet"
    if not seg.exists():
        rows = [(f"cc3m/train/{i}", "cc3m", "train", str(i), "caption", t, text_hash(t)) for i, t in enumerate(texts())]
        write_parquet_atomic(seg, pl.DataFrame(rows, schema=SEGMENTS.names, orient="row").to_arrow(), SEGMENTS)
    cfg = tmp / name
    cfg.write_text(CONFIG.format(root=root, url=url, parts=parts, table=table, per_request=PER_REQUEST, extra=extra,
                                 splits=splits))
    return cfg


COMMANDS = {"translate": ("translate", "--engine", "deepl"), "translate_eu": ("translate", "--engine", "deepl_eu"),
            "run": ("run", "--until", "translate")}


def start(cfg: Path, *args: str, command: str = "translate") -> subprocess.Popen:
    """`ptvl translate` (or `ptvl run --until translate`) in the background, its output to a file beside the
    profile (`output`): a pipe would tie the test to every process holding it, orphans included."""
    log = open(cfg.parent / f"{cfg.stem}.{time.monotonic_ns()}.out", "w")  # noqa: SIM115 - closed by `output`
    p = subprocess.Popen([*PTVL, *COMMANDS[command], "--config", str(cfg), *args],
                         env={**os.environ, "DEEPL_AUTH_KEY": KEY, "COLUMNS": "200"}, stdout=log,
                         stderr=subprocess.STDOUT, text=True)
    p.log = log
    return p


def output(p: subprocess.Popen) -> str:
    p.wait(timeout=300)
    p.log.close()
    return Path(p.log.name).read_text()


def ptvl(*args: str) -> tuple[int, str]:
    """`ptvl ARGS` in this process (one worker: the tasks run here too), as a user would see it: a second
    spared per call over a new interpreter, on a loaded machine."""
    res = CliRunner().invoke(app, list(args), env={"DEEPL_AUTH_KEY": KEY, "COLUMNS": "200"}, terminal_width=200)
    return res.exit_code, res.output


def translate(cfg: Path, *args: str, engine: str = "deepl") -> tuple[int, str]:
    return ptvl("translate", "--engine", engine, "--config", str(cfg), *args)


@pytest.fixture(autouse=True)
def _restore_client_globals(monkeypatch):
    # The DeepL engine sets the client's module globals (retries, timeout); in-process runs must not leak them.
    monkeypatch.setattr(deepl.http_client, "max_network_retries", deepl.http_client.max_network_retries)
    monkeypatch.setattr(deepl.http_client, "min_connection_timeout", deepl.http_client.min_connection_timeout)


def unique_chars() -> int:
    return sum(map(len, texts()))


def paid_twice(server: FakeDeepL) -> list[str]:
    """Texts the server billed more than once (its own log)."""
    return [t for t, n in Counter(server.sent_texts()).items() if n > 1]


def summary_line(server: FakeDeepL) -> str:
    """The billing line that equals the server's own counter: memory = unique characters, DeepL = server."""
    return f"billed (memory) {unique_chars():,} chars, billed (DeepL) {server.character_count:,} chars"


def children(pid: int) -> list[int]:
    """The processes `pid` started (Luigi's task processes), from /proc."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d.name))
            except (OSError, IndexError):
                continue
    return out


def alive(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) not in ("Z", "X")
    except OSError:
        return False


def wait_for(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def ledger(root: Path) -> list:
    (folder,) = [p for p in (root / "memory").iterdir() if (p / "ENGINE_ID").exists()]
    return read_attempts(folder / "_ledger")


@pytest.mark.parametrize("command", ["translate", "run"])
def test_kill_9_of_a_multi_worker_run_leaves_no_sender_and_the_rerun_pays_nothing_twice(tmp_path: Path, command: str):
    with FakeDeepL(KEY, slow_s=0.3) as server:
        cfg = profile(tmp_path, server.url, parts=4)
        proc = start(cfg, "--workers", "4", command=command)
        # Several parts are sending at once, with requests stored and more to come.
        wait_for(lambda: len(server.translate_requests()) >= 8 and len(children(proc.pid)) >= 2, "the workers")
        workers = children(proc.pid)
        t_kill = time.monotonic()
        proc.kill()
        output(proc)
        wait_for(lambda: not any(alive(p) for p in workers), "the orphaned workers to stop", timeout=30)
        # After the kill, a worker may only finish the request it had in flight: a request arriving after the
        # kill is allowed only from a connection whose previous request was answered before the kill (it was
        # on its way), never once the worker got an answer after the kill; and no usage request at all.
        after = [r for r in server.requests if r.arrived > t_kill]
        for r in after:
            before = [q for q in server.requests if q.peer == r.peer and q.arrived < r.arrived]
            assert r.path == "/v2/translate" and all(q.answered is not None and q.answered < t_kill for q in before)
        print(f"measured[{command} --workers 4]: {len(workers)} task processes, "
              f"{len(server.requests) - len(after)} requests before the kill, {len(after)} arriving after it "
              "(each already on its way)")
        stopped = ledger(tmp_path / "run")
        # Every worker closed its attempt: the ones mid-part stopped before their next request.
        assert stopped and all(a.ended for a in stopped)
        assert any((a.outcome or "").startswith("Stopping") for a in stopped)
        assert sum(a.in_flight_chars for a in stopped) == 0  # every intent closed: nothing lost in flight
        rerun = start(cfg, "--workers", "4", command=command)
        out = output(rerun)
        assert rerun.returncode == 0, out[-3000:]
        print(f"measured[{command} --workers 4, rerun]: paid twice {len(paid_twice(server))} texts, "
              f"{server.character_count - unique_chars()} chars")
        assert paid_twice(server) == [] and set(server.sent_texts()) == set(texts())
        assert server.character_count == unique_chars()
        assert summary_line(server) in out and "WARNING" not in out


def test_kill_9_in_flight_then_a_rerun_with_another_part_count_explains_the_difference(tmp_path: Path):
    with FakeDeepL(KEY, slow_s=0.25) as server:
        cfg = profile(tmp_path, server.url, parts=2)
        proc = start(cfg)  # one process: the kill takes the request in flight with it
        # Killed as a request arrives at the server: its answer (0.25 s late) never reaches the memory.
        wait_for(lambda: len(server.translate_requests()) >= 6, "some requests", timeout=120)
        proc.kill()
        output(proc)
        killed = ledger(tmp_path / "run")
        assert len(killed) == 1 and not killed[0].ended and killed[0].memory_billed > 0
        code, out = translate(profile(tmp_path, server.url, parts=3, name="p3.toml"))
        assert code == 0, out[-3000:]
        twice = paid_twice(server)
        print(f"measured[kill in flight, parts 2 -> 3]: paid twice {len(twice)} texts, "
              f"{server.character_count - unique_chars()} chars (one request holds {PER_REQUEST} texts)")
        assert len(twice) <= PER_REQUEST  # at most the request in flight at the kill
        assert set(server.sent_texts()) == set(texts())
        extra = sum(map(len, twice))
        assert server.character_count == unique_chars() + extra
        # The killed attempt is in both totals (closed by the rerun that took its lease over), and the
        # difference is explained to the character.
        assert summary_line(server) in out, out[-2000:]
        assert (f"paid twice {extra:,} chars" in out or extra == 0) and "unexplained" not in out
        attempts = ledger(tmp_path / "run")
        assert sum(a.memory_billed for a in attempts) == unique_chars()
        assert any(killed[0].id in a.closes for a in attempts)
        # The journal named the request in flight before it left: what was paid twice is among its texts.
        died = next(a for a in attempts if a.id == killed[0].id)
        assert {text_hash(t) for t in twice} <= set(died.in_flight_keys) and extra <= died.in_flight_chars


def test_two_translate_processes_at_once_pay_each_text_once(tmp_path: Path):
    """Two `ptvl translate` of one table, and a third of another table with the same settings (one engine id:
    one memory, one lease per part), all at once on one root, no luigid."""
    with FakeDeepL(KEY, slow_s=0.05) as server:
        cfg = profile(tmp_path, server.url, parts=4)
        same = profile(tmp_path, server.url, parts=4, table="deepl_eu", name="eu.toml")
        procs = [start(cfg, "--workers", "2"), start(cfg, "--workers", "2"),
                 start(same, "--workers", "2", command="translate_eu")]
        outs = [output(p) for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], [o[-2000:] for o in outs]
        print(f"measured[three translates at once]: paid twice {len(paid_twice(server))} texts, "
              f"{server.character_count - unique_chars()} chars")
        assert paid_twice(server) == [] and set(server.sent_texts()) == set(texts())
        assert server.character_count == unique_chars()
        assert summary_line(server) in "".join(outs)
        # Each part was sent by one process; the others' attempts found it all in the memory.
        attempts = ledger(tmp_path / "run")
        assert sum(a.memory_billed for a in attempts) == unique_chars()
        assert {a.engine for a in attempts} <= {"deepl", "deepl_eu"} and len(attempts) == 12


def test_a_renamed_table_or_an_old_layout_pays_nothing_and_new_settings_are_named(tmp_path: Path):
    with FakeDeepL(KEY) as server:
        code, out = translate(profile(tmp_path, server.url, parts=2))
        assert code == 0, out[-3000:]
        paid, requests = server.character_count, len(server.translate_requests(None))
        assert paid == unique_chars()
        # The same settings under another table name: the same engine id, the same memory.
        code, out = translate(profile(tmp_path, server.url, parts=2, table="deepl_eu", name="eu.toml"), engine="deepl_eu")
        assert code == 0, out[-3000:]
        assert server.character_count == paid and len(server.translate_requests(None)) == requests
        assert "new engine id" not in out
        t = pl.read_parquet(tmp_path / "run" / "translated" / "deepl_eu" / "cc3m" / "train.parquet")
        assert t["text_pt"].to_list() == [f"PT[{x}]" for x in t["text_en"].to_list()]
        # A root laid out by table name (before the engine-id folders): its memory is read, never paid again.
        memory = tmp_path / "run" / "memory"
        (folder,) = [p for p in memory.iterdir() if (p / "ENGINE_ID").exists()]
        (memory / "deepl").mkdir()
        for f in folder.glob("*.sqlite"):
            f.rename(memory / "deepl" / f.name)
        shutil.rmtree(folder)
        code, out = translate(profile(tmp_path, server.url, parts=3, name="p3.toml"))
        assert code == 0, out[-3000:]
        assert server.character_count == paid and len(server.translate_requests(None)) == requests
        # Settings that change the output are a new engine: the dry run says so before anything is paid.
        cfg = profile(tmp_path, server.url, parts=2, table="deepl_formal", extra='formality = "more"', name="f.toml")
        code, out = ptvl("translate", "--engine", "deepl_formal", "--config", str(cfg), "--dry-run")
        assert code == 0, out[-3000:]
        flat = " ".join(out.split())
        assert "engine deepl_formal: new engine id deepl:" in flat and ":formality=more:" in flat
        assert f"the memory holds {paid:,} billed characters ({N_TEXTS} texts) under deepl:" in flat
        assert server.character_count == paid


def test_an_unexplained_difference_exits_3_until_acknowledged_and_a_failed_run_prints_its_billing(tmp_path: Path):
    with FakeDeepL(KEY, slow_s=0.05) as server:
        cfg = profile(tmp_path, server.url, parts=1)
        # Another client on the same key, while the part runs: 777 characters nobody in this run sent.
        def other_client() -> None:
            wait_for(lambda: len(server.translate_requests()) >= 3, "the run's requests")
            with server._lock:
                server.character_count += 777

        thread = threading.Thread(target=other_client, daemon=True)
        thread.start()
        code, out = translate(cfg)
        thread.join()
        flat = " ".join(out.split())
        assert code == 3, out[-3000:]
        assert "+777 characters unexplained" in flat and f"billed (DeepL) {server.character_count:,} chars" in flat
        code, status = ptvl("status", "--config", str(cfg))
        assert code == 3 and "+777 characters unexplained" in " ".join(status.split())
        assert re.search(r"translate +done", status), status
        code, out = translate(cfg, "--accept-billing-difference")
        assert code == 0 and "+777 unexplained characters acknowledged" in " ".join(out.split()), out[-3000:]
        code, out = translate(cfg)
        assert code == 0 and "WARNING" not in out and "+777 chars acknowledged" in out
        # A run stopped by the quota (HTTP 456) fails (2), and still says what it billed.
        more = [f"another caption {i} with new words" for i in range(40)]
        rows = [(f"cc3m/validation/{i}", "cc3m", "validation", str(i), "caption", t, text_hash(t))
                for i, t in enumerate(more)]
        write_parquet_atomic(tmp_path / "run" / "segments" / "cc3m" / "validation.parquet",
                             pl.DataFrame(rows, schema=SEGMENTS.names, orient="row").to_arrow(), SEGMENTS)
        server.character_limit = server.character_count + 100
        cfg = profile(tmp_path, server.url, parts=1, splits='["train", "validation"]', name="both.toml")
        code, out = translate(cfg, "--allow-partial")
        assert code == 2 and "HTTP 456" in out, out[-3000:]
        assert (f"billed (memory) {server.character_count - 777:,} chars, billed (DeepL) "
                f"{server.character_count:,} chars") in out.replace("\n", " ")


@pytest.fixture
def fast_luigid(tmp_path: Path):
    """A real luigid that declares a silent worker lost after 3 s and offers its tasks again 1 s later (the
    defaults, 60 s and 15 min, are what made the issue's takeover take 150 s), looking for lost workers at each
    request for work (configs/luigid.cfg), not only in its sweep once a minute."""
    cfg = "[scheduler]\nworker_disconnect_delay = 3\nretry_delay = 1\nprune_on_get_work = true\n"
    with running_luigid(tmp_path / "luigid", cfg) as port:
        yield port


def test_kill_9_under_luigid_then_another_process_takes_over_and_pays_nothing_twice(tmp_path: Path, fast_luigid,
                                                                                   monkeypatch):
    (tmp_path / "luigi.cfg").write_text("[worker]\nkeep_alive = true\nwait_interval = 0.2\nping_interval = 0.5\n")
    monkeypatch.setenv("LUIGI_CONFIG_PATH", str(tmp_path / "luigi.cfg"))  # inherited by the two processes
    with FakeDeepL(KEY, slow_s=0.3) as server:
        cfg = profile(tmp_path, server.url, parts=2)
        args = ("--workers", "2", "--scheduler-host", "127.0.0.1", "--scheduler-port", str(fast_luigid))
        first = start(cfg, *args, command="run")
        wait_for(lambda: len(server.translate_requests()) >= 6, "the first machine's requests")
        first.kill()
        at_kill = len(server.translate_requests(None))
        output(first)
        second = start(cfg, *args, command="run")  # at once: luigid still thinks the parts run on the first
        out = output(second)
        assert second.returncode == 0, out[-3000:]
        print(f"measured[luigid]: {at_kill} translate requests before the kill; paid twice "
              f"{len(paid_twice(server))} texts, {server.character_count - unique_chars()} chars")
        assert paid_twice(server) == [] and set(server.sent_texts()) == set(texts())
        assert server.character_count == unique_chars()
        assert summary_line(server) in out and "WARNING" not in out
        # Each part: the first machine's attempt stopped before its next request, the second finished it.
        attempts = ledger(tmp_path / "run")
        assert sorted(a.part for a in attempts) == [0, 0, 1, 1] and all(a.ended for a in attempts)
