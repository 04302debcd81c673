"""Physical lines of a landing file: numbering, exact bytes, and placing a byte position DuckDB reports."""

from __future__ import annotations

import pytest

from gtm_pipeline.ingest.rawlines import (
    PhysicalLines,
    good_record_lines,
    normalized_copy,
    one_line,
    scan_lines,
    shown,
)


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


@pytest.mark.parametrize("byte_pos, line", [(0, 1), (3, 2), (4, 2), (13, 3), (15, 3), (18, 5), (19, 5), (20, 5),
                                            (21, 5)])
def test_a_byte_position_is_placed_on_its_line_or_the_next_non_blank_one(tmp_path, byte_pos, line):
    p = tmp_path / "f.csv"
    p.write_bytes(DATA)
    assert PhysicalLines(p).line_of(byte_pos) == line


def test_bytes_are_shown_escaped_and_on_one_line():
    assert shown(b"jos\xe9 \xc3\xa9") == "jos\\xe9 \u00e9"      # only the undecodable byte is escaped
    assert one_line("a\tb\r\x00c") == "a\\tb\\r\\x00c"
    assert one_line("x" * 10, 6) == "xxx..."


@pytest.mark.parametrize("data, lines, regular", [
    (b"", 0, True),
    (b"a\nb\n", 2, True),
    (b"a\r\nb\r\nc", 3, True),           # CRLF only; a last line without a terminator counts
    (b"a\r\nb\nc\r\n", 3, False),        # LF and CRLF mixed
    (b"a\nb\rc\n", 2, False),             # a lone CR
    (b"a\r\nb\r", 2, False),              # a CR at the very end, without its LF
])
def test_a_line_scan_counts_lines_as_physical_lines_do_and_tells_irregular_endings(tmp_path, data, lines, regular):
    p = tmp_path / "f"
    p.write_bytes(data)
    scan = scan_lines(p)
    assert (scan.lines, scan.regular) == (lines, regular) and scan.lines == len(PhysicalLines(p))


def test_a_crlf_split_across_read_chunks_is_counted_once(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"x" * ((1 << 22) - 1) + b"\r\n" + b"y\r\n")
    assert scan_lines(p).regular and scan_lines(p).crlf == 2


def test_a_normalized_copy_keeps_line_numbers_and_blanks_only_lines_with_a_lone_cr(tmp_path):
    src, dest = tmp_path / "in.csv", tmp_path / "out.csv"
    src.write_bytes(b"h\r\na\nb\rc\r\nd\r\n")
    assert normalized_copy(src, dest, blank_lone_cr=False) == [] and dest.read_bytes() == b"h\na\nb\rc\nd\n"
    assert normalized_copy(src, dest, blank_lone_cr=True) == [3] and dest.read_bytes() == b"h\na\n\nd\n"


def test_good_records_are_placed_on_their_lines_around_quoted_line_breaks_blank_lines_and_rejects(tmp_path):
    p = tmp_path / "f.csv"
    p.write_bytes(b'h1,h2\n1,"two\nlines"\n\nbad\n3,4\n')
    # DuckDB read two good records (lines 2-3 and 6) and rejected line 5; line 4 is blank.
    assert good_record_lines(PhysicalLines(p), 1, [(5, 1)], 2) == [2, 6]
