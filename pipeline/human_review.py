"""How the human-review overlay (`translation.overlay`, memory/human.sqlite) reaches the pipeline's outputs:
the shards use the human text, the cards count it, the comparison report scores the flags against the
verdicts and the engines against the reviewed gold rows.

The machine output is never changed: the overlay is applied to the translated table in memory, when a
shard folder or the report is built, and its digest is recorded there so both rebuild after a review.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.layout import RunLayout
from translation.overlay import HumanOverlay, HumanRecord, overlay_digest
from translation.scoring import score_against_gold

# Values of the `text_source` column (training.shards.CAPTION_SHARD) and of the applied table.
MACHINE, HUMAN = "machine", "human"


def human_export_path(memory_export: Path) -> Path:
    """Where `ptvl memory export OUT` writes the overlay beside OUT: mem.parquet -> mem.human.parquet."""
    memory_export = Path(memory_export)
    return memory_export.with_name(memory_export.stem + ".human.parquet")


def is_overlay_export(path: Path) -> bool:
    """Whether a Parquet file is a `HumanOverlay.export_parquet` file (not a translation memory)."""

    try:
        return {"kind", "uid"} <= set(pq.read_schema(path).names)
    except (OSError, pa.ArrowException):  # not Parquet at all: the memory import says what is wrong
        return False


def digest_for(root: Path, engine_id: str | None) -> str:
    """The overlay digest of one engine id (None: the whole file, gold included); no file = empty overlay."""
    return overlay_digest(RunLayout(root).human_overlay, engine_id)


def load_review(root: Path, engine_id: str) -> tuple[dict[str, HumanRecord], dict[tuple[str, str], str]]:
    """(latest correction per text_hash, latest verdict per (text_hash, flag)) of one engine id; both empty
    when the run was never reviewed."""
    path = RunLayout(root).human_overlay
    if not path.exists():
        return {}, {}
    with HumanOverlay(path, read_only=True) as ov:
        return ov.corrections(engine_id), ov.verdicts(engine_id)


def review_fingerprint(corrections: Mapping[str, HumanRecord], verdicts: Mapping[tuple[str, str], str],
                       hashes: Iterable[str]) -> str:
    """Fingerprint of what the review changes among `hashes` (one shard folder's strings): the current human
    text per corrected hash and the current verdict per (hash, flag).  Content, not ids: a review elsewhere,
    or a verdict repeated, leaves it unchanged, so only the folders whose rows change are rebuilt."""
    wanted = set(hashes)
    items = sorted([("c", h, r.text_pt) for h, r in corrections.items() if h in wanted]
                   + [("v", h, f + "=" + v) for (h, f), v in verdicts.items() if h in wanted])
    return hashlib.blake2b(json.dumps(items, ensure_ascii=False).encode("utf-8", "surrogatepass"),
                           digest_size=8).hexdigest()


def apply_review(translated: pl.DataFrame, corrections: Mapping[str, HumanRecord],
                 verdicts: Mapping[tuple[str, str], str]) -> pl.DataFrame:
    """`translated` (TRANSLATED rows of one engine id) with the people's review applied, by text_hash.

    Added columns, for provenance: ``text_source`` ("human" where a correction exists, else "machine"),
    ``text_pt_machine`` and ``flags_machine`` (the engine's output and the flags raised on it, unchanged).
    Changed: ``text_pt`` becomes the latest human text; ``flags`` (and ``flag_reasons``, same order) are
    the flags that hold for the text as shipped: none for a human text (the person vouched for it, so no
    machine flag may drop it), and for a machine text its flags minus those judged ``false_alarm``.
    """
    # Vectorised (a run has millions of rows and a review touches a few hundred strings): the human texts
    # join by text_hash; only rows with a verdict on one of their flags are filtered one by one.
    if "flags" not in translated.columns:
        translated = translated.with_columns(pl.lit(None, pl.List(pl.String)).alias("flags"))
    if "flag_reasons" not in translated.columns:
        translated = translated.with_columns(pl.lit(None, pl.List(pl.String)).alias("flag_reasons"))
    fixes = pl.DataFrame({"text_hash": list(corrections), "_human": [r.text_pt for r in corrections.values()]},
                         schema={"text_hash": pl.String, "_human": pl.String})
    out = translated.with_columns(pl.col("text_pt").alias("text_pt_machine"), pl.col("flags").alias("flags_machine"))
    out = out.join(fixes, on="text_hash", how="left", maintain_order="left")
    human = pl.col("_human").is_not_null()
    empty = pl.lit([], pl.List(pl.String))
    out = out.with_columns(
        pl.when(human).then(pl.col("_human")).otherwise(pl.col("text_pt")).alias("text_pt"),
        pl.when(human).then(pl.lit(HUMAN)).otherwise(pl.lit(MACHINE)).alias("text_source"),
        pl.when(human).then(empty).otherwise(pl.col("flags").fill_null(empty)).alias("flags"),
        pl.when(human).then(empty).otherwise(pl.col("flag_reasons").fill_null(empty)).alias("flag_reasons"),
    ).drop("_human")
    false_alarms: dict[str, set[str]] = {}
    for (h, f), v in verdicts.items():
        if v == "false_alarm" and h not in corrections:
            false_alarms.setdefault(h, set()).add(f)
    if not false_alarms:
        return out
    # The few rows with a false alarm: drop those flags (and their reasons, same order).
    idx = out.with_row_index("_i").filter(pl.col("text_hash").is_in(list(false_alarms)))
    new_flags, new_reasons = out["flags"].to_list(), out["flag_reasons"].to_list()
    for i, h, fl, rs in idx.select("_i", "text_hash", "flags", "flag_reasons").iter_rows():
        keep = [j for j, f in enumerate(fl) if f not in false_alarms[h]]
        new_flags[i] = [fl[j] for j in keep]
        new_reasons[i] = [rs[j] for j in keep if j < len(rs)]
    return out.with_columns(pl.Series("flags", new_flags, dtype=pl.List(pl.String)),
                            pl.Series("flag_reasons", new_reasons, dtype=pl.List(pl.String)))


# --- the comparison report ---------------------------------------------------------------------------

def flag_verdict_figures(translated: pl.DataFrame, verdicts: Mapping[tuple[str, str], str]) -> list[dict]:
    """Per flag: how the people judged the rows the engine flagged.  `translated` holds one engine id's
    rows with their machine ``flags``; a verdict counts when its flag is raised on that text (a verdict on a
    flag no longer raised, e.g. after a threshold change, is left out).  Distinct strings, not rows: a
    verdict is on a text_hash.  precision = confirmed / (confirmed + false alarms), None with no verdict."""
    flagged: dict[str, set[str]] = {}
    for h, fl in zip(translated["text_hash"].to_list(), translated["flags"].to_list(), strict=True):
        for f in fl or []:
            flagged.setdefault(f, set()).add(h)
    out = []
    for flag in sorted({f for _, f in verdicts} & set(flagged)):
        said = [v for (h, f), v in verdicts.items() if f == flag and h in flagged[flag]]
        confirmed, false_alarms = said.count("confirmed"), said.count("false_alarm")
        out.append({"flag": flag, "flagged": len(flagged[flag]), "reviewed": confirmed + false_alarms,
                    "confirmed": confirmed, "false_alarms": false_alarms,
                    "precision": confirmed / (confirmed + false_alarms) if confirmed + false_alarms else None})
    return out


def review_figures(root: Path, translated: Mapping[str, pl.DataFrame]) -> dict:
    """What the report shows of the review: {"digest", "flags": engine -> flag_verdict_figures,
    "gold": engine -> score_against_gold on the reviewed gold rows (the engine's machine text against the
    approved PT-PT), "gold_rows": n}.  `translated`: engine name -> its TRANSLATED rows (all splits)."""
    path = RunLayout(root).human_overlay
    figures: dict = {"digest": digest_for(root, None), "flags": {}, "gold": {}, "gold_rows": 0}
    if not path.exists():
        return figures
    with HumanOverlay(path, read_only=True) as ov:
        gold = ov.gold()
        for engine, df in translated.items():
            if not df.height:
                continue
            engine_id = df["engine_id"][0]
            rows = flag_verdict_figures(df, ov.verdicts(engine_id))
            if rows:
                figures["flags"][engine] = rows
    figures["gold_rows"] = len(gold)
    if gold:
        for engine, df in translated.items():
            machine = dict(zip(df["text_hash"].to_list(), df["text_pt"].to_list(), strict=True))
            pairs = [(machine[g.text_hash], g.text_pt) for g in gold if g.text_hash in machine]
            if pairs:  # an engine scores on the reviewed rows it translated (n says how many)
                figures["gold"][engine] = score_against_gold([h for h, _ in pairs], [r for _, r in pairs])
    return figures
