"""Crash and resume: an ingest process SIGKILLed at chosen points, then re-run.

Fault: SIGKILL of the process running `ingest_partition` (or `dagster asset materialize`) for a
large partition, at a hook installed by monkeypatching inside that subprocess (`_worker.py`):
mid-file, mid-write of the day's new data files, during the DLQ write, between the commits of
two tables (events committed, DLQ not; events and DLQ committed, metrics not), after every
table but before the `loads` row that seals the day, and after the seal but before the manifest.

Expected, at every kill point:
- a reader (the documented way, `pipeline.query.connect` / `pipeline query`) sees the day in
  every table exactly as the previous complete load left it, never half-replaced, although the
  raw tables may hold the killed run's rows in some of them (asserted, so each case really
  exercises a torn day where it claims to);
- `pipeline lake maintain` puts a torn day's raw tables back as that load left them;
- the re-run yields exactly the rows of a clean run in another lake, one manifest per day with
  the clean run's figures, and its `loads` row.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from pipeline.cli.generate import generate_landing_zone
from pipeline.engine.lake.files import DayFileWriter
from pipeline.engine.lake.maintenance import maintain_source
from pipeline.engine.objects import ABANDONED_TEMPORARY_S, LocalObjectStore
from pipeline_tests.reliability.conftest import (
    PROJECT_ROOT,
    SOURCES,
    ingest,
    kill,
    local_lake,
    raw_runs,
    rows,
    snapshot,
    wait_for,
    worker,
)

DAY = dt.date(2024, 3, 5)
KEY = DAY.isoformat()
CHUNK = 64 * 1024  # many batches per file, so every hook is reached mid-partition
FIGURES = ("status", "files", "lines_read", "lines_ignored", "continuation_lines", "rows_loaded", "rows_quarantined")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def large_day(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A large day of both sources (~48,000 access lines and ~48,000 app records, about 20 MB,
    some gzipped, some CRLF, 1% bad) and the outcome of a clean run in its own lake."""
    root = tmp_path_factory.mktemp("large")
    landing = root / "landing"
    generated = generate_landing_zone(landing, [DAY], lines_per_hour=2000, bad_line_rate=0.01, seed=7)
    clean: dict[str, object] = {"landing": landing, "generated": {g.source: g for g in generated}}
    for source in ("access", "app"):
        lake = root / f"clean-{source}"
        record = ingest(landing, root / "clean-output", lake, source, DAY, chunk_bytes=CHUNK)
        assert record.status == "loaded" and record.rows_quarantined > 0
        clean[source] = (snapshot(lake, source), record)
    return clean


def assert_equals_clean(large_day: dict[str, object], source: str, lake: Path, output: Path) -> None:
    """The lake and manifest hold exactly what a clean run produced, read raw and through the
    reader; the day's last attempt is the re-run's."""
    clean_rows, clean_record = large_day[source]  # type: ignore[misc]
    assert snapshot(lake, source) == clean_rows
    generated = large_day["generated"][source]  # type: ignore[index]
    assert rows(lake, f"SELECT count(*) FROM {source}.events") == [(generated.records - generated.bad_records,)]
    assert rows(lake, f"SELECT count(*) FROM {source}.dlq") == [(generated.bad_records,)]
    # One run's rows only, in the raw files too: the killed run left none behind.
    for table in ("events", "dlq", "daily_metrics"):
        assert raw_runs(lake, source, table) == ["run-rerun"], table
    manifest = json.loads((output / "manifests" / source / f"{KEY}.json").read_text())
    for name in FIGURES:
        assert manifest[name] == getattr(clean_record, name), name
    assert manifest["run_id"] == "run-rerun"
    assert sorted(path.name for path in (output / "manifests" / source).iterdir()) == [f"{KEY}.json"]
    last = rows(lake, f"SELECT run_id, status FROM {source}.loads ORDER BY attempt DESC LIMIT 1")
    assert last == [("run-rerun", "loaded")]


def kill_at(large_day: dict[str, object], tmp_path: Path, source: str, hook: str) -> tuple[Path, Path, Path]:
    """A previous complete load (`run-before`), then a re-run SIGKILLed at `hook`."""
    landing = large_day["landing"]
    lake, output = tmp_path / "lake", tmp_path / "output"
    ingest(landing, output, lake, source, DAY, run_id="run-before", chunk_bytes=CHUNK)  # type: ignore[arg-type]
    marker = tmp_path / "reached"
    process = worker(landing, output, lake, source, KEY, hook=hook, marker=marker, run_id="run-killed",
                     chunk_bytes=CHUNK)  # type: ignore[arg-type]  # fmt: skip
    wait_for(marker, process)
    kill(process)
    assert process.returncode == -signal.SIGKILL
    return landing, lake, output  # type: ignore[return-value]


