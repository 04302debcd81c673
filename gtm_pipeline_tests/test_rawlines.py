"""Physical lines of a landing file: numbering, exact bytes, and placing a byte position DuckDB reports."""

from __future__ import annotations

import pytest

from gtm_pipeline.rawlines import PhysicalLines, one_line, shown


@pytest.mark.parametrize("data, lines, non_blank", [
    (b"", [], []),
    (b"a", [b"a"], [1]),
    (b"a\n", [b"a"], [1]),
    (b"a\r\n\r\nb\xe9\r\n", [b"a", b"", b"b\xe9"], [1, 3]),
    (b"\n\nx", [b"", b"", b"x"], [3]),
    (b"a\rb\n", [b"a\rb"], [1]),   # a lone CR inside a line is data
])
def test_lines_are_split_on_newlines_without_their_terminator(tmp_path, data, lines, non_blank):
    p = tmp_path / "f"
    p.write_bytes(data)
    phys = PhysicalLines(p)
    assert [phys.line(n) for n in range(1, len(phys) + 1)] == lines and phys.non_blank() == non_blank


# The positions DuckDB 2.0.0 reported for this file: the first byte, the second byte, or the blank line before.
DATA = b"h\r\nL-1,jos\xe9\r\n1,2\r\n\r\n\xe9x\r\n"


@pytest.mark.parametrize("byte_pos, line", [(0, 1), (3, 2), (4, 2), (13, 3), (15, 3), (18, 5), (19, 5), (20, 5), (21, 5)])
def test_a_byte_position_is_placed_on_its_line_or_the_next_non_blank_one(tmp_path, byte_pos, line):
    p = tmp_path / "f.csv"
    p.write_bytes(DATA)
    assert PhysicalLines(p).line_of(byte_pos) == line


def test_bytes_are_shown_escaped_and_on_one_line():
    assert shown(b"jos\xe9 \xc3\xa9") == "jos\\xe9 \u00e9"      # only the undecodable byte is escaped
    assert one_line("a\tb\r\x00c") == "a\\tb\\r\\x00c"
    assert one_line("x" * 10, 6) == "xxx..."
