"""End to end: real `dagster-webserver` and `dagster-daemon` on PostgreSQL, backfills launched
through the GraphQL API the UI uses, the lake, the `loads` attempts, the metadata, the checks and
the manifests read back afterwards; and a run worker killed with SIGKILL in the middle of a day."""

from __future__ import annotations

import os
import re
import signal
import time
from typing import Any

import pytest
from dagster import DagsterRunStatus, RunRecord, RunsFilter
from deltalake import DeltaTable

from pipeline.cli.generate import GeneratedPartition, generate_landing_zone
from pipeline.orchestration.operations import DEFAULT_POOL_LIMIT, LAKE_WRITERS_POOL
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
# What a run would log had it collided with another writer: given up waiting for a day's lock,
# lost an S3 lease, or had a Delta commit refused by a concurrent one.
CONFLICT_WORDS = ("DayLockTimeout", "DayLockLost", "CommitFailedError", "gave up after waiting")


def by_key(generated: list[GeneratedPartition], source: str) -> dict[str, GeneratedPartition]:
    return {partition.day.isoformat(): partition for partition in generated if partition.source == source}


def counts(env: PipelineEnv, table: str) -> dict[str, int]:
    """Rows per partition_date of a lake table, as a reader sees it (`pipeline.query`)."""
    return {
        str(key): int(value) for key, value in env.query(f"SELECT partition_date, count(*) FROM {table} GROUP BY 1")
    }


def assert_no_writer_conflict(deployment: Deployment, run_ids: list[str]) -> None:
    """No run gave up on a day held by another writer or had a commit refused by another's."""
    for run_id in run_ids:
        texts = run_event_texts(deployment, run_id)
        assert not [text for text in texts if any(word in text for word in CONFLICT_WORDS)], run_id


def assert_pool_respected(instance: Any, records: list[RunRecord]) -> None:
    """Every run was counted in the `lake_writers` pool and no slot is left claimed or waited for.
    (That no more than its limit, 2, run at once cannot show with these two runs: the pause test
    proves it with three.)"""
    for record in records:
        concurrency = record.dagster_run.run_op_concurrency
        assert concurrency is not None, record.dagster_run.run_id
        assert set(concurrency.all_pools or ()) == {LAKE_WRITERS_POOL}, concurrency
        assert record.start_time is not None and record.end_time is not None, record
    info = instance.event_log_storage.get_concurrency_info(LAKE_WRITERS_POOL)
    assert (info.limit, info.claimed_slots, info.pending_steps) == (DEFAULT_POOL_LIMIT, [], [])


