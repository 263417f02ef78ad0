"""Concurrency: several processes write (and read) one lake at the same time.

Fault: independent processes load different days of a source, the same day, two sources, or
load while another process holds a query open.
Expected:
- writers of different days never wait for each other and both succeed, leaving exactly the
  rows of clean runs (Delta's optimistic concurrency; repeated over several trials);
- two writers of the same day take turns on the day's lock: the second waits, then replaces
  the day whole, so exactly one run's rows are left and `loads` records both attempts in order;
  with no time to wait it fails with a clear, retryable error naming the holder;
- a killed holder releases the day at once (an OS lock);
- a reader never blocks or slows a writer, and keeps its own consistent snapshot.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from pipeline.cli.generate import generate_landing_zone
from pipeline.engine.lake import LakeLocation
from pipeline.engine.lake.snapshot import connect
from pipeline_tests.reliability.conftest import (
    PROJECT_ROOT,
    SOURCES,
    ingest,
    kill,
    raw_runs,
    rows,
    snapshot,
    wait_for,
    worker,
)

DAYS = [dt.date(2024, 2, 10), dt.date(2024, 2, 11)]
KEY = DAYS[0].isoformat()
CHUNK = 32 * 1024
TRIALS = 5

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def landed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Two days of both sources (~12,000 lines per source and day, 0.4% bad: within the budget)
    and a clean run of each source in its own lake."""
    root = tmp_path_factory.mktemp("concurrency")
    landing = root / "landing"
    generate_landing_zone(landing, DAYS, lines_per_hour=500, bad_line_rate=0.004, seed=11)
    clean: dict[str, object] = {"landing": landing}
    for source in ("access", "app"):
        lake = root / f"clean-{source}"
        for day in DAYS:
            ingest(landing, root / "clean-output", lake, source, day, chunk_bytes=CHUNK)
        clean[source] = snapshot(lake, source)
    return clean


def finish(process: subprocess.Popen[bytes]) -> str:
    """Wait for a worker; its `status rows_loaded rows_quarantined` line."""
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr.decode()[-3000:]
    return stdout.decode().strip()


def test_two_writers_of_different_days_at_once(landed: dict[str, object], tmp_path: Path) -> None:
    """Fault: two processes load 2024-02-10 and 2024-02-11 of access at the same moment, into one
    lake (the first trial also races to create its tables), five trials.
    Expected: every run succeeds; each trial's lake equals the clean run of both days; each
    day's rows come from the run that loaded it."""
    for trial in range(TRIALS):
        lake, output = tmp_path / f"lake-{trial}", tmp_path / f"output-{trial}"
        processes = [
            worker(
                landed["landing"], output, lake, "access", day.isoformat(), run_id=f"run-{trial}-{n}", chunk_bytes=CHUNK
            )  # type: ignore[arg-type]  # fmt: skip
            for n, day in enumerate(DAYS)
        ]
        assert all(finish(process).startswith("loaded ") for process in processes)
        assert snapshot(lake, "access") == landed["access"], trial
        assert rows(lake, "SELECT partition_date::VARCHAR, min(run_id), max(run_id) FROM access.events GROUP BY 1 "
                          "ORDER BY 1") == [(KEY, f"run-{trial}-0", f"run-{trial}-0"),
                                            (DAYS[1].isoformat(), f"run-{trial}-1", f"run-{trial}-1")]  # fmt: skip


