"""Every preset against real logs nobody here wrote (`../shared/real-logs`), line by line.

For each file the test states what each line becomes and why: loaded (with the values that
matter) or quarantined (with the exact reasons). Files spanning several days are read as the
pipeline would receive them, each line in the partition of its own UTC day
(`parse_by_day`), unless the test is about the day window itself. The syslog presets are in
`test_presets_syslog.py`; the logfmt preset on lnav's logrus and Grafana samples in
`test_format_logfmt.py`.
"""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from pipeline.sources import load_sources
from pipeline.sources.presets import presets
from pipeline_tests.parsing import parse, parse_by_day, real_log, source, utc

D = dt.date


def test_every_preset_loads_and_is_tested_here():
    # A preset that cannot load, or that no test below exercises, would be a broken promise.
    tested = {"apache_combined", "nginx_combined", "syslog_rfc3164", "syslog_rfc5424", "aws_alb", "aws_elb_classic",
              "cloudfront", "json", "docker_json", "logfmt"}  # fmt: skip
    assert set(presets()) == tested
    for name in presets():
        assert source({"preset": name}).preset == name


# -- apache_combined / nginx_combined ------------------------------------------------------


@pytest.mark.parametrize("preset", ["apache_combined", "nginx_combined"])
def test_combined_presets_are_the_built_in_access_source(preset):
    # The built-in `access` source and both presets are one definition: same pattern,
    # timestamp, fields and metrics, hence the same rows and reasons on real data (the 2,893
    # lines of 2015-05-18 plus the neighbouring hours, line 8899 truncated).
    access = load_sources()["access"]
    built = source({"preset": preset})
    keys = ("pattern", "timestamp", "fields", "daily_metrics", "format")
    assert {key: getattr(built, key) for key in keys} == {key: getattr(access, key) for key in keys}
    data = real_log("elastic-examples/apache_logs")
    ours, theirs = parse(built, data, D(2015, 5, 18)), parse(access, data, D(2015, 5, 18))
    assert ours.events.equals(theirs.events) and ours.quarantined.equals(theirs.quarantined)
    assert (ours.events.height, ours.quarantined.height) == (3121, 6879)


def test_nginx_combined_on_beats_nginx_variants():
    # Lines 1-4 and 7 are the combined layout (X-Forwarded-For lists as client, an extra
    # trailing quoted field, an empty request): loaded. Line 5 has a quoted leading field and
    # line 6 an extra field after the client list: another layout, quarantined.
    days = {1: D(2016, 12, 7), 2: D(2017, 5, 29), 3: D(2016, 12, 7), 4: D(2016, 12, 7), 5: D(2016, 1, 22),
            6: D(2016, 12, 30), 7: D(2018, 4, 12)}  # fmt: skip
    result = parse_by_day(source("preset: nginx_combined"), real_log("elastic-beats/nginx-access-test.log"), days)
    assert result.rows("client", "status") == [
        (1, "10.0.0.2, 10.0.0.1, 127.0.0.1", 200),
        (2, "172.17.0.1", 404),
        (3, "10.0.0.2, 10.0.0.1, 85.181.35.98", 200),
        (4, "85.181.35.98", 200),
        (7, "127.0.0.1", 400),
    ]
    assert result.reasons() == {5: ["line: matches_format"], 6: ["line: matches_format"]}


# -- aws_alb / aws_elb_classic -------------------------------------------------------------


def test_alb_vector_sample_all_load():
    # 12 scanner requests answered 503 (29 columns): `-1` timings, a literal `\x5C` and `<php>`
    # in URLs, line 9 earlier than line 8, line 11 with a classification. All load.
    result = parse(source("preset: aws_alb"), real_log("vector/multipart-zst.log"), D(2021, 3, 19))
    assert result.quarantined.is_empty() and result.events.height == 12
    first = result.events.row(0, named=True)
    assert (first["timestamp"], first["client"], first["target"], first["elb_status_code"]) == (
        utc(2021, 3, 19, 0, 7, 5, 89939), "45.146.165.157:41496", None, 503)  # fmt: skip
    assert (first["request_processing_time"], first["target_status_code"], first["received_bytes"]) == (-1.0, None, 297)
    assert first["request_creation_time"] == utc(2021, 3, 19, 0, 7, 4, 972000)
    assert "<php>die(@md5(HelloThinkCMF))</php>" in first["request"]
    assert "/Index/\\x5Cthink\\x5Capp/" in result.events.row(9, named=True)["request"]
    assert result.rows("classification", "classification_reason")[10] == (
        11, "Ambiguous", "UndefinedContentLengthSemantics")  # fmt: skip
    assert result.events["conn_trace_id"].null_count() == 12  # a 29-column layout


