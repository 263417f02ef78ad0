"""The syslog presets against real logs nobody here wrote (`../shared/real-logs`), line by line.

As in `test_presets.py`: for each file, what each line becomes and why; files spanning
several days are read as the pipeline would receive them, each line in its own day's partition.
"""

from __future__ import annotations

import datetime as dt

import pytest

from pipeline_tests.parsing import parse, parse_by_day, real_log, source, utc

D = dt.date


# -- syslog_rfc3164 ------------------------------------------------------------------------

RFC3164 = "preset: syslog_rfc3164"


def test_rfc3164_tenzir_messy_lines_all_load():
    # Every variant is accepted: no <PRI> (1, 2, 6-11), `<34> ` with a space (3), host/IP
    # hostnames, an empty message (6), CEF payloads whose `CEF:` reads as the tag (7), lines
    # without a tag (10, 11: all message), a Cisco time with a year and ` : ` (12: no tag).
    days = {1: D(2024, 11, 16), 2: D(2024, 11, 16), 3: D(2024, 11, 16), 4: D(2024, 11, 16), 5: D(2024, 10, 11),
            6: D(2024, 12, 6), 7: D(2024, 11, 21), 8: D(2024, 11, 21), 9: D(2024, 12, 6), 10: D(2024, 12, 6),
            11: D(2024, 12, 6), 12: D(2024, 1, 18)}  # fmt: skip
    result = parse_by_day(source(RFC3164), real_log("tenzir/syslog-rfc3164.log"), days)
    assert result.quarantined.is_empty()
    rows = result.rows("timestamp", "priority", "severity", "hostname", "app_name", "procid", "message")
    assert [row[:7] for row in rows] == [
        (1, utc(2024, 11, 16, 12, 53, 54), None, None, "mymachine/10.1.1.16", "PROGRAM", None),
        (2, utc(2024, 11, 16, 13, 54, 55), None, None, "mymachine/10.1.1.16", "PROGRAM", None),
        (3, utc(2024, 11, 16, 14, 55, 56), 34, 2, "mymachine/10.1.1.16", "OTHERPROGRAM", None),
        (4, utc(2024, 11, 16, 14, 55, 56), 34, 2, "mymachine/10.1.1.16", "OTHERPROGRAM", None),
        (5, utc(2024, 10, 11, 22, 14, 15), 34, 2, "mymachine", "su", None),
        (6, utc(2024, 12, 6, 15, 56, 57), None, None, "mymachine/10.1.1.16", "OTHERPROGRAM", None),
        (7, utc(2024, 11, 21, 13, 9, 11), None, None, "mymachine/10.1.1.16", "CEF", None),
        (8, utc(2024, 11, 21, 13, 9, 11), None, None, "mymachine/10.1.1.16", "FOO", None),
        (9, utc(2024, 12, 6, 15, 56, 37), None, None, "mymachine", "PROCESS", "123"),
        (10, utc(2024, 12, 6, 15, 56, 17), None, None, "mymachine/10.1.1.16", None, None),
        (11, utc(2024, 12, 6, 15, 56, 27), None, None, "mymachine", None, None),
        (12, utc(2024, 1, 18, 11, 50, 3), 164, 4, "firepower", None, None),
    ]
    messages = [row[7] for row in rows]
    assert messages[5] == "" and messages[9] == "No app name in this message"
    assert messages[11].startswith(": %FTD-4-419002: Duplicate TCP SYN")
    assert "tikasrv01\\\\administrator" in messages[6]  # doubled backslashes kept as written


def test_rfc3164_out_of_order_days_take_their_partition_year():
    # beats' auth log runs Feb 21, 23, 21, 20, 21, 19, 23, 24, 22, 22: each line in its own
    # day's partition gets that partition's year; no "year rollover" guess fires.
    days = {1: D(2023, 2, 21), 2: D(2023, 2, 23), 3: D(2023, 2, 21), 4: D(2023, 2, 20), 5: D(2023, 2, 21),
            6: D(2023, 2, 19), 7: D(2023, 2, 23), 8: D(2023, 2, 24), 9: D(2023, 2, 22), 10: D(2023, 2, 22)}  # fmt: skip
    data = real_log("elastic-beats/system-auth-test.log")
    result = parse_by_day(source(RFC3164), data, days)
    assert result.quarantined.is_empty()
    assert [row[1].date() for row in result.rows("timestamp")] == [days[number] for number in range(1, 11)]
    assert result.rows("hostname", "app_name", "procid")[7] == (8, "precise32", "sudo", None)
    # All ten landed in the partition of Feb 21: only its three lines load; the others are
    # other days, quarantined with the window in the value.
    whole = parse(source(RFC3164), data, D(2023, 2, 21))
    assert whole.events["line_number"].to_list() == [1, 3, 5]
    assert whole.reason_texts()[2] == (
        "timestamp: within_day (got 2023-02-23 00:13:35.000000+00:00, outside 2023-02-21 UTC ±60 min)"
    )


