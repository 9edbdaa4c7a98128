"""`distributor = "pyspark"` from a profile alone: `ptvl download` attaches to `[download] spark_master`
(here a real local[2] master) and sets PYSPARK_PYTHON itself.

The environment is the one that failed before: no PYSPARK_PYTHON, and a `python3` on the PATH that
is not this interpreter (the venv's bin folder is removed from PATH), so Spark's Python workers would
start an interpreter without img2dataset.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from tests.helpers import free_port
from tests.test_pipeline import PTVL, SMALL

PROFILE = SMALL + """spark_master = "local[2]"
distributor = "pyspark"
spark_conf = { "spark.ui.enabled" = "false", "spark.driver.memory" = "1g" }

[datasets.cc3m]
splits = ["validation"]

[datasets.coco]
enabled = false

[datasets.visdial]
enabled = false

[datasets.vqav2]
enabled = false
"""
# No [training] table: `ptvl download` (the images stage) never reads it, so its default training data
# (cc3m/train, not enabled here) is not an error (it was before each stage checked only its own tables).


@pytest.mark.timeout(900)
def test_pyspark_distributor_from_the_cli_attaches_to_spark_master(tmp_path: Path) -> None:
    pytest.importorskip("pyspark", reason="pyspark not installed (pip install 'ptvl[spark]')")
    if shutil.which("java") is None:
        pytest.skip("pyspark needs a Java runtime (17+)")
    cfg = tmp_path / "spark.toml"
    cfg.write_text(PROFILE.replace("{root}", str(tmp_path / "run")))
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin)
    env = {k: v for k, v in os.environ.items() if k not in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")}
    env.update(PATH=path, COLUMNS="200")
    res = subprocess.run([*PTVL, "download", "--config", str(cfg)], capture_output=True, text=True, env=env,
                         timeout=850)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert "img2dataset on Spark master local[2]" in out
    avail = pl.read_parquet(tmp_path / "run" / "images" / "cc3m" / "validation" / "availability.parquet")
    assert avail.height == 20
    ok = avail.filter(pl.col("status") == "success").height
    assert 14 <= ok < 20  # the sample breaks ~10% of CC3M URLs on purpose; every other image downloads
    assert set(avail.filter(pl.col("status") != "success")["reason"]) <= {
        "file_not_found", "not_an_image", "decode_error", "too_small"}


# ------------------------------------------------------------------ a standalone cluster from pip's pyspark


def _spark_class() -> Path:
    """pip's pyspark has no sbin/start-master.sh, but it has bin/spark-class (also on the venv's PATH)."""
    import pyspark

    found = shutil.which("spark-class", path=str(Path(sys.executable).parent))
    return Path(found) if found else Path(pyspark.__file__).parent / "bin" / "spark-class"


@pytest.fixture(scope="module")
def standalone(tmp_path_factory) -> tuple[str, Path]:
    """A master and two 1-core workers on 127.0.0.1, started as README's recipe starts them; stopped after."""
    pytest.importorskip("pyspark", reason="pyspark not installed (pip install 'ptvl[spark]')")
    if shutil.which("java") is None:
        pytest.skip("pyspark needs a Java runtime (17+)")
    tmp = tmp_path_factory.mktemp("standalone")
    port = free_port()
    # spark-class finds pip's Spark through `python3` on the PATH (an activated venv) or PYSPARK_PYTHON; the
    # tests run the venv's interpreter without activating it, so they name it, as docs/spark.md says.
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOCAL_DIRS": str(tmp), "NO_ALBUMENTATIONS_UPDATE": "1",
           "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable)}
    spark_class = str(_spark_class())
    commands = [[spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                 "--webui-port", str(free_port())]]
    commands += [[spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", "1",
                  "--memory", "1g", "--webui-port", str(free_port()), "--work-dir", str(tmp / f"work-{i}"),
                  f"spark://127.0.0.1:{port}"] for i in range(2)]
    logs = [tmp / f"{name}.log" for name in ("master", "worker-0", "worker-1")]
    procs = []
    try:
        for cmd, log in zip(commands, logs, strict=True):
            with log.open("w") as out:  # each JVM in a session of its own, ended as a group below
                procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                              start_new_session=True))
        deadline = time.monotonic() + 300  # three JVMs starting on a loaded 2-core machine
        while logs[0].read_text().count("Registering worker") < 2:
            assert all(p.poll() is None for p in procs), "\n".join(x.read_text()[-2000:] for x in logs)
            assert time.monotonic() < deadline, logs[0].read_text()[-3000:]
            time.sleep(0.5)
        yield f"spark://127.0.0.1:{port}", tmp
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def _shards(out: Path) -> pl.DataFrame:
    """Every row of every img2dataset shard, without the per-run columns (none here: rows are by key)."""
    frames = [pl.read_parquet(p) for p in sorted((out / "shards").glob("*.parquet"))]
    return pl.concat(frames).sort("key")


@pytest.mark.timeout(900)
def test_standalone_cluster_gives_the_local_result(standalone: tuple[str, Path], tmp_path: Path, caplog) -> None:
    """`spark_master = "spark://127.0.0.1:PORT"` on a cluster started with spark-class: the same availability
    table and the same shards, byte for byte, as the multiprocessing run on the same URLs."""
    from pipeline.images.download import download_images
    from pipeline.images.settings import DownloadSettings
    from tests.faultmix import KINDS, FaultMixServer, fault_mix
    from tests.test_images import _items

    base = dict(processes_count=2, thread_count=4, image_size=32, timeout=1, min_image_size=16,
                number_sample_per_shard=12)
    conf = {"spark.ui.enabled": "false", "spark.driver.memory": "1g", "spark.executor.memory": "512m",
            "spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1", "spark.cores.max": "2"}
    master, cluster_dir = standalone
    caplog.set_level("INFO", logger="ptvl")
    with FaultMixServer(timeout_s=1) as srv:
        # Timeouts and resets are left out: their raw message depends on timing ("timed out" or "The read
        # operation timed out"), not on the distributor.
        rows = [r for r in fault_mix(srv.base, 70) if r[1] not in ("timeout", "reset")]
        items = _items(tmp_path / "items.parquet", [u for u, _ in rows])
        local = download_images(items, tmp_path / "local", DownloadSettings(**base))
        cluster = download_images(items, tmp_path / "cluster", DownloadSettings(
            **base, distributor="pyspark", spark_master=master, spark_conf=conf))
    assert pl.read_parquet(tmp_path / "cluster" / "availability.parquet").equals(
        pl.read_parquet(tmp_path / "local" / "availability.parquet"))
    assert _shards(tmp_path / "cluster").equals(_shards(tmp_path / "local"))
    assert cluster.by_reason == local.by_reason
    assert len(cluster.attempts[0].shards) == len(local.attempts[0].shards) == -(-len(rows) // 12)  # 12 per shard
    av = pl.read_parquet(tmp_path / "cluster" / "availability.parquet")
    assert [KINDS[k].reason for _, k in rows] == [
        dict(zip(av["image_id"], av["reason"], strict=True))[f"cc3m/train/{i}"] for i in range(len(rows))]
    # the shards ran on the cluster: one executor on each worker, each with its own stderr
    assert all(list((cluster_dir / f"work-{i}").glob("app-*/*/stderr")) for i in range(2))
    assert f"img2dataset on Spark master {master}" in caplog.text
    # img2dataset's and the driver JVM's console output went to the log
    assert "Starting the downloading of this file" in (tmp_path / "cluster" / "img2dataset.log").read_text()