def test_alb_aws_log_parser_entries():
    # https, h2 (30 columns with `TID_...`, no final newline), wss (101) and a Lambda target
    # (502 LambdaInvalidResponse) load; the Classic ELB line (15 columns, no type) is another
    # layout for aws_alb, and loads with aws_elb_classic.
    alb = source("preset: aws_alb")
    cases = {
        "loadbalancer_https_entry.csv": (
            D(2018, 7, 2), ("https", 200, 200, "10.0.0.1:80", "authenticate,forward", None)),
        "loadbalancer_http2_entry_auth_error.csv": (
            D(2018, 7, 2), ("h2", 401, None, None, "authenticate", "TID_b33932fc40603344b9a76c1b94b208fd")),
        "loadbalancer_secured_websockets_entry.csv": (
            D(2018, 7, 2), ("wss", 101, 101, "10.0.0.171:8010", "forward", None)),
        "loadbalancer_lambda_failed_entry.csv": (D(2018, 11, 30), ("http", 502, None, None, "forward", None)),
    }  # fmt: skip
    for file, (day, expected) in cases.items():
        result = parse(alb, real_log(f"aws-log-parser/{file}"), day)
        assert result.quarantined.is_empty(), file
        columns = ("type", "elb_status_code", "target_status_code", "target", "actions_executed", "conn_trace_id")
        assert result.rows(*columns) == [(1, *expected)], file
    lambda_row = parse(alb, real_log("aws-log-parser/loadbalancer_lambda_failed_entry.csv"), D(2018, 11, 30))
    assert lambda_row.events["error_reason"].to_list() == ["LambdaInvalidResponse"]
    classic = real_log("aws-log-parser/classic_loadbalancer_http_entry.csv")
    assert parse(alb, classic, D(2015, 5, 13)).reasons() == {1: ["line: matches_format"]}
    as_classic = parse(source("preset: aws_elb_classic"), classic, D(2015, 5, 13))
    assert as_classic.rows("timestamp", "client", "backend", "elb_status_code", "request_processing_time") == [
        (1, utc(2015, 5, 13, 23, 39, 43, 945958), "192.168.131.39:2817", "10.0.0.1:80", 200, 0.000086)
    ]


# -- cloudfront ----------------------------------------------------------------------------

CLOUDFRONT = "preset: cloudfront"


def test_cloudfront_multiple_two_days_headers_ignored():
    # #Version and #Fields (space-separated names over tab-separated data) are ignored; lines
    # 3-5 are 4 December, 6-8 13 December (out of order, 22:36:27 before 22:36:26). Read for
    # each day, that day's lines load and the other day's are quarantined `within_day`.
    data = real_log("aws-log-parser/cloudfront-multiple.log")
    columns = ("timestamp", "edge_location", "status", "edge_result_type", "referrer")
    december_4 = parse(source(CLOUDFRONT), data, D(2019, 12, 4))
    assert december_4.lines_ignored == 2
    assert december_4.rows(*columns) == [
        (number, utc(2019, 12, 4, 21, 2, 31), "LAX1", 200, "Hit", None) for number in (3, 4, 5)
    ]
    assert december_4.reasons() == {number: ["timestamp: within_day"] for number in (6, 7, 8)}
    december_13 = parse(source(CLOUDFRONT), data, D(2019, 12, 13))
    assert december_13.rows(*columns) == [
        (6, utc(2019, 12, 13, 22, 36, 27), "SEA19-C1", 502, "Error", "http://www.example.com/"),
        (7, utc(2019, 12, 13, 22, 36, 26), "SEA19-C1", 502, "Error", None),
        (8, utc(2019, 12, 13, 22, 37, 2), "SEA19-C2", 502, "Error", None),
    ]
    assert december_13.reasons() == {number: ["timestamp: within_day"] for number in (3, 4, 5)}


