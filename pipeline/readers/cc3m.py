"""CC3M reader: the headerless `caption<TAB>url` TSV, streamed in blocks of lines; bad rows go to quarantine.

Not the csv module on purpose: CC3M captions contain quote characters that are part of the text
(csv would treat them as field quoting and merge or mangle rows).  UTF-8 is checked strictly per
line, so one bad byte costs one row, not the file.
"""
from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.readers.common import (
    MAX_TEXT_CHARS,
    REMOTE_SCHEMES,
    URL_SCHEMES,
    Quarantine,
    ReadResult,
    SourceFormatError,
    clean_url,
    is_fetchable_url,
    is_local_url,
    items_table,
    segments_table,
)
from translation.textkey import text_hash

BATCH_ROWS = 200_000  # flush to Arrow once a block leaves this many rows: 3.3M rows live in compact columns,
# not in Python lists
BLOCK_BYTES = 8 << 20  # read size; a block is decoded in one call, which is most of the speed
# Bytes a clean CC3M block is made of: printable ASCII, TAB, LF.  A block with anything else (a control
# character, a CR, non-ASCII) gets a closer look; real CC3M blocks are ASCII, so the common case costs
# one bytes.translate in C.
_PLAIN = bytes(range(0x20, 0x7F)) + b"\t\n"
_HIGH = bytes(range(0x80, 0x100))
_C1 = re.compile(rb"\xc2[\x80-\x9f]")  # U+0080..U+009F in UTF-8


def _has_controls(block: bytes) -> bool:
    """Whether a block holds a control character other than TAB, LF and the CR of a CRLF ending."""
    rest = block.translate(None, _PLAIN)
    if not rest:
        return False
    low = rest.translate(None, _HIGH)  # what is left besides UTF-8 multi-byte sequences
    if low.replace(b"\r", b""):  # a C0 control or DEL
        return True
    if low and block.count(b"\r") > block.count(b"\r\n") + block.endswith(b"\r"):  # a lone CR
        return True
    return len(rest) != len(low) and _C1.search(block) is not None


def _blocks(f, quarantine: Quarantine, max_chars: int) -> Iterator[tuple[list[str | None], bool]]:
    """Yield the file's lines in order, block by block, without their b"\\n", and whether the block
    needs the per-caption check (a control character or a line over `max_chars`).

    A block that is valid UTF-8 is decoded and split in two C calls.  Otherwise it is split and each
    line decoded on its own; undecodable lines are quarantined here and yielded as None so the line
    numbering downstream stays exact.
    """
    if f.read(3) != codecs.BOM_UTF8:  # a UTF-8 BOM is an editor artefact, not caption text
        f.seek(0)
    pending = b""
    line_no = 0  # 0-based index of the first line in the current block
    while True:
        data = f.read(BLOCK_BYTES)
        if not data:
            break
        data = pending + data
        cut = data.rfind(b"\n") + 1
        if cut == 0:  # a line longer than a block: keep reading
            pending = data
            continue
        block, pending = data[:cut - 1], data[cut:]
        yield _decode_block(block, line_no, quarantine, max_chars)
        line_no += block.count(b"\n") + 1
    if pending:
        yield _decode_block(pending, line_no, quarantine, max_chars)


def _decode_block(block: bytes, first_line: int, quarantine: Quarantine, max_chars: int) -> tuple[list[str | None], bool]:
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        lines = text.split("\n")
        return lines, _has_controls(block) or max(map(len, lines)) > max_chars
    out: list[str | None] = []
    for i, line in enumerate(block.split(b"\n")):
        try:
            out.append(line.decode("utf-8"))
        except UnicodeDecodeError as e:
            quarantine.add(
                first_line + i + 1,
                "bad_utf8",
                f"invalid UTF-8 byte 0x{line[e.start]:02x} at byte {e.start} of the line",
                line.rstrip(b"\r"),
            )
            out.append(None)
    ok = [line for line in out if line is not None]
    return out, _has_controls(block) or max(map(len, ok), default=0) > max_chars


