"""The image download stage at scale: ptvl vs plain img2dataset on the same URLs with CC3M's faults.

A loopback host started here (tests/faultmix.py: 17 kinds of URL, ~65% available; 404/410/403/500,
timeouts, resets, redirects and loops, HTML, truncated JPEGs, 1x1 placeholders, CMYK, EXIF-rotated,
16-bit PNGs, animated GIFs, WebP) serves `--n` URLs.  Then, back to back, each in a child process:

1. ptvl: `pipeline.images.download.download_images` (img2dataset, then the reason refinement, the
   orientation / 16-bit fixes and the availability table);
2. plain: `img2dataset.download` alone with the same arguments (`img2dataset_kwargs`), its output to a file;
3. with `--features`: `training.features.cache_features` over the images ptvl stored, with the sample's
   tiny CLIP (64 px, width 64, 4 layers, patch 8), on `--device` (cpu, or cuda on a GPU machine).

Printed per phase: wall time, URLs/s, peak RSS of the whole process tree (sampled every second: the sum
over the child and its workers) and of the largest single process, the load average; then the ratio
plain / ptvl wall (>= 0.9: ptvl at least 90% of img2dataset's speed), the reasons ptvl recorded against the
kind of every URL (right / total per kind), and a linear extrapolation to CC3M train (3,318,333 URLs):
time per URL x URLs, and memory as the workers' peak (per shard, so constant) plus the driver's
baseline plus its measured bytes per URL.

    .venv/bin/python bench/download_scale_bench.py --n 200000 --json out.json --features
    .venv/bin/python bench/download_scale_bench.py --n 20000 --features --device cuda    # on a GPU machine
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CC3M_TRAIN = 3_318_333


# ---------------------------------------------------------------------------------------- memory


def _tree_memory(pid: int) -> tuple[int, int, int]:
    """(sum of PSS, sum of RSS, largest RSS) in bytes over `pid` and its descendants, from /proc.  PSS
    shares each shared page among the processes mapping it (the workers map the same libraries), so its
    sum is what the tree really occupies; the RSS sum counts shared pages once per process."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    pss = rss_sum = biggest = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f
                          if line.startswith(("Rss:", "Pss:"))}
        except (OSError, ValueError):
            continue
        pss += fields.get("Pss", 0)
        rss_sum += fields.get("Rss", 0)
        biggest = max(biggest, fields.get("Rss", 0))
    return pss, rss_sum, biggest


def run_child(args: list[str], log: Path) -> dict:
    """Run this script with `--child ...`; it writes a JSON dict to `log` + ".json", merged here with wall
    time and peak memory (process tree PSS and RSS sums and the largest process, sampled each second;
    and wait4's maxrss)."""
    peak = {"pss": 0, "rss": 0, "max": 0}
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    with open(log, "w") as out:
        result_file = log.with_suffix(".json")
        result_file.unlink(missing_ok=True)
        proc = subprocess.Popen([sys.executable, __file__, "--result", str(result_file), "--child", *args],
                                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(1.0):
                for key, value in zip(("pss", "rss", "max"), _tree_memory(proc.pid), strict=True):
                    peak[key] = max(peak[key], value)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        _, status, usage = os.wait4(proc.pid, 0)
        stop.set()
        thread.join()
    wall = time.perf_counter() - t0
    if status != 0 or not result_file.exists():
        raise SystemExit(f"child {args[0]} failed (status {status}); see {log}")
    result = json.loads(result_file.read_text())
    return {**result, "wall_s": wall, "peak_tree_pss": peak["pss"], "peak_tree_rss": peak["rss"],
            "peak_process_rss": max(peak["max"], usage.ru_maxrss * 1024), "load_start": load0,
            "load_end": os.getloadavg()[0]}


# ---------------------------------------------------------------------------------------- children


def _self_rss() -> tuple[int, int]:
    with open("/proc/self/status") as f:
        fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f if line.startswith(("VmRSS", "VmHWM"))}
    return fields["VmRSS"], fields["VmHWM"]


def child_ptvl(items: str, out: str, settings_json: str) -> dict:
    from pipeline.images.download import download_images
    from pipeline.images.settings import DownloadSettings

    baseline, _ = _self_rss()
    t0 = time.perf_counter()
    manifest = download_images(items, out, DownloadSettings.model_validate_json(settings_json))
    _, hwm = _self_rss()
    return {"call_s": time.perf_counter() - t0, "available": manifest.available, "urls": manifest.urls,
            "driver_baseline_rss": baseline, "driver_peak_rss": hwm}


