"""The `syslog` format: RFC 3164 and RFC 5424, priority split into facility and severity.

What a user relies on: a year-less RFC 3164 time gets the right year from the partition,
also across New Year, and still has to fall within the day; RFC 5424's NILVALUE is NULL and
its structured data is kept as written; anything that is not syslog is quarantined.
"""

from __future__ import annotations

import datetime as dt

import pytest

from pipeline_tests.parsing import parse, source, utc

RFC3164 = source("preset: syslog_rfc3164")
RFC5424 = source("preset: syslog_rfc5424")


@pytest.mark.parametrize(
    ("line", "day", "expected"),
    [
        pytest.param(
            b"<38>Dec 10 06:55:46 web1 sshd[24200]: Accepted key",
            dt.date(2024, 12, 10),
            (utc(2024, 12, 10, 6, 55, 46), 38, 4, 6, "web1", "sshd", "24200", "Accepted key"),
            id="pri-tag-pid",
        ),
        pytest.param(
            b"Dec 31 23:59:59 web1 cron: tick",
            dt.date(2025, 1, 1),
            (utc(2024, 12, 31, 23, 59, 59), None, None, None, "web1", "cron", None, "tick"),
            id="dec-31-in-jan-1-partition-is-previous-year",
        ),
        pytest.param(
            b"Jan  1 00:30:00 web1 cron: tick",
            dt.date(2024, 12, 31),
            (utc(2025, 1, 1, 0, 30), None, None, None, "web1", "cron", None, "tick"),
            id="jan-1-in-dec-31-partition-is-next-year",
        ),
        pytest.param(
            b"Feb 29 12:00:00 web1 app: leap",
            dt.date(2024, 2, 29),
            (utc(2024, 2, 29, 12), None, None, None, "web1", "app", None, "leap"),
            id="feb-29-of-a-leap-year",
        ),
        pytest.param(
            b"<13>Jan 18 2024 11:50:03 fw : %FTD-4-419002: dup",
            dt.date(2024, 1, 18),
            (utc(2024, 1, 18, 11, 50, 3), 13, 1, 5, "fw", None, None, ": %FTD-4-419002: dup"),
            id="time-with-a-year",
        ),
        pytest.param(
            b"2024-01-18T12:50:03.5+01:00 host app[7]: iso",
            dt.date(2024, 1, 18),
            (utc(2024, 1, 18, 11, 50, 3, 500000), None, None, None, "host", "app", "7", "iso"),
            id="rfc3339-time-rsyslog-file-format",
        ),
        pytest.param(
            b"Jan 18 11:50:03 host no tag here",
            dt.date(2024, 1, 18),
            (utc(2024, 1, 18, 11, 50, 3), None, None, None, "host", None, None, "no tag here"),
            id="no-tag-is-all-message",
        ),
        pytest.param(
            b"Jan 18 11:50:03 host app:",
            dt.date(2024, 1, 18),
            (utc(2024, 1, 18, 11, 50, 3), None, None, None, "host", "app", None, ""),
            id="empty-message",
        ),
    ],
)
def test_rfc3164_lines(line, day, expected):
    result = parse(RFC3164, line + b"\n", day)
    assert result.quarantined.is_empty(), result.reason_texts()
    columns = ("timestamp", "priority", "facility", "severity", "hostname", "app_name", "procid", "message")
    assert result.rows(*columns) == [(1, *expected)]


