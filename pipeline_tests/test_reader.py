"""Reading log files as numbered batches of raw lines (pipeline.engine.reader).

What a user relies on: every line of a landed file comes out exactly once, byte for byte
(only the `\\n` / `\\r\\n` terminator removed), numbered as an editor would number it, and a
damaged gzip file is reported with the number of the first line that could not be read.
"""

from __future__ import annotations

import gzip
import io
import zlib

import pytest

from pipeline.engine.reader import FileReadError, LineBatch, iter_line_batches, open_log, split_lines


def read_all(stream, chunk_bytes: int) -> list[LineBatch]:
    return list(iter_line_batches(stream, chunk_bytes=chunk_bytes))


def numbered(batches: list[LineBatch]) -> list[tuple[int, bytes]]:
    """Flatten batches into (line number, raw line) pairs."""
    return [
        (batch.first_line_number + offset, line)
        for batch in batches
        for offset, line in enumerate(batch.lines.to_pylist())
    ]


def numbered_lines(payload: bytes) -> list[tuple[int, bytes]]:
    """The expected (line number, line) pairs of an LF-terminated payload, computed without the reader."""
    return list(enumerate(payload.split(b"\n")[:-1], start=1))


# -- split_lines ---------------------------------------------------------------------


def test_split_lines_lf():
    # LF-terminated lines come out without their terminator; nothing is left over.
    lines, remainder = split_lines(b"first\nsecond\n", final=False)
    assert lines.to_pylist() == [b"first", b"second"]
    assert remainder == b""


def test_split_lines_crlf_terminator_is_removed():
    # Windows-written logs: the \r of a \r\n terminator must not end up in the last field of a line.
    lines, remainder = split_lines(b"first\r\nsecond\r\n", final=True)
    assert lines.to_pylist() == [b"first", b"second"]
    assert remainder == b""


def test_split_lines_lone_carriage_return_stays_inside_the_line():
    # Only \n ends a line; a \r that is not right before \n is data and is kept byte for byte.
    lines, _ = split_lines(b"a\rb\nc\r\n\rd\n", final=True)
    assert lines.to_pylist() == [b"a\rb", b"c", b"\rd"]


def test_split_lines_carriage_return_at_end_of_unterminated_last_line_is_kept():
    # Without a following \n the \r is not a terminator: the last line keeps it.
    lines, _ = split_lines(b"a\nb\r", final=True)
    assert lines.to_pylist() == [b"a", b"b\r"]


def test_split_lines_unterminated_tail_is_remainder_unless_final():
    # A line without its newline is only complete at the end of the file.
    lines, remainder = split_lines(b"one\ntwo\nthr", final=False)
    assert lines.to_pylist() == [b"one", b"two"]
    assert remainder == b"thr"
    lines, remainder = split_lines(b"one\ntwo\nthree", final=True)
    assert lines.to_pylist() == [b"one", b"two", b"three"]
    assert remainder == b""


def test_split_lines_empty_input():
    # An empty file has no lines (not one empty line).
    for final in (True, False):
        lines, remainder = split_lines(b"", final=final)
        assert lines.to_pylist() == []
        assert remainder == b""


def test_split_lines_blank_lines_are_kept_as_empty_lines():
    # Blank lines are lines: they keep their place so that later line numbers stay right.
    lines, _ = split_lines(b"a\n\n\r\nb\n", final=True)
    assert lines.to_pylist() == [b"a", b"", b"", b"b"]


def test_split_lines_keeps_nul_and_invalid_utf8_bytes():
    # The reader never decodes: NUL bytes and invalid UTF-8 reach the parser (and the DLQ) unchanged.
    lines, _ = split_lines(b"a\x00b\n\xff\xfe\n", final=True)
    assert lines.to_pylist() == [b"a\x00b", b"\xff\xfe"]


# -- iter_line_batches ---------------------------------------------------------------


def test_iter_line_batches_empty_stream_yields_nothing():
    # An empty landed file produces no batch at all.
    assert read_all(io.BytesIO(b""), chunk_bytes=4) == []


def test_iter_line_batches_numbers_lines_across_batches():
    # Line numbers continue across batch boundaries, so a quarantined line can be found in the file.
    payload = b"".join(b"line %03d\n" % number for number in range(1, 101))
    batches = read_all(io.BytesIO(payload), chunk_bytes=37)
    assert len(batches) > 10
    assert numbered(batches) == numbered_lines(payload)
    # Each batch starts right after the previous one.
    for previous, current in zip(batches, batches[1:], strict=False):
        assert current.first_line_number == previous.first_line_number + len(previous.lines)


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5, 8, 1 << 20])
def test_iter_line_batches_same_lines_whatever_the_chunk_size(chunk_bytes):
    # The chunk size is a memory knob only: it must not change the lines, even when a chunk ends
    # between the \r and the \n of a CRLF terminator or in the middle of a line.
    payload = b"alpha\r\nbe\rta\n\ngamma\r\ndelta"
    assert numbered(read_all(io.BytesIO(payload), chunk_bytes)) == [
        (1, b"alpha"),
        (2, b"be\rta"),
        (3, b""),
        (4, b"gamma"),
        (5, b"delta"),
    ]


def test_iter_line_batches_line_longer_than_chunk_is_read_whole():
    # A line longer than the chunk size is neither cut nor dropped.
    long_line = b"x" * 1000
    payload = b"short\n" + long_line + b"\nafter"
    assert numbered(read_all(io.BytesIO(payload), chunk_bytes=64)) == [(1, b"short"), (2, long_line), (3, b"after")]


