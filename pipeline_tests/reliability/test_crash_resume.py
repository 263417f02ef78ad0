"""Crash and resume: an ingest process SIGKILLed at chosen points, then re-run.

Fault: SIGKILL of the process running `ingest_partition` (or `dagster asset materialize`) for a
large partition, at a hook installed by monkeypatching inside that subprocess (`_worker.py`):
mid-file, mid-batch (half of a batch inserted), during the DLQ write, and after the commit but
before the manifest is written.
Expected: the killed transaction leaves nothing (DuckDB rolls it back on the next open), the
database file opens and is not corrupt, the re-run yields exactly the rows of a clean run in
another warehouse, one manifest per partition with the clean run's figures, no stray objects.

Resuming: a partition is the unit of work. A re-run re-reads the whole day and replaces it;
a partition that completed before the crash is *not* skipped on re-run, it is replaced with the
identical rows (see `test_completed_partition_is_replaced_not_skipped`).
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
from pipeline.cli.main import summarise
from pipeline.engine.objects import ABANDONED_TEMPORARY_S, LocalObjectStore
from pipeline.engine.warehouse import Warehouse
from pipeline_tests.reliability.conftest import PROJECT_ROOT, ingest, kill, rows, snapshot, wait_for, worker

DAY = dt.date(2024, 3, 5)
KEY = DAY.isoformat()
CHUNK = 64 * 1024  # many batches per file, so every hook is reached mid-partition
FIGURES = ("status", "files", "lines_read", "lines_ignored", "continuation_lines", "rows_loaded", "rows_quarantined")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def large_day(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A large day of both sources (~48,000 access lines and ~48,000 app records, about 20 MB,
    some gzipped, some CRLF, 1% bad) and the outcome of a clean run in its own warehouse."""
    root = tmp_path_factory.mktemp("large")
    landing = root / "landing"
    generated = generate_landing_zone(landing, [DAY], lines_per_hour=2000, bad_line_rate=0.01, seed=7)
    clean: dict[str, object] = {"landing": landing, "generated": {g.source: g for g in generated}}
    for source in ("access", "app"):
        warehouse = root / f"clean-{source}.duckdb"
        stats = ingest(landing, root / "clean-output", warehouse, source, DAY, chunk_bytes=CHUNK)
        assert stats.status == "loaded" and stats.rows_quarantined > 0
        clean[source] = (snapshot(warehouse, source), stats)
    return clean


def assert_equals_clean(large_day: dict[str, object], source: str, warehouse: Path, output: Path) -> None:
    """The warehouse and manifest hold exactly what a clean run produced; nothing else is left."""
    clean_rows, clean_stats = large_day[source]  # type: ignore[misc]
    assert snapshot(warehouse, source) == clean_rows
    generated = large_day["generated"][source]  # type: ignore[index]
    assert rows(warehouse, f"SELECT count(*) FROM {source}.events") == [(generated.records - generated.bad_records,)]
    assert rows(warehouse, f"SELECT count(*) FROM {source}.dlq") == [(generated.bad_records,)]
    # One run's rows only: the killed run left none behind.
    assert rows(warehouse, f"SELECT DISTINCT run_id FROM {source}.events") == [("run-rerun",)]
    assert rows(warehouse, f"SELECT DISTINCT run_id FROM {source}.dlq") == [("run-rerun",)]
    manifest = json.loads((output / "manifests" / source / f"{KEY}.json").read_text())
    for name in FIGURES:
        assert manifest[name] == getattr(clean_stats, name), name
    assert manifest["run_id"] == "run-rerun"
    # No temporary manifest, no DuckDB WAL or spill folder left once the re-run closed the file.
    assert sorted(path.name for path in (output / "manifests" / source).iterdir()) == [f"{KEY}.json"]
    assert sorted(path.name for path in warehouse.parent.iterdir() if path.name.startswith(warehouse.name)) == [
        warehouse.name
    ]