# Which raw tables hold the killed run's rows at each kill point.
TORN = {
    "mid_file": set(),
    "mid_write": set(),
    "dlq_write": set(),
    "after_events_commit": {"events"},
    "after_dlq_commit": {"events", "dlq"},
    "before_seal": {"events", "dlq", "daily_metrics"},
}


@pytest.mark.parametrize(
    ("source", "hook"),
    [
        ("access", "mid_file"),
        ("access", "mid_write"),
        ("access", "dlq_write"),
        ("access", "after_events_commit"),
        ("access", "after_dlq_commit"),
        ("access", "before_seal"),
        ("app", "mid_file"),
        ("app", "dlq_write"),
        ("app", "after_events_commit"),
    ],
)
def test_kill_before_the_seal_shows_the_previous_load_then_rerun_equals_a_clean_run(
    large_day: dict[str, object], tmp_path: Path, source: str, hook: str
) -> None:
    """Fault: SIGKILL at `hook`, before the `loads` row that seals the day (a previous complete
    load of the day is in the lake). Expected: a reader sees exactly the previous load in every
    table (the raw tables hold the killed run's rows in the tables already committed); its
    manifest and last `loads` row are the previous run's; maintenance repairs the raw tables;
    the re-run equals a clean run."""
    before_rows, _record = large_day[source]  # type: ignore[misc]
    landing, lake, output = kill_at(large_day, tmp_path, source, hook)
    assert snapshot(lake, source) == before_rows
    assert rows(
        lake, f"SELECT DISTINCT run_id FROM {source}.events UNION SELECT DISTINCT run_id FROM {source}.dlq"
    ) == [("run-before",)]
    for table in ("events", "dlq", "daily_metrics"):
        expected = ["run-killed"] if table in TORN[hook] else ["run-before"]
        assert raw_runs(lake, source, table) == expected, table
    assert json.loads((output / "manifests" / source / f"{KEY}.json").read_text())["run_id"] == "run-before"
    assert rows(lake, f"SELECT run_id, status FROM {source}.loads") == [("run-before", "loaded")]

    report = maintain_source(local_lake(lake), SOURCES[source])
    assert sorted(report.repaired_days.get(KEY, [])) == sorted(TORN[hook])
    for table in ("events", "dlq", "daily_metrics"):
        assert raw_runs(lake, source, table) == ["run-before"], table
    assert snapshot(lake, source) == before_rows

    record = ingest(landing, output, lake, source, DAY, run_id="run-rerun", chunk_bytes=CHUNK)
    assert record.status == "loaded" and record.attempt == 2
    assert_equals_clean(large_day, source, lake, output)


def test_kill_on_first_load_leaves_no_day_and_openable_tables(large_day: dict[str, object], tmp_path: Path) -> None:
    """Fault: SIGKILL after the events commit of the very first load of a new lake.
    Expected: the tables exist and read as empty (the committed events are not shown: no load
    has sealed the day), no manifest was written; the re-run equals a clean run."""
    landing = large_day["landing"]
    lake, output = tmp_path / "lake", tmp_path / "output"
    marker = tmp_path / "reached"
    process = worker(landing, output, lake, "access", KEY, hook="after_events_commit", marker=marker,
                     run_id="run-killed", chunk_bytes=CHUNK)  # type: ignore[arg-type]  # fmt: skip
    wait_for(marker, process)
    kill(process)
    assert raw_runs(lake, "access", "events") == ["run-killed"]
    assert rows(lake, "SELECT count(*) FROM access.events") == [(0,)]
    assert rows(lake, "SELECT count(*) FROM access.dlq") == [(0,)]
    assert rows(lake, "SELECT count(*) FROM access.loads") == [(0,)]
    assert not (output / "manifests" / "access" / f"{KEY}.json").exists()
    ingest(landing, output, lake, "access", DAY, run_id="run-rerun", chunk_bytes=CHUNK)  # type: ignore[arg-type]
    assert_equals_clean(large_day, "access", lake, output)


def test_kill_between_seal_and_manifest(large_day: dict[str, object], tmp_path: Path) -> None:
    """Fault: SIGKILL after the day was sealed, before its manifest was written.
    Expected: the day is exactly a clean run's and its `loads` row says so (the record of truth);
    only the manifest lags (the previous run's). The re-run replaces the day with identical rows
    and writes the manifest."""
    clean_rows, _record = large_day["access"]  # type: ignore[misc]
    landing, lake, output = kill_at(large_day, tmp_path, "access", "before_manifest")
    assert snapshot(lake, "access") == clean_rows
    assert rows(lake, "SELECT DISTINCT run_id FROM access.events") == [("run-killed",)]
    assert rows(lake, "SELECT run_id FROM access.loads ORDER BY attempt") == [("run-before",), ("run-killed",)]
    assert json.loads((output / "manifests" / "access" / f"{KEY}.json").read_text())["run_id"] == "run-before"
    ingest(landing, output, lake, "access", DAY, run_id="run-rerun", chunk_bytes=CHUNK)  # type: ignore[arg-type]
    assert_equals_clean(large_day, "access", lake, output)


