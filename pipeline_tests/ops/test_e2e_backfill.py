"""End to end: real `dagster-webserver` and `dagster-daemon` on PostgreSQL, backfills launched
through the GraphQL API the UI uses, the warehouse, the metadata, the checks and the manifests
read back afterwards; and a run worker killed with SIGKILL in the middle of a day."""

from __future__ import annotations

import os
import re
import signal
import time
from typing import Any

import pytest
from dagster import DagsterRunStatus, RunsFilter

from pipeline.cli.generate import GeneratedPartition, generate_landing_zone
from pipeline_tests.conftest import PipelineEnv, day
from pipeline_tests.ops.conftest import (
    Deployment,
    Webhook,
    backfill_status,
    check_executions,
    launch_backfill,
    partition_metadata,
    process_alive,
    run_event_texts,
    run_process_ids,
    wait_for,
    wait_for_backfill,
)

ACCESS = ["access/events", "access/dlq", "access/daily_metrics"]
APP = ["app/events", "app/dlq", "app/daily_metrics"]
DAYS = [day("2024-03-04"), day("2024-03-05"), day("2024-03-06")]
KEYS = [d.isoformat() for d in DAYS]
LOCK_WORDS = ("WarehouseLockTimeout", "Could not set lock", "Conflicting lock")


def by_key(generated: list[GeneratedPartition], source: str) -> dict[str, GeneratedPartition]:
    return {partition.day.isoformat(): partition for partition in generated if partition.source == source}


def counts(env: PipelineEnv, table: str) -> dict[str, int]:
    """Rows per partition_date of a warehouse table."""
    return {
        str(key): int(value) for key, value in env.query(f"SELECT partition_date, count(*) FROM {table} GROUP BY 1")
    }


def assert_no_lock_trouble(deployment: Deployment, run_ids: list[str]) -> None:
    """No run saw the DuckDB file locked by another writer (the pool serialised them)."""
    for run_id in run_ids:
        texts = run_event_texts(deployment, run_id)
        assert not [text for text in texts if any(word in text for word in LOCK_WORDS)], run_id
        assert not [text for text in texts if "is in use by another process" in text], run_id


