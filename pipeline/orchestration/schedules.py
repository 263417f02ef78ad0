"""Schedules: yesterday's partition every day, and the weekly missing-hours scan.

Both compute their dates from the tick's *scheduled* time, never from the clock, so a tick
evaluated late (daemon down, catch-up) or from the UI's "test schedule" targets the days it
was meant for.
"""

from __future__ import annotations

import datetime as dt
import logging

from dagster import (
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

# The type `define_asset_job` returns (not exported at the top level).
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from pipeline.engine.completeness import REQUESTED, scan_window, write_report
from pipeline.orchestration.operations import (
    COMPLETENESS_CRON,
    COMPLETENESS_TAG,
    DAILY_CRON,
    PRIORITY_COMPLETENESS,
    PRIORITY_SCHEDULED,
    OperationsSettings,
    day_tags,
)
from pipeline.orchestration.resources import PipelineResource
from pipeline.sources.spec import SourceSpec

logger = logging.getLogger(__name__)


def _tick_date(context: ScheduleEvaluationContext) -> dt.date:
    scheduled = context.scheduled_execution_time
    if scheduled is None:  # only when evaluated by hand without a time
        raise ValueError("this schedule needs the tick's scheduled time to know which day to run")
    return scheduled.astimezone(dt.UTC).date()


def build_daily_schedule(
    spec: SourceSpec, job: UnresolvedAssetJobDefinition, settings: OperationsSettings
) -> ScheduleDefinition:
    """`S_daily_schedule`: at 01:30 UTC, load yesterday (UTC) of the source."""

    @schedule(
        name=f"{spec.name}_daily_schedule",
        cron_schedule=DAILY_CRON,
        execution_timezone="UTC",
        job=job,
        default_status=settings.schedule_status,
        description=f"Every day at 01:30 UTC, load yesterday's partition of `{spec.name}` "
        "(runs ahead of queued backfill runs: dagster/priority 10).",
    )
    def daily_schedule(context: ScheduleEvaluationContext) -> RunRequest | SkipReason:
        day = _tick_date(context) - dt.timedelta(days=1)
        if day < spec.first_day:
            return SkipReason(f"{day} is before the first day of {spec.name} ({spec.first_day})")
        return RunRequest(
            # One run per day, however often the tick is evaluated.
            run_key=f"daily:{spec.name}:{day.isoformat()}",
            partition_key=day.isoformat(),
            tags=day_tags("schedule", PRIORITY_SCHEDULED),
        )

    return daily_schedule


def build_completeness_schedule(
    spec: SourceSpec, job: UnresolvedAssetJobDefinition, settings: OperationsSettings
) -> ScheduleDefinition:
    """`S_completeness_schedule`: on Mondays, scan the previous seven days for hours that were
    missing when loaded and have landed since; re-run exactly those days.

    The backfill stats manifest is written on every path: nothing missing, nothing arrived,
    or re-runs requested (the `completeness_reporter` sensor completes it when they end).
    """

    @schedule(
        name=f"{spec.name}_completeness_schedule",
        cron_schedule=COMPLETENESS_CRON,
        execution_timezone="UTC",
        job=job,
        default_status=settings.schedule_status,
        description=f"Mondays 04:00 UTC: re-run the days of the previous {settings.completeness_window_days} "
        f"whose missing hours of `{spec.name}` have landed since; writes backfills/{spec.name}/START..END.json.",
    )
    def completeness_schedule(
        context: ScheduleEvaluationContext, pipeline: PipelineResource
    ) -> list[RunRequest] | SkipReason:
        end = _tick_date(context) - dt.timedelta(days=1)
        start = max(end - dt.timedelta(days=settings.completeness_window_days - 1), spec.first_day)
        if end < start:
            return SkipReason(f"the window ends before the first day of {spec.name} ({spec.first_day})")
        window = [start + dt.timedelta(days=offset) for offset in range((end - start).days + 1)]
        report = scan_window(
            spec.name,
            start,
            end,
            landing=pipeline.landing(),
            attempts=pipeline.lake().tables(spec).latest_attempts(window),
            # Audit stamp of the scan: the tick's own time (the wall clock only for a manual
            # evaluation without one). Not data logic; the reporter's launch grace counts from it.
            scanned_at=context.scheduled_execution_time or dt.datetime.now(dt.UTC),
        )
        location = write_report(pipeline.output(), report)
        context.log.info("%s (manifest %s)", report.message, location)
        if report.status != REQUESTED:
            return SkipReason(report.message)
        return [
            RunRequest(
                run_key=f"completeness:{report.window_id}:{day}",
                partition_key=day,
                tags=day_tags("completeness", PRIORITY_COMPLETENESS, **{COMPLETENESS_TAG: report.window_id}),
            )
            for day in report.rerun_days
        ]

    return completeness_schedule