def test_rfc3164_darwin_multiline_event_with_record_start():
    # macOS: line 1 starts an event that continues over 18 tab-indented lines; line 20 is an
    # event; line 21 (`Apr 4 03:39:57 --- last message repeated 1 time ---`, one space
    # before the day) has no host: quarantined `hostname: not_nullable`, in its own partition.
    spec = source(RFC3164 + "\nrecord_start: '^(?:<\\d{1,3}> ?)?(?:[A-Z][a-z]{2} +\\d{1,2} |\\d{4}-\\d{2}-\\d{2}T)'")
    data = real_log("elastic-beats/system-syslog-darwin-syslog-sample.log")
    result = parse(spec, data, D(2016, 12, 13), chunk_bytes=100)
    assert result.rows("timestamp", "app_name", "procid") == [
        (1, utc(2016, 12, 13, 11, 35, 28), "GoogleSoftwareUpdateAgent", "21412"),
        (20, utc(2016, 12, 13, 11, 35, 28), "GoogleSoftwareUpdateAgent", "21412"),
    ]
    message = result.events["message"][0]
    assert message.count("\n") == 18 and message.endswith("\n\t\terrors=0\n\t>")
    assert result.continuation_lines == 18
    assert result.reasons() == {21: ["timestamp: within_day", "hostname: not_nullable"]}
    last = parse(spec, data.split(b"\n")[20], D(2017, 4, 4))
    assert last.reason_texts() == {1: "hostname: not_nullable (got null)"}


@pytest.mark.parametrize(
    ("file", "day", "expected"),
    [
        pytest.param("system-syslog-suse-syslog.log", D(2018, 8, 14),
                     [(1, utc(2018, 8, 14, 12, 30, 2, 203151), "linux-sqrz", "systemd"),
                      (2, utc(2018, 8, 14, 12, 30, 2, 203251), "linux-sqrz", "systemd")], id="rfc3339-+02:00"),
        pytest.param("system-auth-timestamp.log", D(2019, 6, 14),
                     [(1, utc(2019, 6, 14, 10, 40, 20, 912134), "localhost", "sudo"),
                      (2, utc(2019, 6, 14, 11, 31, 15, 412000), "localhost", "pam")], id="no-zone-and-+01:30"),
    ],
)  # fmt: skip
def test_rfc3164_iso_timestamps_of_rsyslog_files(file, day, expected):
    result = parse(source(RFC3164), real_log(f"elastic-beats/{file}"), day)
    assert result.quarantined.is_empty()
    assert result.rows("timestamp", "hostname", "app_name") == expected


def test_rfc3164_tz_offset_file_three_zones():
    # `+0400` and `+04:00` are normalised to UTC (26 April 1986, 01:23 +04 is 25 April 21:23
    # UTC); the third line has no zone and is read in the source's zone (UTC).
    days = {1: D(1986, 4, 25), 2: D(1986, 4, 25), 3: D(2019, 6, 14)}
    result = parse_by_day(source(RFC3164), real_log("elastic-beats/system-syslog-tz-offset.log"), days)
    assert result.rows("timestamp", "app_name") == [
        (1, utc(1986, 4, 25, 21, 23, 45, 101000), "shutdown"),
        (2, utc(1986, 4, 25, 21, 23, 45, 388424), "thermald"),
        (3, utc(2019, 6, 14, 10, 40, 20, 912134), "sudo"),
    ]


def test_rfc3164_haproxy_lines_out_of_order():
    # HAProxy inside syslog: 10 lines with a year-less header (out of order, `-` client in the
    # message), the last with an RFC 3339 header: all load in their own day.
    days = {1: D(2018, 7, 30), 2: D(2021, 5, 22), 11: D(2021, 12, 15)} | {n: D(2021, 6, 22) for n in range(3, 11)}
    result = parse_by_day(source(RFC3164), real_log("elastic-beats/haproxy-log-haproxy.log"), days)
    assert result.quarantined.is_empty()
    assert result.events.height == 11
    assert result.rows("timestamp", "hostname")[10] == (11, utc(2021, 12, 15, 15, 55, 18), "host.example.com")


