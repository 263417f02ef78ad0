"""The Dagster code location: `dagster ... -m pipeline.definitions` loads `defs`."""

from __future__ import annotations

from dagster import Definitions

from pipeline.orchestration.assets import build_source_assets
from pipeline.orchestration.jobs import daily_job, freshness_checks, freshness_sensor, rejudge_job
from pipeline.orchestration.maintenance import build_lake_maintenance
from pipeline.orchestration.observability import build_pushgateway_sweeper, build_run_failure_metrics
from pipeline.orchestration.operations import OperationsSettings
from pipeline.orchestration.resources import PipelineResource
from pipeline.orchestration.schedules import build_completeness_schedule, build_daily_schedule
from pipeline.orchestration.sensors import (
    build_backfill_guard,
    build_completeness_reporter,
    build_failure_notifier,
    build_freshness_alert,
    build_landing_sensor,
    build_success_notifier,
)
from pipeline.settings import Settings
from pipeline.sources import configured_sources


def build_definitions() -> Definitions:
    """Assets, checks, jobs, schedules and sensors for every configured source, with settings
    from the environment."""
    specs = list(configured_sources().values())
    operations = OperationsSettings.from_env()
    assets = []
    checks = []
    jobs = []
    schedules = []
    sensors = []
    for spec in specs:
        assets.extend(build_source_assets(spec, watch_run_worker=operations.step_executor == "multiprocess"))
        source_checks = freshness_checks(spec)
        checks.extend(source_checks)
        job = daily_job(spec, source_checks)
        jobs.append(job)
        jobs.append(rejudge_job(spec, source_checks))
        schedules.append(build_daily_schedule(spec, job, operations))
        schedules.append(build_completeness_schedule(spec, job, operations))
        sensors.append(build_landing_sensor(spec, job, operations))
    schedules.append(build_pushgateway_sweeper(specs, operations))
    schedules.append(build_lake_maintenance(specs, operations))
    sensors.extend(
        [
            freshness_sensor(checks, operations),
            build_freshness_alert(specs, operations),
            build_completeness_reporter(specs, operations),
            build_failure_notifier(operations),
            build_success_notifier(specs, operations),
            build_backfill_guard(specs, operations),
            build_run_failure_metrics(specs),
        ]
    )
    return Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
        resources={"pipeline": PipelineResource.from_settings(Settings.from_env())},
        executor=operations.executor,
    )


defs = build_definitions()
