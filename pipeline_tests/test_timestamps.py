"""Timestamps: every supported directive parses, epoch formats, format lists, the year from the
partition, and one stable check name per rule whatever the day.
"""

from __future__ import annotations

import datetime as dt
import warnings
from typing import Any

import pytest
from polars.series.string import StringNameSpace

from pipeline.sources.timeformat import SUPPORTED, check_format, directives, has_year
from pipeline_tests.parsing import parse, source, utc

DAY = dt.date(2024, 3, 7)


def regex_source(fmt: str | list[str], **timestamp: object) -> object:
    return source(
        {
            "pattern": r"^(?P<timestamp>.+)$",
            "timestamp": {"field": "timestamp", "format": fmt, **timestamp},
            "fields": {},
            "daily_metrics": {"records": "count(*)"},
        }
    )


# Each supported directive in a full format, with a timestamp written in it (7 March 2024, a
# Thursday, 15:04:05.123456 UTC) and the UTC time it must give.
EXAMPLES = [
    ("%Y-%m-%d %H:%M:%S", "2024-03-07 15:04:05", utc(2024, 3, 7, 15, 4, 5)),
    ("%C%y-%m-%d %H:%M:%S", "2024-03-07 15:04:05", utc(2024, 3, 7, 15, 4, 5)),
    ("%y%m%d %H%M%S", "240307 150405", utc(2024, 3, 7, 15, 4, 5)),
    ("%d %b %Y %T", "07 Mar 2024 15:04:05", utc(2024, 3, 7, 15, 4, 5)),
    ("%d %B %Y %R", "07 March 2024 15:04", utc(2024, 3, 7, 15, 4)),
    ("%d %h %Y %X", "07 Mar 2024 15:04:05", utc(2024, 3, 7, 15, 4, 5)),
    ("%e.%m.%Y %k:%M", " 7.03.2024 15:04", utc(2024, 3, 7, 15, 4)),
    ("%Y-%j %H:%M", "2024-067 15:04", utc(2024, 3, 7, 15, 4)),
    ("%a %A %Y-%m-%d %H:%M", "Thu Thursday 2024-03-07 15:04", utc(2024, 3, 7, 15, 4)),
    ("%Y-%m-%d %H:%M %u %w", "2024-03-07 15:04 4 4", utc(2024, 3, 7, 15, 4)),
    ("%Y-%m-%d %I:%M:%S %p", "2024-03-07 03:04:05 PM", utc(2024, 3, 7, 15, 4, 5)),
    ("%Y-%m-%d %l:%M %P", "2024-03-07  3:04 pm", utc(2024, 3, 7, 15, 4)),
    ("%Y-%m-%d %r", "2024-03-07 03:04:05 PM", utc(2024, 3, 7, 15, 4, 5)),
    ("%D %H:%M", "03/07/24 15:04", utc(2024, 3, 7, 15, 4)),
    ("%x %H:%M", "03/07/24 15:04", utc(2024, 3, 7, 15, 4)),
    ("%F %H:%M", "2024-03-07 15:04", utc(2024, 3, 7, 15, 4)),
    ("%v %H:%M", " 7-Mar-2024 15:04", utc(2024, 3, 7, 15, 4)),
    ("%c", "Thu Mar  7 15:04:05 2024", utc(2024, 3, 7, 15, 4, 5)),
    ("%s", "1709823845", utc(2024, 3, 7, 15, 4, 5)),
    ("%Y-%m-%d%t%H:%M", "2024-03-07\t15:04", utc(2024, 3, 7, 15, 4)),
    ("%Y-%m-%d%n%H:%M", "2024-03-07 15:04", utc(2024, 3, 7, 15, 4)),
    ("%Y-%m-%d %H:%M:%S %z", "2024-03-07 16:04:05 +0100", utc(2024, 3, 7, 15, 4, 5)),
    ("%Y-%m-%d %H:%M:%S %:z", "2024-03-07 16:04:05 +01:00", utc(2024, 3, 7, 15, 4, 5)),
    ("%Y-%m-%dT%H:%M:%S%#z", "2024-03-07T15:04:05Z", utc(2024, 3, 7, 15, 4, 5)),
    ("%+", "2024-03-07T16:04:05.123+01:00", utc(2024, 3, 7, 15, 4, 5, 123000)),
    ("%Y-%m-%d %H:%M:%S%%", "2024-03-07 15:04:05%", utc(2024, 3, 7, 15, 4, 5)),
    ("%Y-%m-%d %H:%M:%S%.f", "2024-03-07 15:04:05.123456", utc(2024, 3, 7, 15, 4, 5, 123456)),
    ("%Y-%m-%d %H:%M:%S%.3f", "2024-03-07 15:04:05.123", utc(2024, 3, 7, 15, 4, 5, 123000)),
    ("%Y-%m-%d %H:%M:%S%.6f", "2024-03-07 15:04:05.123456", utc(2024, 3, 7, 15, 4, 5, 123456)),
    ("%Y-%m-%d %H:%M:%S%.9f", "2024-03-07 15:04:05.123456789", utc(2024, 3, 7, 15, 4, 5, 123456)),
    ("%Y-%m-%d %H:%M:%S,%3f", "2024-03-07 15:04:05,123", utc(2024, 3, 7, 15, 4, 5, 123000)),
    ("%Y-%m-%d %H:%M:%S,%6f", "2024-03-07 15:04:05,123456", utc(2024, 3, 7, 15, 4, 5, 123456)),
    ("%Y-%m-%d %H:%M:%S,%9f", "2024-03-07 15:04:05,123456789", utc(2024, 3, 7, 15, 4, 5, 123456)),
    ("%-d/%-m/%Y %_H:%M", "7/3/2024 15:04", utc(2024, 3, 7, 15, 4)),
]