def test_iter_line_batches_final_line_without_newline_is_yielded():
    # A file whose last line lacks a trailing newline still yields that line.
    assert numbered(read_all(io.BytesIO(b"a\nb"), chunk_bytes=1 << 20)) == [(1, b"a"), (2, b"b")]


# -- gzip ----------------------------------------------------------------------------


def gzip_payload(lines: int) -> bytes:
    # Varied content so that the compressed stream is long enough to cut in the middle.
    return b"".join(b"line %05d value %d\n" % (number, number * number * 7919) for number in range(1, lines + 1))


def test_open_log_plain_stream_is_returned_unchanged():
    # Uncompressed files are read as they are.
    stream = io.BytesIO(b"a\n")
    assert open_log(stream, gzipped=False) is stream


def test_open_log_reads_gzip_file(tmp_path):
    # Landed .gz files are decompressed transparently and numbered like plain files.
    payload = gzip_payload(5000)
    path = tmp_path / "access.log.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(payload)
    with path.open("rb") as raw:
        batches = read_all(open_log(raw, gzipped=True), chunk_bytes=4096)
    assert len(batches) > 1
    assert numbered(batches) == numbered_lines(payload)


def read_truncated_gzip(
    tmp_path, chunk_bytes: int = 4096
) -> tuple[list[tuple[int, bytes]], FileReadError, list[tuple[int, bytes]]]:
    """Read a gzip file cut in half; return the lines yielded, the error, and the expected lines."""
    payload = gzip_payload(20000)
    compressed = gzip.compress(payload)
    path = tmp_path / "truncated.log.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    got: list[tuple[int, bytes]] = []
    with path.open("rb") as raw:
        with pytest.raises(FileReadError) as caught:
            for batch in iter_line_batches(open_log(raw, gzipped=True), chunk_bytes=chunk_bytes):
                got.extend(numbered([batch]))
    return got, caught.value, numbered_lines(payload)


@pytest.mark.parametrize("chunk_bytes", [4096, 1 << 20, 64 << 20])
def test_truncated_gzip_yields_every_complete_line_before_the_damage(tmp_path, chunk_bytes):
    # Whatever the chunk size (the default is 4 MiB, more than this whole file): every line that
    # zlib can decompress completely comes out. (`GzipFile.read(n)` drops what it decompressed
    # in a call that meets the damage: with large chunks, that was every line of the file.)
    got, error, expected = read_truncated_gzip(tmp_path, chunk_bytes)
    compressed = gzip.compress(gzip_payload(20000))
    readable = zlib.decompressobj(wbits=31).decompress(compressed[: len(compressed) // 2])
    assert len(got) == readable.count(b"\n") > 1000
    assert got == expected[: len(got)] and error.line_number == len(got) + 1


def test_truncated_gzip_yields_lines_before_damage_then_raises_with_line_number(tmp_path):
    # A truncated upload must not be silently loaded as if complete: the lines before the damage
    # come out, then FileReadError says from which line the file could not be read.
    got, error, expected = read_truncated_gzip(tmp_path)
    assert len(got) > 1000, "most of the first half of the file should be readable"
    assert len(got) < len(expected)
    assert error.line_number == len(got) + 1
    assert "EOFError" in str(error)
    # Every yielded line is exactly the original line with the same number.
    assert got == expected[: len(got)]


def test_truncated_gzip_never_yields_a_partial_line(tmp_path):
    # What a user needs: a line cut by the damage is either not yielded (and FileReadError.line_number
    # points at it) or yielded complete; never a truncated line presented as a whole one.
    got, error, expected = read_truncated_gzip(tmp_path)
    assert got == expected[: len(got)]
    assert error.line_number == len(got) + 1
    # The bytes of the cut line are kept as evidence, and they are a prefix of the real line.
    cut_line = expected[len(got)][1]
    assert cut_line.startswith(error.partial) and error.partial != cut_line


class _FailingStream(io.RawIOBase):
    """Returns `data` on the first read, then fails like a dropped network mount."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._served = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._served:
            raise OSError("connection reset by peer")
        self._served = True
        return self._data


def test_io_error_mid_file_raises_file_read_error_after_complete_lines():
    # An I/O error is reported as FileReadError (with the first unread line), not as a crash.
    got: list[tuple[int, bytes]] = []
    with pytest.raises(FileReadError) as caught:
        for batch in iter_line_batches(_FailingStream(b"one\ntwo\n"), chunk_bytes=1 << 20):
            got.extend(numbered([batch]))
    assert got == [(1, b"one"), (2, b"two")]
    assert caught.value.line_number == 3
    assert "OSError" in str(caught.value)


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 4, 1 << 20])
def test_byte_order_mark_opening_a_file_is_not_part_of_its_first_line(chunk_bytes):
    # Windows tools may start a UTF-8 file with a BOM; it is not text of the first record (it
    # would make the first client "\ufeff203.0.113.1", or the first app record a continuation).
    payload = b"\xef\xbb\xbffirst\nsecond\n\xef\xbb\xbfthird\n"
    assert numbered(read_all(io.BytesIO(payload), chunk_bytes)) == [
        (1, b"first"),
        (2, b"second"),
        (3, b"\xef\xbb\xbfthird"),  # only at the start of the file
    ]
    assert read_all(io.BytesIO(b"\xef\xbb\xbf"), chunk_bytes) == []


def test_long_line_arriving_in_many_chunks_is_read_whole():
    # A line of 3 MiB read in 1 KiB chunks (3,072 reads) comes out whole, after the line before.
    long_line = bytes(range(32, 127)) * (3 * 1024 * 1024 // 95)
    payload = b"before\n" + long_line + b"\nafter"
    assert numbered(read_all(io.BytesIO(payload), chunk_bytes=1024)) == [(1, b"before"), (2, long_line), (3, b"after")]
