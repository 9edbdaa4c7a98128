"""What every reader shares: the file-level error, the result bundle, quarantine rows and table builders."""
from __future__ import annotations

import json
import logging
import re
import urllib.parse
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.contracts import DIALOGS, ITEMS, QUARANTINE, SEGMENTS
from translation.textkey import text_hash

log = logging.getLogger("ptvl")

RAW_CAP_BYTES = 2048  # QUARANTINE.raw is capped so one giant bad record cannot bloat the table
URL_SCHEMES = ("http://", "https://", "file://")
REMOTE_SCHEMES = ("http://", "https://")
# Longest string a reader keeps ([datasets] max_text_chars).  Real captions, questions and answers are
# far shorter (CC3M's longest is ~300 characters); a 1 MB "caption" is a broken record, and kept it
# would fill one translation request on its own.
MAX_TEXT_CHARS = 2000

# Line breaks, tabs, VT/FF inside a string become one space; every other C0/C1 control character
# (NUL, ESC, DEL ...) is removed: none of them is text a translator or a tokenizer should see.
_SPACING_CONTROLS = re.compile(r"\s*[\t\n\r\x0b\x0c]+\s*")
_OTHER_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# A lone surrogate (JSON "\ud800" escapes) cannot be written as UTF-8: the string is unusable.
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# Characters allowed in a URL as it is sent (RFC 3986 reserved + unreserved, and % of escapes).
URL_UNSAFE = re.compile(r"[^A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]")


