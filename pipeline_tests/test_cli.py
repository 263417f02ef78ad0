"""What operators type: `dagster asset materialize` and the `pipeline` command, as real processes."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dagster import AssetCheckKey, AssetKey, DagsterEventType, DagsterInstance, DagsterRunStatus

from pipeline.cli.generate import generate_landing_zone
from pipeline_tests.conftest import PROJECT_ROOT, PipelineEnv, day


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A persistent local instance, as DAGSTER_HOME gives a user."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((PROJECT_ROOT / "dagster.yaml").read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def run(*arguments: str) -> subprocess.CompletedProcess[str]:
    """Run a command with the test's environment from the project root; fail with its output."""
    completed = subprocess.run(
        list(arguments), cwd=PROJECT_ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    return completed


def row_counts(home: Path, key: list[str]) -> dict[str, int]:
    """Latest `dagster/row_count` per partition, read back from the persisted instance."""
    with DagsterInstance.from_config(str(home)) as instance:
        records = instance.fetch_materializations(AssetKey(key), limit=100).records
        latest: dict[str, int] = {}
        for record in records:  # newest first
            latest.setdefault(record.partition_key, record.asset_materialization.metadata["dagster/row_count"].value)
        return latest


def test_materialize_partition_and_range_from_the_cli(pipeline_env: PipelineEnv, dagster_home: Path) -> None:
    """`--partition D` and `--partition-range A...B` work, and their history persists in DAGSTER_HOME."""
    generated = generate_landing_zone(
        pipeline_env.landing, [day("2024-01-15"), day("2024-01-17")], sources=["access"], lines_per_hour=30
    )
    expected = {partition.day.isoformat(): partition.records - partition.bad_records for partition in generated}
    dagster = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "pipeline.definitions"]
    run(*dagster, "--select", "access/events,access/dlq", "--partition", "2024-01-15")
    assert row_counts(dagster_home, ["access", "events"]) == {"2024-01-15": expected["2024-01-15"]}

    run(*dagster, "--select", 'key:"access/*"', "--partition-range", "2024-01-15...2024-01-17")
    assert row_counts(dagster_home, ["access", "events"]) == {**expected, "2024-01-16": 0}
    assert row_counts(dagster_home, ["access", "daily_metrics"]) == {"2024-01-15": 1, "2024-01-16": 0, "2024-01-17": 1}
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        runs = instance.get_runs()
        assert [dagster_run.status for dagster_run in runs] == [DagsterRunStatus.SUCCESS] * 2

    summary = run(sys.executable, "-m", "pipeline.cli.main", "summary", "--start", "2024-01-15", "--end", "2024-01-17")
    lines = summary.stdout.splitlines()
    assert any(line.split()[:3] == ["access", "2024-01-16", "empty"] for line in lines), summary.stdout
    assert any(
        line.split()[:4] == ["access", "2024-01-15", "loaded", f"{expected['2024-01-15']:,}"] for line in lines
    ), summary.stdout


