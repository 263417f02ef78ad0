"""Dagster wiring of the operational metrics: what the ingest step pushes after each attempt,
the push of a run that failed before reaching any day, and the Pushgateway sweeper.

The metrics themselves are built by the engine (`pipeline.engine.operational_metrics`) from
the attempt's `loads` row and the source's history in `loads`; pushing is best effort and never
fails a run. The periodic sweep deletes the groups of sources this deployment no longer
declares (a Pushgateway has no TTL) and publishes the list of declared sources.
"""

# No `from __future__ import annotations`: Dagster inspects the op's `context` annotation at
# definition time and needs the real class, not a string.
import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

from dagster import (
    DefaultSensorStatus,
    OpExecutionContext,
    RunFailureSensorContext,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SensorDefinition,
    SkipReason,
    job,
    op,
    run_failure_sensor,
    schedule,
)

from pipeline.engine.lake.loads import LoadRecord
from pipeline.engine.lake.tables import SourceTables
from pipeline.engine.metrics_sweeper import sweep_pushgateway
from pipeline.engine.operational_metrics import (
    SWEEPER_JOB,
    AttemptMetrics,
    SourceHistory,
    attempt_metrics,
    push_attempt_metrics,
)
from pipeline.engine.pushgateway import PushgatewayConfig
from pipeline.orchestration.operations import TRIGGER_TAG, OperationsSettings
from pipeline.sources.spec import SourceSpec

logger = logging.getLogger(__name__)


def job_label(job_name: str) -> str:
    """The `job` label of a run: its job's name (`__ASSET_JOB` for UI and CLI materializations)."""
    return job_name or "__ASSET_JOB"


def report_attempt(record: LoadRecord, tables: SourceTables, job_name: str, log: Any = logger) -> bool:
    """Push the operational metrics of one attempt (never raises; nothing when unconfigured)."""
    config = PushgatewayConfig.from_env()
    if not config.enabled:
        return False
    try:
        last_success_at, newest = tables.success_summary()
        metrics = attempt_metrics(record, job_label(job_name), last_success_at=last_success_at, newest=newest)
    except Exception as error:  # monitoring must never fail the run: say so and go on
        log.warning(
            "operational metrics of %s %s not built: %s: %s", record.source, record.day, type(error).__name__, error
        )
        return False
    return push_attempt_metrics(metrics, config)


def report_run_failure(
    tables: SourceTables, job_name: str, started_at: dt.datetime, failed_at: dt.datetime, log: Any = logger
) -> bool:
    """Push that a run failed before reaching any day of the source (never raises)."""
    config = PushgatewayConfig.from_env()
    if not config.enabled:
        return False
    try:
        last_success_at, newest = tables.success_summary()
        history = SourceHistory(
            last_success_at=last_success_at,
            newest_day=newest.day if newest else None,
            newest_day_rows_loaded=newest.rows_loaded if newest else None,
            newest_day_missing_hours=len(newest.missing_hours) if newest else None,
        )
        metrics = AttemptMetrics.run_failure(
            source=tables.spec.name,
            job=job_label(job_name),
            started_at=started_at,
            failed_at=failed_at,
            error_budget=tables.spec.error_budget,
            history=history,
        )
    except Exception as error:  # monitoring must never fail the sensor either
        log.warning("run-failure metrics of %s not built: %s: %s", tables.spec.name, type(error).__name__, error)
        return False
    return push_attempt_metrics(metrics, config)