def test_cloudfront_node_fixtures():
    # web-1-0 (24 columns, `-` cs-bytes, no final newline): both lines load, URL-encoding kept.
    # web-1-0-2019-12 (tab after `#Fields:`, last line ends with a tab = an extra empty
    # column, ignored): all three load.
    old = parse(source(CLOUDFRONT), real_log("node-cloudfront-log-parser/web-1-0.txt"), D(2014, 5, 23))
    assert old.quarantined.is_empty() and old.lines_ignored == 2
    assert old.rows("sc_bytes", "status", "uri_query", "cs_bytes") == [
        (3, 182, 200, None, None),
        (4, 2390282, 304, "a=b&c=d", None),
    ]
    assert old.events["user_agent"][0].startswith("Mozilla/5.0%2520(iPhone;")
    recent = parse(source(CLOUDFRONT), real_log("node-cloudfront-log-parser/web-1-0-2019-12.txt"), D(2019, 12, 4))
    assert recent.quarantined.is_empty() and recent.events.height == 3
    assert recent.events["content_type"].to_list() == ["text/html"] * 3


def test_cloudfront_rtmp_and_realtime_logs_are_other_layouts():
    # RTMP (streaming) logs have no method, host, status, result type or request id: each line
    # is quarantined naming exactly those columns (the zero-width space after `x-page-url` in
    # the header does not matter). The real-time (Kinesis) log has an epoch `timestamp` and no
    # date/time, nor cs(Host): quarantined.
    rtmp = parse(source(CLOUDFRONT), real_log("node-cloudfront-log-parser/rtmp-1-0.txt"), D(2010, 3, 12))
    missing = ["method", "host", "status", "edge_result_type", "request_id"]
    assert rtmp.reasons() == {number: [f"{name}: not_nullable" for name in missing] for number in range(3, 9)}
    assert rtmp.lines_ignored == 2
    realtime = parse(source(CLOUDFRONT), real_log("node-cloudfront-log-parser/kinesis-1-0.txt"), D(2020, 12, 7))
    assert realtime.reasons() == {3: ["timestamp: not_nullable", "host: not_nullable"]}
    # Declared for what it is, the real-time line loads.
    kinesis = source(
        """
format: {type: delimited, separator: "\\t", quote: null, escape: null, header: "#Fields:"}
timestamp: {field: timestamp, from: timestamp, format: epoch_s}
fields: {status: {type: integer, from: sc-status}, country: {from: c-country}}
daily_metrics: {records: "count(*)"}
"""
    )
    assert parse(kinesis, real_log("node-cloudfront-log-parser/kinesis-1-0.txt"), D(2020, 12, 7)).rows(
        "timestamp", "status", "country"
    ) == [(3, utc(2020, 12, 7, 20, 52, 1, 541000), 200, "US")]


# -- json / docker_json ---------------------------------------------------------------------


def test_json_preset_on_lnav_samples():
    # bunyan (`time`, numeric `level`, `msg`): all 10 load. pino: epoch-millisecond `time`.
    # Rust tracing: `timestamp`, message in `fields.message`.
    bunyan = parse(source("preset: json"), real_log("lnav/logfile_bunyan.0"), D(2023, 3, 24))
    assert bunyan.quarantined.is_empty() and bunyan.events.height == 10
    assert bunyan.rows("timestamp", "level", "message")[3] == (
        4, utc(2023, 3, 24, 14, 26, 16, 243000), "30", "Dependency extraction complete")  # fmt: skip
    pino = parse(source("preset: json\ntimestamp: {format: epoch_ms}"), real_log("lnav/logfile_pino.0"), D(2025, 4, 24))
    assert pino.rows("timestamp", "level", "message") == [
        (1, utc(2025, 4, 24, 22, 8, 37, 537000), "info", "Charge request received.")]  # fmt: skip
    tracing = source("preset: json\ntimestamp: {from: timestamp}\nfields: {message: {from: fields.message}}")
    result = parse(tracing, real_log("lnav/logfile_rust_tracing.0"), D(2025, 10, 28))
    assert result.rows("level", "message")[2] == (3, "TRACE", "hello! I'm gonna shave a yak")


