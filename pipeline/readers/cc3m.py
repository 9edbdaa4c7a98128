"""CC3M reader: the headerless `caption<TAB>url` TSV, streamed in blocks of lines; bad rows go to quarantine.

Not the csv module on purpose: CC3M captions contain quote characters that are part of the text
(csv would treat them as field quoting and merge or mangle rows).  UTF-8 is checked strictly per
line, so one bad byte costs one row, not the file.
"""
from __future__ import annotations

import codecs
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.readers.common import (
    URL_SCHEMES,
    Quarantine,
    ReadResult,
    SourceFormatError,
    is_fetchable_url,
    items_table,
    segments_table,
)
from translation.textkey import text_hash

BATCH_ROWS = 200_000  # flush to Arrow once a block leaves this many rows: 3.3M rows live in compact columns,
# not in Python lists
BLOCK_BYTES = 8 << 20  # read size; a block is decoded in one call, which is most of the speed


def _blocks(f, quarantine: Quarantine) -> Iterator[list[str | None]]:
    """Yield the file's lines in order, block by block, without their b"\\n".

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
        yield _decode_block(block, line_no, quarantine)
        line_no += block.count(b"\n") + 1
    if pending:
        yield _decode_block(pending, line_no, quarantine)


def _decode_block(block: bytes, first_line: int, quarantine: Quarantine) -> list[str | None]:
    try:
        return block.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        pass
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
    return out


def read_cc3m_tsv(path: str | Path, split: str, progress: Callable[[int], None] | None = None) -> ReadResult:
    """Read one CC3M TSV.  Ids are ``cc3m/<split>/<row>`` with row the 0-based line index, so they stay
    the same whatever else in the file is quarantined.  Blank lines are skipped (and counted).

    Quarantine reasons: bad_utf8, missing_field, too_many_fields, empty_caption, empty_url, bad_url.
    `progress`, when given, is called with the number of lines read so far after each batch.
    """
    path = Path(path)
    quarantine = Quarantine("cc3m", split, path)
    prefix = f"cc3m/{split}/"
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
        for lines in _blocks(f, quarantine):
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
                caption = caption.strip()
                url = url.strip()  # also drops the \r of CRLF files
                if not caption:
                    reject(idx + 1, "empty_caption", "caption field is empty", text)
                    continue
                # fast path first (one C call); the helper also accepts upper-case schemes
                if not (url.startswith(URL_SCHEMES) and len(url) > 8) and not is_fetchable_url(url):
                    if url:
                        reject(idx + 1, "bad_url", f"not an http(s):// or file:// URL: {url[:80]!r}", text)
                    else:
                        reject(idx + 1, "empty_url", "url field is empty", text)
                    continue
                add_row(idx)
                add_caption(caption)
                add_url(url)
            next_idx += len(lines)
            if len(rows) >= BATCH_ROWS:  # checked per block, not per row
                flush()
    if rows or not seg_batches:
        flush()
    segments = pa.concat_tables(seg_batches)
    quarantine.rows.sort(key=lambda r: r["line"])  # bad_utf8 rows are found per block, ahead of the others
    stats = {
        "lines": idx + 1,
        "blank_lines": blank,
        "rows_ok": segments.num_rows,
        "quarantined": len(quarantine.rows),
        **quarantine.counts(),
    }
    return ReadResult(segments, pa.concat_tables(item_batches), quarantine.table(), None, stats)