@pytest.mark.parametrize(
    ("source", "hook"),
    [
        ("access", "mid_file"),
        ("access", "mid_batch"),
        ("access", "dlq_write"),
        ("app", "mid_file"),
        ("app", "dlq_write"),
    ],
)
def test_kill_inside_the_transaction_then_rerun_equals_a_clean_run(
    large_day: dict[str, object], tmp_path: Path, source: str, hook: str
) -> None:
    """Fault: SIGKILL at `hook` while the day's delete+insert transaction is open (a previous
    complete load of the day is in the warehouse, so the kill also tests that the old rows survive).
    Expected: after the kill the warehouse still holds exactly the previous load (nothing of the
    killed run), the file is not corrupt; the re-run leaves exactly the clean run's rows."""
    landing = large_day["landing"]
    warehouse, output = tmp_path / "warehouse.duckdb", tmp_path / "output"
    ingest(landing, output, warehouse, source, DAY, run_id="run-before", chunk_bytes=CHUNK)  # type: ignore[arg-type]
    before = snapshot(warehouse, source)
    marker = tmp_path / "reached"
    process = worker(landing, output, warehouse, source, KEY, hook=hook, marker=marker, run_id="run-killed",
                     chunk_bytes=CHUNK)  # type: ignore[arg-type]  # fmt: skip
    wait_for(marker, process)
    kill(process)
    assert process.returncode == -signal.SIGKILL

    # Not corrupt, and the killed transaction is gone: the previous load is intact.
    assert snapshot(warehouse, source) == before
    assert rows(warehouse, f"SELECT count(*) FROM {source}.events WHERE run_id = 'run-killed'") == [(0,)]
    assert rows(warehouse, f"SELECT count(*) FROM {source}.dlq WHERE run_id = 'run-killed'") == [(0,)]
    # The manifest of the previous run is still there, whole (the killed run never wrote one).
    assert json.loads((output / "manifests" / source / f"{KEY}.json").read_text())["run_id"] == "run-before"

    stats = ingest(landing, output, warehouse, source, DAY, run_id="run-rerun", chunk_bytes=CHUNK)  # type: ignore[arg-type]
    assert stats.status == "loaded"
    assert_equals_clean(large_day, source, warehouse, output)


def test_kill_on_first_load_leaves_an_empty_openable_warehouse(large_day: dict[str, object], tmp_path: Path) -> None:
    """Fault: SIGKILL mid-batch during the very first load into a new warehouse file.
    Expected: the file opens, its tables exist and are empty (0 events, 0 DLQ rows), no manifest
    was written; the re-run equals a clean run."""
    landing = large_day["landing"]
    warehouse, output = tmp_path / "warehouse.duckdb", tmp_path / "output"
    marker = tmp_path / "reached"
    process = worker(landing, output, warehouse, "access", KEY, hook="mid_batch", marker=marker, run_id="run-killed",
                     chunk_bytes=CHUNK)  # type: ignore[arg-type]  # fmt: skip
    wait_for(marker, process)
    kill(process)
    assert rows(warehouse, "SELECT count(*) FROM access.events") == [(0,)]
    assert rows(warehouse, "SELECT count(*) FROM access.dlq") == [(0,)]
    assert not (output / "manifests" / "access" / f"{KEY}.json").exists()
    ingest(landing, output, warehouse, "access", DAY, run_id="run-rerun", chunk_bytes=CHUNK)  # type: ignore[arg-type]
    assert_equals_clean(large_day, "access", warehouse, output)


def test_kill_between_commit_and_manifest(large_day: dict[str, object], tmp_path: Path) -> None:
    """Fault: SIGKILL after the transaction committed, before the manifest was written.
    Expected: the committed rows are exactly a clean run's (the data is durable), but the manifest
    is missing (the one gap a kill can open: data without its manifest). The re-run replaces the
    day with identical rows and writes the manifest."""
    landing = large_day["landing"]
    warehouse, output = tmp_path / "warehouse.duckdb", tmp_path / "output"
    marker = tmp_path / "reached"
    process = worker(landing, output, warehouse, "access", KEY, hook="before_manifest", marker=marker,
                     run_id="run-killed", chunk_bytes=CHUNK)  # type: ignore[arg-type]  # fmt: skip
    wait_for(marker, process)
    kill(process)
    clean_rows, _stats = large_day["access"]  # type: ignore[misc]
    assert snapshot(warehouse, "access") == clean_rows
    assert rows(warehouse, "SELECT DISTINCT run_id FROM access.events") == [("run-killed",)]
    assert not (output / "manifests" / "access" / f"{KEY}.json").exists()
    ingest(landing, output, warehouse, "access", DAY, run_id="run-rerun", chunk_bytes=CHUNK)  # type: ignore[arg-type]
    assert_equals_clean(large_day, "access", warehouse, output)


