"""The `delimited` format: separator, quotes, escapes, brackets, fixed or `#Fields:` columns.

What a user relies on: a quoted or bracketed column is one value whatever it contains; a file
may change its layout at every `#Fields:` line; header and comment lines are counted as
ignored (the accounting identity holds exactly), and a line that cannot be split into the
layout is quarantined, never loaded with shifted columns.
"""

from __future__ import annotations

import datetime as dt

import pytest

from pipeline_tests.parsing import parse, real_log, source, utc

DAY = dt.date(2024, 3, 1)
S3_LIKE = source(
    r"""
format:
  type: delimited
  separator: " "
  quote: '"'
  escape: '\'
  brackets: "[]"
  columns: [owner, time, client, request, status, agent]
timestamp: {field: timestamp, from: time, format: "%d/%b/%Y:%H:%M:%S %z"}
fields:
  client: {}
  request: {}
  status: {type: integer, checks: {in_range: [100, 599]}}
  agent: {nullable: true, null_values: ["-"]}
daily_metrics: {records: "count(*)"}
"""
)


@pytest.mark.parametrize(
    ("line", "request_text", "agent"),
    [
        pytest.param(
            'o [01/Mar/2024:10:00:00 +0000] 1.2.3.4 "GET / HTTP/1.1" 200 "curl/8"',
            "GET / HTTP/1.1",
            "curl/8",
            id="quoted-and-bracketed",
        ),  # fmt: skip
        pytest.param(
            'o [01/Mar/2024:10:00:00 +0000] 1.2.3.4 "say \\"hi\\"" 200 -', 'say "hi"', None, id="escaped-quote"
        ),
        pytest.param(
            'o [01/Mar/2024:10:00:00 +0000] 1.2.3.4 "a\\\\" 200 "b\\x5Cc"',
            "a\\",
            "b\\x5Cc",
            id="escaped-backslash-and-alb-hex-kept",
        ),  # fmt: skip
        pytest.param('o [01/Mar/2024:10:00:00 +0000] 1.2.3.4 "" 200 ""', "", "", id="empty-quoted"),
        pytest.param(
            'o [01/Mar/2024:10:00:00 +0000] 1.2.3.4 GET 200 x extra "columns"', "GET", "x", id="extra-columns-ignored"
        ),  # fmt: skip
    ],
)
def test_quoted_bracketed_and_escaped_columns(line, request_text, agent):
    result = parse(S3_LIKE, line.encode() + b"\n", DAY)
    assert result.quarantined.is_empty(), result.reason_texts()
    assert result.rows("timestamp", "request", "status", "agent") == [
        (1, utc(2024, 3, 1, 10), request_text, 200, agent)
    ]


@pytest.mark.parametrize("native", [True, False], ids=["native", "polars"])
def test_a_quoted_value_that_starts_with_a_bracket_keeps_it(native: bool) -> None:
    """Brackets are removed only from a bracketed column: `"[a] b"` is the value `[a] b` (the
    polars path once took the brackets off quoted values too, cutting `[x]` to `x`)."""
    from unittest import mock

    from pipeline.engine.formats import delimited

    line = b'o [01/Mar/2024:10:00:00 +0000] 1.2.3.4 "[a] b" 200 "[x]"\n'
    with mock.patch.object(delimited, "native_tokenizer", delimited.native_tokenizer if native else lambda: None):
        result = parse(S3_LIKE, line, DAY)
    assert result.quarantined.is_empty(), result.reason_texts()
    assert result.rows("request", "agent") == [(1, "[a] b", "[x]")]


def test_lines_that_cannot_be_split_are_quarantined():
    lines = [
        'o [01/Mar/2024:10:00:00 +0000] 1.2.3.4 "GET / 200 x',  # quote never closes
        "o [01/Mar/2024:10:00:00 +0000] 1.2.3.4 GET 200",  # a column short
        'o [01/Mar/2024:10:00:00 +0000 1.2.3.4 "GET" 200 x',  # bracket never closes
        'o [01/Mar/2024:10:00:00 +0000] 1.2.3.4 "GET" 999 x',  # splits, fails a check
        'o [01/Mar/2024:10:00:00 +0000] 1.2.3.4 "GET" 200 x',
    ]
    result = parse(S3_LIKE, "\n".join(lines).encode(), DAY)
    assert result.rows("request") == [(5, "GET")]
    assert result.reasons() == {
        1: ["line: matches_format"],
        2: ["line: matches_format"],
        3: ["line: matches_format"],
        4: ["status: in_range(100, 599)"],
    }


