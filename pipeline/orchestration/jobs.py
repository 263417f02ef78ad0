"""Per-source jobs and freshness checks, the targets of the schedules and sensors.

`S_daily` materializes a source's three assets for one partition (or a range): the daily
schedule, the landing sensor and the completeness re-runs all launch it. The freshness
checks turn red when yesterday's partition has not been materialized by the deadline, which
is how "it did not run at all" shows in the UI.
"""

from __future__ import annotations

import warnings

from dagster import (
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetSelection,
    SensorDefinition,
    SupersessionWarning,
    build_sensor_for_freshness_checks,
    build_time_partition_freshness_checks,
    define_asset_job,
)

# The type `define_asset_job` returns (not exported at the top level).
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from pipeline.orchestration.assets import dlq_key, events_key, metrics_key
from pipeline.orchestration.operations import FRESHNESS_DEADLINE_CRON, OperationsSettings
from pipeline.orchestration.partitions import daily_partitions
from pipeline.sources.spec import SourceSpec


def daily_job_name(spec: SourceSpec) -> str:
    """Name of a source's job."""
    return f"{spec.name}_daily"


def freshness_checks(spec: SourceSpec) -> list[AssetChecksDefinition]:
    """`freshness_check` on `S/events` and `S/daily_metrics`: fails (ERROR) once the deadline
    has passed and the most recent complete day (yesterday) has no materialization.

    These are partition-aware, unlike a `FreshnessPolicy`, which any materialization (even of
    a day years back, by a backfill) would satisfy.
    """
    with warnings.catch_warnings():
        # Dagster marks the factory "superseded" by FreshnessPolicy, which cannot express
        # "yesterday's partition exists"; the factory is still supported. Only that warning is
        # hidden: any other one raised here is news.
        warnings.filterwarnings(
            "ignore",
            message=r"Function `build_time_partition_freshness_checks` is superseded",
            category=SupersessionWarning,
        )
        return list(
            build_time_partition_freshness_checks(
                assets=[events_key(spec), metrics_key(spec)],
                deadline_cron=FRESHNESS_DEADLINE_CRON,
                timezone="UTC",
                severity=AssetCheckSeverity.ERROR,
            )
        )


def daily_job(spec: SourceSpec, checks: list[AssetChecksDefinition]) -> UnresolvedAssetJobDefinition:
    """The job that (re)loads days of one source: ingest, DLQ, metrics and their own checks.

    The freshness checks are left out: evaluated in the same run, before the load, they
    would judge the state the run is about to change.
    """
    selection = AssetSelection.assets(events_key(spec), dlq_key(spec), metrics_key(spec)) - AssetSelection.checks(
        *checks
    )
    return define_asset_job(
        name=daily_job_name(spec),
        selection=selection,
        partitions_def=daily_partitions(spec),
        description=f"Load days of `{spec.name}`: parse, validate, replace the day in the lake with its "
        "metrics. Launched by the daily schedule, the landing sensor and the weekly completeness scan.",
    )


def freshness_sensor(checks: list[AssetChecksDefinition], settings: OperationsSettings) -> SensorDefinition:
    """`freshness_checks_sensor`: evaluates the freshness checks every 10 minutes (a check that
    already failed is re-evaluated by the run that materializes the missing day)."""
    with warnings.catch_warnings():
        # "superseded", as above; only that warning.
        warnings.filterwarnings(
            "ignore",
            message=r"Function `build_sensor_for_freshness_checks` is superseded",
            category=SupersessionWarning,
        )
        return build_sensor_for_freshness_checks(
            freshness_checks=checks, minimum_interval_seconds=600, default_status=settings.sensor_status
        )


def rejudge_job_name(spec: SourceSpec) -> str:
    """Name of a source's DLQ re-judge job."""
    return f"{spec.name}_dlq_rejudge"


def rejudge_job(spec: SourceSpec, checks: list[AssetChecksDefinition]) -> UnresolvedAssetJobDefinition:
    """`S_dlq_rejudge`: re-judge chosen days' DLQ rows through the current definition, without the
    landing files (the ingest step with `rejudge_dlq: true`); days are its partitions."""
    selection = AssetSelection.assets(events_key(spec), dlq_key(spec), metrics_key(spec)) - AssetSelection.checks(
        *checks
    )
    return define_asset_job(
        name=rejudge_job_name(spec),
        selection=selection,
        partitions_def=daily_partitions(spec),
        config={"ops": {f"{spec.name}_ingest": {"config": {"rejudge_dlq": True}}}},
        description=f"Re-judge days of `{spec.name}`'s DLQ through the current definition (after fixing it): rows "
        "that pass move to the events, the others keep their new reasons. Reads the lake, not the landing files; "
        "the attempt is recorded in loads like any load. While the landing files exist, re-running the day is the "
        "normal way.",
    )
