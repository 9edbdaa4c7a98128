"""The text half of the DAG at the real sizes: synthetic CC3M / VisDial / Karpathy sources through Luigi.

Generates sources in the official formats at `--scale` x the real sizes (scale 1: a CC3M train TSV of
3,318,333 rows with a realistic caption-length distribution and ~3% repeats; VisDial v1.0 train-size
JSON, 123,287 dialogs x 10 rounds x 100 options over ~376k questions and ~337k answers; a Karpathy
dataset_coco.json of 123,287 images x 5 captions), then runs each stage as its own Luigi build in a
child process (so each stage's peak RSS is its own, read from `os.wait4`):

    segments -> reference memory (a deterministic word-for-word PT export, written from the segments)
    -> import -> unique strings -> translate parts (all memory hits) -> translate join + flags
    -> curate (TokenStats) -> placeholder images -> shards (BuildShards, every split)

and prints wall time (also without the child's imports), peak RSS, rows/s and each task's run time per
stage, plus the row accounting per split (segments = translated = flagged = token-statistics samples;
shards total = kept + dropped by reason).  The images are not downloaded: the bench writes what `DownloadImages` would leave (img2dataset-style
Parquet shards with one small placeholder JPEG per image, the availability table with every 100th image
failed as http_404, and `_MANIFEST.json`), so BuildShards reads real bytes through the real code.

    .venv/bin/python bench/full_size.py --scale 0.05          # ~166k CC3M rows
    .venv/bin/python bench/full_size.py --scale 1 --root /data/ptvl-fullsize
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CC3M_TRAIN_ROWS = 3_318_333
VISDIAL_TRAIN_DIALOGS = 123_287
VISDIAL_QUESTIONS = 376_082
VISDIAL_ANSWERS = 337_527
KARPATHY_IMAGES = 123_287
KARPATHY_SPLITS = {"val": 5_000, "test": 5_000, "restval": 30_504}  # the rest is train
REPEAT_SHARE = 0.03

WORDS = ("a the man woman person dog cat car bus tree house street city beach sea sky cloud mountain river "
         "field road building window door table chair room kitchen food plate cup glass bottle phone book "
         "picture portrait view sunset night day morning winter summer snow rain light water boat bridge "
         "train station crowd player team game ball stadium stage concert artist actor model dress shirt "
         "hat flower garden park bench child children family friends couple wedding party birthday cake "
         "red blue green yellow white black old young small large beautiful happy smiling standing sitting "
         "walking running playing holding looking at on in with of and near by under over during against "
         "front behind background vector illustration isolated icon logo pattern design style modern "
         "vintage abstract texture wooden stone metal glass floor wall roof top bottom side close up").split()


# A word-for-word PT-PT "translation" of WORDS, so the reference memory reads as Portuguese to the quality
# flags (an English copy would be flagged untranslated on every row and sent to language ID); progressive
# forms are PT-PT ("a sorrir", not the brazilian "sorrindo").
PT = {en: pt.replace("_", " ") for en, pt in zip(WORDS, (
    "um o homem mulher pessoa cão gato carro autocarro árvore casa rua cidade praia mar céu nuvem montanha rio "
    "campo estrada edifício janela porta mesa cadeira sala cozinha comida prato chávena copo garrafa telemóvel "
    "livro imagem retrato vista pôr-do-sol noite dia manhã inverno verão neve chuva luz água barco ponte comboio "
    "estação multidão jogador equipa jogo bola estádio palco concerto artista ator modelo vestido camisa chapéu "
    "flor jardim parque banco criança crianças família amigos casal casamento festa aniversário bolo vermelho "
    "azul verde amarelo branco preto velho jovem pequeno grande bonito feliz a_sorrir de_pé sentado a_caminhar "
    "a_correr a_jogar a_segurar a_olhar para em dentro com de e perto junto debaixo sobre durante contra frente "
    "atrás fundo vetor ilustração isolado ícone logótipo padrão desenho estilo moderno antigo abstrato textura "
    "madeira pedra metálico copo chão parede telhado topo fundo lado perto cima").split(), strict=True)}


@dataclass
class Sizes:
    cc3m: int
    dialogs: int
    questions: int
    answers: int
    coco: int


def sizes(scale: float) -> Sizes:
    def n(x: int) -> int:
        return max(1, round(x * scale))
    return Sizes(n(CC3M_TRAIN_ROWS), n(VISDIAL_TRAIN_DIALOGS), n(VISDIAL_QUESTIONS), n(VISDIAL_ANSWERS),
                 max(len(KARPATHY_SPLITS) + 1, n(KARPATHY_IMAGES)))


def _phrase(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choices(WORDS, k=n_words))


def cc3m_caption_words(rng: random.Random) -> int:
    """CC3M caption lengths: mean ~10 words, long right tail (gamma 4 x 2.6, cut to 1..60)."""
    return min(60, max(1, round(rng.gammavariate(4.0, 2.6))))


def write_cc3m(path: Path, rows: int, seed: int) -> int:
    """Train TSV (caption<TAB>url, no header); ~3% of rows repeat an earlier caption.  Returns distinct captions."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    seen: list[str] = []
    distinct: set[str] = set()
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            if seen and rng.random() < REPEAT_SHARE:
                cap = seen[rng.randrange(len(seen))]
            else:
                cap = _phrase(rng, cc3m_caption_words(rng))
                if len(seen) < 200_000:
                    seen.append(cap)
            distinct.add(cap)
            f.write(f"{cap}\thttps://images.example.org/cc3m/{i}.jpg\n")
    return len(distinct)