def test_demo_command_prints_a_readable_summary(pipeline_env: PipelineEnv, dagster_home: Path) -> None:
    """The README's first command: sample logs for the week ending yesterday, both sources, a summary
    per day; access yesterday is over its budget with a missing hour, so a newcomer sees a red day,
    its failed check and its verdict, and every other day green."""
    today = dt.datetime.now(dt.UTC).date()
    completed = run(sys.executable, "-m", "pipeline.cli.main", "demo", "--lines-per-hour", "20")
    out = completed.stdout
    days = [(today - dt.timedelta(days=n)).isoformat() for n in range(7, 0, -1)]
    yesterday = days[-1]
    assert "3/3 Summary (from the loads table):" in out
    day_lines = [line.split() for line in out.splitlines() if line.strip().startswith(("access ", "app "))]
    assert [parts[:3] for parts in day_lines] == [
        [source, key, "loaded"] for source in ("access", "app") for key in days
    ]
    assert [parts[-1] for parts in day_lines] == ["none"] * 6 + ["13"] + ["none"] * 7, out
    rates = {(parts[0], parts[1]): float(parts[-2].rstrip("%")) for parts in day_lines}
    assert rates.pop(("access", yesterday)) > 1.0
    assert all(rate <= 1.0 for rate in rates.values()), rates
    assert f"As planned, access {yesterday} is over its 1.00% error budget" in out
    assert row_counts(dagster_home, ["app", "events"]).keys() == set(days)
    assert row_counts(dagster_home, ["access", "daily_metrics"]).keys() == set(days[:-1])
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        check = AssetCheckKey(AssetKey(["access", "events"]), "quarantine_rate")
        history = instance.event_log_storage.get_asset_check_execution_history(check, limit=20)
        assert {record.partition: record.status.value for record in history} == {
            key: "FAILED" if key == yesterday else "SUCCEEDED" for key in days
        }
        verdict = instance.fetch_materializations(AssetKey(["access", "events"]), limit=1).records[0]
        assert verdict.partition_key == yesterday
        text = verdict.asset_materialization.metadata["verdict"].value
        assert text.startswith("✗ ") and "> 1.00% budget; top rule `" in text and "; missing hour 13 — " in text
        # No freshness check is judged against a historical week: none failed in the demo's run.
        (demo_run,) = instance.get_runs()
        evaluations = [
            entry.dagster_event.event_specific_data
            for entry in instance.all_logs(demo_run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
        ]
        assert not [item for item in evaluations if item.check_name == "freshness_check" and not item.passed]
        assert [item.passed for item in evaluations if item.check_name == "quarantine_rate"].count(False) == 1


def test_invalid_partition_key_is_refused(pipeline_env: PipelineEnv, dagster_home: Path) -> None:
    """A date that is not a partition is an error before anything is written."""
    completed = subprocess.run(
        [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "pipeline.definitions"]
        + ["--select", "access/events,access/dlq", "--partition", "2024-02-30"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode != 0
    assert "2024-02-30" in completed.stdout + completed.stderr
    assert not pipeline_env.lake.exists()


def test_a_cli_run_killed_mid_partition_does_not_block_the_next(pipeline_env: PipelineEnv, dagster_home: Path) -> None:
    """Fault: `dagster asset materialize` is SIGKILLed (its whole process group, step worker
    included) while it is loading a day. Expected: nothing of the killed run is visible in the
    lake, and the next CLI run of the same pool starts at once (no concurrency slot or day lock
    survives the dead process) and leaves exactly the rows of a clean run."""
    generated = generate_landing_zone(pipeline_env.landing, [day("2024-01-15")], sources=["access"], lines_per_hour=40)
    expected_events = generated[0].records - generated[0].bad_records
    dagster = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "pipeline.definitions"]
    selection = ["--select", "access/events,access/dlq", "--partition", "2024-01-15"]
    slow = {**os.environ, "PIPELINE_INGEST_CHUNK_BYTES": "4096", "PIPELINE_INGEST_SLEEP_BETWEEN_BATCHES_S": "0.5"}
    victim = subprocess.Popen(
        [*dagster, *selection],
        cwd=PROJECT_ROOT,
        env=slow,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        # Wait until the step is loading the day: it holds the day's lock.
        lock = pipeline_env.lake / "access" / "_locks" / "2024-01-15.lock"
        deadline = time.monotonic() + 180
        while not lock.exists():
            assert victim.poll() is None, "the run ended before it was killed"
            assert time.monotonic() < deadline, "the run never started loading"
            time.sleep(0.05)
        time.sleep(1.0)  # inside the slowed load (0.5 s per 4 KiB batch)
        assert victim.poll() is None, "the run ended before it was killed"
    finally:
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=60)

    # The killed load left nothing a reader can see.
    assert pipeline_env.query("SELECT count(*) FROM access.events") == [(0,)]
    assert pipeline_env.query("SELECT count(*) FROM access.dlq") == [(0,)]

    started = time.monotonic()
    run(*dagster, *selection)
    # Nothing to wait for: no pool slot or lock outlived the killed process.
    assert time.monotonic() - started < 90
    assert row_counts(dagster_home, ["access", "events"]) == {"2024-01-15": expected_events}
    assert pipeline_env.query("SELECT count(*) FROM access.events") == [(expected_events,)]
    assert pipeline_env.query("SELECT count(*) FROM access.dlq") == [(generated[0].bad_records,)]
    assert pipeline_env.manifest("access", "2024-01-15")["status"] == "loaded"
