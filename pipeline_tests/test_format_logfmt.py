"""The `logfmt` format: `key=value` pairs, quoted values with escapes.

What a user relies on: pairs are read left to right as the writer meant them (a `key=` inside
a quoted value is part of that value), escapes are decoded exactly, an absent key is NULL and
a line that is not all pairs is quarantined, not half-read.
"""

from __future__ import annotations

import datetime as dt

import pytest

from pipeline_tests.parsing import parse, real_log, source, utc

DAY = dt.date(2024, 3, 1)
SOURCE = source(
    """
format: logfmt
timestamp: {field: timestamp, from: ts, format: "%Y-%m-%dT%H:%M:%S%.f%#z"}
fields:
  level: {checks: {isin: [debug, info, warn, error]}}
  message: {from: msg, nullable: true}
  status: {type: integer, nullable: true}
  user: {nullable: true}
daily_metrics: {records: "count(*)"}
"""
)


@pytest.mark.parametrize(
    ("line", "message", "user"),
    [
        pytest.param('ts=2024-03-01T10:00:00Z level=info msg="a b c" user=bob', "a b c", "bob", id="quoted-and-bare"),
        pytest.param('ts=2024-03-01T10:00:00Z level=info msg="say \\"hi\\""', 'say "hi"', None, id="escaped-quote"),
        pytest.param(
            'ts=2024-03-01T10:00:00Z level=info msg="C:\\\\temp\\\\n"',
            "C:\\temp\\n",
            None,
            id="escaped-backslash-before-n",
        ),
        pytest.param(
            'ts=2024-03-01T10:00:00Z level=info msg="two\\nlines\\ttab"', "two\nlines\ttab", None, id="newline-tab"
        ),
        pytest.param(
            'ts=2024-03-01T10:00:00Z level=info msg="\\x41\\u00e9"', "\\x41\\u00e9", None, id="other-escapes-kept"
        ),
        pytest.param("ts=2024-03-01T10:00:00Z level=info msg= user=", "", "", id="empty-values"),
        pytest.param(
            'ts=2024-03-01T10:00:00Z msg="level=debug user=eve" level=info',
            "level=debug user=eve",
            None,
            id="pairs-inside-a-quoted-value-are-not-pairs",
        ),  # fmt: skip
        pytest.param("level=info ts=2024-03-01T10:00:00Z user=amy user=zed", None, "amy", id="first-of-repeated-key"),
        pytest.param("  ts=2024-03-01T10:00:00Z\tlevel=info  ", None, None, id="tabs-and-padding"),
    ],
)
def test_pairs_are_read_as_written(line, message, user):
    result = parse(SOURCE, line.encode() + b"\n", DAY)
    assert result.quarantined.is_empty(), result.reason_texts()
    assert result.rows("timestamp", "level", "message", "user") == [(1, utc(2024, 3, 1, 10), "info", message, user)]


def test_generated_file_exact_counts_and_reasons():
    # 50 lines: 45 valid; a JSON line, a plain text line and an unterminated quote are not
    # logfmt; a missing required key and a bad integer are field failures.
    good = 'ts=2024-03-01T10:{:02d}:00Z level=info msg="request {}" status=200'
    faults = {
        5: '{"ts": "2024-03-01T10:00:00Z", "level": "info"}',
        15: "panic: foo bar failed baz",
        25: 'ts=2024-03-01T10:00:00Z level=info msg="never closed',
        35: 'ts=2024-03-01T10:00:00Z msg="no level"',
        45: "ts=2024-03-01T10:00:00Z level=warn status=2xx",
    }
    lines = [faults.get(number, good.format(number, number)) for number in range(1, 51)]
    result = parse(SOURCE, "\n".join(lines).encode(), DAY)
    assert result.events.height == 45
    assert result.reasons() == {
        5: ["line: matches_format"],
        15: ["line: matches_format"],
        25: ["line: matches_format"],
        35: ["level: not_nullable"],
        45: ["status: parses_as_integer"],
    }
    assert result.events.filter(result.events["line_number"] == 2)["message"].to_list() == ["request 2"]