@pytest.mark.parametrize("existing_day", [False, True], ids=["new-lake", "day-already-loaded"])
def test_same_day_twice_at_once_takes_turns(landed: dict[str, object], tmp_path: Path, existing_day: bool) -> None:
    """Fault: two processes load access/2024-02-10 simultaneously, into a new lake (both race to
    create the tables) or one that already holds the day.
    Expected: both exit 0 with the same figures (the second waited for the first, then replaced
    the day); the lake equals one clean run, all of the day's rows (events, DLQ, metrics, read
    raw too) come from a single run, the last to load; `loads` numbers the attempts in order."""
    landing = landed["landing"]
    lake, output = tmp_path / "lake", tmp_path / "output"
    if existing_day:
        ingest(landing, output, lake, "access", DAYS[0], run_id="run-old", chunk_bytes=CHUNK)  # type: ignore[arg-type]
    processes = [
        worker(landing, output, lake, "access", KEY, run_id=f"run-{n}", chunk_bytes=CHUNK)  # type: ignore[arg-type]
        for n in (1, 2)
    ]
    outcomes = [finish(process) for process in processes]
    assert outcomes[0] == outcomes[1] and outcomes[0].startswith("loaded ")
    day_rows = landed["access"]
    got = snapshot(lake, "access")
    for table in ("events", "dlq"):
        assert got[table] == [row for row in day_rows[table] if row[0] == DAYS[0]], table
    attempts = rows(lake, "SELECT attempt, run_id, status FROM access.loads ORDER BY attempt")
    first = [("run-old",)] if existing_day else []
    assert [run for _n, run, _s in attempts[: len(first)]] == [run for (run,) in first]
    last_run = attempts[-1][1]
    assert [n for n, _r, _s in attempts] == list(range(1, len(attempts) + 1))
    assert {run for _n, run, _s in attempts[len(first) :]} == {"run-1", "run-2"}
    for table in ("events", "dlq", "daily_metrics"):
        assert raw_runs(lake, "access", table) == [last_run], table


def test_same_day_with_no_time_to_wait_fails_clearly(landed: dict[str, object], tmp_path: Path) -> None:
    """Fault: process A holds access/2024-02-10 (stopped while writing); B starts the same day and
    may wait only 1 s. Expected: B fails with a retryable `DayLockTimeout` naming A's run, having
    written nothing; A's day is untouched by B."""
    landing = landed["landing"]
    lake, output = tmp_path / "lake", tmp_path / "output"
    marker = tmp_path / "reached"
    holder = worker(landing, output, lake, "access", KEY, hook="mid_write", marker=marker, run_id="run-a",
                    chunk_bytes=CHUNK)  # type: ignore[arg-type]  # fmt: skip
    wait_for(marker, holder)
    impatient = worker(landing, output, lake, "access", KEY, run_id="run-b", chunk_bytes=CHUNK, lock_wait_s=1.0)  # type: ignore[arg-type]
    _stdout, stderr = impatient.communicate(timeout=120)
    kill(holder)
    assert impatient.returncode != 0
    error = stderr.decode()
    assert "DayLockTimeout: access 2024-02-10 is being written by run run-a (pid" in error
    assert rows(lake, "SELECT count(*) FROM access.loads WHERE run_id = 'run-b' AND status = 'loaded'") == [(0,)]


def test_waiting_writer_proceeds_when_the_holder_is_killed(landed: dict[str, object], tmp_path: Path) -> None:
    """Fault: process A holds the day (stopped while writing its files); process B starts the same
    day and waits for it; A is SIGKILLed.
    Expected: B gets the day at once (the OS releases the lock with the dead process), exits 0,
    and the day equals a clean run with B's rows only."""
    landing = landed["landing"]
    lake, output = tmp_path / "lake", tmp_path / "output"
    marker = tmp_path / "reached"
    holder = worker(landing, output, lake, "access", KEY, hook="mid_write", marker=marker, run_id="run-a",
                    chunk_bytes=CHUNK)  # type: ignore[arg-type]  # fmt: skip
    wait_for(marker, holder)
    waiter = worker(landing, output, lake, "access", KEY, run_id="run-b", chunk_bytes=CHUNK)  # type: ignore[arg-type]
    time.sleep(2.0)
    assert waiter.poll() is None  # still waiting for the day
    kill(holder)
    assert finish(waiter).startswith("loaded ")
    assert raw_runs(lake, "access", "events") == ["run-b"]
    assert rows(lake, "SELECT count(*) FROM access.events") == [
        (sum(1 for row in landed["access"]["events"] if row[0] == DAYS[0]),)  # type: ignore[index]
    ]


def test_two_sources_at_once_into_one_lake(landed: dict[str, object], tmp_path: Path) -> None:
    """Fault: access and app of the same two days are loaded by four processes at once.
    Expected: all succeed; each source equals its clean run."""
    landing = landed["landing"]
    lake, output = tmp_path / "lake", tmp_path / "output"
    processes = [
        worker(landing, output, lake, source, day.isoformat(), chunk_bytes=CHUNK)  # type: ignore[arg-type]
        for source in ("access", "app")
        for day in DAYS
    ]
    assert all(finish(process).startswith("loaded ") for process in processes)
    assert snapshot(lake, "access") == landed["access"]
    assert snapshot(lake, "app") == landed["app"]


