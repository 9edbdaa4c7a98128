"""Image download benchmark: images/s of the download stage on loopback, processes x threads varied.

Serves N small JPEGs from memory on 127.0.0.1 and downloads them with `pipeline.images.download_images`
(img2dataset underneath) once per (processes, threads) pair.  Two rates are printed:
- "shards": images / (last shard end - first shard start), from img2dataset's own per-shard stats;
  the download, decode, resize and write work alone.
- "wall": images / the whole call, including spawning workers (each imports img2dataset and torch)
  and building the availability table; what a user waits for on a small split.

Loopback has no network latency, so this measures the CPU side; on the internet, latency dominates
and many more threads pay off (img2dataset's CC3M example uses 16 processes x 64 threads).

    .venv/bin/python bench/download_bench.py --n 2000 --processes 1 2 --threads 4 16 32
"""
from __future__ import annotations

import argparse
import io
import json
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from pipeline.contracts import ITEMS
from pipeline.images.download import download_images
from pipeline.images.settings import DownloadSettings


def _images(n_distinct: int = 16, size: int = 256) -> list[bytes]:
    out = []
    for i in range(n_distinct):
        img = Image.new("RGB", (size, size), ((37 * i) % 256, (91 * i) % 256, (53 * i) % 256))
        for x in range(0, size, 16):  # some texture, so JPEG decoding is not trivially cheap
            img.paste(((x * 7) % 256, (i * 13) % 256, 128), (x, 0, x + 8, size))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=85)
        out.append(buf.getvalue())
    return out


class _Handler(BaseHTTPRequestHandler):
    images: list[bytes] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        body = self.images[int(self.path.strip("/").split(".")[0]) % len(self.images)]
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def run_once(n: int, processes: int, threads: int, base: str, work: Path) -> dict[str, float]:
    items = work / f"items-{n}.parquet"
    if not items.exists():
        pq.write_table(
            pa.table(
                {
                    "image_id": [f"bench/{i}" for i in range(n)],
                    "dataset": ["bench"] * n,
                    "split": ["train"] * n,
                    "url": [f"{base}/{i}.jpg" for i in range(n)],
                    "source_path": [None] * n,
                },
                schema=ITEMS,
            ),
            items,
        )
    out = work / f"p{processes}-t{threads}"
    settings = DownloadSettings(
        processes_count=processes,
        thread_count=threads,
        image_size=128,
        number_sample_per_shard=max(1, n // 4),  # 4 shards: both processes busy, no worker recycling
        timeout=10,
        sniff_undecodable=False,
    )
    t0 = time.perf_counter()
    manifest = download_images(items, out, settings)
    wall = time.perf_counter() - t0
    stats = [json.loads(p.read_text()) for p in (out / "shards").glob("*_stats.json")]
    window = max(s["end_time"] for s in stats) - min(s["start_time"] for s in stats)
    return {
        "processes": processes,
        "threads": threads,
        "ok": manifest.available,
        "shards_ips": n / window,
        "wall_ips": n / wall,
        "wall_s": wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--threads", type=int, nargs="+", default=[4, 16, 32])
    args = ap.parse_args()

    _Handler.images = _images()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    rows = []
    with tempfile.TemporaryDirectory(prefix="ptvl-dlbench-") as tmp:
        for p in args.processes:
            for t in args.threads:
                r = run_once(args.n, p, t, base, Path(tmp))
                rows.append(r)
                print(f"  done processes={p} threads={t}: {r['shards_ips']:.0f} img/s", flush=True)
    server.shutdown()

    print(f"\nimg2dataset on loopback, {args.n} JPEGs 256x256 -> 128 px, parquet output")
    print(f"{'processes':>9} {'threads':>7} {'ok':>6} {'img/s (shards)':>15} {'img/s (wall)':>13} {'wall s':>7}")
    for r in rows:
        print(
            f"{r['processes']:>9} {r['threads']:>7} {r['ok']:>6} {r['shards_ips']:>15.0f} "
            f"{r['wall_ips']:>13.0f} {r['wall_s']:>7.1f}"
        )


if __name__ == "__main__":
    main()