def read_cc3m_tsv(
    path: str | Path,
    split: str,
    progress: Callable[[int], None] | None = None,
    *,
    max_chars: int = MAX_TEXT_CHARS,
    allow_local_files: bool = False,
) -> ReadResult:
    """Read one CC3M TSV.  Ids are ``cc3m/<split>/<row>`` with row the 0-based line index, so they stay
    the same whatever else in the file is quarantined.  Blank lines are skipped (counted as `blank_line`
    losses in Table 4.1).  A file with no data line at all is a SourceFormatError.

    Quarantine reasons: bad_utf8, missing_field, too_many_fields, empty_caption, bad_unicode, too_long,
    empty_url, bad_url, local_file_refused (a file:// URL, unless `allow_local_files`: a real TSV
    naming file:///etc/passwd must not make the downloader read local files).  Control characters in
    a caption are removed (logged with their line numbers); URLs are percent-encoded where needed.
    `progress`, when given, is called with the number of lines read so far after each batch.
    """
    path = Path(path)
    quarantine = Quarantine("cc3m", split, path)
    prefix = f"cc3m/{split}/"
    schemes = URL_SCHEMES if allow_local_files else REMOTE_SCHEMES
    seg_batches: list[pa.Table] = []
    item_batches: list[pa.Table] = []
    rows: list[int] = []
    caps: list[str] = []
    urls: list[str] = []
    blank = 0
    idx = -1
    next_idx = 0

    def flush() -> None:
        # ids built in Arrow: a Python f-string per row costs as much as the parsing itself
        ids = pc.binary_join_element_wise(prefix, pc.cast(pa.array(rows, pa.int64()), pa.string()), "")
        seg_batches.append(segments_table(ids, "cc3m", split, ids, "caption", caps, list(map(text_hash, caps))))
        item_batches.append(items_table(ids, "cc3m", split, urls))
        rows.clear(), caps.clear(), urls.clear()
        if progress is not None:
            progress(idx + 1)

    try:
        f = open(path, "rb")
    except OSError as e:
        raise SourceFormatError(path, f"cannot open: {e.strerror or e}") from None
    # Bound methods hoisted out of the loop: at 3.3M rows every attribute lookup shows up.
    add_row, add_caption, add_url, reject = rows.append, caps.append, urls.append, quarantine.add
    with f:
        for lines, suspect in _blocks(f, quarantine, max_chars):
            for idx, text in enumerate(lines, next_idx):
                if not text:
                    if text is not None:  # None: undecodable, already quarantined
                        blank += 1
                    continue
                try:
                    caption, url = text.split("\t")
                except ValueError:  # not exactly one TAB: rare, so the common case pays no len() check
                    fields = text.count("\t") + 1
                    if fields == 1 and not text.strip():
                        blank += 1  # whitespace-only line (or a lone \r)
                    elif fields == 1:
                        reject(idx + 1, "missing_field", "expected caption<TAB>url, found no TAB", text)
                    else:
                        reject(idx + 1, "too_many_fields", f"expected 2 TAB-separated fields, found {fields}", text)
                    continue
                if suspect:
                    caption = quarantine.text(idx + 1, caption, "caption", "empty_caption", max_chars, record=text)
                    if caption is None:
                        continue
                else:
                    caption = caption.strip()
                    if not caption:
                        reject(idx + 1, "empty_caption", "caption field is empty", text)
                        continue
                url = url.strip()  # also drops the \r of CRLF files
                # fast path first (one C call); the helpers also accept upper-case schemes
                if not (url.startswith(schemes) and len(url) > 8):
                    if not url:
                        reject(idx + 1, "empty_url", "url field is empty", text)
                        continue
                    if not is_fetchable_url(url):
                        reject(idx + 1, "bad_url", f"not an http(s):// URL: {url[:80]!r}", text)
                        continue
                    if is_local_url(url) and not allow_local_files:
                        reject(idx + 1, "local_file_refused",
                               "file:// URL refused: this profile does not allow local files "
                               "([datasets] allow_local_files)", text)
                        continue
                if suspect or " " in url or not url.isascii():  # what urllib cannot send as it is
                    url = clean_url(url)
                add_row(idx)
                add_caption(caption)
                add_url(url)
            next_idx += len(lines)
            if len(rows) >= BATCH_ROWS:  # checked per block, not per row
                flush()
    if rows or not seg_batches:
        flush()
    segments = pa.concat_tables(seg_batches)
    if segments.num_rows == 0 and not quarantine.rows:
        what = "the file is empty" if idx < 0 else f"all {idx + 1} lines are blank"
        raise SourceFormatError(path, f"no data lines: {what} (expected caption<TAB>url lines)")
    quarantine.rows.sort(key=lambda r: r["line"])  # bad_utf8 rows are found per block, ahead of the others
    quarantine.log_cleaned()
    counts = quarantine.counts()
    stats = {
        "lines": idx + 1,
        "blank_lines": blank,
        "rows_ok": segments.num_rows,
        "quarantined": len(quarantine.rows),
        **counts,
    }
    lost = {"blank_line": blank} if blank else {}
    lost.update({k[len("quarantined_"):]: v for k, v in counts.items() if k.startswith("quarantined_")})
    return ReadResult(segments, pa.concat_tables(item_batches), quarantine.table(), None, stats,
                      original=idx + 1, lost=lost)