def test_a_reader_never_blocks_the_writer_and_keeps_its_snapshot(landed: dict[str, object], tmp_path: Path) -> None:
    """Fault: a reader opens a connection on a lake holding day 1, then keeps querying it in a
    loop (an analyst's notebook) while another process loads day 1 again and day 2.
    Expected: the writers finish while the reader's connection is still open and busy (nothing
    waits for it: a lock held by readers would stall them until it closes); the reader goes on
    answering from its snapshot (day 1's old run only, no day 2) the whole time; a new
    connection sees the new loads. (How much a busy reader slows a writer is measured, not
    asserted: `python -m benchmarks.run`, row `lake_write_with_reader`.)"""
    landing = landed["landing"]
    lake, output = tmp_path / "lake", tmp_path / "output"
    ingest(landing, output, lake, "access", DAYS[0], run_id="run-old", chunk_bytes=CHUNK)  # type: ignore[arg-type]
    reader = connect(LakeLocation.local(lake), SOURCES.values())
    query = "SELECT partition_date::VARCHAR, run_id, count(*) FROM access.events GROUP BY ALL ORDER BY 1"
    old_answer = reader.execute(query).fetchall()
    answers: list[list[tuple[object, ...]]] = []
    stop = threading.Event()

    def keep_reading() -> None:
        while not stop.is_set():
            # One thread uses the connection (DuckDB connections are not shared across threads).
            answers.append(reader.execute(query).fetchall())

    thread = threading.Thread(target=keep_reading)
    thread.start()
    writers = [
        worker(landing, output, lake, "access", day.isoformat(), run_id=f"run-new-{n}", chunk_bytes=CHUNK)  # type: ignore[arg-type]
        for n, day in enumerate(DAYS)
    ]
    statuses = [finish(process) for process in writers]
    assert thread.is_alive()  # still reading: the writers did not wait for it
    stop.set()
    thread.join(timeout=60)
    assert all(status.startswith("loaded ") for status in statuses)
    assert len(answers) > 3 and all(answer == old_answer for answer in answers)
    assert old_answer[0][1] == "run-old" and len(old_answer) == 1
    fresh = rows(lake, query)
    assert [(day, run) for day, run, _count in fresh] == [(KEY, "run-new-0"), (DAYS[1].isoformat(), "run-new-1")]


def test_two_dagster_cli_runs_of_one_partition_at_once(landed: dict[str, object], tmp_path: Path) -> None:
    """Fault: two `dagster asset materialize` processes for access/events+dlq, same partition, at once
    (a throwaway instance each, as two operators' shells would have).
    Expected: both runs succeed (exit 0, RUN_SUCCESS), the second saying it waited for the
    first, and the day equals one clean run."""
    lake, output = tmp_path / "lake", tmp_path / "output"
    environment = {
        **os.environ,
        "PIPELINE_LANDING_URL": str(landed["landing"]),
        "PIPELINE_OUTPUT_URL": str(output),
        "PIPELINE_LAKE_URL": str(lake),
    }
    for name in ("DAGSTER_HOME", "PIPELINE_SOURCES_FILE", "PIPELINE_WAREHOUSE"):
        environment.pop(name, None)
    command = [str(PROJECT_ROOT / ".venv" / "bin" / "dagster"), "asset", "materialize", "-m", "pipeline.definitions",
               "--select", "access/events,access/dlq", "--partition", KEY]  # fmt: skip
    processes = [
        subprocess.Popen(command, cwd=PROJECT_ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(2)
    ]
    texts = []
    for process in processes:
        text = process.communicate(timeout=300)[0].decode()
        assert process.returncode == 0, text[-3000:]
        assert "RUN_SUCCESS" in text
        texts.append(text)
    day_events = [row for row in landed["access"]["events"] if row[0] == DAYS[0]]  # type: ignore[index]
    assert snapshot(lake, "access")["events"] == day_events
    assert rows(lake, "SELECT count(*) FROM access.loads") == [(2,)]