def write_visdial(path: Path, s: Sizes, seed: int) -> None:
    """VisDial v1.0 train JSON (official layout), streamed: 10 rounds of 100 answer options per dialog."""
    import numpy as np

    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    questions = list(dict.fromkeys(_phrase(rng, rng.randint(3, 9)) + "?" for _ in range(s.questions)))
    answers = list(dict.fromkeys(_phrase(rng, rng.randint(1, 7)) for _ in range(s.answers)))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write('{"version": "1.0", "split": "train2018", "data": {"questions": ')
        f.write(json.dumps(questions))
        f.write(', "answers": ')
        f.write(json.dumps(answers))
        f.write(', "dialogs": [')
        for d in range(s.dialogs):
            opts = nrng.integers(0, len(answers), size=(10, 100))
            gts = nrng.integers(0, 100, size=10)
            qs = nrng.integers(0, len(questions), size=10)
            rounds = ",".join(
                f'{{"question": {int(qs[r])}, "answer": {int(opts[r, gts[r]])}, "gt_index": {int(gts[r])}, '
                f'"answer_options": [{",".join(map(str, opts[r].tolist()))}]}}' for r in range(10))
            caption = json.dumps(_phrase(rng, rng.randint(6, 14)))
            f.write(("," if d else "") + f'{{"image_id": {d + 1}, "caption": {caption}, "dialog": [{rounds}]}}')
        f.write("]}}")


def write_karpathy(path: Path, n: int, seed: int) -> None:
    """dataset_coco.json with Karpathy's split sizes (scaled), 5 captions per image."""
    rng = random.Random(seed)
    quota = {k: max(1, round(v * n / KARPATHY_IMAGES)) for k, v in KARPATHY_SPLITS.items()}
    images, sentid = [], 0
    for imgid in range(n):
        split = next((k for k, lo in _bounds(quota) if imgid < lo), "train")
        sentences = []
        for _ in range(5):
            raw = _phrase(rng, rng.randint(8, 16)).capitalize() + "."
            sentences.append({"tokens": raw.lower().rstrip(".").split(), "raw": raw, "imgid": imgid, "sentid": sentid})
            sentid += 1
        images.append({"filepath": "val2014", "sentids": [x["sentid"] for x in sentences],
                       "filename": f"COCO_val2014_{imgid + 1:012d}.jpg", "imgid": imgid, "split": split,
                       "sentences": sentences, "cocoid": imgid + 1})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "dataset": "coco"}))


