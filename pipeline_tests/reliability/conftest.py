"""Shared helpers of the reliability suite: a subprocess ingest worker, isolated deployments,
and exact snapshots of a lake to compare two runs (its `slow` marker is in pyproject.toml)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.engine.ingest import IngestOptions, RunInfo, ingest_partition
from pipeline.engine.lake import Lake, LakeLocation, LoadRecord
from pipeline.engine.lake.datasets import files_dataset, table_files
from pipeline.engine.lake.snapshot import connect
from pipeline.engine.objects import LocalObjectStore
from pipeline.sources import load_sources

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
SOURCES = load_sources()
QUARANTINED_AT = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
# Columns that name the run (or the moment) a row was written by: two clean runs differ only there.
RUN_COLUMNS = {"events": ["run_id"], "dlq": ["run_id", "quarantined_at"], "daily_metrics": ["run_id"]}


def local_lake(path: Path, lock_wait_s: float = 120.0) -> Lake:
    """A lake in a local folder."""
    return Lake(LakeLocation.local(path), lock_wait_s=lock_wait_s)


def ingest(
    landing: Path,
    output: Path,
    lake: Path,
    source: str,
    day: dt.date,
    *,
    run_id: str = "run-test",
    chunk_bytes: int = 1 << 20,
    store: LocalObjectStore | None = None,
) -> LoadRecord:
    """Run the engine's ingest of one partition in this process; the attempt's record."""
    return ingest_partition(
        SOURCES[source],
        day,
        landing=store or LocalObjectStore(landing),
        output=LocalObjectStore(output),
        lake=local_lake(lake),
        run=RunInfo(run_id=run_id, quarantined_at=QUARANTINED_AT),
        options=IngestOptions(chunk_bytes=chunk_bytes),
    ).record


def rows(lake: Path, sql: str, parameters: list[object] | None = None) -> list[tuple[object, ...]]:
    """A query over the lake, through the documented reader (a consistent snapshot)."""
    with connect(LakeLocation.local(lake), SOURCES.values()) as connection:
        return connection.execute(sql, parameters or []).fetchall()


def snapshot(lake: Path, source: str) -> dict[str, list[tuple[object, ...]]]:
    """Every row of the source's events, DLQ and metrics as a reader sees them, without the
    run-specific columns, sorted."""
    result = {}
    for table, drop in RUN_COLUMNS.items():
        order = "partition_date" if table == "daily_metrics" else "source_file, line_number"
        result[table] = rows(lake, f"SELECT * EXCLUDE ({', '.join(drop)}) FROM {source}.{table} ORDER BY {order}")
    return result


def raw_runs(lake: Path, source: str, table: str) -> list[str]:
    """The run ids in a table's current files, read raw (as Spark or Trino would, without the
    `loads`-driven snapshot)."""
    tables = local_lake(lake).tables(SOURCES[source])
    dataset = files_dataset(tables.location, tables.uri(table), tables.schemas[table], table_files(tables.open(table)))
    return sorted(set(dataset.to_table(columns=["run_id"]).column("run_id").to_pylist()))


def worker(
    landing: Path,
    output: Path,
    lake: Path | str,
    source: str,
    day: str,
    *,
    hook: str = "none",
    marker: Path | None = None,
    run_id: str = "run-worker",
    chunk_bytes: int = 1 << 20,
    lock_wait_s: float = 300.0,
    lease_s: float = 120.0,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start `_worker.py` (ingest of one partition in its own process), in its own session."""
    command = [
        PYTHON,
        str(Path(__file__).with_name("_worker.py")),
        "--landing", str(landing),
        "--output", str(output),
        "--lake", str(lake),
        "--source", source,
        "--day", day,
        "--hook", hook,
        "--marker", str(marker or ""),
        "--run-id", run_id,
        "--chunk-bytes", str(chunk_bytes),
        "--lock-wait-s", str(lock_wait_s),
        "--lease-s", str(lease_s),
    ]  # fmt: skip
    return subprocess.Popen(
        command,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )


def wait_for(path: Path, process: subprocess.Popen[bytes], timeout_s: float = 120.0) -> None:
    """Wait until the worker has reached its hook (it creates `path`)."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if process.poll() is not None:
            _out, err = process.communicate()
            raise AssertionError(f"worker exited {process.returncode} before its hook: {err.decode()[-3000:]}")
        if time.monotonic() > deadline:
            kill(process)
            raise AssertionError(f"worker did not reach its hook within {timeout_s} s")
        time.sleep(0.02)


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker's whole process group (only processes this suite started)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)
    # Children (e.g. a Dagster step process) die asynchronously: wait until the group is gone.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process group {process.pid} still alive 30 s after SIGKILL")


@pytest.fixture
def env_paths(tmp_path: Path) -> tuple[Path, Path, Path]:
    """landing, output, lake of an isolated deployment."""
    landing = tmp_path / "landing"
    landing.mkdir()
    return landing, tmp_path / "output", tmp_path / "lake"
