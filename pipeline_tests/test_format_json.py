"""The `json` format: JSON lines, fields by dotted path or JSON pointer, cast like any format.

What a user relies on: every field they name is found wherever it sits in the object (nested,
or a key that itself has dots, as in ECS logs), values keep their exact text (big integers
keep every digit), and a line that is not a JSON object, or lacks a required field, is
quarantined with a reason naming which - never dropped, never an exception.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from pipeline_tests.parsing import parse, real_log, source, utc

DAY = dt.date(2024, 3, 1)
SOURCE = source(
    """
format: json
timestamp: {field: timestamp, from: time, format: "%Y-%m-%dT%H:%M:%S%.f%#z"}
fields:
  level: {type: string, checks: {isin: [debug, info, warn, error]}}
  message: {type: string, from: msg}
  status: {type: integer, from: http.status, nullable: true, checks: {in_range: [100, 599]}}
  duration: {type: float, from: http.duration_ms, nullable: true}
  dotted: {type: string, from: /log.origin, nullable: true}
daily_metrics: {records: "count(*)"}
"""
)


def record(**overrides: object) -> bytes:
    document: dict[str, object] = {"time": "2024-03-01T10:00:00.250Z", "level": "info", "msg": "ok"}
    document.update(overrides)
    return json.dumps({key: value for key, value in document.items() if value is not ...}).encode()


def test_fields_by_name_nested_path_and_json_pointer():
    # A nested object is reached with a dotted path; a key containing dots with a JSON pointer.
    data = record(http={"status": 201, "duration_ms": 12.5}, **{"log.origin": "app.py"}) + b"\n"
    result = parse(SOURCE, data, DAY)
    assert result.quarantined.is_empty()
    assert result.events.drop("source_file").rows(named=True) == [
        {
            "line_number": 1,
            "timestamp": utc(2024, 3, 1, 10, 0, 0, 250000),
            "level": "info",
            "message": "ok",
            "status": 201,
            "duration": 12.5,
            "dotted": "app.py",
        }
    ]


def test_generated_file_exact_counts_and_reasons():
    # 100 lines: 94 valid, one each of six faults, each quarantined with exactly its reason.
    faults = {
        10: b"not json at all",
        20: b'{"time": "2024-03-01T10:00:00Z", "level": "info", "msg": "cut',  # truncated
        30: b'["an", "array"]',
        40: record(level="verbose"),
        50: record(msg=...),  # required field missing
        60: record(http={"status": 999}),
    }
    lines = [faults.get(number, record(msg=f"line {number}")) for number in range(1, 101)]
    result = parse(SOURCE, b"\n".join(lines) + b"\n", DAY)
    assert result.events.height == 94
    assert result.reasons() == {
        10: ["line: json_object"],
        20: ["line: json_object"],
        30: ["line: json_object"],
        40: ["level: isin(['debug', 'info', 'warn', 'error'])"],
        50: ["message: not_nullable"],
        60: ["status: in_range(100, 599)"],
    }
    assert result.reason_texts()[10] == "line: json_object (got not json at all)"


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        pytest.param(1530728507353980400, 1530728507353980400, id="integer-above-2^53-keeps-every-digit"),
        pytest.param("42", 42, id="string-holding-a-number"),
        pytest.param(-7, -7, id="negative"),
    ],
)
def test_integers_keep_their_exact_value(value, stored):
    spec = source(
        """
format: json
timestamp: {field: timestamp, from: t, format: "%Y-%m-%dT%H:%M:%S%#z"}
fields: {n: {type: integer}}
daily_metrics: {records: "count(*)"}
"""
    )
    result = parse(spec, json.dumps({"t": "2024-03-01T00:00:00Z", "n": value}).encode(), DAY)
    assert result.events["n"].to_list() == [stored]


def test_value_types_become_text_and_fail_casts_with_the_value():
    # An object or array in a string field is kept as JSON text; a boolean in an integer
    # field fails `parses_as_integer` naming the value; JSON null is NULL.
    spec = source(
        """
format: json
timestamp: {field: timestamp, from: t, format: epoch_s}
fields:
  payload: {type: string}
  count: {type: integer, nullable: true}
daily_metrics: {records: "count(*)"}
"""
    )
    lines = [
        b'{"t": 1709287200, "payload": {"a": [1, 2]}, "count": null}',
        b'{"t": 1709287200, "payload": [true], "count": true}',
        b'{"t": "1709287200.5", "payload": "x", "count": 3}',
    ]
    result = parse(spec, b"\n".join(lines), DAY)
    assert result.rows("timestamp", "payload", "count") == [
        (1, utc(2024, 3, 1, 10), '{"a":[1,2]}', None),
        (3, utc(2024, 3, 1, 10, 0, 0, 500000), "x", 3),
    ]
    assert result.reason_texts() == {2: "count: parses_as_integer (got true)"}


def test_whitespace_and_a_byte_order_mark_around_an_object_are_fine():
    data = b"\xef\xbb\xbf" + record() + b"\n   " + record() + b"  \n\t" + record() + b"\n"
    result = parse(SOURCE, data, DAY)
    assert result.events.height == 3 and result.quarantined.is_empty()


def test_multiline_pretty_printed_objects_with_record_start():
    # `record_start` works with JSON too: a pretty-printed object spans lines.
    spec = source(
        """
format: json
record_start: '^\\{'
timestamp: {field: timestamp, from: time, format: "%Y-%m-%dT%H:%M:%S%#z"}
fields: {message: {from: msg}}
daily_metrics: {records: "count(*)"}
"""
    )
    data = (
        b'{\n  "time": "2024-03-01T09:00:00Z",\n  "msg": "a"\n}\n'
        b'{"time": "2024-03-01T09:00:01Z", "msg": "b"}\n'
        b'{\n  "msg": broken\n}\n'
    )
    result = parse(spec, data, DAY, chunk_bytes=16)
    assert result.rows("message") == [(1, "a"), (5, "b")]
    assert result.continuation_lines == 5
    assert result.reasons() == {6: ["line: json_object"]}


def test_real_ecs_log_dotted_key_beside_nested_object():
    # lnav's ECS sample: `log.level` is a top-level key with a dot, `log` a nested object.
    spec = source(
        """
format: json
timestamp: {field: timestamp, from: "@timestamp", format: "%Y-%m-%dT%H:%M:%S%.f%#z"}
fields:
  level: {from: /log.level}
  logger: {from: log.logger}
  line: {type: integer, from: log.origin.file.line}
  thread: {from: process.thread.name}
daily_metrics: {records: "count(*)"}
"""
    )
    result = parse(spec, real_log("lnav/logfile_ecs_log.json"), dt.date(2025, 1, 13))
    assert result.quarantined.is_empty()
    assert result.rows("level", "logger", "line", "thread") == [
        (1, "debug", "app", 42, "MainThread"),
        (2, "info", "app", 43, "MainThread"),
        (3, "warning", "app", 44, "MainThread"),
        (4, "error", "app", 45, "MainThread"),
        (5, "critical", "app", 46, "MainThread"),
    ]
