"""Re-encode the few images img2dataset decodes wrongly: EXIF-rotated photos and 16-bit PNGs.

img2dataset decodes with OpenCV's IMREAD_UNCHANGED, which (a) ignores the EXIF orientation, so a
portrait photo taken sideways is stored sideways, and (b) keeps 16 bits per channel, which its JPEG
encoder saturates to 255: a 16-bit PNG comes out (nearly) pure white.  It has no option for either,
so after each download attempt this module writes `<attempt>/_fixed_images.parquet`: the corrected
bytes of the affected images, keyed by img2dataset key.  img2dataset's own shards are never edited
(its incremental resume keeps working); pipeline/images/store.py serves the fixed bytes instead.

- Orientation: read from the EXIF tags img2dataset stores when `extract_exif` is on; the stored
  image is transposed (rotation commutes with img2dataset's aspect-preserving resize).
- 16 bits: img2dataset's 8-bit arithmetic saturates 16-bit samples, so such an image is stored with
  (almost) every sample at 0 or 255: white, or with alpha, flat primary colours.  A stored image like
  that is fetched again; when the original really has 16-bit samples it is scaled to 8 bits (alpha
  over white, as img2dataset does for 8-bit images) and resized by img2dataset's own Resizer with the
  download's settings.  Only files small enough to be flat are decoded to check; a genuinely flat
  8-bit image (a white page, a logo) costs one extra fetch.

The file is written once per attempt, atomically, so a killed run recomputes it from scratch and a
finished one is never re-applied.
"""
from __future__ import annotations

import io
import json
import threading
import urllib.request
from collections import Counter
from multiprocessing.pool import ThreadPool
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from pipeline.images.layout import FIXES, fixes_path
from pipeline.images.settings import DownloadSettings
from pipeline.images.store import complete_shards, iter_stored_images
from pipeline.io import write_parquet_atomic

ORIENTATION = "exif_orientation"
SIXTEEN_BIT = "16bit"
_UA = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:72.0) Gecko/20100101 Firefox/72.0"

# exifread's printable Orientation values (what img2dataset stores) -> the PIL transpose that undoes it
_TRANSPOSE = {
    "Mirrored horizontal": Image.Transpose.FLIP_LEFT_RIGHT,
    "Rotated 180": Image.Transpose.ROTATE_180,
    "Mirrored vertical": Image.Transpose.FLIP_TOP_BOTTOM,
    "Mirrored horizontal then rotated 90 CCW": Image.Transpose.TRANSPOSE,
    "Rotated 90 CW": Image.Transpose.ROTATE_270,
    "Mirrored horizontal then rotated 90 CW": Image.Transpose.TRANSVERSE,
    "Rotated 90 CCW": Image.Transpose.ROTATE_90,
}
_PIL_FORMAT = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}
SATURATED_SHARE = 0.95  # share of samples at 0 or 255 (+-JPEG noise) that makes an image a 16-bit suspect
# A saturated image is flat, and a flat image compresses to a fraction of a bit per pixel (a photo at
# quality 95 takes 2-3 bits): larger files are not decoded at all, so the check costs a header parse
# for almost every image.
FLAT_BYTES_PER_PIXEL = 0.15
FLAT_HEADER_BYTES = 2048  # markers and tables every encoded file carries, whatever its content
# img2dataset's Resizer points file descriptors 1 and 2 of the whole process at /dev/null while it runs and
# back after: two calls interleaved in the fetch threads left them at /dev/null for good (the rest of the
# run printed nothing).  One Resizer call at a time; the fetches stay parallel.
_RESIZER_LOCK = threading.Lock()


def fix_attempt(attempt_dir: Path, shards_dir: Path, s: DownloadSettings) -> dict[str, int]:
    """Write `attempt_dir/_fixed_images.parquet` for one finished attempt (once) and return its counts."""
    dest = fixes_path(attempt_dir)
    if dest.exists():
        return counts(dest)
    ok = _successes(shards_dir)
    orient: dict[str, Image.Transpose] = {}
    if s.fix_orientation and "exif" in ok.columns:
        for key, exif in ok.select("key", "exif").iter_rows():
            t = _transpose(exif)
            if t is not None:
                orient[key] = t
    url_of = dict(ok.select("key", "url").iter_rows())
    # file size a flat image of that size stays under: only those are decoded
    flat_max = {k: FLAT_HEADER_BYTES + FLAT_BYTES_PER_PIXEL * w * h
                for k, w, h in ok.select("key", "width", "height").iter_rows()}
    fixed: dict[str, tuple[bytes, str]] = {}
    white: list[str] = []
    for _, batch in iter_stored_images(shards_dir):
        for key, data in batch.items():
            if s.fix_16bit and len(data) <= flat_max.get(key, 0) and _saturated(data):
                white.append(key)
            if key in orient:
                fixed[key] = (_reencode(Image.open(io.BytesIO(data)).transpose(orient[key]), s), ORIENTATION)
    if white:
        with ThreadPool(max(1, min(s.thread_count, len(white)))) as pool:
            redone = pool.map(lambda k: _from_16bit(url_of[k], s), white)
        for key, data in zip(white, redone, strict=True):
            if data is not None:
                if key in orient:
                    data = _reencode(Image.open(io.BytesIO(data)).transpose(orient[key]), s)
                fixed[key] = (data, SIXTEEN_BIT)
    keys = sorted(fixed)
    table = pa.table({"key": keys, "jpg": [fixed[k][0] for k in keys], "fix": [fixed[k][1] for k in keys]},
                     schema=FIXES)
    write_parquet_atomic(dest, table, FIXES)
    return counts(dest)


