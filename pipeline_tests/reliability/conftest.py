"""Shared helpers of the reliability suite: the `slow` marker, a subprocess ingest worker,
isolated deployments and exact snapshots of a warehouse to compare two runs."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from pipeline.engine.ingest import PartitionStats, ingest_partition
from pipeline.engine.objects import LocalObjectStore
from pipeline.engine.warehouse import Warehouse
from pipeline.sources import load_sources

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
SOURCES = load_sources()
QUARANTINED_AT = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: a reliability case that takes seconds (still runs in CI by default)")


def ingest(
    landing: Path,
    output: Path,
    warehouse: Path,
    source: str,
    day: dt.date,
    *,
    run_id: str = "run-test",
    chunk_bytes: int = 1 << 20,
    store: LocalObjectStore | None = None,
) -> PartitionStats:
    """Run the engine's ingest of one partition in this process."""
    return ingest_partition(
        SOURCES[source],
        day,
        landing=store or LocalObjectStore(landing),
        output=LocalObjectStore(output),
        warehouse=Warehouse(warehouse, lock_timeout_s=120),
        run_id=run_id,
        quarantined_at=QUARANTINED_AT,
        chunk_bytes=chunk_bytes,
    )


def snapshot(warehouse: Path, source: str) -> dict[str, list[tuple[object, ...]]]:
    """Every row of the source's events and DLQ, without the run-specific columns, sorted."""
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        result: dict[str, list[tuple[object, ...]]] = {}
        for table, drop in (("events", ["run_id"]), ("dlq", ["run_id", "quarantined_at"])):
            columns = [
                row[0]
                for row in connection.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ? "
                    "ORDER BY ordinal_position",
                    [source, table],
                ).fetchall()
                if row[0] not in drop
            ]
            select = ", ".join(f'"{column}"' for column in columns)
            result[table] = connection.execute(
                f'SELECT {select} FROM "{source}".{table} ORDER BY source_file, line_number'
            ).fetchall()
        return result


def rows(warehouse: Path, sql: str, parameters: list[object] | None = None) -> list[tuple[object, ...]]:
    """A read-only query."""
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        return connection.execute(sql, parameters or []).fetchall()


def worker(
    landing: Path,
    output: Path,
    warehouse: Path,
    source: str,
    day: str,
    *,
    hook: str = "none",
    marker: Path | None = None,
    run_id: str = "run-worker",
    chunk_bytes: int = 1 << 20,
) -> subprocess.Popen[bytes]:
    """Start `_worker.py` (ingest of one partition in its own process), in its own session."""
    command = [
        PYTHON,
        str(Path(__file__).with_name("_worker.py")),
        "--landing", str(landing),
        "--output", str(output),
        "--warehouse", str(warehouse),
        "--source", source,
        "--day", day,
        "--hook", hook,
        "--marker", str(marker or ""),
        "--run-id", run_id,
        "--chunk-bytes", str(chunk_bytes),
    ]  # fmt: skip
    return subprocess.Popen(
        command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
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
    """landing, output, warehouse of an isolated deployment."""
    landing = tmp_path / "landing"
    landing.mkdir()
    return landing, tmp_path / "output", tmp_path / "warehouse.duckdb"
