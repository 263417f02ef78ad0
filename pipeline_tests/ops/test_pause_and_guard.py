"""The pause switch and the automatic pause, through a real `dagster-daemon` on PostgreSQL:

- `dagster instance concurrency set lake_writers 0` keeps queued runs queued (the queued run
  coordinator does not dequeue a run of a pool at its limit); `... lake_writers 2` resumes them
  at the next dequeue cycle, at most two writers at a time;
- the `backfill_guard` sensor, run by the daemon, pauses the pool and notifies when a running
  backfill's quarantine rate exceeds PIPELINE_AUTOPAUSE_QUARANTINE_RATE; the backfill's range
  run stops before its next day, and goes on when an operator resumes.

Plus, evaluated directly against a real instance (no daemon), the guard's failed-run rule.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter, build_sensor_context
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.test_utils import create_run_for_test
from dagster._time import get_current_timestamp

from pipeline.cli.generate import generate_landing_zone
from pipeline.orchestration.operations import (
    DEFAULT_POOL_LIMIT,
    OperationsSettings,
    is_paused,
    pool_limit,
    set_pool_limit,
)
from pipeline.orchestration.sensors import build_backfill_guard
from pipeline.sources import configured_sources
from pipeline_tests.conftest import PipelineEnv, day
from pipeline_tests.ops.conftest import (
    Deployment,
    Webhook,
    launch_backfill,
    pipeline_resource,
    run_event_texts,
    wait_for,
    wait_for_backfill,
)

LAUNCH_RUN = """
mutation LaunchRun($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""
CLEAN = [day("2024-03-04"), day("2024-03-05"), day("2024-03-06")]
NOISY = [day("2024-03-11"), day("2024-03-12"), day("2024-03-13")]


def launch_day(deployment: Deployment, job: str, partition: str) -> str:
    """Launch one partition of a job through GraphQL (the launchpad's mutation); it is queued."""
    result = deployment.graphql(
        LAUNCH_RUN,
        {
            "executionParams": {
                "selector": {
                    "repositoryLocationName": "pipeline.definitions",
                    "repositoryName": "__repository__",
                    "jobName": job,
                },
                "runConfigData": {},
                "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}]},
            }
        },
    )["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return str(result["run"]["runId"])


@pytest.mark.e2e
def test_pause_switch_and_auto_pause_through_the_daemon(
    pipeline_env: PipelineEnv, deployment_factory: Any, webhook: Webhook
) -> None:
    generate_landing_zone(
        pipeline_env.landing, CLEAN, sources=["access"], lines_per_hour=5, bad_line_rate=0.0, missing_hours={}
    )
    # 20% of the app lines are bad: four times the guard's 5% (PIPELINE_AUTOPAUSE_QUARANTINE_RATE).
    generate_landing_zone(
        pipeline_env.landing, NOISY, sources=["app"], lines_per_hour=60, bad_line_rate=0.2, missing_hours={}
    )
    deployment = deployment_factory()
    instance = deployment.shared_instance()

    # -- the pause switch ------------------------------------------------------------------
    assert pool_limit(instance) == DEFAULT_POOL_LIMIT == 2  # dagster.yaml's default
    deployment.dagster("instance", "concurrency", "set", "lake_writers", "0")
    assert is_paused(instance)
    runs = [launch_day(deployment, "access_daily", key.isoformat()) for key in CLEAN]
    # Five dequeue cycles (dequeue_interval_seconds: 1 in the test instance): still queued.
    time.sleep(5)
    assert [instance.get_run_by_id(run_id).status for run_id in runs] == [DagsterRunStatus.QUEUED] * len(CLEAN)
    for run_id in runs:
        assert [text for text in run_event_texts(deployment, run_id) if "STEP_START" in text or "Started" in text] == []
    assert not (pipeline_env.output / "manifests" / "access").exists()

    resumed_at = time.monotonic()
    deployment.dagster("instance", "concurrency", "set", "lake_writers", "2")
    first = wait_for(
        lambda: next(
            (run_id for run_id in runs if instance.get_run_by_id(run_id).status != DagsterRunStatus.QUEUED), None
        ),
        60,
        "a queued run to be dequeued after the resume",
        interval_s=0.2,
    )
    print(f"dequeued {time.monotonic() - resumed_at:.1f} s after the resume")
    wait_for(lambda: all(instance.get_run_by_id(run_id).is_finished for run_id in runs), 240, "the runs to finish")
    records = sorted(instance.get_run_records(RunsFilter(run_ids=runs)), key=lambda record: record.start_time)
    assert [record.dagster_run.status for record in records] == [DagsterRunStatus.SUCCESS] * len(CLEAN)
    assert first in {record.dagster_run.run_id for record in records[:2]}
    # Limit 2: at most two writers at a time, so the third run starts only once one of the
    # first two has ended.
    assert records[2].start_time >= min(records[0].end_time, records[1].end_time)
    assert sorted(path.stem for path in (pipeline_env.output / "manifests" / "access").glob("*.json")) == [
        key.isoformat() for key in CLEAN
    ]

    # -- the automatic pause ---------------------------------------------------------------
    slow = {"ops": {"app_ingest": {"config": {"chunk_bytes": 16384, "sleep_between_batches_s": 0.5}}}}
    backfill = launch_backfill(
        deployment,
        ["app/events", "app/dlq", "app/daily_metrics"],
        [key.isoformat() for key in NOISY],
        run_config=slow,
        title="noisy",
    )
    message = webhook.wait_for_text(lambda text: "auto-paused" in text, timeout_s=150)
    print(message)
    assert message.startswith(f":double_vertical_bar: Backfill {backfill} auto-paused: ")
    assert "rows quarantined (" in message and "> 5.00%" in message
    assert "the pool 'lake_writers' is now 0 (was 2)" in message
    assert "dagster instance concurrency set lake_writers 2" in message
    assert f"{deployment.url}/runs/b/{backfill}" in message
    assert pool_limit(instance) == 0

    # The backfill's range run stops before its next day and waits, visibly.
    [run] = instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill}))
    paused_line = "paused: pool 'lake_writers' has limit 0"
    wait_for(
        lambda: any(paused_line in text for text in run_event_texts(deployment, run.run_id)),
        60,
        "the range run to notice the pause",
    )
    time.sleep(3)
    done = sorted(path.stem for path in (pipeline_env.output / "manifests" / "app").glob("*.json"))
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED
    assert done and len(done) < len(NOISY), done

    # The operator resumes: the run goes on with its next day and loads the rest.
    deployment.dagster("instance", "concurrency", "set", "lake_writers", "2")
    status = wait_for_backfill(deployment, backfill, 240)
    assert sorted(path.stem for path in (pipeline_env.output / "manifests" / "app").glob("*.json")) == [
        key.isoformat() for key in NOISY
    ]
    # The quarantine_rate check (blocking, ERROR) fails these days: the run fails after loading
    # them (events and DLQ are materialized, the evidence kept), daily_metrics is not computed, and
    # the backfill ends failed.
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE
    assert status["status"] == "COMPLETED_FAILED", status
    assert pipeline_env.query("SELECT count(*) FROM app.daily_metrics") == [(0,)]
    # What each day's latest attempt in `loads` says, and its manifest with it: loaded by the
    # backfill's run, above the budget.
    latest = {str(row["partition_date"]): row for row in pipeline_env.attempts("app")}
    assert sorted(latest) == [key.isoformat() for key in NOISY]
    for key, attempt in latest.items():
        assert (attempt["status"], attempt["run_id"], attempt["within_error_budget"]) == ("loaded", run.run_id, False)
        assert attempt["metrics_rows"] == 0 and attempt["rows_quarantined"] / attempt["rows_read"] > 0.05
        manifest = pipeline_env.manifest("app", key)
        assert (manifest["status"], manifest["run_id"], manifest["rows_read"]) == (
            "loaded",
            run.run_id,
            attempt["rows_read"],
        )
    assert not is_paused(instance)
    # The guard does not pause the same backfill twice.
    assert len([text for text in webhook.texts() if "auto-paused" in text]) == 1


