"""Physical lines of a landing file: which line a byte belongs to, and the exact bytes of a line.

Ingestion only reads files this way on the rare path with rejected records: DuckDB's CSV reader finds the bad
records, but its reject table cannot be trusted to say *where* they are. Measured on DuckDB 2.0.0:
``line`` counts records, not physical lines (a quoted field spanning two lines shifts every later number by one),
``line_byte_position`` is sometimes the first byte of the line, sometimes the second (the first byte of a "not valid
UTF-8" line was lost that way) and sometimes a preceding blank line, and ``csv_line`` replaces undecodable bytes by
``?``. So a reject is placed by its byte position and then read back from the file itself, byte for byte.
"""

from __future__ import annotations

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


_CONTROL = {i: f"\\x{i:02x}" for i in (*range(0x20), 0x7F)} | {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}


def one_line(text: str, width: int | None = None) -> str:
    """``text`` on one terminal line: control characters escaped (``\\r``, ``\\t``, ``\\x00``), cut at ``width``."""
    out = text.translate(_CONTROL)
    return out if width is None or len(out) <= width else out[:width - 3] + "..."