def _bounds(quota: dict[str, int]) -> list[tuple[str, int]]:
    out, at = [], 0
    for k, v in quota.items():
        at += v
        out.append((k, at))
    return out


CONFIG = """
[run]
name = "fullsize"
root = "{run}"

[datasets.cc3m]
splits = ["train"]
[datasets.coco]
splits = ["train", "val", "test"]  # restval is read as part of train (fold_restval, as FROMAGe)
url_base = "file://{{sources}}/coco"
[datasets.visdial]
splits = ["train"]
image_url_template = {{ train = "file://{{sources}}/visdial/img/{{image_id:012d}}.jpg", val = "file://{{sources}}/visdial/img/{{image_id:012d}}.jpg" }}
[datasets.vqav2]
enabled = false

[translate]
engines = ["reference"]
parts = {parts}

[engines.reference]
engine = "reference"

[curate]
gold = false
"""


def write_sources(run: Path, s: Sizes, seed: int) -> dict:
    src = run / "sources"
    t0 = time.perf_counter()
    distinct = write_cc3m(src / "cc3m" / "Train_GCC-training.tsv", s.cc3m, seed)
    write_visdial(src / "visdial" / "visdial_1.0_train.json", s, seed + 1)
    write_karpathy(src / "coco" / "dataset_coco.json", s.coco, seed + 2)
    for d in ("cc3m", "visdial", "coco"):  # the files are in place: nothing to fetch
        (src / d / "_FETCHED.json").write_text(json.dumps({"dataset": d, "source": "bench/full_size.py"}))
    return {"seconds": time.perf_counter() - t0, "cc3m_distinct": distinct}


def pt_expr(text):
    """The reference "translation" of a column of generated text: each word through `PT` (lower case; the
    first word of a Karpathy caption is capitalised), the final "." or "?" kept."""
    import polars as pl

    end = text.str.extract(r"([.?])$").fill_null("")
    words = text.str.strip_chars_end(".?").str.to_lowercase().str.split(" ")
    return words.list.eval(pl.element().replace(PT)).list.join(" ") + end


def write_reference_memory(run: Path) -> int:
    """A deterministic "translation" of every distinct segment text, as a memory export to import."""
    import polars as pl
    import pyarrow.parquet as pq

    seg = pl.scan_parquet(str(run / "segments" / "*" / "*.parquet")).select("text_hash", "text_en").unique("text_hash")
    table = seg.with_columns(pt_expr(pl.col("text_en")).alias("text_pt")).collect()
    pq.write_table(table.to_arrow(), run / "sources" / "reference_memory.parquet")
    return table.height


UNAVAILABLE_EVERY = 100  # every 100th image "failed to download" (http_404), so shards drop some rows
IMAGES_PER_SHARD = 10_000  # img2dataset's number_sample_per_shard default


def placeholder_jpegs(n: int = 8) -> list[bytes]:
    """`n` distinct 16x16 JPEGs (a few hundred bytes each), one per colour."""
    import io

    from PIL import Image

    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (30 * i % 256, 80, 160)).save(buf, format="JPEG", quality=50)
        out.append(buf.getvalue())
    return out