def kill_during_manifest_write(large_day: dict[str, object], tmp_path: Path) -> tuple[Path, Path]:
    """A previous load, then a re-run SIGKILLed while its manifest's temporary file exists."""
    landing = large_day["landing"]
    warehouse, output = tmp_path / "warehouse.duckdb", tmp_path / "output"
    ingest(landing, output, warehouse, "access", DAY, run_id="run-before", chunk_bytes=CHUNK)  # type: ignore[arg-type]
    marker = tmp_path / "reached"
    process = worker(landing, output, warehouse, "access", KEY, hook="manifest_write", marker=marker,
                     run_id="run-killed", chunk_bytes=CHUNK)  # type: ignore[arg-type]  # fmt: skip
    wait_for(marker, process)
    kill(process)
    return warehouse, output


def test_kill_during_manifest_write_never_leaves_a_torn_manifest(large_day: dict[str, object], tmp_path: Path) -> None:
    """Fault: SIGKILL after the manifest's temporary file was written, before its rename.
    Expected: the manifest in place is the previous run's, whole (valid JSON, `run-before`),
    though the data is the killed run's (committed); the re-run rewrites it; readers that list
    `*.json` see exactly one manifest."""
    warehouse, output = kill_during_manifest_write(large_day, tmp_path)
    manifests = output / "manifests" / "access"
    assert json.loads((manifests / f"{KEY}.json").read_text())["run_id"] == "run-before"
    assert rows(warehouse, "SELECT DISTINCT run_id FROM access.events") == [("run-killed",)]
    ingest(large_day["landing"], output, warehouse, "access", DAY, run_id="run-rerun", chunk_bytes=CHUNK)  # type: ignore[arg-type]
    clean_rows, clean_stats = large_day["access"]  # type: ignore[misc]
    assert snapshot(warehouse, "access") == clean_rows
    manifest = json.loads((manifests / f"{KEY}.json").read_text())
    assert manifest["run_id"] == "run-rerun"
    assert [manifest[name] for name in FIGURES] == [getattr(clean_stats, name) for name in FIGURES]
    assert [path.name for path in manifests.glob("*.json")] == [f"{KEY}.json"]


def test_temporary_file_of_a_killed_manifest_write_is_removed_by_a_later_write(
    large_day: dict[str, object], tmp_path: Path
) -> None:
    """Fault: as above; the leftover temporary file is then older than a write ever takes.
    Expected: a re-run at that point removes it with its own write: the manifests folder holds
    only the manifest. (A re-run within `ABANDONED_TEMPORARY_S` leaves it: it could be the
    file of a writer still at work.)"""
    warehouse, output = kill_during_manifest_write(large_day, tmp_path)
    manifests = output / "manifests" / "access"
    leftovers = [path for path in manifests.iterdir() if path.name.endswith(".tmp")]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(f".{KEY}.json.")

    def rerun(run_id: str) -> None:
        ingest(large_day["landing"], output, warehouse, "access", DAY, run_id=run_id, chunk_bytes=CHUNK)  # type: ignore[arg-type]

    rerun("run-soon")
    assert leftovers[0].exists()  # too young to be called abandoned
    aged = time.time() - ABANDONED_TEMPORARY_S - 60
    os.utime(leftovers[0], (aged, aged))
    rerun("run-rerun")
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