def child_plain(url_list: str, out: str, settings_json: str) -> dict:
    import img2dataset

    from pipeline.images.download import img2dataset_kwargs
    from pipeline.images.settings import DownloadSettings

    s = DownloadSettings.model_validate_json(settings_json)
    t0 = time.perf_counter()
    img2dataset.download(**img2dataset_kwargs(Path(url_list), Path(out), s))
    ok = sum(json.loads(p.read_text())["successes"] for p in Path(out).glob("*_stats.json"))
    return {"call_s": time.perf_counter() - t0, "available": ok}


def child_features(images: str, work: str, device: str, limit: str) -> dict:
    import torch

    from pipeline.images.store import iter_image_batches
    from training.features import VisualEncoder, cache_features, load_clip
    from training.features.tiny import build_tiny_clip

    torch.manual_seed(0)
    clip = build_tiny_clip(Path(work) / "tiny-clip", image_size=64, width=64, layers=4, patch=8)
    model, preprocess = load_clip(str(clip), pretrained=None, device=device)
    enc = VisualEncoder(model, name="tiny-clip")
    counted = [0]

    def items():
        for batch in iter_image_batches(images):
            for key, data in batch.items():
                if counted[0] == int(limit):
                    return
                counted[0] += 1
                yield key, data

    t0 = time.perf_counter()
    cache_features(items(), enc, preprocess, Path(work) / "features", layers=[-1, -2], batch_size=256,
                   workers=max(1, os.cpu_count() or 1), overwrite=True)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {"call_s": seconds, "images": counted[0], "images_per_s": counted[0] / seconds}


# ---------------------------------------------------------------------------------------- main


def _mb(n: float) -> str:
    return f"{n / 1e6:,.0f} MB"