def write_placeholder_images(run: Path) -> int:
    """What `DownloadImages` leaves behind, without downloading: per split, img2dataset-style Parquet
    shards (key, jpg) of one placeholder JPEG per image under images/<dataset>/<split>/shards/, the
    AVAILABILITY table (every 100th image failed with http_404) and `_MANIFEST.json` (so Luigi sees the
    download done).  Returns the images written."""
    import polars as pl
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.contracts import AVAILABILITY
    from pipeline.io import write_json_atomic, write_parquet_atomic

    jpegs = placeholder_jpegs()
    written = 0
    for items_path in sorted((run / "sources").glob("*/*/items.parquet")):
        dataset, split = items_path.parent.parent.name, items_path.parent.name
        out = run / "images" / dataset / split
        (out / "shards").mkdir(parents=True, exist_ok=True)
        items = pl.read_parquet(items_path, columns=["image_id", "url"]).with_row_index("_i")
        ok = pl.col("_i") % UNAVAILABLE_EVERY != UNAVAILABLE_EVERY - 1
        key = pl.col("_i").cast(pl.String).str.zfill(9)
        avail = items.select(
            "image_id", "url", pl.when(ok).then(pl.lit("success")).otherwise(pl.lit("failed")).alias("status"),
            pl.when(ok).then(pl.lit("ok")).otherwise(pl.lit("http_404")).alias("reason"),
            pl.when(ok).then(None).otherwise(pl.lit("placeholder: not downloaded")).alias("error_message"),
            pl.when(ok).then(key).alias("key"), pl.when(ok).then(pl.lit("shards")).alias("shards_dir"))
        write_parquet_atomic(out / "availability.parquet", avail.to_arrow(), AVAILABILITY)
        keys = avail.filter(pl.col("status") == "success")["key"].to_list()
        for shard, at in enumerate(range(0, len(keys), IMAGES_PER_SHARD)):
            chunk = keys[at:at + IMAGES_PER_SHARD]
            pq.write_table(pa.table({"key": chunk, "jpg": pa.array([jpegs[int(k) % len(jpegs)] for k in chunk],
                                                                   pa.binary())}), out / "shards" / f"{shard:05d}.parquet")
        written += len(keys)
        write_json_atomic(out / "_MANIFEST.json", {
            "note": "bench/full_size.py placeholders: one small JPEG per image, nothing downloaded",
            "urls": items.height, "available": len(keys), "failed": items.height - len(keys)})
    return written


def stage_tasks(cfg: str, stage: str) -> list:
    """The Luigi tasks of one stage (their dependencies are done by then)."""
    from pipeline.settings import load_settings
    from pipeline.tasks.acquire import IngestSegments
    from pipeline.tasks.curate import TokenStats
    from pipeline.tasks.shards import BuildShards
    from pipeline.tasks.translate import ImportReferenceMemory, Translate, TranslatePart, UniqueStrings

    s = load_settings(cfg)
    if stage == "segments":
        return [IngestSegments(config=cfg, dataset=d, split=sp) for d, sp in s.datasets.splits()]
    if stage == "import":
        return [ImportReferenceMemory(config=cfg, engine="reference")]
    if stage == "unique":
        return [UniqueStrings(config=cfg, engine="reference")]
    if stage == "translate parts":
        return [TranslatePart(config=cfg, engine="reference", part=i) for i in range(s.translate.parts)]
    if stage == "curate (token stats)":
        return [TokenStats(config=cfg)]
    if stage == "shards":
        return [BuildShards(config=cfg, dataset=d, split=sp, engine="reference") for d, sp in s.datasets.splits()]
    return [Translate(config=cfg, dataset=d, split=sp, engine="reference") for d, sp in s.datasets.splits()]


def build_stage(cfg: str, stage: str, workers: int) -> dict:
    """Run one stage's Luigi build; {"build_s": the build without the process's imports, "tasks": {task:
    seconds of its run()}} (Luigi's PROCESSING_TIME events)."""
    import luigi

    tasks: dict[str, float] = {}

    @luigi.Task.event_handler(luigi.Event.PROCESSING_TIME)
    def _timed(task, seconds) -> None:
        tasks[task.task_id.split("_")[0] + " " + " ".join(
            str(v) for k, v in task.param_kwargs.items() if k in ("dataset", "split", "part"))] = seconds

    t0 = time.perf_counter()
    if not luigi.build(stage_tasks(cfg, stage), local_scheduler=True, workers=workers, log_level="WARNING"):
        raise SystemExit(f"stage {stage!r} failed")
    return {"build_s": time.perf_counter() - t0, "tasks": tasks}


