"""The weekly `lake_maintenance` job: repair, compact and vacuum every source's tables.

The work is the engine's (`pipeline.engine.lake.maintenance`); this module chooses the
retention (never shorter than the longest read, nor than the oldest run still in progress:
both may hold an older snapshot whose files vacuum would delete), writes each source's report
manifest, says what it did on the webhook, and fails the run when a step could not be done.
"""

# No `from __future__ import annotations`: Dagster reads the op's annotations at definition time.
import datetime as dt
import math
from collections.abc import Sequence

from dagster import (
    DagsterRunStatus,
    Failure,
    OpExecutionContext,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    job,
    op,
    schedule,
)

from pipeline.engine.lake.maintenance import maintain_source, write_report
from pipeline.orchestration.notifications import Notifier
from pipeline.orchestration.operations import (
    LAKE_WRITERS_POOL,
    MAINTENANCE_CRON,
    PRIORITY_TAG,
    TRIGGER_TAG,
    OperationsSettings,
)
from pipeline.orchestration.resources import PipelineResource
from pipeline.sources.spec import SourceSpec

IN_PROGRESS = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]


def retention_hours(settings: OperationsSettings, oldest_run_started: dt.datetime | None, now: dt.datetime) -> int:
    """The vacuum retention: the configured one, raised to the longest read and to the age of
    the oldest run in progress (plus an hour)."""
    floor = settings.lake_longest_read_hours
    if oldest_run_started is not None:
        floor = max(floor, math.ceil((now - oldest_run_started).total_seconds() / 3600) + 1)
    return max(settings.lake_retention_hours, floor)


def build_lake_maintenance(specs: Sequence[SourceSpec], settings: OperationsSettings) -> ScheduleDefinition:
    """`lake_maintenance` (job) and `lake_maintenance_schedule` (Sundays 03:00 UTC)."""

    @op(
        name="maintain_lake",
        # A writer like any other: the pause switch stops it, and it counts towards the limit.
        pool=LAKE_WRITERS_POOL,
        description="Repair half-replaced days, compact small files and vacuum unreferenced ones, for every source.",
    )
    def maintain_lake(context: OpExecutionContext, pipeline: PipelineResource) -> None:
        now = dt.datetime.now(dt.UTC)
        others = [
            record
            for record in context.instance.get_run_records(RunsFilter(statuses=IN_PROGRESS), limit=500)
            if record.dagster_run.run_id != context.run_id and record.start_time
        ]
        oldest = min((dt.datetime.fromtimestamp(r.start_time, dt.UTC) for r in others), default=None)  # type: ignore[arg-type]
        hours = retention_hours(settings, oldest, now)
        context.log.info(
            "lake maintenance of %s: retention %d h (configured %d h, longest read %d h%s)",
            ", ".join(spec.name for spec in specs),
            hours,
            settings.lake_retention_hours,
            settings.lake_longest_read_hours,
            f", oldest run in progress started {oldest:%Y-%m-%d %H:%M} UTC" if oldest else "",
        )
        lake, output = pipeline.lake(), pipeline.output()
        sentences, problems = [], []
        for spec in specs:
            report = maintain_source(lake, spec, retention_hours=hours, owner=context.run_id, log=context.log)
            location = write_report(output, report, now.date())
            context.log.info("%s (report %s)", report.summary, location)
            sentences.append(report.summary)
            problems.extend(f"{spec.name}: {problem}" for problem in report.problems)
        Notifier.from_settings(settings).send(
            (":broom: Lake maintenance: " if not problems else ":warning: Lake maintenance with problems: ")
            + " ".join(sentences)
        )
        if problems:
            raise Failure(
                description="Lake maintenance could not do everything: " + "; ".join(problems),
                allow_retries=False,
            )

    @job(
        name="lake_maintenance",
        description="Weekly: repair half-replaced days, compact, vacuum (see docs/runbook.md, 'Lake maintenance').",
        tags={TRIGGER_TAG: "maintenance", PRIORITY_TAG: "0"},
    )
    def lake_maintenance() -> None:
        maintain_lake()

    @schedule(
        name="lake_maintenance_schedule",
        cron_schedule=MAINTENANCE_CRON,
        execution_timezone="UTC",
        job=lake_maintenance,
        default_status=settings.schedule_status,
        description="Sundays 03:00 UTC: compact and vacuum the lake, repair half-replaced days.",
    )
    def lake_maintenance_schedule(context: ScheduleEvaluationContext) -> RunRequest:
        scheduled = context.scheduled_execution_time
        return RunRequest(run_key=f"maintenance:{scheduled.isoformat() if scheduled else 'manual'}")

    return lake_maintenance_schedule