def build_run_failure_metrics(specs: Sequence[SourceSpec]) -> SensorDefinition:
    """`push_run_failure_metrics`: a run that failed before reaching any day of a source (its
    resources would not start, its first listing failed before an attempt could be recorded)
    still pushes `failed` for that source, so a monitoring system sees it without Dagster.
    Runs whose days were attempted pushed those attempts already."""
    from pipeline.orchestration.resources import PipelineResource
    from pipeline.orchestration.sensors import run_days, run_sources

    @run_failure_sensor(
        name="push_run_failure_metrics",
        minimum_interval_seconds=15,
        default_status=DefaultSensorStatus.RUNNING,
        description="Pushes status=failed to PIPELINE_PUSHGATEWAY_URL for each source of a failed run that "
        "recorded no attempt (the run failed before reaching a day).",
    )
    def push_run_failure_metrics(context: RunFailureSensorContext, pipeline: PipelineResource) -> SkipReason | None:
        if not PushgatewayConfig.from_env().enabled:
            return SkipReason("PIPELINE_PUSHGATEWAY_URL is unset")
        run = context.dagster_run
        days = [dt.date.fromisoformat(day) for day in run_days(run.tags)]
        record = context.instance.get_run_record_by_id(run.run_id)
        failed_at = dt.datetime.fromtimestamp(record.end_time, dt.UTC) if record and record.end_time else None
        failed_at = failed_at or dt.datetime.now(dt.UTC)
        started = dt.datetime.fromtimestamp(record.start_time, dt.UTC) if record and record.start_time else None
        pushed = []
        lake = pipeline.lake()
        for spec in run_sources(run, specs):
            tables = lake.tables(spec)
            attempted = any(attempt.run_id == run.run_id for attempt in tables.read_loads(days)) if days else False
            if not attempted and report_run_failure(tables, run.job_name, started or failed_at, failed_at, context.log):
                pushed.append(spec.name)
        return None if pushed else SkipReason(f"run {run.run_id}: every source's attempts were pushed already")

    return push_run_failure_metrics


# Every six hours, off the hour: a removed source's series are gone well within the 26 hours
# after which its silence would page, and the run history gains four small runs a day.
SWEEP_CRON = "40 */6 * * *"


def build_pushgateway_sweeper(
    specs: Sequence[SourceSpec],
    operations: OperationsSettings,
    config: PushgatewayConfig | None = None,
) -> ScheduleDefinition:
    """`pushgateway_sweep_schedule`: every six hours, run the `pushgateway_sweep` job, which
    deletes this pipeline's Pushgateway groups of undeclared sources and pushes the inventory.

    Skips (no run) when `PIPELINE_PUSHGATEWAY_URL` is unset. A sweep that cannot reach the
    gateway fails its run (and so is notified); the next tick tries again.
    """
    config = config or PushgatewayConfig.from_env()
    sources = sorted(spec.name for spec in specs)
    if not sources:
        raise ValueError("the sweeper needs the configured sources (an empty list would delete every group)")

    @op(name="sweep_pushgateway", description="Delete stale Pushgateway groups; push the declared sources.")
    def sweep_op(context: OpExecutionContext) -> None:
        context.log.info(f"pushgateway sweep of {config.target} (pipeline={config.pipeline}) for {', '.join(sources)}")
        result = sweep_pushgateway(config, sources)
        context.log.info(f"pushgateway sweep: {result.sentence()}")

    @job(
        name=SWEEPER_JOB,
        description="Deletes the Pushgateway groups of sources that are no longer configured "
        "(a Pushgateway keeps series forever) and pushes the list of configured sources.",
        tags={TRIGGER_TAG: "pushgateway_sweep"},
    )
    def sweep_job() -> None:
        sweep_op()

    @schedule(
        name="pushgateway_sweep_schedule",
        cron_schedule=SWEEP_CRON,
        execution_timezone="UTC",
        job=sweep_job,
        # It launches runs, so like every schedule it starts stopped under PIPELINE_AUTOMATION=stopped.
        default_status=operations.schedule_status,
        description="Every 6 hours: delete the Pushgateway groups of sources no longer configured.",
    )
    def sweep_schedule(context: ScheduleEvaluationContext) -> RunRequest | SkipReason:
        if not config.enabled:
            return SkipReason("PIPELINE_PUSHGATEWAY_URL is unset: nothing is pushed, nothing to sweep")
        scheduled = context.scheduled_execution_time
        return RunRequest(run_key=f"sweep:{scheduled.isoformat() if scheduled else 'manual'}")

    return sweep_schedule