def test_min_columns_and_extra_columns_quarantine():
    # Columns beyond min_columns may be absent (NULL); with extra_columns: quarantine a line
    # with more columns than listed is not in the layout.
    spec = source(
        """
format: {type: delimited, separator: ",", quote: '"', escape: '"', columns: [t, a, b, c], min_columns: 2,
         extra_columns: quarantine}
timestamp: {field: timestamp, from: t, format: epoch_s}
fields: {a: {}, b: {nullable: true}, c: {nullable: true}}
daily_metrics: {records: "count(*)"}
"""
    )
    data = b'1709287200,x\n1709287200,x,"y ""z"""\n1709287200,x,,\n1709287200,x,y,z,extra\n1709287200\n'
    result = parse(spec, data, DAY)
    assert result.rows("a", "b", "c") == [(1, "x", None, None), (2, "x", 'y "z"', None), (3, "x", "", "")]
    assert result.reasons() == {4: ["line: matches_format"], 5: ["line: matches_format"]}


W3C = source(
    """
format: {type: delimited, separator: " ", quote: null, escape: null, header: "#Fields:"}
timestamp: {field: timestamp, from: [date, time], format: "%Y-%m-%d %H:%M:%S"}
fields:
  client: {from: c-ip}
  status: {type: integer, from: sc-status}
  host: {from: cs-host, nullable: true}
daily_metrics: {records: "count(*)"}
"""
)
W3C_FILE = b"""a line before any header
#Software: test
#Fields: date time c-ip sc-status
2024-03-01 10:00:00 1.1.1.1 200

#Version: 1.0
2024-03-01 10:00:01 1.1.1.2 404 trailing-extra
#Fields: date time cs-host sc-status c-ip
2024-03-01 10:00:02 example.com 500 1.1.1.3
2024-03-01 10:00:03 too-few
#Fields:
2024-03-01 10:00:04 1.1.1.5 200
"""


@pytest.mark.parametrize("chunk_bytes", [1, 17, 64, 1 << 20])
def test_fields_header_changes_the_layout_and_is_ignored(chunk_bytes):
    # Header and comment lines (5) and the blank line are ignored; records follow the header
    # before them, whatever batches the file is read in.
    result = parse(W3C, W3C_FILE, DAY, chunk_bytes=chunk_bytes)
    assert result.rows("timestamp", "client", "status", "host") == [
        (4, utc(2024, 3, 1, 10), "1.1.1.1", 200, None),
        (7, utc(2024, 3, 1, 10, 0, 1), "1.1.1.2", 404, None),
        (9, utc(2024, 3, 1, 10, 0, 2), "1.1.1.3", 500, "example.com"),
    ]
    assert result.lines_ignored == 6
    assert result.reason_texts() == {
        1: "line: follows_a_header (got no header line before it in its file)",
        10: "line: matches_format (got 2024-03-01 10:00:03 too-few)",
        12: "line: follows_a_header (got the header line before it names no columns)",
    }


def test_multiline_records_with_a_header_format():
    # record_start with a delimited format: header lines are dropped before records are formed.
    spec = source(
        """
format: {type: delimited, separator: "\\t", quote: null, escape: null, header: "#Fields:"}
record_start: '^\\d{4}-'
timestamp: {field: timestamp, from: [date, time], format: "%Y-%m-%d %H:%M:%S"}
fields: {note: {}}
daily_metrics: {records: "count(*)"}
"""
    )
    data = (
        b"#Fields: date time note\n2024-03-01\t10:00:00\tfirst\n  wrapped\n"
        b"#Fields: date time note\n2024-03-01\t10:00:01\tsecond\n"
    )
    result = parse(spec, data, DAY, chunk_bytes=10)
    assert result.rows("note") == [(2, "first\n  wrapped"), (5, "second")]
    assert (result.lines_ignored, result.continuation_lines) == (2, 1)