def guard_tick(instance: DagsterInstance, hook: Webhook, cursor: str | None = None, **settings: Any) -> Any:
    guard = build_backfill_guard(
        list(configured_sources().values()), OperationsSettings(webhook_url=hook.url, **settings)
    )
    with build_sensor_context(instance=instance, cursor=cursor, resources={"pipeline": pipeline_resource()}) as context:
        return guard(context)


def test_guard_pauses_on_the_failed_run_share_of_a_running_backfill(
    pipeline_env: PipelineEnv, instance: DagsterInstance, webhook: Webhook
) -> None:
    """Direct evaluation against a real instance: 3 of 4 finished runs of a backfill failed
    (above 50%): the pool goes to 0 and the message says why; a healthy backfill is left alone."""
    add_backfill(instance, "guardtest")
    # The pool at its default limit, as an operator set it (lake_writers = 2).
    set_pool_limit(instance, DEFAULT_POOL_LIMIT)
    assert pool_limit(instance) == 2
    statuses = [DagsterRunStatus.SUCCESS] + [DagsterRunStatus.FAILURE] * 2
    for index, status in enumerate(statuses):
        create_run_for_test(
            instance, job_name="app_daily", status=status, tags={"dagster/backfill": "guardtest", "n": str(index)}
        )
    # 2 of 3 failed, but fewer than PIPELINE_AUTOPAUSE_MIN_RUNS (4) finished: not yet.
    first = guard_tick(instance, webhook)
    assert first.skip_reason is not None and "2/3 runs failed" in first.skip_reason.skip_message
    assert pool_limit(instance) == 2 and webhook.messages == []

    create_run_for_test(
        instance, job_name="app_daily", status=DagsterRunStatus.FAILURE, tags={"dagster/backfill": "guardtest"}
    )
    paused = guard_tick(instance, webhook, first.cursor)
    assert paused.skip_reason is None
    assert pool_limit(instance) == 0
    [text] = webhook.texts()
    assert text.startswith(
        ":double_vertical_bar: Backfill guardtest auto-paused: 3 of 4 finished runs failed (75% > 50%)"
    )
    assert "New work stopped: the pool 'lake_writers' is now 0 (was 2)" in text
    assert "Resume: `dagster instance concurrency set lake_writers 2`" in text
    assert "http://127.0.0.1:3000/runs/b/guardtest" in text

    # Resumed by an operator: the guard does not pause the same backfill again.
    set_pool_limit(instance, DEFAULT_POOL_LIMIT)
    again = guard_tick(instance, webhook, paused.cursor)
    assert again.skip_reason is not None
    assert pool_limit(instance) == 2 and len(webhook.messages) == 1