def test_kill_during_manifest_write_never_leaves_a_torn_manifest(large_day: dict[str, object], tmp_path: Path) -> None:
    """Fault: SIGKILL after the manifest's temporary file was written, before its rename.
    Expected: the manifest in place is the previous run's, whole (valid JSON, `run-before`),
    though the data is the killed run's (sealed); the re-run rewrites it; readers that list
    `*.json` see exactly one manifest."""
    landing, lake, output = kill_at(large_day, tmp_path, "access", "manifest_write")
    manifests = output / "manifests" / "access"
    assert json.loads((manifests / f"{KEY}.json").read_text())["run_id"] == "run-before"
    assert rows(lake, "SELECT DISTINCT run_id FROM access.events") == [("run-killed",)]
    ingest(landing, output, lake, "access", DAY, run_id="run-rerun", chunk_bytes=CHUNK)
    clean_rows, clean_record = large_day["access"]  # type: ignore[misc]
    assert snapshot(lake, "access") == clean_rows
    manifest = json.loads((manifests / f"{KEY}.json").read_text())
    assert manifest["run_id"] == "run-rerun"
    assert [manifest[name] for name in FIGURES] == [getattr(clean_record, name) for name in FIGURES]
    assert [path.name for path in manifests.glob("*.json")] == [f"{KEY}.json"]


def test_temporary_file_of_a_killed_manifest_write_is_removed_by_a_later_write(
    large_day: dict[str, object], tmp_path: Path
) -> None:
    """Fault: as above; the leftover temporary file is then older than a write ever takes.
    Expected: a re-run at that point removes it with its own write: the manifests folder holds
    only the manifest. (A re-run within `ABANDONED_TEMPORARY_S` leaves it: it could be the
    file of a writer still at work.)"""
    landing, lake, output = kill_at(large_day, tmp_path, "access", "manifest_write")
    manifests = output / "manifests" / "access"
    leftovers = [path for path in manifests.iterdir() if path.name.endswith(".tmp")]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(f".{KEY}.json.")
    ingest(landing, output, lake, "access", DAY, run_id="run-soon", chunk_bytes=CHUNK)
    assert leftovers[0].exists()  # too young to be called abandoned
    aged = time.time() - ABANDONED_TEMPORARY_S - 60
    os.utime(leftovers[0], (aged, aged))
    ingest(landing, output, lake, "access", DAY, run_id="run-rerun", chunk_bytes=CHUNK)
    assert sorted(path.name for path in manifests.iterdir()) == [f"{KEY}.json"]
    assert json.loads((manifests / f"{KEY}.json").read_text())["run_id"] == "run-rerun"


def test_a_write_removes_only_abandoned_temporary_files_of_its_own_object(tmp_path: Path) -> None:
    """Fault: temporary files beside a manifest: one abandoned (old) and one young (a writer
    possibly at work) of the same object, an old one of another object. Expected: writing the
    manifest removes exactly the abandoned one of its own object."""
    store = LocalObjectStore(tmp_path)
    folder = tmp_path / "manifests" / "access"
    folder.mkdir(parents=True)
    aged = time.time() - ABANDONED_TEMPORARY_S - 60
    abandoned, young, other = (folder / name for name in (".a.json.x1.tmp", ".a.json.x2.tmp", ".b.json.x3.tmp"))
    for path in (abandoned, young, other):
        path.write_bytes(b"{")
    for path in (abandoned, other):
        os.utime(path, (aged, aged))
    store.write_atomic("manifests/access/a.json", b"{}")
    assert sorted(path.name for path in folder.iterdir()) == sorted(["a.json", young.name, other.name])