@pytest.mark.e2e
def test_ui_backfill_of_several_days_loads_exact_rows_metadata_checks_and_manifests(
    pipeline_env: PipelineEnv, deployment_factory: Any, webhook: Webhook
) -> None:
    """Two backfills (both sources, three days) launched at once as the UI does: every day's rows,
    `loads` attempt, metadata, check results and manifest are exact, and the writers kept within
    the `lake_writers` pool (at most 2 at once; here they may run side by side)."""
    generated = generate_landing_zone(
        pipeline_env.landing,
        DAYS,
        lines_per_hour=60,
        bad_line_rate=0.005,
        missing_hours={("access", DAYS[1]): {4, 5}, ("app", DAYS[2]): {23}},
    )
    missing_text = {("access", KEYS[1]): "04-05", ("app", KEYS[2]): "23"}
    deployment = deployment_factory()
    access_backfill = launch_backfill(deployment, ACCESS, KEYS, title="e2e access")
    app_backfill = launch_backfill(deployment, APP, KEYS, title="e2e app")
    finished = {backfill: wait_for_backfill(deployment, backfill, 300) for backfill in (access_backfill, app_backfill)}

    with deployment.instance() as instance:
        run_records = []
        run_of_source = {}
        for source, (backfill, status) in zip(("access", "app"), finished.items(), strict=True):
            assert status["status"] == "COMPLETED_SUCCESS", (status, deployment.log_tail())
            records = instance.get_run_records(RunsFilter(tags={"dagster/backfill": backfill}))
            # BackfillPolicy.single_run(): the three days are one run per backfill.
            assert [record.dagster_run.status for record in records] == [DagsterRunStatus.SUCCESS]
            run_records.extend(records)
            run_of_source[source] = records[0].dagster_run.run_id
        # Writers of different sources may commit side by side, within the pool's limit.
        assert_pool_respected(instance, run_records)
        assert_no_writer_conflict(deployment, list(run_of_source.values()))

        for source in ("access", "app"):
            expected = by_key(generated, source)
            run_id = run_of_source[source]
            events = counts(pipeline_env, f"{source}.events")
            dlq = counts(pipeline_env, f"{source}.dlq")
            assert events == {key: p.records - p.bad_records for key, p in expected.items()}
            assert dlq == {key: p.bad_records for key, p in expected.items()}
            assert pipeline_env.query(f"SELECT DISTINCT run_id FROM {source}.events") == [(run_id,)]
            assert counts(pipeline_env, f"{source}.daily_metrics") == {key: 1 for key in expected}
            quarantine = check_executions(instance, f"{source}/events", "quarantine_rate")
            hours = check_executions(instance, f"{source}/events", "hours_complete")
            # One result per check and day, tied to its partition (a range run judges each day).
            assert sorted(c["partition"] for c in quarantine) == KEYS
            assert sorted(c["partition"] for c in hours) == KEYS
            quarantine_by_day = {c["partition"]: c for c in quarantine}
            hours_by_day = {c["partition"]: c for c in hours}
            for key, partition in expected.items():
                assert partition.bad_records > 0
                rows = partition.records - partition.bad_records
                missing = [hour for hour in range(24) if hour not in partition.hours_present]
                assert bool(missing) == ((source, key) in missing_text)
                manifest_path = str(pipeline_env.output / "manifests" / source / f"{key}.json")

                # The record of truth: one attempt, loaded by the backfill's run, exact figures.
                attempts = pipeline_env.attempts(source, key)
                assert [(a["attempt"], a["status"], a["run_id"]) for a in attempts] == [(1, "loaded", run_id)]
                attempt = attempts[0]
                assert (attempt["rows_read"], attempt["rows_loaded"], attempt["rows_quarantined"]) == (
                    partition.records,
                    rows,
                    partition.bad_records,
                )
                assert list(attempt["missing_hours"]) == missing
                assert attempt["within_error_budget"] is True
                assert attempt["manifest"] == manifest_path

                meta = partition_metadata(instance, f"{source}/events", key)
                assert meta["dagster/row_count"] == rows
                assert meta["rows_read"] == partition.records
                assert meta["rows_quarantined"] == partition.bad_records
                assert meta["missing_hours"] == missing_text.get((source, key), "none")
                assert meta["missing_hours_count"] == len(missing)
                assert meta["quarantine_rate"] == pytest.approx(partition.bad_records / partition.records, abs=1e-6)
                assert (meta["status"], meta["attempt"]) == ("loaded", 1)
                assert meta["manifest"] == manifest_path
                assert partition_metadata(instance, f"{source}/dlq", key)["dagster/row_count"] == partition.bad_records
                assert partition_metadata(instance, f"{source}/daily_metrics", key)["dagster/row_count"] == 1

                # The manifest is still written, from the attempt's row.
                manifest = pipeline_env.manifest(source, key)
                assert (manifest["status"], manifest["run_id"], manifest["attempt"]) == ("loaded", run_id, 1)
                assert (manifest["rows_loaded"], manifest["rows_quarantined"]) == (rows, partition.bad_records)
                assert manifest["missing_hours"] == missing
                assert manifest["summary"] == attempt["summary"]
                assert manifest["summary"].startswith(f"{source} {key}: {rows:,} rows loaded, ")

                # The day's checks: within the budget (an ERROR check, passed); a missing hour is
                # a WARN, not an error: the day is loaded and its metrics computed.
                verdict = quarantine_by_day[key]
                assert (verdict["passed"], verdict["severity"], verdict["run_id"]) == (True, "ERROR", run_id)
                assert verdict["metadata"]["rows_read"] == partition.records
                assert verdict["metadata"]["rows_quarantined"] == partition.bad_records
                assert verdict["description"].startswith(f"{key}: ")
                assert verdict["description"].endswith("within the 1.00% error budget")
                complete = hours_by_day[key]
                assert (complete["passed"], complete["severity"]) == (not missing, "WARN")
                assert complete["metadata"]["missing_hours"] == missing_text.get((source, key), "none")
                assert complete["metadata"]["missing_hours_count"] == len(missing)

    # The daemon's success notifier summarised each run from its attempts; the webhook URL (a
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
    day is not sealed by it (with the multiprocess executor, the orphaned step process notices,
    rolls back and records its attempt as failed), the instance's run retry (dagster.yaml
    `run_retries`) re-executes it, the backfill ends successfully, the retry's attempts hold
    exactly the rows of a clean load, and the `lake_writers` pool has no slot left behind."""
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
        # The killed run sealed no day: nothing it read was committed, or it was rolled back.
        texts = run_event_texts(deployment, run_id)
        assert not [text for text in texts if re.match(r"access 2024-03-0\d: [\d,]+ rows loaded", text)], texts
        if step_executor == "multiprocess":
            # The orphaned step rolled back and said so (in process, nothing outlived the kill).
            assert any(text.startswith("load of access 2024-03-04 failed") for text in texts), texts

        status = wait_for_backfill(deployment, backfill, 300)
        runs = instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill}))
        assert status["status"] == "COMPLETED_SUCCESS", (status, [(r.run_id, r.status) for r in runs])
        statuses = sorted((run.status.value, run.tags.get("dagster/retry_number", "0")) for run in runs)
        assert statuses == [("FAILURE", "0"), ("SUCCESS", "1")]
        retry = next(run for run in runs if run.status == DagsterRunStatus.SUCCESS)
        assert retry.parent_run_id == run_id
        # The retry took the day over cleanly (it may have waited for the orphaned step to let
        # the day go: two writers of one day take turns), never gave up or collided.
        assert_no_writer_conflict(deployment, [run_id, retry.run_id])

        # The record of truth: the killed run's day was never sealed by it. With the multiprocess
        # executor the orphaned step recorded its attempt as failed (RunWorkerLost, no rows); in
        # process the kill left no row at all. The retry's attempt loaded each day, exactly.
        killed_attempts = [(1, "failed", run_id)] if step_executor == "multiprocess" else []
        for position, (key, partition) in enumerate(expected.items()):
            attempts = pipeline_env.attempts("access", key)
            before = killed_attempts if position == 0 else []
            assert [(a["attempt"], a["status"], a["run_id"]) for a in attempts] == [
                *before,
                (len(before) + 1, "loaded", retry.run_id),
            ], attempts
            for failed in attempts[:-1]:
                assert "RunWorkerLost" in str(failed["error"]), failed
                assert (failed["rows_loaded"], failed["rows_quarantined"], failed["events_version"]) == (0, 0, None)
            latest = attempts[-1]
            assert (latest["rows_read"], latest["rows_loaded"], latest["rows_quarantined"]) == (
                partition.records,
                partition.records - partition.bad_records,
                partition.bad_records,
            )
            assert latest["root_run_id"] == run_id

        # Exactly the rows of a clean load: no duplicate, nothing left by the killed run, neither
        # in what a reader sees nor in the Delta tables themselves.
        assert counts(pipeline_env, "access.events") == {k: p.records - p.bad_records for k, p in expected.items()}
        assert counts(pipeline_env, "access.dlq") == {k: p.bad_records for k, p in expected.items()}
        assert pipeline_env.query(
            "SELECT count(*) FROM (SELECT source_file, line_number FROM access.events GROUP BY ALL HAVING count(*) > 1)"
        ) == [(0,)]
        assert pipeline_env.query("SELECT DISTINCT run_id FROM access.events") == [(retry.run_id,)]
        assert pipeline_env.query("SELECT DISTINCT run_id FROM access.dlq") == [(retry.run_id,)]
        for table in ("events", "dlq"):
            stored = DeltaTable(str(pipeline_env.lake / "access" / table)).to_pyarrow_table(columns=["run_id"])
            assert set(stored.column("run_id").to_pylist()) == {retry.run_id}, table
            assert stored.num_rows == sum(
                p.records - p.bad_records if table == "events" else p.bad_records for p in expected.values()
            )
        for key, partition in expected.items():
            meta = partition_metadata(instance, "access/events", key)
            assert meta["dagster/row_count"] == partition.records - partition.bad_records
            # The manifest is still written, from the retry's attempt.
            manifest = pipeline_env.manifest("access", key)
            latest = pipeline_env.attempts("access", key)[-1]
            assert (manifest["status"], manifest["run_id"], manifest["attempt"]) == (
                "loaded",
                retry.run_id,
                latest["attempt"],
            )

        # The pool was not left stuck: the retry, in the same `lake_writers` pool, could start,
        # and nothing holds or waits for a slot now.
        assert {LAKE_WRITERS_POOL} == set(instance.get_run_by_id(retry.run_id).run_op_concurrency.all_pools or ())
        info = instance.event_log_storage.get_concurrency_info(LAKE_WRITERS_POOL)
        assert (info.limit, info.claimed_slots, info.pending_steps) == (DEFAULT_POOL_LIMIT, [], [])
        active = [DagsterRunStatus.QUEUED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]
        assert instance.get_runs(RunsFilter(statuses=active)) == []
        print(f"kill-and-recover took {time.monotonic() - t0:.1f} s in all")