class SourceFormatError(Exception):
    """A source file that cannot be read at all (not a bad row: those go to quarantine).

    The message names the file and says what is wrong: the parse position of a truncated or corrupt
    JSON file, or the key missing from the expected top-level layout.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass
class ReadResult:
    """One reader run: the contracts' tables plus counts (`stats`) for the ingest report.

    `dialogs` is VisDial's DIALOGS table; `extra` is another source-specific side table (VQAv2: its
    VQA_QUESTIONS table, written beside items.parquet as questions.parquet); None when the source has none.
    """

    segments: pa.Table
    items: pa.Table
    quarantine: pa.Table
    dialogs: pa.Table | None = None
    stats: dict[str, int] = field(default_factory=dict)
    extra: pa.Table | None = None
    # For Table 4.1: how many image units this split has in the source (CC3M: every line of the TSV;
    # COCO / VisDial: image records; VQAv2: images its questions name), and those the reader could not
    # turn into an item, by reason.  original == items.num_rows + sum(lost.values()).
    original: int = 0
    lost: dict[str, int] = field(default_factory=dict)

    def read_stats(self) -> dict[str, Any]:
        """What IngestSegments writes as read_stats.json beside items.parquet (the availability report
        reads `original` and `lost` from it)."""
        return {"original": self.original, "items": self.items.num_rows, "lost": dict(self.lost),
                "stats": dict(self.stats)}


def cap_raw(raw: bytes | str | Any) -> str:
    """The offending input as text for QUARANTINE.raw: bytes decoded with replacement, records as JSON,
    at most RAW_CAP_BYTES of UTF-8."""
    if isinstance(raw, bytes):
        text = raw[: RAW_CAP_BYTES * 2].decode("utf-8", errors="replace")
    elif isinstance(raw, str):
        text = raw
    else:
        try:
            text = json.dumps(raw, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = repr(raw)
    # backslashreplace: a lone surrogate (the reason the row is here, maybe) cannot be written as UTF-8
    encoded = text.encode("utf-8", errors="backslashreplace")
    return encoded[:RAW_CAP_BYTES].decode("utf-8", errors="ignore")


def _printable(text: str | None) -> str | None:
    """A string that can be written as UTF-8 (lone surrogates escaped)."""
    return None if text is None else text.encode("utf-8", errors="backslashreplace").decode("utf-8")


class Quarantine:
    """Collects rows a reader could not use, each with a short reason class and a readable detail."""

    def __init__(self, dataset: str, split: str, source_file: str | Path) -> None:
        self.dataset, self.split, self.source_file = dataset, split, str(source_file)
        self.rows: list[dict[str, Any]] = []
        self.cleaned: list[int] = []  # line / record numbers of strings whose control characters were removed

    def add(
        self,
        line: int,
        reason: str,
        detail: str,
        raw: bytes | str | Any,
        split: str | None = None,
        source_file: str | Path | None = None,
    ) -> None:
        """One rejected row; `split` / `source_file` override the collector's (a record's own split,
        a second file such as dense annotations)."""
        self.rows.append(
            {
                "dataset": self.dataset,
                "split": _printable(split if split is not None else self.split),
                "source_file": str(source_file) if source_file is not None else self.source_file,
                "line": int(line),
                "reason": reason,
                "detail": _printable(detail),
                "raw": cap_raw(raw),
            }
        )

    def text(
        self,
        line: int,
        raw: str,
        what: str,
        empty_reason: str,
        max_chars: int,
        record: Any = None,
        **where: Any,
    ) -> str | None:
        """`raw` cleaned by check_text, or None after quarantining it (bad_unicode, too_long or
        `empty_reason`); `what` names the string in the detail ("image 42: caption 3")."""
        text, reason, detail, cleaned = check_text(raw, max_chars)
        if reason is None and not text:
            reason, detail = empty_reason, "empty"
        if reason is not None:
            self.add(line, reason, f"{what}: {detail}", raw if record is None else record, **where)
            return None
        if cleaned:
            self.cleaned.append(int(line))
        return text

    def counts(self) -> dict[str, int]:
        out = {f"quarantined_{k}": v for k, v in sorted(Counter(r["reason"] for r in self.rows).items())}
        if self.cleaned:
            out["cleaned_control_chars"] = len(self.cleaned)
        return out

    def log_cleaned(self) -> None:
        """Say (once per read) which strings lost control characters: they are kept, so no quarantine row."""
        if self.cleaned:
            first = ", ".join(map(str, sorted(self.cleaned)[:5]))
            log.warning("%s: control characters removed from %d strings (line / record %s%s)", self.source_file,
                        len(self.cleaned), first, " ..." if len(self.cleaned) > 5 else "")

    def table(self) -> pa.Table:
        return pa.Table.from_pylist(self.rows, schema=QUARANTINE)


Strings = Sequence[str] | pa.Array


def _column(values: str | Strings | None, n: int) -> pa.Array:
    """A string column: a scalar repeats (without building an n-long Python list), None is all null."""
    if values is None:
        return pa.nulls(n, pa.string())
    if isinstance(values, str):
        return pa.repeat(pa.scalar(values, pa.string()), n)
    # Type inference and a cast, not pa.array(values, pa.string()): in pyarrow 26 the typed
    # conversion of a str list is several times slower than the inferred one.
    arr = values if isinstance(values, pa.Array) else pa.array(values)
    return arr if arr.type == pa.string() else arr.cast(pa.string())


def segments_table(
    segment_ids: Strings,
    dataset: str,
    splits: str | Strings,
    item_ids: Strings,
    fields: str | Strings,
    texts: Strings,
    hashes: Strings | None = None,
) -> pa.Table:
    """A SEGMENTS table; a scalar `splits` / `fields` fills the whole column; `hashes` default to
    text_hash of each text."""
    n = len(segment_ids)
    if hashes is None:
        hashes = [text_hash(t) for t in (texts.to_pylist() if isinstance(texts, pa.Array) else texts)]
    cols = [segment_ids, dataset, splits, item_ids, fields, texts, hashes]
    return pa.Table.from_arrays([_column(c, n) for c in cols], schema=SEGMENTS)


def items_table(
    image_ids: Strings,
    dataset: str,
    splits: str | Strings,
    urls: Strings,
    source_paths: Sequence[str | None] | pa.Array | None = None,
) -> pa.Table:
    """An ITEMS table; `source_paths` None means unknown for every row."""
    n = len(image_ids)
    cols = [image_ids, dataset, splits, urls, source_paths]
    return pa.Table.from_arrays([_column(c, n) for c in cols], schema=ITEMS)


def empty_dialogs() -> pa.Table:
    return DIALOGS.empty_table()


def load_json(path: str | Path) -> Any:
    """Parse a whole JSON file, turning every way it can fail into a SourceFormatError that names the
    file and the position (a truncated download fails at its last byte)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SourceFormatError(path, "file not found") from None
    except OSError as e:
        raise SourceFormatError(path, f"cannot read file: {e}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SourceFormatError(path, f"not UTF-8 text: invalid byte at offset {e.start}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        # a cut inside a string fails where the string starts, not at the end of the file
        cut = e.pos >= len(text.rstrip()) or (e.msg.startswith("Unterminated string") and text.count('"', e.pos) == 1)
        hint = " (file truncated?)" if cut else ""
        raise SourceFormatError(
            path,
            f"invalid JSON at line {e.lineno} column {e.colno} (char {e.pos} of {len(text)}){hint}: {e.msg}",
        ) from None


def require(obj: Any, key: str, kind: type | tuple[type, ...], path: str | Path, where: str) -> Any:
    """obj[key] checked for presence and type, else a SourceFormatError saying which key is wrong."""
    if not isinstance(obj, dict):
        raise SourceFormatError(path, f"{where} should be a JSON object, found {type(obj).__name__}")
    if key not in obj:
        raise SourceFormatError(path, f"missing key {key!r} in {where} (found keys: {sorted(obj)[:10]})")
    value = obj[key]
    if not isinstance(value, kind):
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise SourceFormatError(path, f"{where}[{key!r}] should be {want}, found {type(value).__name__}")
    return value


def check_text(raw: str, max_chars: int = MAX_TEXT_CHARS) -> tuple[str, str | None, str | None, bool]:
    """(clean text, reason, detail, cleaned) for one source string.

    Control characters are stripped (line breaks and tabs become a space) and the ends trimmed;
    `cleaned` says whether anything but the ends changed.  reason is `bad_unicode` for a lone surrogate
    and `too_long` past `max_chars` (text is then ""), else None.  An empty result is the caller's
    to name (empty_caption, empty_question ...).
    """
    bad = _SURROGATE.search(raw)
    if bad is not None:
        return "", "bad_unicode", f"lone surrogate U+{ord(bad.group()):04X} at character {bad.start()}", False
    cleaned = False
    if _CONTROLS.search(raw.strip()):
        text = _OTHER_CONTROLS.sub("", _SPACING_CONTROLS.sub(" ", raw)).strip()
        cleaned = True
    else:
        text = raw.strip()
    if len(text) > max_chars:
        return "", "too_long", f"{len(text):,} characters, more than max_text_chars={max_chars:,}", cleaned
    return text, None, None, cleaned


def clean_url(url: str) -> str:
    """The URL as it should be sent: ends trimmed, and spaces, non-ASCII and other characters that may
    not appear in a URL percent-encoded as UTF-8 (existing %XX escapes are kept).  img2dataset would
    otherwise fail such a URL as `bad_url`; browsers send the encoded form too."""
    url = url.strip()
    if URL_UNSAFE.search(url) is None:
        return url
    # surrogatepass: a lone surrogate (a JSON escape) becomes %ED%A0%80..., a URL that can be written
    # and fails at download with its own reason, instead of an encoding error that stops the read
    return urllib.parse.quote(url, safe="-._~:/?#[]@!$&'()*+,;=%", errors="surrogatepass")


def has_surrogate(text: str) -> bool:
    """Whether a string holds a lone surrogate (it cannot be written as UTF-8)."""
    return _SURROGATE.search(text) is not None


def is_local_url(url: str) -> bool:
    """A file:// URL (scheme case-insensitive)."""
    return url[:7].lower() == "file://"


def is_fetchable_url(url: str) -> bool:
    """http(s) or file URL with something after the scheme (schemes are case-insensitive)."""
    low = url[:8].lower()
    return any(low.startswith(s) and len(url) > len(s) for s in URL_SCHEMES)
