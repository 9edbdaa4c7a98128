"""Per-URL failure reasons and the availability reports (thesis Table 4.1 plus a breakdown by reason).

`classify` maps the raw `error_message` img2dataset stores for a failed URL (urllib, http.client,
ssl, OpenCV and img2dataset's own strings; observed against a local faulty server, see
tests/test_images.py) to a short reason class.  The table functions read `availability.parquet`
files (contract AVAILABILITY) and work unchanged at CC3M scale: they only count rows.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import polars as pl

from ptvl_io.formatting import md_cell

OK = "ok"
# Every class `classify` can return, besides the open family http_<code>.
REASONS: tuple[str, ...] = (
    OK,
    "timeout",
    "dns",  # the name does not resolve: the host is gone (permanent)
    "dns_temporary",  # EAI_AGAIN: the resolver was overloaded or unreachable (transient)
    "connection_refused",
    "connection_reset",  # reset / closed without response
    "incomplete_read",  # body shorter than Content-Length
    "unreachable",  # no route to host / network unreachable
    "ssl",
    "too_many_redirects",
    "file_not_found",  # file:// URL whose file is missing
    "bad_url",  # unsupported scheme or not a URL
    "disallowed",  # X-Robots-Tag noai / noimageai ... (img2dataset honours it by default)
    "not_an_image",  # body is not an image (HTML page, empty body ...)
    "decode_error",  # looks like an image but OpenCV cannot decode it (corrupt or truncated)
    "too_small",
    "too_large",
    "bad_aspect_ratio",
    "hash_mismatch",
    "other",
)

# Reasons worth a second attempt later: the same request can succeed once the server or the network
# recovers.  "http_5xx" stands for every 5xx code.  `dns` is NOT transient: on CC3M it almost always
# means the domain is gone; its transient form (resolver overload, EAI_AGAIN) is `dns_temporary`.
TRANSIENT_REASONS: frozenset[str] = frozenset(
    {
        "timeout",
        "http_5xx",
        "http_429",
        "http_408",
        "connection_reset",
        "connection_refused",
        "incomplete_read",
        "dns_temporary",
        "unreachable",
    }
)

_HTTP = re.compile(r"HTTP Error (\d{3})")

# Ordered (first match wins): substrings of the lower-cased message.
_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    # urllib reports a redirect loop as "HTTP Error 30x: ... would lead to an infinite loop", so it
    # must be caught before the generic HTTP rule.
    ("too_many_redirects", ("infinite loop", "redirect error", "redirects")),
    ("timeout", ("timed out", "timeout")),
    ("dns_temporary", ("temporary failure in name resolution", "errno -3]")),
    (
        "dns",
        (
            "name or service not known",
            "no address associated with hostname",
            "nodename nor servname",
            "getaddrinfo failed",
            "errno -2]",
            "errno -5]",
        ),
    ),
    ("connection_refused", ("connection refused", "errno 111]")),
    (
        "connection_reset",
        (
            "connection reset",
            "errno 104]",
            "remote end closed connection",
            "connection aborted",
            "broken pipe",
            "eof occurred in violation of protocol",
        ),
    ),
    ("incomplete_read", ("incompleteread", "incomplete read")),
    ("unreachable", ("no route to host", "network is unreachable", "errno 113]", "errno 101]")),
    ("ssl", ("[ssl", "ssl:", "certificate", "sslerror", "tlsv1")),
    ("file_not_found", ("no such file or directory", "errno 2]", "is a directory")),
    ("bad_url", ("unknown url type", "url can't contain control characters", "no host given")),
    ("disallowed", ("x-robots-tag",)),
    # OpenCV asserting on an empty buffer: the server answered with no body at all.
    ("not_an_image", ("!buf.empty()", "not an image")),
    ("decode_error", ("image decoding error", "opencv", "imdecode")),
    ("too_small", ("image too small",)),
    ("too_large", ("image area too large",)),
    ("bad_aspect_ratio", ("aspect ratio too large",)),
    ("hash_mismatch", ("hash mismatch",)),
)


def classify(error_message: str | None) -> str:
    """Normalise one img2dataset error message into a reason class (`ok` when there is none)."""
    if error_message is None or error_message == "":
        return OK
    msg = error_message.lower()
    if "infinite loop" not in msg:
        m = _HTTP.search(error_message)
        if m:
            return f"http_{m.group(1)}"
    for reason, needles in _RULES:
        if any(n in msg for n in needles):
            return reason
    return "other"


def is_transient(reason: str, reasons: Iterable[str] = TRANSIENT_REASONS) -> bool:
    """True when `reason` is in `reasons`; the token "http_5xx" there matches every http_5dd."""
    reasons = set(reasons)
    if reason in reasons:
        return True
    return "http_5xx" in reasons and re.fullmatch(r"http_5\d\d", reason) is not None


# ---------------------------------------------------------------- reports


Source = Path | str | pl.DataFrame
# A split's reader losses: the read_stats.json IngestSegments writes beside items.parquet (or its dict):
# {"original": every image unit of the source split, "lost": {reason: units the reader could not use}}.
Read = Path | str | Mapping
READ_STATS = "read_stats.json"
READ_PREFIX = "read:"  # reader losses show in the breakdown as read:<quarantine reason>


def _load(src: Source) -> pl.DataFrame:
    if isinstance(src, pl.DataFrame):
        return src
    path = Path(src)
    if path.is_dir():
        path = path / "availability.parquet"
    return pl.read_parquet(path, columns=["status", "reason"])


def _read_losses(src: Read | None) -> tuple[int | None, dict[str, int]]:
    """(original, lost by reason) from a read_stats.json (or its dict); (None, {}) when there is none
    (a run ingested before reader losses were recorded: the table then starts from the URLs)."""
    if src is None:
        return None, {}
    if not isinstance(src, Mapping):
        path = Path(src)
        if path.is_dir():
            path = path / READ_STATS
        if not path.exists():
            return None, {}
        src = json.loads(path.read_text())
    return int(src["original"]), {str(k): int(v) for k, v in src.get("lost", {}).items() if v}


def availability_counts(
    per_split: Mapping[str, Source], reads: Mapping[str, Read] | None = None
) -> pl.DataFrame:
    """One row per split plus `total`: original, available, lost, loss_pct (numbers, for code).

    `original` is the source's own count when the split's reader losses are given (`reads`: CC3M's
    every TSV line, blank and malformed ones included, as Table 4.1 counts them), else the URLs."""
    rows = []
    for split, src in per_split.items():
        df = _load(src)
        original, _ = _read_losses((reads or {}).get(split))
        available = df.filter(pl.col("status") == "success").height
        rows.append({"split": split, "original": df.height if original is None else original, "available": available})
    counts = pl.DataFrame(rows, schema={"split": pl.Utf8, "original": pl.Int64, "available": pl.Int64})
    total = counts.select(pl.lit("total").alias("split"), pl.col("original").sum(), pl.col("available").sum())
    counts = pl.concat([counts, total])
    return counts.with_columns(
        (pl.col("original") - pl.col("available")).alias("lost"),
        pl.when(pl.col("original") > 0)
        .then(100.0 * (pl.col("original") - pl.col("available")) / pl.col("original"))
        .otherwise(0.0)
        .alias("loss_pct"),
    )


def availability_table(per_split: Mapping[str, Source], reads: Mapping[str, Read] | None = None) -> pl.DataFrame:
    """Thesis Table 4.1 layout: rows original / available / loss, a column per split and `total`.

    Cells are formatted as in the thesis ("3,318,333", "18.4%"); use `availability_counts` for numbers.
    """
    counts = availability_counts(per_split, reads)
    data: dict[str, list[str]] = {"": ["original", "available", "loss"]}
    for r in counts.iter_rows(named=True):
        data[r["split"]] = [f"{r['original']:,}", f"{r['available']:,}", f"{r['loss_pct']:.1f}%"]
    return pl.DataFrame(data)


def reason_breakdown(per_split: Mapping[str, Source], reads: Mapping[str, Read] | None = None) -> pl.DataFrame:
    """Long table: split, reason, count, share (% of that split's original count); `total` rows included.

    Download reasons (`ok` for the available images) plus the reader's losses as ``read:<reason>``, so
    a split's counts add up to its `original`.  Sorted by split (input order, total last), then count
    descending.
    """
    schema = {"split": pl.Utf8, "reason": pl.Utf8, "count": pl.Int64}
    parts = []
    order = list(per_split) + ["total"]
    for split, src in per_split.items():
        counts = _load(src).group_by("reason").agg(pl.len().cast(pl.Int64).alias("count"))
        parts.append(counts.select(pl.lit(split).alias("split"), "reason", "count"))
        _, lost = _read_losses((reads or {}).get(split))
        if lost:
            parts.append(pl.DataFrame({"split": [split] * len(lost), "reason": [READ_PREFIX + r for r in lost],
                                       "count": list(lost.values())}, schema=schema))
    if not parts:
        return pl.DataFrame(schema={**schema, "share": pl.Float64})
    per = pl.concat(parts)
    total = per.group_by("reason").agg(pl.col("count").sum()).select(pl.lit("total").alias("split"), "reason", "count")
    out = pl.concat([per, total])
    out = out.with_columns((100.0 * pl.col("count") / pl.col("count").sum().over("split")).alias("share"))
    rank = pl.col("split").replace_strict(order, list(range(len(order))), return_dtype=pl.Int64)
    return out.sort(rank, -pl.col("count"), pl.col("reason")).select("split", "reason", "count", "share")


def reason_table(per_split: Mapping[str, Source], reads: Mapping[str, Read] | None = None) -> pl.DataFrame:
    """The losses in report layout: a row per reason (download reasons and ``read:<reason>``; not `ok`),
    a column per split and `total`, cells "n (x.x%)" of the split's original count."""
    long = reason_breakdown(per_split, reads).filter(pl.col("reason") != OK)
    splits = list(per_split) + ["total"]
    totals = long.filter(pl.col("split") == "total").sort(-pl.col("count"), pl.col("reason"))
    reasons = totals["reason"].to_list()
    cell = {(r["split"], r["reason"]): f"{r['count']:,} ({r['share']:.1f}%)" for r in long.iter_rows(named=True)}
    data: dict[str, list[str]] = {"reason": reasons}
    for s in splits:
        data[s] = [cell.get((s, reason), "0 (0.0%)") for reason in reasons]
    return pl.DataFrame(data, schema={"reason": pl.Utf8, **{s: pl.Utf8 for s in splits}})


def render_markdown(table: pl.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (integers with thousands separators, floats with 1 decimal)."""

    def fmt(v: object) -> str:
        if v is None:
            return ""
        if isinstance(v, bool):
            return str(v)
        if isinstance(v, int):
            return f"{v:,}"
        if isinstance(v, float):
            return f"{v:.1f}"
        return md_cell(v)  # reasons and error texts come from the sources and the network

    head = "| " + " | ".join(md_cell(c) for c in table.columns) + " |"
    sep = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in table.iter_rows()]
    return "\n".join([head, sep, *body]) + "\n"


def render_report(per_split: Mapping[str, Source], reads: Mapping[str, Read] | None = None) -> str:
    """Markdown report: Table 4.1 then the losses by reason."""
    note = (
        "\n`original` counts the source itself (for CC3M every line of the TSV); `read:<reason>` rows are "
        "the lines or records the reader quarantined (`sources/<dataset>/<split>/quarantine.parquet`), the "
        "others the URLs that failed to download (`images/<dataset>/<split>/availability.parquet`).\n"
        if reads else ""
    )
    return (
        "## Image availability (thesis Table 4.1)\n\n"
        + render_markdown(availability_table(per_split, reads))
        + note
        + "\n## Lost images by reason\n\n"
        + render_markdown(reason_table(per_split, reads))
    )


def run_report(root: Path, keys: Iterable[str]) -> str:
    """render_report for the `<dataset>/<split>` keys of a run root: images/<key>/availability.parquet with
    the reader losses of sources/<key>/read_stats.json."""
    keys = list(keys)
    return render_report({k: root / "images" / k / "availability.parquet" for k in keys},
                         {k: root / "sources" / k / READ_STATS for k in keys})