def test_error_mid_load_rolls_back_says_nothing_was_loaded_and_stops_the_parse_threads(
    large_day: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault: in this process, the 5th insert of a re-run raises (disk full, a DuckDB error)
    while the parse threads still have files to read.
    Expected: the error reaches the caller; the day keeps the previous load's rows; its manifest
    says failed with 0 rows loaded and quarantined (not counts of rows that were rolled back),
    and `pipeline summary` shows no figures for it; no parse thread is left waiting on the
    hand-over queue (it would keep the run's process from ever exiting)."""
    landing = large_day["landing"]
    warehouse, output = tmp_path / "warehouse.duckdb", tmp_path / "output"
    ingest(landing, output, warehouse, "access", DAY, run_id="run-before", chunk_bytes=CHUNK)  # type: ignore[arg-type]
    before = snapshot(warehouse, "access")
    insert, calls = Warehouse.insert, []

    def insert_until_the_disk_is_full(connection: object, table: str, frame: object) -> None:
        calls.append(table)
        if len(calls) == 5:
            raise OSError("No space left on device (simulated)")
        insert(connection, table, frame)  # type: ignore[arg-type]

    monkeypatch.setattr(Warehouse, "insert", staticmethod(insert_until_the_disk_is_full))
    with pytest.raises(OSError, match="No space left on device"):
        ingest(landing, output, warehouse, "access", DAY, run_id="run-failed", chunk_bytes=CHUNK)  # type: ignore[arg-type]
    deadline = time.monotonic() + 10
    while any(thread.name.startswith("parse") for thread in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [thread.name for thread in threading.enumerate() if thread.name.startswith("parse")] == []
    assert snapshot(warehouse, "access") == before
    manifest = json.loads((output / "manifests" / "access" / f"{KEY}.json").read_text())
    figures = [manifest[name] for name in ("status", "rows_loaded", "rows_quarantined", "rows_read", "failed_checks")]
    assert figures == ["failed", 0, 0, 0, {}]
    assert manifest["lines_read"] > 0 and "transaction rolled back" in manifest["summary"]
    monkeypatch.setenv("PIPELINE_OUTPUT_URL", str(output))
    [access_line] = [line for line in summarise(DAY, DAY) if line.startswith("access")]
    assert access_line.split()[:6] == ["access", KEY, "failed", "-", "-", "-"]


def test_completed_partition_is_replaced_not_skipped(large_day: dict[str, object], tmp_path: Path) -> None:
    """Fault: none; a completed partition is run again (what a resumed backfill does with the days
    it had finished). Expected: it is NOT skipped: it is re-read and replaced whole (every row now
    carries the new run id) with exactly the same rows and figures."""
    landing = large_day["landing"]
    warehouse, output = tmp_path / "warehouse.duckdb", tmp_path / "output"
    first = ingest(landing, output, warehouse, "app", DAY, run_id="run-first", chunk_bytes=CHUNK)  # type: ignore[arg-type]
    second = ingest(landing, output, warehouse, "app", DAY, run_id="run-rerun", chunk_bytes=CHUNK)  # type: ignore[arg-type]
    assert second.lines_read == first.lines_read > 0  # re-read in full
    assert_equals_clean(large_day, "app", warehouse, output)


def test_dagster_cli_run_killed_mid_partition_then_rerun(large_day: dict[str, object], tmp_path: Path) -> None:
    """Fault: SIGKILL (whole process group) of `dagster asset materialize` while it loads a large
    day slowly (PIPELINE_INGEST_SLEEP_BETWEEN_BATCHES_S=0.05, 64 KiB chunks), once the warehouse
    file exists. Expected: the re-run through the same CLI succeeds (no lock left behind, no
    concurrency slot held: a local instance) and the warehouse equals a clean run."""
    landing = large_day["landing"]
    warehouse, output = tmp_path / "warehouse.duckdb", tmp_path / "output"
    home = tmp_path / "dagster_home"
    home.mkdir()
    environment = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "PIPELINE_LANDING_URL": str(landing),
        "PIPELINE_OUTPUT_URL": str(output),
        "PIPELINE_WAREHOUSE": str(warehouse),
        "PIPELINE_INGEST_CHUNK_BYTES": str(CHUNK),
        "PIPELINE_INGEST_SLEEP_BETWEEN_BATCHES_S": "0.05",
    }
    environment.pop("PIPELINE_SOURCES_FILE", None)
    command = [str(PROJECT_ROOT / ".venv" / "bin" / "dagster"), "asset", "materialize", "-m", "pipeline.definitions",
               "--select", "access/events,access/dlq", "--partition", KEY]  # fmt: skip
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=environment, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not warehouse.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # well inside the slowed load (it takes > 10 s)
    assert process.poll() is None, process.communicate()[0].decode()[-3000:]
    kill(process)
    assert rows(warehouse, "SELECT count(*) FROM access.events") == [(0,)]
    environment.pop("PIPELINE_INGEST_SLEEP_BETWEEN_BATCHES_S")
    rerun = subprocess.run(command, cwd=PROJECT_ROOT, env=environment, capture_output=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr.decode()[-3000:]
    clean_rows, clean_stats = large_day["access"]  # type: ignore[misc]
    assert snapshot(warehouse, "access") == clean_rows
    manifest = json.loads((output / "manifests" / "access" / f"{KEY}.json").read_text())
    assert [manifest[name] for name in FIGURES] == [getattr(clean_stats, name) for name in FIGURES]
    shutil.rmtree(home, ignore_errors=True)