def test_every_supported_directive_has_an_example():
    covered = {directive for fmt, _, _ in EXAMPLES for directive in directives(fmt)}
    assert covered == SUPPORTED


@pytest.mark.parametrize(("fmt", "text", "expected"), EXAMPLES, ids=[example[0] for example in EXAMPLES])
def test_supported_directive_parses_exactly(fmt, text, expected):
    result = parse(regex_source(fmt), text.encode() + b"\n", DAY)
    assert result.rows("timestamp") == [(1, expected)], result.reason_texts()


@pytest.mark.parametrize(
    ("fmt", "text", "expected"),
    [
        ("epoch_s", "1709823845", utc(2024, 3, 7, 15, 4, 5)),
        ("epoch_s", "1709823845.6014807", utc(2024, 3, 7, 15, 4, 5, 601480)),
        ("epoch_s", " 1709823845.5 ", utc(2024, 3, 7, 15, 4, 5, 500000)),
        ("epoch_ms", "1709823845123", utc(2024, 3, 7, 15, 4, 5, 123000)),
        ("epoch_us", "1709823845123456", utc(2024, 3, 7, 15, 4, 5, 123456)),
        ("epoch_ns", "1709823845123456789", utc(2024, 3, 7, 15, 4, 5, 123456)),
    ],
)
def test_epoch_formats(fmt, text, expected):
    result = parse(regex_source(fmt), text.encode() + b"\n", DAY)
    assert result.rows("timestamp") == [(1, expected)]


@pytest.mark.parametrize(
    ("fmt", "text"),
    [
        ("epoch_s", "-1709823845"),
        ("epoch_s", "1.7e9"),
        ("epoch_s", "99999999999999"),
        ("epoch_ms", "1709823845123.5"),
        ("epoch_ms", "99999999999999999999"),
        ("epoch_ns", "abc"),
    ],
)
def test_epoch_values_that_are_not_plain_numbers_fail_to_parse(fmt, text):
    result = parse(regex_source(fmt), text.encode() + b"\n", DAY)
    assert result.reason_texts() == {1: f"timestamp: parses_as_timestamp({fmt}) (got {text.strip()})"}


def test_format_list_first_match_wins_and_zone_problems_are_reported():
    # The first format that reads a value decides; a local time that does not exist in the
    # zone (spring forward) is reported, not read with a later format.
    spec = regex_source(["%Y-%m-%dT%H:%M:%S%#z", "%Y-%m-%d %H:%M:%S", "epoch_s"], timezone="Europe/Paris")
    data = b"2024-03-31T01:30:00Z\n2024-03-31 12:00:00\n1711886400\n2024-03-31 02:30:00\nnonsense\n"
    result = parse(spec, data, dt.date(2024, 3, 31))
    assert result.rows("timestamp") == [
        (1, utc(2024, 3, 31, 1, 30)),
        (2, utc(2024, 3, 31, 10)),
        (3, utc(2024, 3, 31, 12)),
    ]
    assert result.reason_texts() == {
        4: "timestamp: exists_in_timezone(Europe/Paris) (got 2024-03-31 02:30:00)",
        5: "timestamp: parses_as_timestamp(%Y-%m-%dT%H:%M:%S%#z | %Y-%m-%d %H:%M:%S | epoch_s) (got nonsense)",
    }