@pytest.mark.parametrize(
    ("line", "day", "reason"),
    [
        pytest.param(b"Dec 31 23:59:59 web1 cron: tick", dt.date(2025, 1, 2), "timestamp: within_day", id="too-early"),
        pytest.param(b"Jan  1 01:00:00 web1 cron: tick", dt.date(2024, 12, 31), "timestamp: within_day", id="too-late"),
        pytest.param(b"Feb 29 12:00:00 web1 app: x", dt.date(2023, 3, 1), "timestamp: within_day", id="feb-29-far"),
        pytest.param(
            b"Feb 30 12:00:00 web1 app: x", dt.date(2024, 2, 29), "timestamp: parses_as_timestamp", id="feb-30"
        ),
        pytest.param(
            b"<192>Jan 18 11:50:03 host app: x", dt.date(2024, 1, 18), "line: matches_format", id="pri-over-191"
        ),
        pytest.param(b"Jan 18 11:50 host app: x", dt.date(2024, 1, 18), "line: matches_format", id="no-seconds"),
        pytest.param(b"hello world", dt.date(2024, 1, 18), "line: matches_format", id="not-syslog"),
        pytest.param(
            b"Jan 18 11:50:03 --- last message repeated 2 times ---",
            dt.date(2024, 1, 18),
            "hostname: not_nullable",
            id="no-host",
        ),  # fmt: skip
    ],
)
def test_rfc3164_quarantine(line, day, reason):
    result = parse(RFC3164, line + b"\n", day)
    assert result.events.is_empty()
    checks = [text.split(" (got")[0] for text in result.reason_texts()[1].split("; ")]
    assert checks[0].startswith(reason)


def test_new_year_window_uses_the_tolerance():
    # Partition 2025-01-01 (±60 min): Dec 31 23:00:00 and later belong to it; 22:59:59 does not.
    data = (
        b"Dec 31 22:59:59 h a: early\nDec 31 23:00:00 h a: first\n"
        b"Jan  1 00:59:59 h a: last\nJan  2 01:00:00 h a: late\n"
    )
    result = parse(RFC3164, data, dt.date(2025, 1, 1))
    assert result.rows("timestamp") == [(2, utc(2024, 12, 31, 23)), (3, utc(2025, 1, 1, 0, 59, 59))]
    texts = result.reason_texts()
    assert texts[1] == "timestamp: within_day (got 2024-12-31 22:59:59.000000+00:00, outside 2025-01-01 UTC ±60 min)"
    assert texts[4].startswith("timestamp: within_day (got 2025-01-02 01:00:00")


def test_rfc5424_parts_nilvalue_structured_data_and_octet_count():
    lines = [
        b"<165>1 2024-03-01T10:00:00.123+01:00 host.example app 1234 ID47 "
        b'[exampleSDID@32473 iut="3" eventSource="App\\"x\\]"][b@1] \xef\xbb\xbfAn event',
        b"<86>1 2024-03-01T09:00:01Z - - - - -",
        b'215 <14>1 2024-03-01T09:00:02Z h a - - [x@1 k="v"] framed',
        b"<14>1 2024-03-01T09:00:03Z h ALongApplicationNameContainingMoreThanTheAllowed48Character - - - too long",
        b"<14>1 2024-03-01T09:00:04Z h a - - [bad sd no quotes] x",
        b"<14>1 - h a - - - no time",
    ]
    result = parse(RFC5424, b"\n".join(lines) + b"\n", dt.date(2024, 3, 1))
    columns = ("timestamp", "facility", "severity", "version", "hostname", "app_name", "procid", "msgid")
    assert result.rows(*columns, "structured_data", "message") == [
        (1, utc(2024, 3, 1, 9, 0, 0, 123000), 20, 5, 1, "host.example", "app", "1234", "ID47",
         '[exampleSDID@32473 iut="3" eventSource="App\\"x\\]"][b@1]', "An event"),
        (2, utc(2024, 3, 1, 9, 0, 1), 10, 6, 1, None, None, None, None, None, None),
        (3, utc(2024, 3, 1, 9, 0, 2), 1, 6, 1, "h", "a", None, None, '[x@1 k="v"]', "framed"),
    ]  # fmt: skip
    assert result.reasons() == {
        4: ["line: matches_format"],
        5: ["line: matches_format"],
        6: ["timestamp: not_nullable"],
    }


def test_rfc5424_octet_counted_frame_spanning_lines_with_record_start():
    spec = source("preset: syslog_rfc5424\nrecord_start: '^(?:\\d{1,9} )?<\\d{1,3}>\\d'")
    data = b"28 <1>3 2024-03-01T00:00:00Z - - - - - hello\nworld\n30 <1>1 2024-03-01T00:00:01Z h - - - - next\n"
    result = parse(spec, data, dt.date(2024, 3, 1), chunk_bytes=8)
    assert result.rows("version", "message") == [(1, 3, "hello\nworld"), (3, 1, "next")]
    assert result.continuation_lines == 1
