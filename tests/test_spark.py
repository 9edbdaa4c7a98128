"""`distributor = "pyspark"` from a profile alone: `ptvl download` attaches to `[download] spark_master`
(here a real local[2] master) and sets PYSPARK_PYTHON itself.

The environment is the one that failed before: no PYSPARK_PYTHON, and a `python3` on the PATH that
is not this interpreter (the venv's bin folder is removed from PATH), so Spark's Python workers would
start an interpreter without img2dataset.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

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

[training]
data = ["cc3m/validation"]
"""


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
