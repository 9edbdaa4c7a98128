"""The Spark session behind `[download] distributor = "pyspark"` (docs/spark.md).

img2dataset's pyspark distributor uses the active SparkSession, or creates a *local* one with 16 GB of
driver memory.  So that a profile alone can send the download to a cluster, whatever command runs it
(`ptvl run`, `ptvl download`, the library call), `spark_session` is entered around each img2dataset
call:

- an active session (one the caller built, e.g. in a notebook) is used as it is;
- otherwise a session is created on `[download] spark_master` (`spark://host:7077`, `yarn`,
  `k8s://...`; default `local[processes_count]`) with `[download] spark_conf`, and stopped after the
  call;
- Spark's Python workers start `PYSPARK_PYTHON`, by default whatever `python3` is on the PATH, which
  then fails to unpickle img2dataset's downloader ("No module named 'img2dataset'").  Unless the
  environment or `spark_conf` names one, it is set to this interpreter: right for local mode and for a
  cluster whose nodes mount the same environment at the same path; otherwise ship an environment
  with `spark.archives` and name its interpreter in `spark.pyspark.python` (docs/spark.md);
- `quiet_to`: the JVM it starts writes its console output (log4j's WARN lines, stage progress) to that
  file instead of the terminal.  The JVM inherits file descriptors 1 and 2 when it is launched, so they
  point at the file only while `getOrCreate` starts it, and are restored at once.

A standalone cluster needs no Spark download: pip's pyspark has `spark-class`, which starts a master
and workers (`spark-class org.apache.spark.deploy.master.Master ...`; README, Scale-out).
"""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

log = logging.getLogger("ptvl")


@contextmanager
def _fds_to(path: Path) -> Iterator[None]:
    """File descriptors 1 and 2 appended to `path` for the duration of the block (a child started inside
    keeps them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (fd, *saved):
            os.close(f)


@contextmanager
def spark_session(master: str | None, conf: dict[str, str], local_cores: int,
                  quiet_to: Path | None = None) -> Iterator[object]:
    """Yield the SparkSession img2dataset will use (see the module docstring)."""
    if "spark.pyspark.python" not in conf:
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    try:
        from pyspark.sql import SparkSession  # deferred: pyspark is an optional extra
    except ImportError:
        raise RuntimeError("[download] distributor = \"pyspark\" needs pyspark: pip install 'ptvl[spark]' "
                           "(and Java 17+)") from None
    active = SparkSession.getActiveSession()
    if active is not None:
        log.info("img2dataset on the active Spark session (master %s)", active.sparkContext.master)
        yield active
        return
    builder = SparkSession.builder.appName("ptvl-download").master(master or f"local[{local_cores}]")
    for key, value in conf.items():
        builder = builder.config(key, value)
    with _fds_to(quiet_to) if quiet_to is not None else nullcontext():
        spark = builder.getOrCreate()
    log.info("img2dataset on Spark master %s", spark.sparkContext.master)
    try:
        yield spark
    finally:
        spark.stop()
