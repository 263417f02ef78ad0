"""Property-based tests of the parsers (`pipeline.engine.parse` over `pipeline.engine.reader`).

Fault: arbitrary bytes, and arbitrary mixes of valid lines, damaged lines, blank lines,
continuations, CR/LF/NUL bytes and invalid UTF-8, cut into arbitrary chunk sizes.
Expected, for every source and input: no exception escapes; every line is accounted for exactly
once (`lines_read` = lines in the input = loaded + quarantined + continuation + ignored); every
quarantined row has at least one reason and its `reason` text names each of them; every
loaded row passes the schema (timestamp within the day ±tolerance, status 100..599, known
level); line numbers are unique and within the file; the result does not depend on the chunk size.
"""

from __future__ import annotations

import datetime as dt
import io

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.engine.parse import PartitionParser
from pipeline.engine.reader import iter_line_batches
from pipeline.sources import load_sources

SOURCES = load_sources()
DAY = dt.date(2024, 1, 15)
LOW = dt.datetime(2024, 1, 14, 23, tzinfo=dt.UTC)
HIGH = dt.datetime(2024, 1, 16, 1, tzinfo=dt.UTC)
PROPERTY_SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)

ACCESS_GOOD = '10.0.0.1 - - [15/Jan/2024:10:00:00 +0000] "GET /a HTTP/1.1" 200 5 "-" "ua"'
APP_GOOD = "2024-01-15 10:00:00,000 INFO svc.core: started"
FRAGMENTS = [
    ACCESS_GOOD,
    ACCESS_GOOD.replace("200", "999"),
    ACCESS_GOOD.replace("15/Jan/2024", "15/Jan/2023"),
    ACCESS_GOOD[:40],
    '::1 - - [15/Jan/2024:10:00:00 +0100] "-" 408 - "-" "-"',
    APP_GOOD,
    APP_GOOD.replace("INFO", "NOTICE"),
    APP_GOOD.replace("01-15", "13-45"),
    "2024-01-15T10:00:00 not the app layout",
    "Traceback (most recent call last):",
    '  File "x.py", line 1, in <module>',
    "",
    "   ",
    "\x00\x00",
    "'; DROP TABLE access.events; --",
]
line_strategy = st.one_of(
    st.sampled_from(FRAGMENTS).map(str.encode),
    st.binary(max_size=60).map(lambda raw: raw.replace(b"\n", b"")),
    st.text(max_size=40).map(lambda text: text.replace("\n", "").encode()),
)
file_strategy = st.tuples(
    st.lists(line_strategy, max_size=40),
    st.sampled_from([b"\n", b"\r\n"]),
    st.booleans(),
).map(lambda parts: parts[1].join(parts[0]) + (parts[1] if parts[2] and parts[0] else b""))


def count_lines(data: bytes) -> int:
    """Lines as an editor counts them (independent of the reader); a UTF-8 byte-order mark
    opening the file is not text."""
    data = data.removeprefix(b"\xef\xbb\xbf")
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def parse(source: str, data: bytes, chunk_bytes: int) -> tuple[pl.DataFrame, pl.DataFrame, int, int, int]:
    parser = PartitionParser(SOURCES[source], DAY)
    batches = list(parser.parse_file(iter_line_batches(io.BytesIO(data), chunk_bytes), "f.log"))
    events = pl.concat([b.events for b in batches]) if batches else pl.DataFrame()
    quarantined = pl.concat([b.quarantined for b in batches]) if batches else pl.DataFrame()
    return (
        events,
        quarantined,
        sum(b.lines_read for b in batches),
        sum(b.continuation_lines for b in batches),
        sum(b.lines_ignored for b in batches),
    )


def check_properties(source: str, data: bytes, chunk_bytes: int) -> None:
    events, quarantined, lines_read, continuation, ignored = parse(source, data, chunk_bytes)
    assert lines_read == count_lines(data)
    assert lines_read == events.height + quarantined.height + continuation + ignored
    if not SOURCES[source].multiline:
        assert continuation == 0
    numbers = [*(events["line_number"].to_list() if events.height else []),
               *(quarantined["line_number"].to_list() if quarantined.height else [])]  # fmt: skip
    assert len(numbers) == len(set(numbers))
    assert all(1 <= number <= lines_read for number in numbers)
    if quarantined.height:
        for reasons, reason in zip(quarantined["reasons"].to_list(), quarantined["reason"].to_list(), strict=True):
            assert reasons, "a quarantined row without a reason"
            for item in reasons:
                assert f"{item['field']}: {item['check']}" in reason
    if events.height:
        assert events["timestamp"].is_between(LOW, HIGH).all()
        if source == "access":
            assert events["status"].is_between(100, 599).all()
        else:
            assert events["level"].is_in(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]).all()
    # The outcome does not depend on how the file was cut into chunks.
    whole = parse(source, data, 1 << 20)
    assert (events.height, quarantined.height, continuation, ignored) == (
        whole[0].height,
        whole[1].height,
        whole[3],
        whole[4],
    )


@PROPERTY_SETTINGS
@given(data=st.binary(max_size=2000), chunk_bytes=st.integers(1, 300))
def test_any_bytes_access(data: bytes, chunk_bytes: int) -> None:
    """Any byte string as an `access` file: accounted for, no exception."""
    check_properties("access", data, chunk_bytes)


@PROPERTY_SETTINGS
@given(data=st.binary(max_size=2000), chunk_bytes=st.integers(1, 300))
def test_any_bytes_app(data: bytes, chunk_bytes: int) -> None:
    """Any byte string as an `app` (multi-line) file: accounted for, no exception."""
    check_properties("app", data, chunk_bytes)


@PROPERTY_SETTINGS
@given(data=file_strategy, chunk_bytes=st.integers(1, 200))
def test_mixed_lines_access(data: bytes, chunk_bytes: int) -> None:
    """Near-valid access lines mixed with damage: accounted for, valid rows really valid."""
    check_properties("access", data, chunk_bytes)


@PROPERTY_SETTINGS
@given(data=file_strategy, chunk_bytes=st.integers(1, 200))
def test_mixed_lines_app(data: bytes, chunk_bytes: int) -> None:
    """Near-valid app records, tracebacks, banners and damage: accounted for, valid rows really valid."""
    check_properties("app", data, chunk_bytes)