@pytest.mark.e2e
def test_ui_backfill_of_several_days_loads_exact_rows_metadata_checks_and_manifests(
    pipeline_env: PipelineEnv, deployment_factory: Any, webhook: Webhook
) -> None:
    """Two backfills (both sources, three days) launched at once as the UI does: every day's rows,
    metadata, check results and manifest are exact, and the two writers never met."""
    generated = generate_landing_zone(
        pipeline_env.landing,
        DAYS,
        lines_per_hour=60,
        bad_line_rate=0.005,
        missing_hours={("access", DAYS[1]): {4, 5}, ("app", DAYS[2]): {23}},
    )
    deployment = deployment_factory()
    access_backfill = launch_backfill(deployment, ACCESS, KEYS, title="e2e access")
    app_backfill = launch_backfill(deployment, APP, KEYS, title="e2e app")
    finished = {backfill: wait_for_backfill(deployment, backfill, 300) for backfill in (access_backfill, app_backfill)}

    with deployment.instance() as instance:
        run_records = []
        for backfill, status in finished.items():
            assert status["status"] == "COMPLETED_SUCCESS", (status, deployment.log_tail())
            records = instance.get_run_records(RunsFilter(tags={"dagster/backfill": backfill}))
            # BackfillPolicy.single_run(): the three days are one run per backfill.
            assert [record.dagster_run.status for record in records] == [DagsterRunStatus.SUCCESS]
            run_records.extend(records)
        # One writer at a time: the two runs did not overlap (the `warehouse` pool, limit 1).
        first, second = sorted(run_records, key=lambda record: record.start_time)
        assert first.end_time <= second.start_time
        assert_no_lock_trouble(deployment, [record.dagster_run.run_id for record in run_records])

        for source in ("access", "app"):
            expected = by_key(generated, source)
            events = counts(pipeline_env, f"{source}.events")
            dlq = counts(pipeline_env, f"{source}.dlq")
            assert events == {key: p.records - p.bad_records for key, p in expected.items()}
            assert dlq == {key: p.bad_records for key, p in expected.items()}
            for key, partition in expected.items():
                assert partition.bad_records > 0
                meta = partition_metadata(instance, f"{source}/events", key)
                missing = [hour for hour in range(24) if hour not in partition.hours_present]
                assert meta["dagster/row_count"] == partition.records - partition.bad_records
                assert meta["rows_read"] == partition.records
                assert meta["rows_quarantined"] == partition.bad_records
                assert meta["missing_hours"] == missing
                assert meta["quarantine_rate"] == pytest.approx(partition.bad_records / partition.records, abs=1e-6)
                assert partition_metadata(instance, f"{source}/dlq", key)["dagster/row_count"] == partition.bad_records
                assert partition_metadata(instance, f"{source}/daily_metrics", key)["dagster/row_count"] == 1
                manifest = pipeline_env.manifest(source, key)
                assert meta["manifest"] == str(pipeline_env.output / "manifests" / source / f"{key}.json")
                assert manifest["status"] == "loaded"
                assert (manifest["rows_loaded"], manifest["rows_quarantined"]) == (
                    partition.records - partition.bad_records,
                    partition.bad_records,
                )
                assert manifest["missing_hours"] == missing
                assert manifest["run_id"] in {record.dagster_run.run_id for record in run_records}
                assert manifest["summary"].startswith(f"{source} {key}: ")

            quarantine = check_executions(instance, f"{source}/events", "quarantine_rate")
            hours = check_executions(instance, f"{source}/events", "hours_complete")
            assert [(c["passed"], c["severity"]) for c in quarantine] == [(True, "ERROR")]
            # A missing hour is a WARN, not an error: the day is loaded and its metrics computed.
            assert [(c["passed"], c["severity"]) for c in hours] == [(False, "WARN")]
            missing_days = {key for key, p in expected.items() if len(p.hours_present) < 24}
            assert set(hours[0]["metadata"]["missing_hours"]) == missing_days

    # The daemon's success notifier summarised each run from its manifests; the webhook URL (a
    # secret) is in no process log.
    for source in ("access", "app"):
        text = webhook.wait_for_text(lambda text, source=source: f"\n{source}: " in text and "succeeded" in text)
        assert "2024-03-04..2024-03-06 (3 days)" in text
    for log in deployment.logs.glob("*.log"):
        assert "s3cr3t-token" not in log.read_text(errors="replace"), log.name


def step_errors(deployment: Deployment, run_id: str) -> list[str]:
    """The errors (with their causes) of a run's failed steps."""
    from dagster import DagsterEventType

    return [
        entry.dagster_event.step_failure_data.error.to_string()
        for entry in deployment.shared_instance().all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE)
        if entry.dagster_event and entry.dagster_event.step_failure_data.error
    ]