STAGE_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[4])
from bench.full_size import build_stage
out = build_stage(sys.argv[1], sys.argv[2], int(sys.argv[3]))
open(sys.argv[5], "w").write(json.dumps(out))
"""


def run_stage(cfg: Path, stage: str, workers: int, in_process: bool = False) -> tuple[float, int | None, dict]:
    """(wall seconds, peak RSS bytes, `build_stage`'s timings) of one stage's Luigi build in a child
    process (its own peak RSS), or in this process (no per-stage RSS; saves the child's start-up)."""
    if in_process:
        t0 = time.perf_counter()
        timings = build_stage(str(cfg), stage, workers)
        return time.perf_counter() - t0, None, timings
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "timings.json"
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", STAGE_SCRIPT, str(cfg), stage, str(workers), str(ROOT), str(out)],
                                env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"stage {stage!r} failed (exit {proc.returncode})")
        return time.perf_counter() - t0, usage.ru_maxrss * 1024, json.loads(out.read_text())


def accounting(run: Path) -> list[dict]:
    """Per split: segments, translated, flagged (flags list present) and set-aside rows; token-stats
    samples (English and the engine); the shards' total, kept and dropped rows by reason."""
    import polars as pl

    tokens = pl.read_parquet(run / "reports" / "token_stats.parquet") if (
        run / "reports" / "token_stats.parquet").exists() else None
    out = []
    for seg_path in sorted((run / "segments").glob("*/*.parquet")):
        dataset, split = seg_path.parent.name, seg_path.stem
        tr_dir = run / "translated" / "reference" / dataset
        tr = pl.read_parquet(tr_dir / f"{split}.parquet", columns=["flags"])
        aside = pl.read_parquet(tr_dir / f"{split}.set_aside.parquet")
        stats = json.loads((tr_dir / f"_{split}.stats.json").read_text())
        policy = pl.col("flags").list.contains("empty") | pl.col("flags").list.contains("untranslated")
        out.append({"split": f"{dataset}/{split}", "segments": pl.scan_parquet(seg_path).select(pl.len()).collect().item(),
                    "translated": tr.height, "flagged": int(tr["flags"].is_not_null().sum()),
                    "policy_drops": int(tr.select(policy.sum()).item()),  # the default shard policy's flags
                    "set_aside": aside.height, "stats_rows": stats["rows"]})
        if tokens is not None:
            mine = tokens.filter((pl.col("dataset") == dataset) & (pl.col("split") == split))
            out[-1]["token_samples"] = dict(zip(mine["column"].to_list(), mine["samples"].to_list(), strict=True))
        summary = run / "shards" / "reference" / dataset / split / "_SHARDS.json"
        if summary.exists():
            sh = json.loads(summary.read_text())
            files = [summary.parent / f for f in sh["files"]]
            out[-1]["shards"] = {**{k: v for k, v in sh.items() if k != "files"},
                                 "rows_in_files": sum(pl.scan_parquet(f).select(pl.len()).collect().item() for f in files),
                                 "files": len(files)}
    return out


def bench(root: Path, scale: float, seed: int = 0, parts: int = 2, workers: int = 1,
          in_process: bool = False, reuse: bool = False) -> dict:
    """Generate, run every stage, return the figures (also used by tests/test_full_size_small.py).

    reuse: keep the sources (and every finished Luigi output) of an earlier run in `root` at the same
    scale; stages whose outputs exist are then skipped by Luigi and show only their start-up time."""
    run = root / "run"
    s = sizes(scale)
    marker = run / "sources" / "_BENCH.json"
    if reuse and marker.exists() and json.loads(marker.read_text())["sizes"] == asdict(s):
        gen = json.loads(marker.read_text())["generate"]
    else:
        gen = write_sources(run, s, seed)
        marker.write_text(json.dumps({"sizes": asdict(s), "generate": gen}))
    cfg = root / "fullsize.toml"
    cfg.write_text(CONFIG.format(run=run, parts=parts))
    stages = []
    segments_rows = None
    for stage in ("segments", "reference memory", "import", "unique", "translate parts", "translate join + flags",
                  "curate (token stats)", "images (placeholders)", "shards"):
        if stage in ("reference memory", "images (placeholders)"):  # the bench's own inputs, outside Luigi
            t0 = time.perf_counter()
            n = write_reference_memory(run) if stage == "reference memory" else write_placeholder_images(run)
            stages.append({"stage": stage, "seconds": time.perf_counter() - t0, "peak_rss": None, "rows": n})
            continue
        seconds, rss, timings = run_stage(cfg, stage, workers, in_process)
        if stage == "segments":
            import polars as pl

            segments_rows = pl.scan_parquet(str(run / "segments" / "*" / "*.parquet")).select(pl.len()).collect().item()
        rows = segments_rows
        if stage == "shards":  # rows/s of the shards: every row decided (kept or dropped)
            rows = sum(json.loads(p.read_text())["total"] for p in (run / "shards").glob("*/*/*/_SHARDS.json"))
        stages.append({"stage": stage, "seconds": seconds, "peak_rss": rss, "rows": rows, **timings,
                       "load_average": os.getloadavg()[0]})
        print(f"[full_size] {stage}: {seconds:.1f} s ({timings['build_s']:.1f} s in luigi.build), peak RSS "
              f"{(rss or 0) / 2**20:.0f} MB, load average {os.getloadavg()[0]:.1f}; "
              + ", ".join(f"{k} {v:.1f}s" for k, v in timings["tasks"].items()), file=sys.stderr, flush=True)
    return {"scale": scale, "sizes": asdict(s), "generate": gen, "stages": stages, "accounting": accounting(run)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=1.0, help="share of the real sizes (1 = 3,318,333 CC3M rows)")
    p.add_argument("--root", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    p.add_argument("--parts", type=int, default=2, help="[translate] parts")
    p.add_argument("--workers", type=int, default=1, help="Luigi workers per stage")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    p.add_argument("--in-process", action="store_true", help="stages in this process (no per-stage peak RSS)")
    p.add_argument("--reuse", action="store_true",
                   help="with --root: keep the sources and finished stage outputs of an earlier run at this scale")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        res = bench(root, args.scale, parts=args.parts, workers=args.workers, in_process=args.in_process,
                    reuse=args.reuse)
    print(f"scale {args.scale}: {res['sizes']}; sources written in {res['generate']['seconds']:.1f}s; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'stage':<26}{'wall s':>9}{'build s':>9}{'peak RSS MB':>13}{'rows/s':>12}  (rows/s of the build)")
    for st in res["stages"]:
        rss = f"{st['peak_rss'] / 2**20:.0f}" if st["peak_rss"] else "-"
        build = st.get("build_s", st["seconds"])
        rate = f"{st['rows'] / build:,.0f}" if st["rows"] else "-"
        print(f"{st['stage']:<26}{st['seconds']:>9.1f}{build:>9.1f}{rss:>13}{rate:>12}")
    print(f"{'split':<22}{'segments':>10}{'translated':>12}{'flagged':>10}{'set aside':>11}{'shards kept':>13}"
          "  dropped")
    for a in res["accounting"]:
        sh = a.get("shards", {})
        dropped = ", ".join(f"{k.removeprefix('dropped_')} {v}" for k, v in sh.items() if k.startswith("dropped_"))
        print(f"{a['split']:<22}{a['segments']:>10}{a['translated']:>12}{a['flagged']:>10}{a['set_aside']:>11}"
              f"{sh.get('kept', '-'):>13}  {dropped}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