def counts(path: Path) -> dict[str, int]:
    """Fixed images by kind in one attempt's fixes file."""
    if not path.exists():
        return {}
    return dict(Counter(pq.read_table(path, columns=["fix"]).column("fix").to_pylist()))


def _transpose(exif: str | None) -> Image.Transpose | None:
    if not exif:
        return None
    try:
        value = json.loads(exif).get("Image Orientation")
    except (ValueError, AttributeError):
        return None
    return _TRANSPOSE.get(value)


def _saturated(data: bytes) -> bool:
    """Whether (almost) every sample of a stored image is 0 or 255 (decoded at 1/8 scale, JPEG draft mode)."""
    try:
        im = Image.open(io.BytesIO(data))
        im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
        px = np.asarray(im.convert("RGB"))
    except OSError:
        return False
    return px.size > 0 and float(((px <= 4) | (px >= 251)).mean()) >= SATURATED_SHARE


def _reencode(im: Image.Image, s: DownloadSettings) -> bytes:
    buf = io.BytesIO()
    fmt = _PIL_FORMAT[s.encode_format]
    kwargs = {"quality": s.encode_quality} if fmt in ("JPEG", "WEBP") else {}
    im.convert("RGB").save(buf, fmt, **kwargs)
    return buf.getvalue()


def _from_16bit(url: str, s: DownloadSettings) -> bytes | None:
    """The image at `url` scaled to 8 bits and resized as img2dataset would, or None when the original
    is not a 16-bit image (or cannot be fetched again: the stored image is then kept as it is)."""
    import cv2  # deferred: OpenCV is slow to import and only a 16-bit suspect needs it

    try:
        req = urllib.request.Request(url, headers={"User-Agent": _UA})
        with urllib.request.urlopen(req, timeout=s.timeout) as r:
            raw = r.read()
    except Exception:  # noqa: BLE001 - a failed re-fetch leaves the image as downloaded
        return None
    img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.dtype != np.uint16:
        return None
    img = img.astype(np.float64) / 257.0  # 0..65535 -> 0..255
    if img.ndim == 3 and img.shape[2] == 4:  # alpha over white, as img2dataset composites 8-bit images
        alpha = img[:, :, 3:] / 255.0
        img = alpha * img[:, :, :3] + 255.0 * (1 - alpha)
    eight = np.rint(img.clip(0, 255)).astype(np.uint8)
    ok, png = cv2.imencode(".png", eight)
    if not ok:
        return None
    from img2dataset.resizer import Resizer  # deferred: img2dataset pulls in albumentations (slow)

    resize = Resizer(
        image_size=s.image_size, resize_mode=s.resize_mode, resize_only_if_bigger=s.resize_only_if_bigger,
        encode_format=s.encode_format, encode_quality=s.encode_quality, min_image_size=s.min_image_size,
        max_aspect_ratio=s.max_aspect_ratio if s.max_aspect_ratio is not None else float("inf"),
    )
    with _RESIZER_LOCK:
        data, *_, err = resize(io.BytesIO(png.tobytes()))
    return data if err is None else None


def _successes(shards_dir: Path) -> pl.DataFrame:
    """key, url (and exif when img2dataset extracted it) of every image an attempt stored."""
    frames = []
    for shard in complete_shards(shards_dir):
        names = pq.read_schema(shard.metadata).names
        cols = [c for c in ("key", "url", "status", "width", "height", "exif") if c in names]
        frames.append(pl.from_arrow(pq.read_table(shard.metadata, columns=cols)).filter(pl.col("status") == "success"))
    if not frames:
        return pl.DataFrame(schema={"key": pl.Utf8, "url": pl.Utf8, "status": pl.Utf8, "width": pl.Int64,
                                    "height": pl.Int64})
    return pl.concat(frames, how="diagonal")