def test_json_preset_on_lnav_edge_cases():
    # logfile_json: `"ts": "xxx"` (6) and a time without `T` (9) do not parse; ANSI escapes,
    # backspaces and custom levels are kept. logfile_invalid_json: line 3 is cut inside a
    # string: `line: json_object`.
    spec = source("preset: json\ntimestamp: {from: ts}\nfields: {level: {from: lvl}}")
    edge = parse(spec, real_log("lnav/logfile_json.json"), D(2013, 9, 6))
    assert edge.events.height == 12
    assert edge.reason_texts() == {
        6: "timestamp: parses_as_timestamp(%Y-%m-%dT%H:%M:%S%.f%#z) (got xxx)",
        9: "timestamp: parses_as_timestamp(%Y-%m-%dT%H:%M:%S%.f%#z) (got 2013-09-06 22:01:00Z)",
    }
    assert edge.rows("message")[1] == (2, "Starting up \x1b[0;32mservice\x1b[0m")
    assert edge.rows("level", "message")[3] == (4, "DEBUG5", "D\bDetails...\n")
    nested = source(
        "preset: json\ntimestamp: {from: ts}\nfields: {level: {from: '@fields.lvl'}, message: {from: '@fields.msg'}}"
    )
    cut = parse(nested, real_log("lnav/logfile_invalid_json.json"), D(2013, 9, 6))
    assert cut.events["line_number"].to_list() == [1, 2, 4, 5]
    assert cut.reasons() == {3: ["line: json_object"]}


def test_docker_json_preset_on_fluent_bit_samples():
    # Each `log` keeps its newline; JSON stringified inside JSON stays text; malformed JSON
    # inside `log` is just text (the line itself is valid JSON).
    files = {
        "fluent-bit/annotations-parser-order_multiple-1_container-1.log": [
            (1, utc(2019, 4, 1, 17, 58, 33, 598656), "stdout",
             "[2019-04-05T14:54:23.584269761] Container 1 is logging on stdout\n"),
            (2, utc(2019, 4, 1, 17, 58, 33, 698656), "stderr",
             "[2019-04-05T14:54:23.584269761] Container 1 is logging on stderr\n"),
        ],
        "fluent-bit/annotations-parser_json-with-time_invalid-json-1.log": [
            (1, utc(2019, 4, 1, 17, 58, 33, 598656), "stdout",
             '{"time":"2019-04-05T14:54:23.584269761","message":"Simple text"]\n'),
        ],
    }  # fmt: skip
    for file, expected in files.items():
        result = parse(source("preset: docker_json"), real_log(file), D(2019, 4, 1))
        assert result.quarantined.is_empty() and result.rows("timestamp", "stream", "log") == expected
    nested = parse(source("preset: docker_json"), real_log("fluent-bit/core_unescaping_json.log"), D(2019, 4, 1))
    assert nested.events["log"][0].startswith('{"stringified-json":"{\\"stringified-json\\":')


def test_json_preset_on_mozlog_with_nanosecond_integers():
    # duo.log: `Timestamp` in nanoseconds above 2^53 (read exactly as epoch_ns), `Time` in
    # RFC 3339 as a second timestamp field, `Fields.msg` nested. Lines 4, 5, 6 and 12 have no
    # `Fields.event_action`: quarantined `action: not_nullable`.
    spec = source(
        """
preset: json
timestamp: {from: Timestamp, format: epoch_ns}
fields:
  level: {type: integer, from: Severity}
  message: {from: Fields.msg, nullable: true}
  time: {type: timestamp, from: Time, format: "%Y-%m-%dT%H:%M:%S%#z"}
  action: {from: Fields.event_action}
"""
    )
    result = parse(spec, real_log("lua_sandbox_extensions/duo.log"), D(2018, 7, 4))
    assert result.reasons() == {number: ["action: not_nullable"] for number in (4, 5, 6, 12)}
    assert result.rows("timestamp", "time", "level", "action")[0] == (
        1, utc(2018, 7, 4, 15, 49, 46, 349480), utc(2018, 7, 4, 15, 49, 46), 6, "bypass_create")  # fmt: skip
    assert result.events.filter(pl.col("line_number") == 3)["message"].to_list() == [None]