@pytest.mark.parametrize(
    ("text", "day", "expected"),
    [
        ("12-31 23:59:59", dt.date(2025, 1, 1), utc(2024, 12, 31, 23, 59, 59)),
        ("01-01 00:00:01", dt.date(2024, 12, 31), utc(2025, 1, 1, 0, 0, 1)),
        ("06-15 12:00:00", dt.date(2024, 6, 15), utc(2024, 6, 15, 12)),
        ("02-29 10:00:00", dt.date(2024, 2, 29), utc(2024, 2, 29, 10)),
    ],
)
def test_year_from_partition_for_any_format(text, day, expected):
    result = parse(regex_source("%m-%d %H:%M:%S", year="partition"), text.encode() + b"\n", day)
    assert result.rows("timestamp") == [(1, expected)]


def test_year_from_partition_in_a_local_zone_obeys_the_zone():
    # New Year's Eve in Tokyo (UTC+9): 1 Jan 08:30 local is 31 Dec 23:30 UTC, in the partition
    # of 31 December; a Dec 31 time read for 1 January UTC is the previous year's.
    spec = regex_source("%b %d %H:%M:%S", year="partition", timezone="Asia/Tokyo")
    result = parse(spec, b"Jan  1 08:30:00\nDec 31 12:00:00\n", dt.date(2024, 12, 31))
    assert result.rows("timestamp") == [(1, utc(2024, 12, 31, 23, 30)), (2, utc(2024, 12, 31, 3))]


def test_leap_second_does_not_parse_with_a_year_less_format():
    result = parse(regex_source("%b %d %H:%M:%S", year="partition"), b"Dec 31 23:59:60\n", dt.date(2016, 12, 31))
    assert result.reasons() == {1: ["timestamp: parses_as_timestamp(%b %d %H:%M:%S)"]}


def test_out_of_day_check_has_one_name_on_every_day():
    # The rule is `within_day` whatever the partition; which day and how far is in the value.
    spec = regex_source("%Y-%m-%d %H:%M:%S")
    first = parse(spec, b"2024-03-01 00:00:00\n", dt.date(2024, 3, 5))
    second = parse(spec, b"2024-03-01 00:00:00\n", dt.date(2024, 3, 9))
    assert first.reasons() == second.reasons() == {1: ["timestamp: within_day"]}
    assert [row[0]["value"] for row in first.quarantined["reasons"].to_list()] == [
        "2024-03-01 00:00:00.000000+00:00, outside 2024-03-05 UTC ±60 min"
    ]
    assert second.reason_texts() == {
        1: "timestamp: within_day (got 2024-03-01 00:00:00.000000+00:00, outside 2024-03-09 UTC ±60 min)"
    }


def test_has_year():
    assert [has_year(fmt) for fmt in ("%b %d %H:%M:%S", "%d/%m %H:%M", "%y-%m-%d", "%c", "epoch_ms", "%s")] == [
        False, False, True, True, True, True]  # fmt: skip


def test_format_check_hides_only_polars_f_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe parse hides polars's `%f` warning (a literal `%%f` triggers it), nothing else."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_format("%Y-%m-%d %H:%M:%S %%f")
    assert [warning.category for warning in caught] == []

    # Any other warning raised while probing (here added around polars's real parse) gets through.
    real_strptime = StringNameSpace.strptime

    def strptime_that_also_warns(self: StringNameSpace, *args: Any, **kwargs: Any) -> Any:
        warnings.warn("an unrelated warning", UserWarning, stacklevel=2)
        return real_strptime(self, *args, **kwargs)

    monkeypatch.setattr(StringNameSpace, "strptime", strptime_that_also_warns)
    with pytest.warns(UserWarning, match="an unrelated warning"):
        check_format("%Y-%m-%d %H:%M:%S")
