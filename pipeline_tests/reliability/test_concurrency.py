"""Concurrency: two processes write the same warehouse at the same time.

Fault: two independent processes run the same partition (or two sources) at once, against one
DuckDB file, which allows a single writing process.
Expected: both runs succeed (the second waits for the OS file lock in `Warehouse.connect`, no
lock error reaches the run), and the warehouse holds exactly the rows of one clean run.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.cli.generate import generate_landing_zone
from pipeline.engine.warehouse import Warehouse
from pipeline_tests.reliability.conftest import PROJECT_ROOT, ingest, kill, rows, snapshot, wait_for, worker

DAY = dt.date(2024, 2, 10)
KEY = DAY.isoformat()

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def landed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A day of both sources (~12,000 lines each, 0.4% bad: within the budget) and a clean run of
    each in its own warehouse."""
    root = tmp_path_factory.mktemp("concurrency")
    landing = root / "landing"
    generate_landing_zone(landing, [DAY], lines_per_hour=500, bad_line_rate=0.004, seed=11)
    clean: dict[str, object] = {"landing": landing}
    for source in ("access", "app"):
        warehouse = root / f"clean-{source}.duckdb"
        ingest(landing, root / "clean-output", warehouse, source, DAY, chunk_bytes=32 * 1024)
        clean[source] = snapshot(warehouse, source)
    return clean


@pytest.mark.parametrize("existing_warehouse", [False, True], ids=["new-file", "existing-file"])
def test_same_partition_twice_at_once(landed: dict[str, object], tmp_path: Path, existing_warehouse: bool) -> None:
    """Fault: two processes ingest access/2024-02-10 simultaneously, on a warehouse file that does
    not exist yet (both race to create it) or that already holds the day.
    Expected: both exit 0 with the same figures; the warehouse equals one clean run (no
    duplicates), all rows come from a single run (the later writer replaced the earlier)."""
    landing = landed["landing"]
    warehouse, output = tmp_path / "warehouse.duckdb", tmp_path / "output"
    if existing_warehouse:
        ingest(landing, output, warehouse, "access", DAY, run_id="run-old", chunk_bytes=32 * 1024)  # type: ignore[arg-type]
    processes = [
        worker(landing, output, warehouse, "access", KEY, run_id=f"run-{n}", chunk_bytes=32 * 1024)  # type: ignore[arg-type]
        for n in (1, 2)
    ]
    outcomes = [process.communicate(timeout=300) for process in processes]
    for process, (_stdout, stderr) in zip(processes, outcomes, strict=True):
        assert process.returncode == 0, stderr.decode()[-3000:]
    assert outcomes[0][0] == outcomes[1][0]
    assert outcomes[0][0].decode().startswith("loaded ")
    assert snapshot(warehouse, "access") == landed["access"]
    run_ids = rows(warehouse, "SELECT DISTINCT run_id FROM access.events UNION SELECT DISTINCT run_id FROM access.dlq")
    assert len(run_ids) == 1 and run_ids[0][0] in ("run-1", "run-2")
    manifest = json.loads((output / "manifests" / "access" / f"{KEY}.json").read_text())
    assert manifest["status"] == "loaded" and manifest["run_id"] in ("run-1", "run-2")


def test_waiting_writer_proceeds_when_the_holder_is_killed(landed: dict[str, object], tmp_path: Path) -> None:
    """Fault: process A holds the warehouse mid-transaction (stopped mid-batch); process B starts
    the same partition and waits for the lock; A is SIGKILLed.
    Expected: B gets the lock at once (the OS releases it with the dead process), exits 0, and
    the warehouse equals one clean run with B's rows only."""
    landing = landed["landing"]
    warehouse, output = tmp_path / "warehouse.duckdb", tmp_path / "output"
    marker = tmp_path / "reached"
    holder = worker(landing, output, warehouse, "access", KEY, hook="mid_batch", marker=marker, run_id="run-a",
                    chunk_bytes=32 * 1024)  # type: ignore[arg-type]  # fmt: skip
    wait_for(marker, holder)
    waiter = worker(landing, output, warehouse, "access", KEY, run_id="run-b", chunk_bytes=32 * 1024)  # type: ignore[arg-type]
    time.sleep(2.0)
    assert waiter.poll() is None  # still waiting for the lock
    kill(holder)
    _stdout, stderr = waiter.communicate(timeout=300)
    assert waiter.returncode == 0, stderr.decode()[-3000:]
    assert snapshot(warehouse, "access") == landed["access"]
    assert rows(warehouse, "SELECT DISTINCT run_id FROM access.events") == [("run-b",)]


