"""Physical lines of a landing file: which line a byte belongs to, and the exact bytes of a line.

Ingestion only reads files this way on the rare path with rejected records: DuckDB's CSV reader finds the bad
records, but its reject table cannot be trusted to say *where* they are. Measured on DuckDB 2.0.0:
``line`` counts records, not physical lines (a quoted field spanning two lines shifts every later number by one),
``line_byte_position`` is sometimes the first byte of the line, sometimes the second (the first byte of a "not valid
UTF-8" line was lost that way) and sometimes a preceding blank line, and ``csv_line`` replaces undecodable bytes by
``?``. So a reject is placed by its byte position and then read back from the file itself, byte for byte.

Every CSV and JSONL file is also scanned once, cheaply (:func:`scan_lines`: newlines counted in C), because the count
of its physical lines is what lets ingestion trust DuckDB's row order for line numbers, and its line endings tell
whether DuckDB's strict CSV reader can read it at all (:func:`normalized_copy` is the way around a mixed file).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def shown(raw: bytes) -> str:
    """A line's bytes as text for people: UTF-8 where it decodes, each other byte as ``\\xNN`` (the exact bytes are
    kept beside it, in ``raw.rejects.raw_bytes``)."""
    return raw.decode("utf-8", errors="backslashreplace")


class PhysicalLines:
    """The lines of one file as split by ``\\n``, numbered from 1; a line's bytes exclude its terminator (``\\n`` or
    ``\\r\\n``). A final line without a newline counts; the empty string after a final newline does not."""

    def __init__(self, path: Path):
        self.path = path
        self.data = path.read_bytes()
        buf = np.frombuffer(self.data, dtype=np.uint8)
        newlines = np.flatnonzero(buf == 0x0A)
        starts = np.concatenate(([0], newlines + 1)).astype(np.int64)
        if len(starts) and starts[-1] == len(self.data):
            starts = starts[:-1]
        self.starts = starts
        # Exclusive end of each line, before its '\n' (the last line may have none: it ends with the file).
        ends = newlines[:len(starts)].astype(np.int64)
        if len(ends) < len(starts):
            ends = np.append(ends, len(self.data)).astype(np.int64)
        cr = np.zeros(len(ends), dtype=bool)
        nonempty = ends > starts
        cr[nonempty] = buf[ends[nonempty] - 1] == 0x0D
        self.ends = ends - cr
        self.blank = self.ends <= self.starts

    def __len__(self) -> int:
        return len(self.starts)

    def line(self, n: int) -> bytes:
        """The bytes of line ``n`` (1-based), without its terminator."""
        return self.data[int(self.starts[n - 1]):int(self.ends[n - 1])]

    def is_blank(self, n: int) -> bool:
        return bool(self.blank[n - 1])

    def line_of(self, byte_pos: int) -> int:
        """The line holding byte ``byte_pos``; if that line is blank, the next line that is not (a record never starts
        on a blank line, and DuckDB sometimes reports a record from the blank line before it)."""
        n = int(np.searchsorted(self.starts, byte_pos, side="right"))
        n = min(max(n, 1), len(self))
        while n < len(self) and self.is_blank(n):
            n += 1
        return n

    def non_blank(self) -> list[int]:
        """Numbers of the lines that are not blank (blank lines are not records)."""
        return [int(i) + 1 for i in np.flatnonzero(~self.blank)]


@dataclass(frozen=True)
class LineScan:
    """What one pass over a file's bytes tells before DuckDB reads it: its physical lines (numbered as
    :class:`PhysicalLines` numbers them) and its line-ending bytes."""
    lines: int
    lf: int
    crlf: int
    cr: int

    @property
    def regular(self) -> bool:
        """Every line ends the same way (LF only, or CRLF only). DuckDB 2.0's strict CSV reader fails a whole read
        ("CSV Parser state machine reached an invalid state") on a file mixing LF and CRLF, or with a CR standing
        alone, so such a file is first tried on its own (see gtm_pipeline.ingest.read)."""
        return self.cr == 0 or self.cr == self.crlf == self.lf


def scan_lines(path: Path) -> LineScan:
    """Count lines and line endings in 4 MiB chunks (C-speed ``bytes.count``; the file is never held whole)."""
    lf = crlf = cr = 0
    prev = b""
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            lf += chunk.count(b"\n")
            n_cr = chunk.count(b"\r")
            if n_cr:  # most exports hold no CR at all: skip the third pass
                cr += n_cr
                crlf += chunk.count(b"\r\n")
            crlf += prev == b"\r" and chunk[:1] == b"\n"
            prev = chunk[-1:]
    return LineScan(lines=lf + (prev not in (b"", b"\n")), lf=lf, crlf=crlf, cr=cr)


def normalized_copy(path: Path, dest: Path, *, blank_lone_cr: bool) -> list[int]:
    """Write ``path`` to ``dest`` with every CRLF as LF, so DuckDB can read a file that mixes both; with
    ``blank_lone_cr`` also blank every line that still holds a CR (keeping its LF). Physical line numbers are
    unchanged either way. Returns the numbers of the blanked lines (the caller rejects them). A CRLF inside a quoted
    value becomes LF: the price of reading such a file at all (the rejects keep the original bytes)."""
    lines = path.read_bytes().replace(b"\r\n", b"\n").split(b"\n")
    blanked = [n for n, line in enumerate(lines, 1) if blank_lone_cr and b"\r" in line]
    for n in blanked:
        lines[n - 1] = b""
    dest.write_bytes(b"\n".join(lines))
    return blanked


def record_span(csv_line: str | None) -> int:
    """Physical lines of a rejected record, from DuckDB's text of it: without the blank lines it sometimes puts
    before the record and the terminator after it (a quote left open swallows the lines that follow)."""
    parts = (csv_line or "").split("\n")
    while len(parts) > 1 and not parts[0].strip("\r"):
        parts.pop(0)
    while len(parts) > 1 and not parts[-1].strip("\r"):
        parts.pop()
    return len(parts)


def place_rejected_records(at: PhysicalLines, records: list[tuple], placed: set[int]
                           ) -> tuple[list[tuple[int, str]], list[tuple[int, int]]]:
    """DuckDB's rejected CSV records, each (its line, byte position, reason, text), placed by byte position: the
    (line, reason) of every physical line they cover, skipping blank and already ``placed`` lines, and each record's
    (first line, line count). A quote left open swallows the following lines into one rejected record: each of its
    physical lines is rejected on its own, naming the first, so every line is accounted for once by its number."""
    out, spans = [], []
    for line, bpos, reason, text in records:
        start = at.line_of(int(bpos)) if bpos is not None else int(line)
        span = record_span(text)
        for n in range(start, min(start + span, len(at) + 1)):
            if n in placed or at.is_blank(n):
                continue
            placed.add(n)
            out.append((n, reason if n == start else f"read as part of the record that starts on line {start} "
                                                     f"({reason})"))
        spans.append((start, span))
    return out, spans


def good_record_lines(phys: PhysicalLines, header_lines: int, rejected_spans: list[tuple[int, int]],
                      n_good: int) -> list[int]:
    """Physical line of each good CSV record, in order, given the rejected records' (first line, line count) and
    how many good records DuckDB read. DuckDB skips blank lines, so they are never candidates."""
    covered = set(range(1, header_lines + 1))
    for start, span in rejected_spans:
        covered.update(range(start, start + max(span, 1)))
    candidates = [n for n in phys.non_blank() if n not in covered]
    if len(candidates) == n_good:
        return candidates
    # A quoted field spans lines: walk records with the csv module to find where each starts.
    text = phys.data.decode("utf-8", errors="replace")
    reader = csv.reader(io.StringIO(text))
    starts, prev_end = [], 0
    # An unterminated quote can swallow the rest of a large file into one field: lift the csv module's 128 KiB
    # field limit for this walk (found by `gtm-pipeline bench` at 5M rows: the whole crm day failed).
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, len(text) + 1))
    try:
        for _ in reader:
            starts.append(prev_end + 1)
            prev_end = reader.line_num
    finally:
        csv.field_size_limit(limit)
    # The csv module yields a blank line as an empty record; DuckDB skips it.
    starts = [s for s in starts if s not in covered and s <= len(phys) and not phys.is_blank(s)]
    if len(starts) == n_good:
        return starts
    # Cannot align exactly: number by order (never drop rows over a line number).
    return list(range(header_lines + 1, header_lines + 1 + n_good))


_CONTROL = {i: f"\\x{i:02x}" for i in (*range(0x20), 0x7F)} | {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}


def one_line(text: str, width: int | None = None) -> str:
    """``text`` on one terminal line: control characters escaped (``\\r``, ``\\t``, ``\\x00``), cut at ``width``."""
    out = text.translate(_CONTROL)
    return out if width is None or len(out) <= width else out[:width - 3] + "..."
