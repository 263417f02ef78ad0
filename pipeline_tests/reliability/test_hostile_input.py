"""Hostile input, generated and real, through the whole engine (listing, reader, parser, load).

Each test lands crafted files for one day, runs `ingest_partition` and checks exactly what was
loaded, what was quarantined with which reasons, and the accounting
`lines_read = rows_loaded + rows_quarantined + continuation_lines + lines_ignored`.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import shutil
import zlib
from pathlib import Path

import pytest

from pipeline.engine.lake import LoadRecord
from pipeline.engine.objects import LocalObjectStore, UnsafeKeyError, safe_key
from pipeline.sources import SourceConfigError, load_sources
from pipeline_tests.conftest import require_real_logs
from pipeline_tests.reliability.conftest import ingest, rows

DAY = dt.date(2024, 1, 15)
ACCESS = '203.0.113.{n} - - [{ts}] "GET {path} HTTP/1.1" {status} 512 "-" "{agent}"'


def access_line(n: int = 1, ts: str = "15/Jan/2024:10:00:00 +0000", path: str = "/x", status: int = 200,
                agent: str = "curl/8") -> str:  # fmt: skip
    return ACCESS.format(n=n, ts=ts, path=path, status=status, agent=agent)


def land(landing: Path, source: str, hour: int, name: str, data: bytes, day: dt.date = DAY) -> str:
    """Write one landed file; returns its key."""
    folder = landing / source / f"dt={day.isoformat()}" / f"hour={hour:02d}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return f"{source}/dt={day.isoformat()}/hour={hour:02d}/{name}"


def run(env_paths: tuple[Path, Path, Path], source: str, day: dt.date = DAY, **kwargs: object) -> LoadRecord:
    landing, output, lake = env_paths
    stats = ingest(landing, output, lake, source, day, **kwargs)  # type: ignore[arg-type]
    assert stats.lines_read == stats.rows_loaded + stats.rows_quarantined + stats.continuation_lines + (
        stats.lines_ignored
    )
    manifest = json.loads((output / "manifests" / source / f"{day.isoformat()}.json").read_text())
    assert (manifest["rows_loaded"], manifest["rows_quarantined"]) == (stats.rows_loaded, stats.rows_quarantined)
    return stats


def dlq(lake: Path, source: str) -> list[tuple[object, ...]]:
    """(source_file, line_number, raw_line, raw_bytes, [(field, check)]) per DLQ row, in order."""
    found = rows(
        lake,
        f'SELECT source_file, line_number, raw_line, raw_bytes, [(r.field, r."check") FOR r IN reasons] '
        f"FROM {source}.dlq ORDER BY source_file, line_number",
    )
    return [(f, n, line, raw, [tuple(reason.values()) if isinstance(reason, dict) else tuple(reason)
                              for reason in reasons]) for f, n, line, raw, reasons in found]  # fmt: skip


def checks_of(entry: tuple[object, ...]) -> list[tuple[str, str]]:
    return list(entry[4])  # type: ignore[arg-type]


def test_invalid_utf8_and_nul_bytes(env_paths: tuple[Path, Path, Path]) -> None:
    """Fault: an access file with a line holding invalid UTF-8 (0xff 0xfe in the agent) and a
    line holding NUL bytes inside a quoted field.
    Expected: the invalid line is quarantined (`line: valid_utf8`) with its exact bytes in
    raw_bytes and `\\xff\\xfe` in raw_line; the NUL line is valid UTF-8 and matches the format, so
    it is loaded with the NUL kept verbatim in user_agent; the good line is loaded."""
    landing, _output, lake = env_paths
    bad = access_line(2).encode().replace(b"curl/8", b"cu\xff\xferl")
    nul = access_line(3, agent="a\x00b\x00c").encode()
    key = land(landing, "access", 10, "web.log", access_line(1).encode() + b"\n" + bad + b"\n" + nul + b"\n")
    stats = run(env_paths, "access")
    assert (stats.lines_read, stats.rows_loaded, stats.rows_quarantined) == (3, 2, 1)
    [(source_file, line_number, raw_line, raw_bytes, reasons)] = dlq(lake, "access")
    assert (source_file, line_number) == (key, 2)
    assert raw_bytes == bad
    assert raw_line == bad.decode("utf-8", errors="backslashreplace")
    assert ("line", "valid_utf8") in reasons
    assert stats.failed_checks["line: valid_utf8"] == 1
    assert rows(lake, "SELECT user_agent FROM access.events WHERE line_number = 3") == [("a\x00b\x00c",)]


def test_ten_megabyte_line(env_paths: tuple[Path, Path, Path]) -> None:
    """Fault: an app record whose message is one 10 MiB line, read with 64 KiB chunks (the line is
    160 times the chunk). Expected: it is loaded whole (message length exact), the record after it
    too; nothing quarantined."""
    landing, _output, lake = env_paths
    message = "x" * (10 * 1024 * 1024)
    data = f"2024-01-15 10:00:00,000 INFO big: {message}\n2024-01-15 10:00:01,000 INFO small: after\n".encode()
    land(landing, "app", 10, "app.log", data)
    stats = run(env_paths, "app", chunk_bytes=64 * 1024)
    assert (stats.lines_read, stats.rows_loaded, stats.rows_quarantined) == (2, 2, 0)
    assert rows(lake, "SELECT logger, length(message) FROM app.events ORDER BY line_number") == [
        ("big", len(message)),
        ("small", 5),
    ]


def test_no_final_newline_and_crlf(env_paths: tuple[Path, Path, Path]) -> None:
    """Fault: one access file with CRLF endings and no final newline; one app file with CRLF
    and a CRLF traceback. Expected: every line loaded (the last unterminated line too), no `\\r`
    kept in any field, the traceback folded into its record (2 continuation lines)."""
    landing, _output, lake = env_paths
    land(landing, "access", 1, "web.log", f"{access_line(1)}\r\n{access_line(2)}\r\n{access_line(3)}".encode())
    app = (
        "2024-01-15 01:00:00,000 ERROR job: failed\r\nTraceback (most recent call last):\r\n"
        "ValueError: boom\r\n2024-01-15 01:00:01,000 INFO job: ok"
    )
    land(landing, "app", 1, "app.log", app.encode())
    stats = run(env_paths, "access")
    assert (stats.lines_read, stats.rows_loaded, stats.rows_quarantined) == (3, 3, 0)
    assert rows(lake, "SELECT count(*) FROM access.events WHERE user_agent LIKE '%' || chr(13) || '%'") == [(0,)]
    stats = run(env_paths, "app")
    assert (stats.lines_read, stats.rows_loaded, stats.continuation_lines, stats.rows_quarantined) == (4, 2, 2, 0)
    assert rows(lake, "SELECT message FROM app.events ORDER BY line_number") == [
        ("failed\nTraceback (most recent call last):\nValueError: boom",),
        ("ok",),
    ]


@pytest.mark.parametrize("chunk_bytes", [4096, None])
def test_truncated_and_corrupt_gzip(env_paths: tuple[Path, Path, Path], chunk_bytes: int | None) -> None:
    """Fault: a .log.gz cut in the middle of its stream, and a .log.gz that is not gzip at all;
    read in 4 KiB chunks and in the default 4 MiB ones (more than the whole file).
    Expected: every complete line before the damage is loaded (as many as zlib recovers);
    each damaged file adds exactly one DLQ row `file: readable_to_end` at the first line not
    read completely (line 1 for the non-gzip file), whose raw_line is the start of the cut
    line; the run does not fail."""
    landing, _output, lake = env_paths
    body = "".join(f"{access_line(n % 250)}\n" for n in range(2000)).encode()
    compressed = gzip.compress(body)
    truncated_key = land(landing, "access", 3, "cut.log.gz", compressed[: len(compressed) // 2])
    corrupt_key = land(landing, "access", 4, "junk.log.gz", b"this is not gzip at all\n")
    stats = run(env_paths, "access", **({"chunk_bytes": chunk_bytes} if chunk_bytes else {}))
    entries = dlq(lake, "access")
    assert [(entry[0], checks_of(entry)) for entry in entries] == [
        (truncated_key, [("file", "readable_to_end")]),
        (corrupt_key, [("file", "readable_to_end")]),
    ]
    cut_line = entries[0][1]
    recoverable = zlib.decompressobj(wbits=31).decompress(compressed[: len(compressed) // 2]).count(b"\n")
    assert cut_line == recoverable + 1 and recoverable > 400
    # The evidence rows count as one line each (the cut line; the unreadable file).
    assert stats.rows_loaded == cut_line - 1 == stats.lines_read - 2
    assert body.split(b"\n")[cut_line - 1].startswith(str(entries[0][2]).encode())
    assert entries[1][1] == 1
    assert stats.rows_quarantined == 2 and stats.status == "loaded"


def test_empty_file_zero_byte_hour_and_empty_hour_folder(env_paths: tuple[Path, Path, Path]) -> None:
    """Fault: hour 05 holds a zero-byte .log, hour 06 a .log of blank lines only, hour 07 an empty
    folder, nothing else. Expected: status `loaded`, 2 files, hours 05 and 06 present (a delivered
    empty file counts), hour 07 and the 21 others missing, 0 rows, the 3 blank lines ignored."""
    landing, _output, lake = env_paths
    land(landing, "access", 5, "web.log", b"")
    land(landing, "access", 6, "web.log", b"\n  \n\n")
    (landing / "access" / f"dt={DAY}" / "hour=07").mkdir()
    stats = run(env_paths, "access")
    assert (stats.status, stats.files, stats.hours_present) == ("loaded", 2, [5, 6])
    assert stats.missing_hours == [h for h in range(24) if h not in (5, 6)]
    assert (stats.lines_read, stats.lines_ignored, stats.rows_loaded, stats.rows_quarantined) == (3, 3, 0, 0)
    assert rows(lake, "SELECT count(*) FROM access.events") == [(0,)]


def test_no_files_at_all_is_an_empty_day_with_a_manifest(env_paths: tuple[Path, Path, Path]) -> None:
    """Fault: the day's folder does not exist. Expected: status `empty`, 0 rows, manifest
    written with the sentence "No log files found for 2024-01-15."."""
    stats = run(env_paths, "app")
    assert (stats.status, stats.files, stats.rows_read) == ("empty", 0, 0)
    manifest = json.loads((env_paths[1] / "manifests" / "app" / "2024-01-15.json").read_text())
    assert manifest["summary"] == "app 2024-01-15: No log files found for 2024-01-15."


class VanishingStore(LocalObjectStore):
    """A local store whose file `victim` is deleted after listing, just before it is opened."""

    def __init__(self, root: Path, victim: str) -> None:
        super().__init__(root)
        self.victim = victim

    def open(self, key: str):  # type: ignore[no-untyped-def]
        if key == self.victim:
            (self.root / key).unlink()
        return super().open(key)


def test_file_vanishes_between_listing_and_reading(env_paths: tuple[Path, Path, Path]) -> None:
    """Fault: one of two listed files is deleted before it is read. Expected: the other file is
    loaded; exactly one DLQ row for the vanished file, `file: exists_when_read`, line 0; the
    run succeeds."""
    landing, output, lake = env_paths
    land(landing, "access", 8, "a.log", f"{access_line(1)}\n{access_line(2)}\n".encode())
    victim = land(landing, "access", 9, "b.log", f"{access_line(3)}\n".encode())
    stats = ingest(landing, output, lake, "access", DAY, store=VanishingStore(landing, victim))
    # The evidence row counts as one line read, so the accounting identity still holds.
    assert (stats.files, stats.rows_loaded, stats.rows_quarantined, stats.lines_read) == (2, 2, 1, 3)
    [(source_file, line_number, raw_line, _raw, reasons)] = dlq(lake, "access")
    assert (source_file, line_number, raw_line, reasons) == (victim, 0, "", [("file", "exists_when_read")])


def test_timestamps_of_other_days_years_and_zones(env_paths: tuple[Path, Path, Path]) -> None:
    """Fault: access lines stamped in another day, year or zone, around the ±60 min tolerance.
    Expected (in UTC): 14 Jan 23:30 +0000 (30 min early), 16 Jan 00:30 +0200 (= 15 Jan 22:30) and
    15 Jan 19:30 -0500 (= 16 Jan 00:30) are loaded; 14 Jan 22:30 +0000, 15 Jan 2023, 15 Jan 23:30
    -0500 (= 16 Jan 04:30) and 29 Feb 2023 (impossible) are quarantined with the right reason."""
    landing, _output, lake = env_paths
    stamps = [
        "14/Jan/2024:23:30:00 +0000",
        "16/Jan/2024:00:30:00 +0200",
        "15/Jan/2024:19:30:00 -0500",
        "14/Jan/2024:22:30:00 +0000",
        "15/Jan/2023:10:00:00 +0000",
        "15/Jan/2024:23:30:00 -0500",
        "29/Feb/2023:10:00:00 +0000",
    ]
    land(landing, "access", 0, "web.log", "".join(f"{access_line(n, ts)}\n" for n, ts in enumerate(stamps)).encode())
    stats = run(env_paths, "access")
    assert (stats.rows_loaded, stats.rows_quarantined) == (3, 4)
    loaded = rows(lake, "SELECT line_number, timestamp AT TIME ZONE 'UTC' FROM access.events ORDER BY 1")
    assert loaded == [
        (1, dt.datetime(2024, 1, 14, 23, 30)),
        (2, dt.datetime(2024, 1, 15, 22, 30)),
        (3, dt.datetime(2024, 1, 16, 0, 30)),
    ]
    assert [(entry[1], checks_of(entry)) for entry in dlq(lake, "access")] == [
        (4, [("timestamp", "within_day")]),
        (5, [("timestamp", "within_day")]),
        (6, [("timestamp", "within_day")]),
        (7, [("timestamp", "parses_as_timestamp(%d/%b/%Y:%H:%M:%S %z)")]),
    ]


@pytest.mark.parametrize(
    ("day", "stamps", "expected_utc"),
    [
        # Europe/Berlin springs forward 2024-03-31 02:00 CET -> 03:00 CEST: wall clock jumps an hour.
        ("2024-03-31", ["31/Mar/2024:01:59:59 +0100", "31/Mar/2024:03:00:00 +0200"], ["00:59:59", "01:00:00"]),
        # ...and falls back 2024-10-27 03:00 CEST -> 02:00 CET: 02:30 happens twice, an hour apart.
        ("2024-10-27", ["27/Oct/2024:02:30:00 +0200", "27/Oct/2024:02:30:00 +0100"], ["00:30:00", "01:30:00"]),
    ],
    ids=["spring-forward", "fall-back"],
)
def test_dst_offsets_are_normalised_to_utc(
    env_paths: tuple[Path, Path, Path], day: str, stamps: list[str], expected_utc: list[str]
) -> None:
    """Fault: local times with a changing UTC offset around a DST transition (a gap, then a
    repeated hour). Expected: every line loaded, stored in UTC one second / one hour apart, in
    order, never merged or shifted by the wall clock."""
    landing, _output, lake = env_paths
    partition = dt.date.fromisoformat(day)
    land(landing, "access", 1, "web.log", "".join(f"{access_line(1, ts)}\n" for ts in stamps).encode(), partition)
    stats = run(env_paths, "access", partition)
    assert (stats.rows_loaded, stats.rows_quarantined) == (2, 0)
    stored = rows(lake, "SELECT strftime(timestamp AT TIME ZONE 'UTC', '%H:%M:%S') FROM access.events ORDER BY 1")
    assert [value for (value,) in stored] == expected_utc


def test_byte_order_mark_opening_a_file(env_paths: tuple[Path, Path, Path]) -> None:
    """Fault: an access file and an app file written with a UTF-8 byte-order mark (as some Windows
    tools do). Expected: the mark is not text of the first line: the first client is
    `203.0.113.1` (not `\\ufeff203.0.113.1`), and the app file's first record loads with its
    traceback folded in (not quarantined as lines that follow no record)."""
    landing, _output, lake = env_paths
    land(landing, "access", 1, "web.log", f"\ufeff{access_line(1)}\n{access_line(2)}\n".encode())
    app = "\ufeff2024-01-15 01:00:00,000 ERROR job: failed\nTraceback (most recent call last):\nValueError: boom\n"
    land(landing, "app", 1, "app.log", app.encode())
    stats = run(env_paths, "access")
    assert (stats.lines_read, stats.rows_loaded, stats.rows_quarantined) == (2, 2, 0)
    assert rows(lake, "SELECT client FROM access.events ORDER BY line_number") == [
        ("203.0.113.1",),
        ("203.0.113.2",),
    ]
    stats = run(env_paths, "app")
    assert (stats.lines_read, stats.rows_loaded, stats.continuation_lines, stats.rows_quarantined) == (3, 1, 2, 0)
    assert rows(lake, "SELECT line_number, message FROM app.events") == [
        (1, "failed\nTraceback (most recent call last):\nValueError: boom")
    ]


def test_header_lines_and_unknown_level(env_paths: tuple[Path, Path, Path]) -> None:
    """Fault: an app file that starts with a banner line (no record before it), has a record with
    an unknown level NOTICE, and a record with an impossible date 2024-13-45.
    Expected: banner quarantined `line: follows_a_record`; NOTICE record quarantined `level: isin`
    (the continuation after it folded in: 1 continuation line); impossible date quarantined
    `timestamp: parses_as_timestamp`; the WARN record loaded as WARNING."""
    landing, _output, lake = env_paths
    data = (
        b"=== service started ===\n"
        b"2024-01-15 10:00:00,000 NOTICE app.x: hello\n"
        b"  detail of the notice\n"
        b"2024-13-45 10:00:00,000 INFO app.y: bad date\n"
        b"2024-01-15 10:00:01,000 WARN app.z: kept\n"
    )
    land(landing, "app", 10, "app.log", data)
    stats = run(env_paths, "app")
    assert (stats.lines_read, stats.rows_loaded, stats.rows_quarantined, stats.continuation_lines) == (5, 1, 3, 1)
    assert [(entry[1], entry[2], checks_of(entry)) for entry in dlq(lake, "app")] == [
        (1, "=== service started ===", [("line", "follows_a_record")]),
        (
            2,
            "2024-01-15 10:00:00,000 NOTICE app.x: hello\n  detail of the notice",
            [("level", "isin(['DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL'])")],
        ),
        (4, "2024-01-15 10:00:00,000 INFO app.y: bad date".replace("01-15", "13-45"),
         [("timestamp", "parses_as_timestamp(%Y-%m-%d %H:%M:%S,%3f)")]),
    ]  # fmt: skip
    assert rows(lake, "SELECT level, logger FROM app.events") == [("WARNING", "app.z")]


INJECTIONS = [
    "/'; DROP TABLE access.events; --",
    '/x"; DROP SCHEMA access CASCADE; --',
    "/$(touch {canary})",
    "/`touch {canary}`;rm -rf /tmp/nothing",
    "/%s%s%n{{0}}{{}}",
]


def test_sql_and_shell_injection_is_stored_verbatim(env_paths: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """Fault: access paths and agents, and app messages and loggers, that look like SQL or shell
    injection. Expected: stored verbatim (fields equal the input byte for byte), never executed:
    every table still exists with all rows, the canary file is never created; a line whose
    injection breaks the access format (a `"` inside the request) is quarantined verbatim."""
    landing, _output, lake = env_paths
    canary = tmp_path / "canary"
    paths = [text.format(canary=canary) for text in INJECTIONS]
    lines = [access_line(n, path=path.replace(" ", "%20"), agent=f"agent'); DROP TABLE access.dlq;-- {n}")
             for n, path in enumerate(paths)]  # fmt: skip
    land(landing, "access", 2, "web.log", "".join(f"{line}\n" for line in lines).encode())
    app_messages = [f"user input: {path} $(id) `id` ; DELETE FROM app.events" for path in paths]
    app = "".join(f"2024-01-15 02:00:0{n},000 INFO sql'--: {m}\n" for n, m in enumerate(app_messages))
    land(landing, "app", 2, "app.log", app.encode())
    access_stats = run(env_paths, "access")
    app_stats = run(env_paths, "app")
    # The `"` in the second path ends the quoted request early: another layout, quarantined.
    assert (access_stats.rows_loaded, access_stats.rows_quarantined) == (4, 1)
    assert [(entry[1], entry[2], checks_of(entry)) for entry in dlq(lake, "access")] == [
        (2, lines[1], [("line", "matches_format")])
    ]
    stored = rows(lake, "SELECT line_number, path, user_agent FROM access.events ORDER BY 1")
    expected_rows = [
        (n + 1, path.replace(" ", "%20"), f"agent'); DROP TABLE access.dlq;-- {n}")
        for n, path in enumerate(paths)
        if n != 1
    ]
    assert stored == expected_rows
    # `sql'--` is a valid logger name (no blank, no colon): every app record is loaded verbatim.
    assert (app_stats.rows_loaded, app_stats.rows_quarantined) == (5, 0)
    assert rows(lake, "SELECT logger, message FROM app.events ORDER BY line_number") == [
        ("sql'--", message) for message in app_messages
    ]
    for schema, table in [("access", t) for t in ("events", "dlq", "daily_metrics")] + [
        ("app", t) for t in ("events", "dlq", "daily_metrics")
    ]:
        assert rows(lake, "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? "
                               "AND table_name = ?", [schema, table]) == [(1,)]  # fmt: skip
    assert not canary.exists()


def test_file_names_with_spaces_and_unicode(env_paths: tuple[Path, Path, Path]) -> None:
    """Fault: landed files named `web server 01.log`, `journal-ünïcødé-日本.log.gz` and a hidden
    `.partial.log`. Expected: the first two are read (gzip by suffix) and their rows carry the
    exact key as source_file; the hidden upload-in-progress file is listed as ignored, not read."""
    landing, _output, lake = env_paths
    spaced = land(landing, "access", 11, "web server 01.log", f"{access_line(1)}\n".encode())
    unicode_key = land(
        landing, "access", 11, "journal-ünïcødé-日本.log.gz", gzip.compress(f"{access_line(2)}\n".encode())
    )
    hidden = land(landing, "access", 11, ".partial.log", f"{access_line(3)}\n".encode())
    stats = run(env_paths, "access")
    assert (stats.files, stats.rows_loaded, stats.rows_quarantined) == (2, 2, 0)
    assert stats.ignored_objects == [hidden]
    assert sorted(rows(lake, "SELECT source_file FROM access.events")) == sorted([(spaced,), (unicode_key,)])


def test_hour_folders_with_non_ascii_digits_are_not_hours(env_paths: tuple[Path, Path, Path]) -> None:
    """Fault: log files under `hour=٠٣` (Arabic-Indic digits) and `hour=０３` (full-width digits),
    which Python's `\\d` and `int()` accept. Expected: not read as hour 03: both listed as ignored
    objects, hour 03 missing, nothing loaded."""
    landing, _output, _warehouse = env_paths
    keys = []
    for folder in ("hour=\u0660\u0663", "hour=\uff10\uff13"):
        path = landing / "access" / f"dt={DAY.isoformat()}" / folder / "web.log"
        path.parent.mkdir(parents=True)
        path.write_bytes(f"{access_line(1)}\n".encode())
        keys.append(path.relative_to(landing).as_posix())
    stats = run(env_paths, "access")
    assert (stats.files, stats.rows_loaded, stats.hours_present) == (0, 0, [])
    assert sorted(stats.ignored_objects) == sorted(keys) and 3 in stats.missing_hours


@pytest.mark.parametrize(
    "key",
    ["../outside.log", "access/../../outside.log", "/etc/passwd", "access/dt=2024-01-15/hour=01/../../../../x.log"],
)
def test_path_traversal_keys_are_refused(env_paths: tuple[Path, Path, Path], key: str) -> None:
    """Fault: a landing or output key that tries to leave the store's root (`..`, absolute).
    Expected: `UnsafeKeyError` naming the key, for reading, listing and writing; nothing is
    read or written outside the root."""
    landing, output, _warehouse = env_paths
    outside = landing.parent / "outside.log"
    outside.write_bytes(b"secret\n")
    with pytest.raises(UnsafeKeyError, match="must stay inside the store's root"):
        safe_key(key)
    with pytest.raises(UnsafeKeyError):
        LocalObjectStore(landing).open(key)
    with pytest.raises(UnsafeKeyError):
        list(LocalObjectStore(landing).list(key))
    with pytest.raises(UnsafeKeyError):
        LocalObjectStore(output).write_atomic(key, b"x")
    assert outside.read_bytes() == b"secret\n"
    assert not output.exists()


def test_source_name_with_traversal_is_refused(tmp_path: Path) -> None:
    """Fault: a declared source named `../x` (the name becomes a path segment and a schema).
    Expected: the definitions are refused naming the file and the source name."""
    path = tmp_path / "sources.yaml"
    original = (Path(__file__).resolve().parents[2] / "pipeline" / "sources" / "sources.yaml").read_text()
    path.write_text(original.replace("\n  app:\n", "\n  ../x:\n"))
    with pytest.raises(SourceConfigError, match=r"\.\./x") as raised:
        load_sources(path)
    assert str(path) in str(raised.value)


@pytest.mark.slow
def test_real_apache_log_as_one_day(env_paths: tuple[Path, Path, Path]) -> None:
    """Fault: the real 10,000-line `apache_logs` (84 hours over four days, line 8899 truncated)
    landed as one file of 2015-05-20. Expected: exactly the lines stamped 2015-05-20 ±60 min are
    loaded except line 8899, which is quarantined `line: matches_format`; every other line is
    quarantined `timestamp: within_day` (computed independently here with `datetime`)."""
    real = require_real_logs() / "elastic-examples" / "apache_logs"
    landing, _output, lake = env_paths
    partition = dt.date(2015, 5, 20)
    shutil.copyfile(real, landing.parent / "apache_logs")  # outside the repository, in tmp
    folder = landing / "access" / "dt=2015-05-20" / "hour=12"
    folder.mkdir(parents=True)
    os.symlink(landing.parent / "apache_logs", folder / "apache.log")
    lines = real.read_bytes().decode().splitlines()
    low = dt.datetime(2015, 5, 19, 23, tzinfo=dt.UTC)
    high = dt.datetime(2015, 5, 21, 1, tzinfo=dt.UTC)
    in_day = [
        number
        for number, line in enumerate(lines, start=1)
        if low <= dt.datetime.strptime(line.split("[", 1)[1].split("]", 1)[0], "%d/%b/%Y:%H:%M:%S %z") <= high
    ]
    assert 8899 in in_day
    stats = run(env_paths, "access", partition)
    assert (stats.lines_read, stats.rows_loaded) == (10_000, len(in_day) - 1)
    assert stats.failed_checks == {
        "line: matches_format": 1,
        "timestamp: within_day": 10_000 - len(in_day),
    }
    assert rows(lake, "SELECT line_number FROM access.dlq WHERE reason LIKE 'line: matches_format%'") == [(8899,)]


def test_real_invalid_utf8_crlf_file_as_app(env_paths: tuple[Path, Path, Path]) -> None:
    """Fault: the real lnav `logfile_invalid_utf8.0` (CRLF, invalid UTF-8, another layout) landed
    as an `app` file. Expected: its first line has a timestamp-shaped prefix, so the file is one
    record of 6 lines (5 continuations); that record is quarantined with `line: valid_utf8` and
    its exact bytes (CRLF terminators removed, lines joined by `\\n`)."""
    real = require_real_logs() / "lnav" / "logfile_invalid_utf8.0"
    data = real.read_bytes()
    landing, _output, lake = env_paths
    land(landing, "app", 23, "lnav.log", data, dt.date(2015, 3, 12))
    stats = run(env_paths, "app", dt.date(2015, 3, 12))
    assert (stats.lines_read, stats.rows_quarantined, stats.continuation_lines, stats.rows_loaded) == (6, 1, 5, 0)
    [(_file, line_number, _raw_line, raw_bytes, reasons)] = dlq(lake, "app")
    assert line_number == 1
    assert raw_bytes == data.replace(b"\r\n", b"\n").rstrip(b"\n")
    assert ("line", "valid_utf8") in reasons