def test_real_iis_log_three_layouts_and_two_short_lines():
    # beats' IIS 10 sample: three #Software/#Version/#Date/#Fields blocks (12 header lines)
    # with 15, 19 and 22 columns. Lines 5, 10 and 15 load with their block's layout; the last
    # two lines were written in the first block's 15-column layout after the 22-column header:
    # quarantined, not loaded with shifted columns.
    spec = source(
        """
format: {type: delimited, separator: " ", quote: null, escape: null, header: "#Fields:"}
timestamp: {field: timestamp, from: [date, time], format: "%Y-%m-%d %H:%M:%S"}
fields:
  method: {from: cs-method}
  uri: {from: cs-uri-stem}
  client: {from: c-ip}
  status: {type: integer, from: sc-status}
  host: {from: cs-host, nullable: true}
daily_metrics: {records: "count(*)"}
"""
    )
    result = parse(spec, real_log("elastic-beats/iis-access-test.log"), dt.date(2018, 1, 1))
    assert result.lines_ignored == 12
    assert result.rows("timestamp", "client", "status", "host") == [
        (5, utc(2018, 1, 1, 8, 9, 10), "81.2.69.143", 200, None),
        (10, utc(2018, 1, 1, 9, 10, 11), "127.0.0.1", 200, "example.com"),
        (15, utc(2018, 1, 1, 10, 11, 12), "81.2.69.143", 200, "example.com"),
    ]
    assert result.reasons() == {16: ["line: matches_format"], 17: ["line: matches_format"]}


def test_real_w3c_with_blank_header_lines_and_doubled_quotes():
    # lnav's IIS Advanced Logging sample: blank lines between header lines (ignored), three
    # spaces after #Fields:, every text column quoted, a doubled quote inside a quoted column.
    spec = source(
        """
format: {type: delimited, separator: " ", quote: '"', escape: '"', header: "#Fields:"}
timestamp: {field: timestamp, from: [date-local, time-local], format: "%Y-%m-%d %H:%M:%S%.f"}
fields:
  client: {from: c-ip, nullable: true, null_values: ["-"]}
  agent: {from: cs(User-Agent)}
  status: {type: integer, from: sc-status}
  substatus: {from: sc-substatus}
daily_metrics: {records: "count(*)"}
"""
    )
    data = real_log("lnav/logfile_w3c.3")
    result = parse(spec, data, dt.date(2012, 8, 15))
    assert result.lines_ignored == 7
    assert result.quarantined.is_empty()
    assert result.rows("timestamp", "client", "status", "substatus") == [
        (8, utc(2012, 8, 15, 17, 0, 0, 363000), "70.95.0.0", 200, "0"),
        (9, utc(2012, 8, 15, 17, 0, 0, 660000), None, 301, "0"),
        (10, utc(2012, 8, 15, 17, 0, 0, 675000), "173.5.0.0", 404, ' "garbage" w/ spaces '),
    ]


def test_a_header_of_a_thousand_columns_and_one_too_many():
    # Hostile or huge layouts: 1,000 optional columns still parse (no regex nesting limit);
    # 1,001 names make the header unusable, and its records say so.
    spec = source(
        """
format: {type: delimited, separator: " ", quote: '"', header: "#Fields:", min_columns: 1}
timestamp: {field: timestamp, from: c0, format: epoch_s}
fields: {last: {from: c999, nullable: true}}
daily_metrics: {records: "count(*)"}
"""
    )
    names = " ".join(f"c{index}" for index in range(1000))
    line = " ".join(["1709287200"] + [f'"v {index}"' for index in range(1, 1000)])
    data = f"#Fields: {names}\n{line}\n1709287200\n#Fields: {names} c1000\n1709287200\n".encode()
    result = parse(spec, data, DAY)
    assert result.rows("last") == [(2, "v 999"), (3, None)]
    assert result.reason_texts() == {
        5: "line: follows_a_header (got the header line before it names 1001 columns (at most 1000))"
    }


def test_many_layouts_in_one_batch_are_one_pass():
    # A header before every record (20,000 layouts in one batch): handled in vectorised passes,
    # not one per layout; each record is read with the header right before it.
    lines = []
    for number in range(10_000):
        lines += ["#Fields: date time c-ip sc-status", f"2024-03-01 10:00:00 10.0.0.{number % 250} 200"]
        lines += ["#Fields: date time sc-status c-ip", f"2024-03-01 10:00:01 404 10.0.1.{number % 250}"]
    result = parse(W3C, ("\n".join(lines) + "\n").encode(), DAY)
    assert (result.events.height, result.lines_ignored, result.quarantined.height) == (20_000, 20_000, 0)
    assert result.rows("client", "status")[:2] == [(2, "10.0.0.0", 200), (4, "10.0.1.0", 404)]