@pytest.mark.e2e
@pytest.mark.parametrize("step_executor", ["in_process", "multiprocess"])
def test_killed_run_is_marked_failed_and_its_retry_loads_the_same_rows(
    pipeline_env: PipelineEnv, deployment_factory: Any, step_executor: str
) -> None:
    """SIGKILL of the run worker in the middle of a day: the run is marked failed at once, the
    day is not committed (with the multiprocess executor, the orphaned step process notices and
    stops), the instance's run retry (dagster.yaml `run_retries`) re-executes it, the backfill
    ends successfully, the rows equal a clean load exactly, and the pool has no slot left behind."""
    days = DAYS[:2]
    generated = generate_landing_zone(
        pipeline_env.landing, days, sources=["access"], lines_per_hour=400, bad_line_rate=0.005, missing_hours={}
    )
    expected = by_key(generated, "access")
    # Small batches with a pause after each: a day takes ~10 s, long enough to be killed in it.
    t0 = time.monotonic()
    deployment = deployment_factory(
        {
            "PIPELINE_INGEST_CHUNK_BYTES": "65536",
            "PIPELINE_INGEST_SLEEP_BETWEEN_BATCHES_S": "0.1",
            "PIPELINE_STEP_EXECUTOR": step_executor,
        }
    )
    backfill = launch_backfill(deployment, ACCESS, [d.isoformat() for d in days], title="e2e kill")

    def started_run() -> Any:
        runs = backfill_status(deployment, backfill)["runs"]
        return runs[0]["id"] if runs and runs[0]["status"] == "STARTED" else None

    run_id = wait_for(started_run, 120, "the backfill's run to start")

    # Wait until the run is inside the first day's transaction (its first file read), then kill it.
    wait_for(
        lambda: any(text.startswith("file access/dt=") for text in run_event_texts(deployment, run_id)),
        120,
        "the first file to be read",
    )
    time.sleep(1.0)
    # The run's processes: the run worker and, with the multiprocess executor, the step's
    # process (its child). SIGKILL goes to the run worker only, as an OOM kill would.
    pids = run_process_ids(deployment, run_id)
    assert set(pids) == {"run_worker", "step:access_ingest"}, pids
    assert all(process_alive(pid) for pid in pids.values()), pids
    assert (pids["run_worker"] == pids["step:access_ingest"]) == (step_executor == "in_process"), pids
    os.kill(pids["run_worker"], signal.SIGKILL)
    killed_at = time.monotonic()
    print(f"killed run worker of {run_id}: {pids}")
    if step_executor == "multiprocess":
        # The orphaned step notices at its next batch and fails, rolling its day back: without
        # that it would go on writing while the run's retry writes too (two writers).
        wait_for(lambda: step_errors(deployment, run_id), 30, "the orphaned step to stop writing")
        assert "RunWorkerLost" in step_errors(deployment, run_id)[0]
        print(f"orphaned step failed {time.monotonic() - killed_at:.1f} s after the kill")
    else:
        wait_for(lambda: not process_alive(pids["run_worker"]), 10, "the run worker to die")

    with deployment.instance() as instance:
        # Marked failed by the code server / run monitoring, not left STARTED holding the pool.
        wait_for(
            lambda: instance.get_run_by_id(run_id).status == DagsterRunStatus.FAILURE,
            90,
            "the killed run to be marked failed",
        )
        print(f"killed run marked failed after {time.monotonic() - killed_at:.1f} s")
        # The killed run committed no day: its day was rolled back, its manifest says so.
        texts = run_event_texts(deployment, run_id)
        assert not [text for text in texts if re.match(r"access 2024-03-0\d: [\d,]+ rows loaded", text)], texts
        if step_executor == "multiprocess":
            # The orphaned step rolled back and said so (in process, nothing outlived the kill).
            assert any("ingest access 2024-03-04 failed" in text for text in texts), texts

        status = wait_for_backfill(deployment, backfill, 300)
        runs = instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill}))
        assert status["status"] == "COMPLETED_SUCCESS", (status, [(r.run_id, r.status) for r in runs])
        statuses = sorted((run.status.value, run.tags.get("dagster/retry_number", "0")) for run in runs)
        assert statuses == [("FAILURE", "0"), ("SUCCESS", "1")]
        retry = next(run for run in runs if run.status == DagsterRunStatus.SUCCESS)
        assert retry.parent_run_id == run_id
        # One writer at a time: the retry did not wait for the warehouse lock.
        assert_no_lock_trouble(deployment, [run_id, retry.run_id])

        # Exactly the rows of a clean load: no duplicate, nothing left by the killed run.
        assert counts(pipeline_env, "access.events") == {k: p.records - p.bad_records for k, p in expected.items()}
        assert counts(pipeline_env, "access.dlq") == {k: p.bad_records for k, p in expected.items()}
        assert pipeline_env.query(
            "SELECT count(*) FROM (SELECT source_file, line_number FROM access.events GROUP BY ALL HAVING count(*) > 1)"
        ) == [(0,)]
        assert pipeline_env.query("SELECT DISTINCT run_id FROM access.events") == [(retry.run_id,)]
        for key, partition in expected.items():
            meta = partition_metadata(instance, "access/events", key)
            assert meta["dagster/row_count"] == partition.records - partition.bad_records
            manifest = pipeline_env.manifest("access", key)
            assert (manifest["status"], manifest["run_id"]) == ("loaded", retry.run_id)

        # The pool was not left stuck: the retry, in the same pool of limit 1, could start, and
        # nothing holds or waits for a slot now.
        info = instance.event_log_storage.get_concurrency_info("warehouse")
        assert (info.limit, info.claimed_slots, info.pending_steps) == (1, [], [])
        active = [DagsterRunStatus.QUEUED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]
        assert instance.get_runs(RunsFilter(statuses=active)) == []
        print(f"kill-and-recover took {time.monotonic() - t0:.1f} s in all")
