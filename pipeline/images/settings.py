"""DownloadSettings: how img2dataset downloads one split (the `[download]` table of the run settings)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class DownloadSettings(BaseModel):
    """img2dataset settings for one split.  Defaults suit real CC3M on one 16-core machine."""

    model_config = ConfigDict(extra="forbid")

    processes_count: int = Field(16, ge=1, description="worker processes (or Spark cores in local mode)")
    thread_count: int = Field(64, ge=1, description="download threads per process")
    image_size: int = Field(256, ge=8, description="target size in pixels (see resize_mode)")
    # keep_ratio: smaller side -> image_size, nothing cropped; CLIP's own preprocessing crops later.
    resize_mode: Literal["no", "border", "keep_ratio", "keep_ratio_largest", "center_crop"] = "keep_ratio"
    resize_only_if_bigger: bool = True  # never upscale small images (wasted bytes)
    output_format: Literal["parquet", "webdataset", "files"] = "parquet"
    encode_format: Literal["jpg", "png", "webp"] = "jpg"
    encode_quality: int = Field(95, ge=1, le=100)
    retries: int = Field(0, ge=0, description="img2dataset's immediate per-URL retries; see retry_failed")
    # img2dataset passes this to urllib: it bounds each socket operation (connect, every read), NOT the
    # whole request.  A server that trickles a byte every few seconds keeps a download thread busy for
    # as long as it keeps trickling; thread_count bounds how many such slots one process can lose.
    timeout: int = Field(10, ge=1, description="seconds of socket inactivity (connect or any read) before a "
                                               "URL fails as `timeout`; not a whole-request deadline")
    number_sample_per_shard: int = Field(10_000, ge=1)
    distributor: Literal["multiprocessing", "pyspark"] = "multiprocessing"
    subjob_size: int = Field(1000, ge=1, description="shards per Spark job (pyspark only)")
    # pyspark only (pipeline/spark.py): the cluster to attach to when no SparkSession is active
    # (spark://host:7077, yarn, k8s://...; None: local[processes_count]) and its Spark settings.
    spark_master: str | None = None
    spark_conf: dict[str, str] = {}
    # Dead image hosts often answer with a 1x1 or tiny placeholder that decodes fine; configs/full.toml
    # sets 64 px.  0 (the library default) keeps every size.
    min_image_size: int = Field(0, ge=0, description="smaller side below this -> too_small (0: keep all)")
    max_aspect_ratio: float | None = Field(None, gt=0, description="None: no limit")
    # "extend" is not offered: it renumbers shards and would break the URL -> shard mapping.
    incremental_mode: Literal["incremental", "overwrite"] = "incremental"
    max_shard_retry: int = Field(1, ge=0, description="img2dataset reruns of shards that raised")
    # img2dataset's default: respect X-Robots-Tag opt-outs.  [] disables the check.
    disallowed_header_directives: list[str] = ["noai", "noimageai", "noindex", "noimageindex"]
    user_agent_token: str | None = None
    compute_hash: Literal["md5", "sha256", "sha512"] | None = "sha256"
    # EXIF tags are what tells a sideways-stored portrait photo (read by fix_orientation).
    extract_exif: bool = True
    # img2dataset ignores EXIF orientation and turns 16-bit PNGs white; these re-encode the few affected
    # images after each attempt (pipeline/images/fixes.py).
    fix_orientation: bool = True
    fix_16bit: bool = True
    oom_shard_count: int = Field(5, ge=1, description="digits of the shard number in file names")
    # img2dataset reports HTML pages and corrupt JPEGs alike as "Image decoding error"; when True the
    # first bytes of those URLs are fetched again to tell not_an_image from decode_error.
    sniff_undecodable: bool = True

    @model_validator(mode="after")
    def _exif_for_orientation(self) -> DownloadSettings:
        if self.fix_orientation and not self.extract_exif:
            raise ValueError("fix_orientation reads the EXIF tags img2dataset stores: set extract_exif = true, "
                             "or fix_orientation = false to keep photos as their pixels are stored")
        return self