def test_rfc3164_lnav_bad_syslog_line_without_tag_loads():
    # lnav's "bad" line 3 (`veridian lookup for opt failed`) has no tag: RFC 3164 makes the tag
    # optional, so it loads with app_name NULL and the text as message.
    result = parse(source(RFC3164), real_log("lnav/logfile_bad_syslog.0"), D(2024, 11, 3))
    assert result.rows("app_name", "message")[2] == (3, None, "lookup for opt failed")
    assert result.quarantined.is_empty() and result.events.height == 4


# -- syslog_rfc5424 ------------------------------------------------------------------------

RFC5424 = "preset: syslog_rfc5424"


def test_rfc5424_telegraf_and_dynatrace_samples():
    # Loaded: telegraf's average message (two SD elements, an access-log message) and the
    # SecureAuth message with a four-parameter SD element, with and without an RFC 6587 octet
    # count. Quarantined: every field NILVALUE (no time: `timestamp: not_nullable`, versions 2
    # and 11 accepted) and a 58-character APP-NAME (limit 48: `matches_format`).
    cases = {
        "telegraf/syslog-rfc5424_strict_udp_average.input.txt": D(2016, 2, 21),
        "dynatrace-otel-collector/RFC5424": D(2015, 8, 5),
        "dynatrace-otel-collector/rfc6587-octet-counting": D(2015, 8, 5),
    }
    rows = {}
    for file, day in cases.items():
        result = parse(source(RFC5424), real_log(file), day)
        assert result.quarantined.is_empty(), file
        rows[file] = result.rows("timestamp", "facility", "severity", "hostname", "app_name", "procid", "msgid",
                                 "structured_data", "message")[0]  # fmt: skip
    assert rows["telegraf/syslog-rfc5424_strict_udp_average.input.txt"] == (
        1, utc(2016, 2, 21, 4, 32, 57), 3, 5, "web1", "someservice", "2341", "2",
        '[origin][meta sequence="14125553" service="someservice"]',
        '"GET /v1/ok HTTP/1.1" 200 145 "-" "hacheck 0.9.0" 24306 127.0.0.1:40124 575',
    )  # fmt: skip
    secure_auth = rows["dynatrace-otel-collector/RFC5424"]
    assert secure_auth[2:8] == (10, 6, "192.168.2.132", "SecureAuth0", "23108", "ID52020")
    assert (
        secure_auth[8]
        == '[SecureAuth@27389 UserHostAddress="192.168.2.132" Realm="SecureAuth0" UserID="Tester2" PEN="27389"]'
    )
    assert rows["dynatrace-otel-collector/rfc6587-octet-counting"] == secure_auth

    minimal_file = "telegraf/syslog-non_transparent_strict_tcp_1st_min_ok_2nd_min_ok.input.txt"
    minimal = parse(source(RFC5424), real_log(minimal_file), D(2016, 2, 21))
    assert minimal.reasons() == {1: ["timestamp: not_nullable"], 2: ["timestamp: not_nullable"]}
    too_long = parse(
        source(RFC5424), real_log("telegraf/syslog-rfc5424_strict_toolong_appname.input.txt"), D(2003, 10, 11)
    )
    assert too_long.reasons() == {1: ["line: matches_format"]}


def test_rfc5424_octet_counted_frame_holding_a_newline():
    # A 28-octet frame whose message is `hello\nworld`: line by line, `world` is not syslog;
    # with record_start it is the frame's continuation, and the frame (all NILVALUE) has no time.
    data = real_log("telegraf/syslog-octet_counting_strict_tcp_1st_newline_ok.input.txt")
    lines = parse(source(RFC5424), data, D(2016, 2, 21))
    assert lines.reasons() == {1: ["timestamp: not_nullable"], 2: ["line: matches_format"]}
    framed = parse(source(RFC5424 + "\nrecord_start: '^(?:\\d{1,9} )?<\\d{1,3}>\\d'"), data, D(2016, 2, 21))
    assert framed.continuation_lines == 1
    assert framed.reasons() == {1: ["timestamp: not_nullable"]}
    assert framed.quarantined["raw_line"].to_list() == ["28 <1>3 - - - - - - hello\nworld"]


def test_rfc5424_body_without_pri_and_version_is_another_layout():
    # lnav's NSX sample writes the 5424 header fields without `<PRI>VERSION`: all 3 quarantined.
    result = parse(source(RFC5424), real_log("lnav/logfile_with_zones.0"), D(2022, 8, 27))
    assert result.reasons() == {1: ["line: matches_format"], 2: ["line: matches_format"], 3: ["line: matches_format"]}