def test_two_sources_at_once_into_one_file(landed: dict[str, object], tmp_path: Path) -> None:
    """Fault: access and app of the same day are loaded by two processes at once into one file.
    Expected: both succeed; each schema equals its clean run."""
    landing = landed["landing"]
    warehouse, output = tmp_path / "warehouse.duckdb", tmp_path / "output"
    processes = [worker(landing, output, warehouse, source, KEY) for source in ("access", "app")]  # type: ignore[arg-type]
    for process in processes:
        _stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr.decode()[-3000:]
    assert snapshot(warehouse, "access") == landed["access"]
    assert snapshot(warehouse, "app") == landed["app"]


def test_two_dagster_cli_runs_of_one_partition_at_once(landed: dict[str, object], tmp_path: Path) -> None:
    """Fault: two `dagster asset materialize` processes for access/events+dlq, same partition, at once
    (a throwaway instance each, as two operators' shells would have).
    Expected: both runs succeed (exit 0, RUN_SUCCESS), no lock error in their output, and the
    warehouse equals one clean run."""
    warehouse, output = tmp_path / "warehouse.duckdb", tmp_path / "output"
    environment = {
        **os.environ,
        "PIPELINE_LANDING_URL": str(landed["landing"]),
        "PIPELINE_OUTPUT_URL": str(output),
        "PIPELINE_WAREHOUSE": str(warehouse),
    }
    environment.pop("DAGSTER_HOME", None)
    environment.pop("PIPELINE_SOURCES_FILE", None)
    command = [str(PROJECT_ROOT / ".venv" / "bin" / "dagster"), "asset", "materialize", "-m", "pipeline.definitions",
               "--select", "access/events,access/dlq", "--partition", KEY]  # fmt: skip
    processes = [
        subprocess.Popen(command, cwd=PROJECT_ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(2)
    ]
    for process in processes:
        output_text = process.communicate(timeout=300)[0].decode()
        assert process.returncode == 0, output_text[-3000:]
        assert "RUN_SUCCESS" in output_text
        assert "Could not set lock" not in output_text
    assert snapshot(warehouse, "access") == landed["access"]


def test_a_reader_makes_the_writer_wait_and_the_wait_is_in_the_runs_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Fault: another process holds the warehouse open read-only (an analyst's session) for ~3 s.
    Expected: a writer waits for it (DuckDB locks the file for any connection), says so on the log
    it was given (the run's log, where an operator looks), and gets in once the reader closes."""
    database = tmp_path / "warehouse.duckdb"
    with Warehouse(database).connect() as connection:
        connection.execute("CREATE TABLE t AS SELECT 1 AS x")
    reader = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1], read_only=True); "
         "print('open', flush=True); time.sleep(3); c.close()", str(database)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert reader.stdout is not None and reader.stdout.readline().strip() == "open"
    run_log = logging.getLogger("a run's log")
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="a run's log"), Warehouse(database).connect(log=run_log) as connection:
        waited = time.monotonic() - started
        connection.execute("INSERT INTO t VALUES (2)")
    assert reader.wait(timeout=30) == 0
    assert waited > 1.0
    waits = [record for record in caplog.records if record.name == "a run's log"]
    assert waits and "is in use by another process; waiting" in waits[0].getMessage()
