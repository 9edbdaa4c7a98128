"""Dataset cards: the README.md written beside every shard folder, so a shard copied elsewhere still
says where it came from, how it was translated and filtered, and what its licence terms are."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.io import write_text_atomic
from ptvl_io.formatting import md_cell, md_code

LICENCE_NOTES = {
    "cc3m": (
        "Conceptual Captions (Sharma et al., 2018). The captions and URLs are provided by Google LLC "
        "'as is' for any purpose; the images belong to their owners and are not licensed by the dataset. "
        "Translations by the engine named above."
    ),
    "coco": (
        "MS-COCO captions (Lin et al., 2014; Karpathy split) under CC BY 4.0; images under the Flickr terms "
        "of use of their owners."
    ),
    "visdial": "VisDial v1.0 (Das et al., 2017) annotations under CC BY 4.0; images from COCO / Flickr.",
    "vqav2": "VQAv2 (Goyal et al., 2017) annotations under CC BY 4.0; images from COCO val2014 (Flickr terms).",
}


def split_note(dataset: str, split: str, fold_restval: bool) -> str | None:
    """What a reader of the card must know about how this split was drawn from the source, or None."""
    if dataset != "coco":
        return None
    if split == "train" and fold_restval:
        return ("Karpathy `train` **plus `restval`** (113,287 images in the full file), the training set of "
                "FROMAGe and the thesis; `[datasets.coco] fold_restval = false` keeps restval apart.")
    if split == "train":
        return ("Karpathy `train` only (82,783 images in the full file): restval is kept apart "
                "(`[datasets.coco] fold_restval = false`).")
    if split == "restval":
        return "Karpathy `restval` on its own (`[datasets.coco] fold_restval = false`)."
    return None


def type_name(t: pa.DataType) -> str:
    """A pyarrow type as a reader of the card would write it: list<string>, struct<question: string, ...>."""
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"list<{type_name(t.value_type)}>"
    if pa.types.is_struct(t):
        return "struct<" + ", ".join(f"{f.name}: {type_name(f.type)}" for f in t) + ">"
    return str(t)


def columns_section(schema: pa.Schema) -> list[str]:
    """The Markdown table of a shard schema's columns and their Arrow types."""
    return ["| column | type |", "|---|---|"] + [f"| `{f.name}` | `{type_name(f.type)}` |" for f in schema]


def sources_section(marker: Path | None) -> list[str]:
    """The card's "Source files" section from the source's `_FETCHED.json`: each official file's sha256 and
    how it was obtained (downloaded from its URL, or imported from the user's file, saying when its hash is
    not the manifest's).  Nothing when there is no marker."""
    if marker is None or not Path(marker).exists():
        return []
    data = json.loads(Path(marker).read_text(encoding="utf-8"))
    lines = ["## Source files", ""]
    if "files" not in data:
        return lines + ["The embedded synthetic sample (`[sample]`), written by ptvl: no official file.", ""]
    lines += ["| file | sha256 | obtained |", "|---|---|---|"]
    for f in data["files"]:
        if f["status"] == "imported":
            how = f"imported by the user from {md_code(f['imported_from'])} ({md_cell(f['placed_by'])})"
            if f.get("checksum_accepted"):
                how += (f"; **not the manifest's sha256** ({md_code(f['sha256_expected'] or 'none recorded')}), "
                        "accepted with --accept-checksum")
                if f.get("count_mismatch"):
                    how += f"; {md_cell(f['count_mismatch'])}"
        else:
            how = f"downloaded from {md_code(f['url'])}"
        if not f.get("checksum_accepted"):
            how += "; sha256 not yet in the manifest" if f.get("sha256_pending") else "; sha256 as in the manifest"
        lines.append(f"| {md_code(f['path'])} | {md_code(f['sha256'])} | {how} |")
    return lines + [""]


def _review_rows(stats: dict) -> list[str]:
    """The card's lines on the human review (ptvl review) applied to the shards; none for stats written
    before the overlay existed."""
    if "human_corrected" not in stats:
        return []
    return [
        f"| human-corrected rows | {stats['human_corrected']:,} (text from a person's correction in "
        "`memory/human.sqlite`; the engine's output kept beside it where the layout has the columns) |",
        f"| kept by review | {stats.get('kept_by_human_text', 0):,} rows whose machine text the filter policy "
        f"would drop, corrected by a person; {stats.get('kept_by_false_alarm', 0):,} rows whose dropping flags "
        "a person judged false alarms |",
    ]


def write_dataset_card(
    out_dir: Path,
    *,
    dataset: str,
    split: str,
    engine: str,
    engine_id: str,
    layout: str,
    policy: list[str] | None,
    stats: dict,
    availability_md: str | None,
    source_note: str | None = None,
    schema: pa.Schema | None = None,
    sources_marker: Path | None = None,
) -> Path:
    """Write out_dir/README.md describing one shard folder.  `source_note` (split_note) says how the
    split was drawn from the source when that is not obvious; `sources_marker` (the source's
    `_FETCHED.json`) lists the official files the rows were read from and where each came from.  `schema` is the shard contract the parts
    were cast to (training.shards); by default it is read from the first part file, which holds exactly
    that contract since the writer casts every table to it."""
    if schema is None:
        parts = sorted(Path(out_dir).glob("part-*.parquet"))
        schema = pq.read_schema(parts[0]) if parts else None
    dropped = {k: v for k, v in stats.items() if k.startswith("dropped_")}
    lines = [
        f"# {md_cell(dataset)}/{md_cell(split)} in European Portuguese ({md_cell(engine)})",
        "",
        "Written by ptvl's BuildShards stage. Load with "
        "`datasets.load_dataset(\"parquet\", data_files=\"part-*.parquet\")` or `polars.scan_parquet`.",
        "",
        "| | |",
        "|---|---|",
        f"| source dataset | {md_cell(dataset)} (split {md_code(split)}) |",
        *([f"| split drawn as | {source_note} |"] if source_note else []),  # ptvl's own Markdown (split_note)
        f"| translation engine | {md_code(engine)} ({md_code(engine_id)}) |",
        f"| layout | {layout} |",
        f"| filter policy | {'drop rows flagged ' + ', '.join(md_code(p) for p in policy) if policy else 'none (all rows kept)'} |",
        f"| rows considered | {stats.get('total', 0):,} |",
        f"| rows kept | {stats.get('kept', 0):,} |",
        *_review_rows(stats),
        f"| images | {stats.get('images', 0):,} |",
        f"| files | {md_cell(', '.join(stats.get('files', [])))} |",
        "",
        "## Columns",
        "",
        *(columns_section(schema) if schema is not None else ["No part file was written (no row kept)."]),
        "",
        "## Dropped, by reason",
        "",
    ]
    if dropped:
        lines += ["| reason | rows |", "|---|---|"] + [f"| {md_cell(k[8:])} | {v:,} |" for k, v in sorted(dropped.items())]
    else:
        lines.append("Nothing was dropped.")
    if availability_md:
        lines += ["", availability_md.strip()]
    sources = sources_section(sources_marker)
    if sources:
        lines += ["", *sources[:-1]]
    lines += ["", "## Licence", "", LICENCE_NOTES.get(dataset, "See the source dataset's terms."), ""]
    dest = out_dir / "README.md"
    write_text_atomic(dest, "\n".join(lines))
    return dest