def add_backfill(instance: DagsterInstance, backfill_id: str) -> None:
    """A running (requested) backfill the guard watches."""
    instance.add_backfill(
        PartitionBackfill(
            backfill_id=backfill_id,
            status=BulkActionStatus.REQUESTED,
            from_failure=False,
            tags={},
            backfill_timestamp=get_current_timestamp(),
            asset_selection=[],
            serialized_asset_backfill_data=None,
            partition_names=None,
            partition_set_origin=None,
            reexecution_steps=None,
            asset_backfill_data=None,
        )
    )


def test_guard_counts_the_retry_of_a_day_whose_first_attempt_failed(
    pipeline_env: PipelineEnv, instance: DagsterInstance, webhook: Webhook
) -> None:
    """Fault: a running backfill run's first attempt at its first day fails (its events partition
    directory is blocked); the guard ticks; the run retries the day (the step's retry, same run)
    and loads it, 20% of its rows quarantined. Expected: the failed attempt does not seal the
    day, so the guard waits at that day while the run runs, counts the retry's rows at the next
    tick and pauses; a run that ended after a failed attempt does not hold the guard up."""
    from pipeline.engine.ingest import RunInfo, ingest_partition

    generate_landing_zone(pipeline_env.landing, NOISY[:2], sources=["app"], lines_per_hour=60, bad_line_rate=0.2)
    add_backfill(instance, "guardretry")
    set_pool_limit(instance, DEFAULT_POOL_LIMIT)
    range_tags = {
        "dagster/backfill": "guardretry",
        "dagster/asset_partition_range_start": NOISY[0].isoformat(),
        "dagster/asset_partition_range_end": NOISY[1].isoformat(),
    }
    run = create_run_for_test(instance, job_name="app_daily", status=DagsterRunStatus.STARTED, tags=range_tags)
    resource = pipeline_resource()
    spec, lake = configured_sources()["app"], resource.lake()
    info = RunInfo(run_id=run.run_id, quarantined_at=dt.datetime.now(dt.UTC))

    def load(when: Any) -> Any:
        return ingest_partition(
            spec, when, landing=resource.landing(), output=resource.output(), lake=lake, run=info
        ).record

    lake.tables(spec).ensure()
    blocker = pipeline_env.lake / "app" / "events" / f"partition_date={NOISY[0].isoformat()}"
    blocker.write_text("not a directory")
    with pytest.raises(FileExistsError):
        load(NOISY[0])
    [failed] = pipeline_env.attempts("app", NOISY[0].isoformat())
    assert (failed["status"], failed["run_id"], failed["rows_read"]) == ("failed", run.run_id, 0)

    first = guard_tick(instance, webhook)
    assert first.skip_reason.skip_message == "guardretry: 0/0 runs failed, 0/0 rows quarantined"

    blocker.unlink()
    retried = load(NOISY[0])
    assert (retried.status, retried.attempt, retried.run_id) == ("loaded", 2, run.run_id)
    assert retried.rows_read >= 1000 and retried.rows_quarantined / retried.rows_read > 0.05
    paused = guard_tick(instance, webhook, first.cursor)
    assert paused.skip_reason is None and pool_limit(instance) == 0
    [text] = webhook.texts()
    assert text.startswith(
        ":double_vertical_bar: Backfill guardretry auto-paused: "
        f"{retried.rows_quarantined:,} of {retried.rows_read:,} rows quarantined "
        f"({retried.rows_quarantined / retried.rows_read:.2%} > 5.00%)."
    )

    # A run that ended after a failed attempt: nothing more to wait for at that day.
    set_pool_limit(instance, DEFAULT_POOL_LIMIT)
    add_backfill(instance, "guardended")
    ended = create_run_for_test(
        instance,
        job_name="app_daily",
        status=DagsterRunStatus.FAILURE,
        tags={"dagster/backfill": "guardended", "dagster/partition": NOISY[1].isoformat()},
    )
    info = RunInfo(run_id=ended.run_id, quarantined_at=dt.datetime.now(dt.UTC))
    blocker = pipeline_env.lake / "app" / "events" / f"partition_date={NOISY[1].isoformat()}"
    blocker.write_text("not a directory")
    with pytest.raises(FileExistsError):
        load(NOISY[1])
    cursor = guard_tick(instance, webhook, paused.cursor).cursor
    assert json.loads(cursor)["guardended"]["progress"] == {f"{ended.run_id}:app": [1, 0, 0]}