def test_error_mid_load_changes_nothing_says_so_and_stops_the_parse_threads(
    large_day: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault: in this process, the 5th write of rows of a re-run raises (disk full) while the
    parse threads still have files to read.
    Expected: the error reaches the caller; the day keeps the previous load's rows (raw and
    read); its manifest and `loads` row say failed with 0 rows loaded and quarantined (not
    counts of rows that were discarded) and the error; `pipeline summary` shows no figures for
    it; none of the failed attempt's data files is left; no parse thread is left waiting on
    the hand-over queue (it would keep the run's process from ever exiting)."""
    from pipeline.cli.lake_commands import summary_lines

    landing = large_day["landing"]
    lake, output = tmp_path / "lake", tmp_path / "output"
    ingest(landing, output, lake, "access", DAY, run_id="run-before", chunk_bytes=CHUNK)  # type: ignore[arg-type]
    before = snapshot(lake, "access")
    write, calls = DayFileWriter.write, []

    def write_until_the_disk_is_full(self: DayFileWriter, batch: object) -> None:
        calls.append(1)
        if len(calls) == 5:
            raise OSError("No space left on device (simulated)")
        write(self, batch)  # type: ignore[arg-type]

    monkeypatch.setattr(DayFileWriter, "write", write_until_the_disk_is_full)
    with pytest.raises(OSError, match="No space left on device"):
        ingest(landing, output, lake, "access", DAY, run_id="run-failed", chunk_bytes=CHUNK)  # type: ignore[arg-type]
    deadline = time.monotonic() + 10
    while any(thread.name.startswith("parse") for thread in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [thread.name for thread in threading.enumerate() if thread.name.startswith("parse")] == []
    assert snapshot(lake, "access") == before
    assert raw_runs(lake, "access", "events") == ["run-before"]
    leftovers = [path for path in (lake / "access").rglob("part-0002-run-fail*")]
    assert leftovers == []
    manifest = json.loads((output / "manifests" / "access" / f"{KEY}.json").read_text())
    figures = [manifest[name] for name in ("status", "rows_loaded", "rows_quarantined", "rows_read", "failed_checks")]
    assert figures == ["failed", 0, 0, 0, {}]
    assert manifest["lines_read"] > 0 and "still show what the last complete load left" in manifest["summary"]
    assert manifest["error"] == "OSError: No space left on device (simulated)"
    (attempt,) = rows(lake, "SELECT status, rows_loaded, error FROM access.loads WHERE attempt = 2")
    assert attempt == ("failed", 0, "OSError: No space left on device (simulated)")
    monkeypatch.setenv("PIPELINE_LAKE_URL", str(lake))
    monkeypatch.setenv("PIPELINE_OUTPUT_URL", str(output))
    [access_line] = [line for line in summary_lines(DAY, DAY) if line.startswith("access")]
    assert access_line.split()[:6] == ["access", KEY, "failed", "-", "-", "-"]


def test_dagster_cli_run_killed_mid_partition_then_rerun(large_day: dict[str, object], tmp_path: Path) -> None:
    """Fault: SIGKILL (whole process group) of `dagster asset materialize` while it loads a large
    day slowly (PIPELINE_INGEST_SLEEP_BETWEEN_BATCHES_S=0.05, 64 KiB chunks), once the lake
    exists. Expected: the re-run through the same CLI succeeds (no lock left behind, no
    concurrency slot held: a local instance) and the lake equals a clean run."""
    landing = large_day["landing"]
    lake, output = tmp_path / "lake", tmp_path / "output"
    home = tmp_path / "dagster_home"
    home.mkdir()
    environment = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "PIPELINE_LANDING_URL": str(landing),
        "PIPELINE_OUTPUT_URL": str(output),
        "PIPELINE_LAKE_URL": str(lake),
        "PIPELINE_INGEST_CHUNK_BYTES": str(CHUNK),
        "PIPELINE_INGEST_SLEEP_BETWEEN_BATCHES_S": "0.05",
    }
    environment.pop("PIPELINE_SOURCES_FILE", None)
    environment.pop("PIPELINE_WAREHOUSE", None)
    command = [str(PROJECT_ROOT / ".venv" / "bin" / "dagster"), "asset", "materialize", "-m", "pipeline.definitions",
               "--select", "access/events,access/dlq", "--partition", KEY]  # fmt: skip
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=environment, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    lock_file = lake / "access" / "_locks" / f"{KEY}.lock"
    deadline = time.monotonic() + 120
    while not lock_file.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # well inside the slowed load (it takes > 10 s)
    assert process.poll() is None, process.communicate()[0].decode()[-3000:]
    kill(process)
    assert rows(lake, "SELECT count(*) FROM access.events") == [(0,)]
    environment.pop("PIPELINE_INGEST_SLEEP_BETWEEN_BATCHES_S")
    rerun = subprocess.run(command, cwd=PROJECT_ROOT, env=environment, capture_output=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr.decode()[-3000:]
    clean_rows, clean_record = large_day["access"]  # type: ignore[misc]
    assert snapshot(lake, "access") == clean_rows
    manifest = json.loads((output / "manifests" / "access" / f"{KEY}.json").read_text())
    assert [manifest[name] for name in FIGURES] == [getattr(clean_record, name) for name in FIGURES]
    shutil.rmtree(home, ignore_errors=True)