def test_multiline_records_with_record_start():
    # A Go panic after a logfmt line: with record_start its trace is part of the record's
    # text, and the record is then not logfmt (quarantined whole, one row, nothing lost).
    spec = source(
        """
format: logfmt
record_start: '^ts='
timestamp: {field: timestamp, from: ts, format: "%Y-%m-%dT%H:%M:%S%#z"}
fields: {message: {from: msg}}
daily_metrics: {records: "count(*)"}
"""
    )
    data = (
        b'ts=2024-03-01T10:00:00Z msg="one"\nts=2024-03-01T10:00:01Z msg="two"\n'
        b'  at main.go:10\n  at main.go:20\nts=2024-03-01T10:00:02Z msg="three"\n'
    )
    result = parse(spec, data, DAY, chunk_bytes=20)
    assert result.rows("message") == [(1, "one"), (5, "three")]
    assert result.continuation_lines == 2
    assert result.reasons() == {2: ["line: matches_format"]}


def test_real_logrus_lines_all_accepted_with_empty_value():
    # lnav's logrus sample: five lines, `reason=` is an empty value (not NULL), `error` is
    # quoted in line 2 only.
    spec = source(
        """
preset: logfmt
fields:
  namespace: {}
  reason: {nullable: true}
  error: {nullable: true}
"""
    )
    result = parse(spec, real_log("lnav/logfile_logfmt.0"), dt.date(2021, 9, 15))
    assert result.quarantined.is_empty()
    rows = result.rows("timestamp", "level", "reason", "error")
    assert [row[:3] for row in rows] == [
        (1, utc(2021, 9, 15, 21, 17, 10, 220731), "error"),
        (2, utc(2021, 9, 15, 21, 17, 11, 674149), "warning"),
        (3, utc(2021, 9, 15, 21, 17, 11, 678991), "info"),
        (4, utc(2021, 9, 15, 21, 17, 11, 679036), "info"),
        (5, utc(2021, 9, 15, 21, 18, 20, 335825), "error"),
    ]
    assert [row[3] for row in rows] == ["", None, None, None, ""]
    assert (
        rows[1][4] == "pod inc-1-domain-c14-ns-6/fe-inc-1-domain-c14-ns-6-5-656d9bb695-4584b is not found: PodNotFound"
    )


def test_real_grafana_lines_with_nanosecond_times():
    # Grafana writes `t=` with nanoseconds (stored to the microsecond) and keys in another order.
    spec = source("preset: logfmt\ntimestamp: {from: t}\nfields: {logger: {}, arg: {nullable: true}}")
    result = parse(spec, real_log("lnav/logfile_grafana.0"), dt.date(2025, 4, 24))
    assert result.quarantined.is_empty()
    assert result.rows("timestamp", "logger", "message", "arg")[3] == (
        4,
        utc(2025, 4, 24, 19, 51, 48, 521249),
        "settings",
        "Config overridden from command line",
        "default.paths.data=/var/lib/grafana",
    )


def test_real_mixed_file_only_the_logfmt_line_loads():
    # lnav's mixed file (CRLF): 14 JSON lines, one logfmt line (every value quoted), a panic and
    # its three-line trace. As logfmt: line 4 loads; the 17 others are not logfmt.
    spec = source("preset: logfmt\ntimestamp: {from: timestamp}")
    result = parse(spec, real_log("lnav/logfile_mixed_json2.json"), dt.date(2013, 9, 6))
    assert result.rows("timestamp", "level", "message") == [
        (4, utc(2013, 9, 6, 22, 0, 50, 123000), "INFO", "Hello, World")
    ]
    assert result.reasons() == {number: ["line: matches_format"] for number in [*range(1, 4), *range(5, 19)]}
