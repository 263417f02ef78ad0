"""The daily schedule, evaluated directly (as the daemon does) and its run executed."""

from __future__ import annotations

import datetime as dt

from dagster import DagsterInstance, build_schedule_context

from pipeline.cli.generate import generate_landing_zone
from pipeline_tests.conftest import PipelineEnv, day
from pipeline_tests.ops.conftest import execute_request, materialized_partitions

UTC = dt.UTC


def test_daily_schedule_loads_yesterday_utc(pipeline_env: PipelineEnv, instance: DagsterInstance) -> None:
    """At 01:30 UTC the schedule requests exactly yesterday's partition, once, ahead of backfills;
    its run loads that day and nothing else."""
    defs = pipeline_env.definitions()
    schedule = defs.resolve_schedule_def("access_daily_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone, schedule.job_name) == (
        "30 1 * * *",
        "UTC",
        "access_daily",
    )
    generated = generate_landing_zone(
        pipeline_env.landing, [day("2024-01-16"), day("2024-01-17")], sources=["access"], lines_per_hour=12
    )

    tick = build_schedule_context(
        instance=instance,
        repository_def=defs.get_repository_def(),
        scheduled_execution_time=dt.datetime(2024, 1, 18, 1, 30, tzinfo=UTC),
    )
    data = schedule.evaluate_tick(tick)
    assert data.skip_message is None
    [request] = data.run_requests
    assert request.partition_key == "2024-01-17"
    assert request.run_key == "daily:access:2024-01-17"
    assert request.tags["pipeline/trigger"] == "schedule"
    assert request.tags["dagster/priority"] == "10"

    result = execute_request(defs, instance, request)
    assert result.success
    expected = {p.day.isoformat(): p.records - p.bad_records for p in generated}
    for key in ("access/events", "access/dlq", "access/daily_metrics"):
        assert set(materialized_partitions(result, key)) == {"2024-01-17"}, key
    assert materialized_partitions(result, "access/events")["2024-01-17"]["dagster/row_count"] == expected["2024-01-17"]
    assert pipeline_env.query("SELECT partition_date, count(*) FROM access.events GROUP BY 1") == [
        (day("2024-01-17"), expected["2024-01-17"])
    ]
    run = instance.get_run_by_id(result.run_id)
    assert run is not None and run.tags["dagster/priority"] == "10"


def test_daily_schedule_day_follows_the_tick_not_the_clock(
    pipeline_env: PipelineEnv, instance: DagsterInstance
) -> None:
    """A tick evaluated late, or given in another zone, still targets the UTC day before its own
    scheduled time; a tick before the source's first day is skipped with the reason."""
    defs = pipeline_env.definitions()
    schedule = defs.resolve_schedule_def("app_daily_schedule")
    tokyo = dt.timezone(dt.timedelta(hours=9))
    # 2024-03-01 10:30 in Tokyo is 01:30 UTC the same day: yesterday (UTC) is the leap day.
    data = schedule.evaluate_tick(
        build_schedule_context(
            instance=instance,
            repository_def=defs.get_repository_def(),
            scheduled_execution_time=dt.datetime(2024, 3, 1, 10, 30, tzinfo=tokyo),
        )
    )
    assert [request.partition_key for request in data.run_requests] == ["2024-02-29"]
    data = schedule.evaluate_tick(
        build_schedule_context(
            instance=instance,
            repository_def=defs.get_repository_def(),
            scheduled_execution_time=dt.datetime(2024, 1, 1, 1, 30, tzinfo=UTC),
        )
    )
    assert data.run_requests == []
    assert data.skip_message == "2023-12-31 is before the first day of app (2024-01-01)"