def reasons_right(out: Path, kinds: list[str]) -> dict[str, tuple[int, int]]:
    """kind -> (URLs whose reason is the kind's expected one, URLs of the kind)."""
    import polars as pl

    from tests.faultmix import KINDS

    av = pl.read_parquet(out / "availability.parquet", columns=["image_id", "reason"])
    right, total = Counter(), Counter()
    for image_id, reason in av.iter_rows():
        kind = kinds[int(image_id.rsplit("/", 1)[1])]
        total[kind] += 1
        right[kind] += reason == KINDS[kind].reason
    return {k: (right[k], total[k]) for k in KINDS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=64)
    ap.add_argument("--timeout", type=int, default=10)
    ap.add_argument("--shard", type=int, default=10_000, help="number_sample_per_shard")
    ap.add_argument("--features", action="store_true", help="also cache tiny-CLIP features of the images")
    ap.add_argument("--device", default="cpu", help="device of the feature phase (cuda on a GPU machine)")
    ap.add_argument("--features-limit", type=int, default=20_000, help="images the feature phase encodes")
    ap.add_argument("--skip-plain", action="store_true")
    ap.add_argument("--work", type=Path, default=None, help="keep the files here (default: a temp folder)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, *rest = args.child
        fn = {"ptvl": child_ptvl, "plain": child_plain, "features": child_features}[kind]
        result = fn(*rest)
        args.result.write_text(json.dumps(result))
        print(f"child {kind} done: {result}; fd 1 is {os.readlink('/proc/self/fd/1')}", file=sys.stderr, flush=True)
        return

    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.contracts import ITEMS
    from pipeline.images.settings import DownloadSettings
    from tests.faultmix import FaultMixServer, fault_mix

    settings = DownloadSettings(processes_count=args.processes, thread_count=args.threads, timeout=args.timeout,
                                min_image_size=64, number_sample_per_shard=args.shard)
    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="ptvl-scale-")
    work = args.work or Path(tmp.name)  # type: ignore[union-attr]
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {"n": args.n, "settings": settings.model_dump(mode="json"), "cpus": os.cpu_count(),
                     "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    with FaultMixServer(timeout_s=args.timeout) as srv:
        rows = fault_mix(srv.base, args.n)
        kinds = [k for _, k in rows]
        n = args.n
        items = work / "items.parquet"
        pq.write_table(pa.table({"image_id": [f"bench/{i}" for i in range(n)], "dataset": ["bench"] * n,
                                 "split": ["train"] * n, "url": [u for u, _ in rows], "source_path": [None] * n},
                                schema=ITEMS), items)
        url_list = work / "plain-urls.parquet"
        pq.write_table(pa.table({"url": [u for u, _ in rows], "image_id": [f"bench/{i}" for i in range(n)]}), url_list)
        print(f"{n:,} URLs on {srv.base}; kinds: {dict(Counter(kinds))}", flush=True)

        small = n // 10  # a second size, for the linear fit of time and driver memory
        pq.write_table(pq.read_table(items).slice(0, small), work / "items-small.parquet")
        sj = settings.model_dump_json()
        phases = [("ptvl", "ptvl", n, [str(items), str(work / "ptvl"), sj])]
        if not args.skip_plain:
            phases.append(("plain", "plain", n, [str(url_list), str(work / "plain"), sj]))
        phases.append(("ptvl_small", "ptvl", small, [str(work / "items-small.parquet"), str(work / "ptvl-small"), sj]))
        for name, child, size, child_args in phases:
            before = srv.requests
            r = run_child([child, *child_args], work / f"{name}.log")
            r["requests"], r["urls"] = srv.requests - before, size
            results[name] = r
            print(f"{name:10} {size:>8,} URLs {r['wall_s']:8.1f} s  {size / r['wall_s']:7.1f} URLs/s  available "
                  f"{r['available']:,}  peak PSS tree {_mb(r['peak_tree_pss'])} (RSS sum {_mb(r['peak_tree_rss'])}, "
                  f"largest process {_mb(r['peak_process_rss'])})  requests {r['requests']:,}  load "
                  f"{r['load_start']:.1f} -> {r['load_end']:.1f}", flush=True)

    right = reasons_right(work / "ptvl", kinds)
    results["reasons"] = {k: list(v) for k, v in right.items()}
    ok_all = sum(r for r, _ in right.values())
    print(f"\nreasons right: {ok_all:,} / {n:,} ({100 * ok_all / n:.2f}%)")
    for k, (r, t) in right.items():
        print(f"  {k:10} {r:>8,} / {t:<8,} {'' if r == t else '<-- wrong'}")

    # Linear in URLs between the two sizes: wall = fixed + per_url * n; the driver's peak likewise; the
    # workers' share (tree PSS minus the driver) depends on the shard size, not on the number of URLs.
    p, q = results["ptvl"], results["ptvl_small"]
    span = n - small
    per_url_s = (p["wall_s"] - q["wall_s"]) / span
    per_url_bytes = max(0.0, (p["driver_peak_rss"] - q["driver_peak_rss"]) / span)
    workers_peak = max(0, p["peak_tree_pss"] - p["driver_peak_rss"])
    driver = p["driver_peak_rss"] + per_url_bytes * (CC3M_TRAIN - n)
    results["extrapolation"] = {
        "urls": CC3M_TRAIN, "wall_s": p["wall_s"] + per_url_s * (CC3M_TRAIN - n), "per_url_s": per_url_s,
        "driver_rss": driver, "workers_pss": workers_peak, "tree": workers_peak + driver,
        "driver_bytes_per_url": per_url_bytes,
    }
    if "plain" in results:
        ratio = results["plain"]["wall_s"] / p["wall_s"]
        results["ratio_plain_over_ptvl"] = ratio
        print(f"\nratio plain / ptvl wall: {ratio:.3f} (ptvl at {100 * ratio:.1f}% of img2dataset's speed)")
    e = results["extrapolation"]
    print(f"CC3M train ({CC3M_TRAIN:,} URLs) at this machine's rate ({1 / per_url_s:.1f} URLs/s at the "
          f"margin): {e['wall_s'] / 3600:.1f} h; memory ~{_mb(e['tree'])} (workers {_mb(workers_peak)} + driver "
          f"{_mb(driver)}: {per_url_bytes:.0f} bytes/URL over {_mb(p['driver_peak_rss'])} at {n:,})")

    if args.features:
        r = run_child(["features", str(work / "ptvl"), str(work), args.device, str(args.features_limit)],
                      work / "features.log")
        results["features"] = r
        print(f"\nCacheFeatures (tiny CLIP, {args.device}): {r['images']:,} images in {r['call_s']:.1f} s = "
              f"{r['images_per_s']:.0f} images/s; peak PSS {_mb(r['peak_tree_pss'])}, RSS {_mb(r['peak_tree_rss'])}",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
