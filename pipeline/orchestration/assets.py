"""The asset factory: every source gets `S/events`, `S/dlq`, `S/daily_metrics` and their checks.

`S/events` and `S/dlq` come out of one step (one pass over the files splits good and bad
rows). Partition ranges run as one run (`BackfillPolicy.single_run()`, which the CLI's
`--partition-range` requires), and metadata is attached per partition, so that every day of
a range gets its own row counts, an empty day 0.
"""

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    BackfillPolicy,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
    multi_asset,
)

from pipeline.engine.ingest import PartitionStats, ingest_partition
from pipeline.engine.reader import DEFAULT_CHUNK_BYTES
from pipeline.orchestration.partitions import daily_partitions, days_in_range
from pipeline.orchestration.resources import PipelineResource
from pipeline.sources.spec import SourceSpec

QUARANTINE_RATE_CHECK = "quarantine_rate"
HOURS_COMPLETE_CHECK = "hours_complete"


class IngestConfig(Config):
    """Run configuration of the ingest step."""

    # Bytes read per batch: bounds the memory used per file, whatever the day's size.
    chunk_bytes: int = DEFAULT_CHUNK_BYTES


def events_key(spec: SourceSpec) -> AssetKey:
    """Asset key of a source's valid rows."""
    return AssetKey([spec.name, "events"])


def dlq_key(spec: SourceSpec) -> AssetKey:
    """Asset key of a source's quarantined rows."""
    return AssetKey([spec.name, "dlq"])


def metrics_key(spec: SourceSpec) -> AssetKey:
    """Asset key of a source's daily metrics."""
    return AssetKey([spec.name, "daily_metrics"])


def events_metadata(stats: PartitionStats) -> dict[str, Any]:
    """Materialization metadata of one `S/events` partition."""
    return {
        "dagster/row_count": stats.rows_loaded,
        "status": stats.status,
        "summary": stats.summary,
        "rows_read": stats.rows_read,
        "rows_loaded": stats.rows_loaded,
        "rows_quarantined": stats.rows_quarantined,
        "quarantine_rate": MetadataValue.float(stats.quarantine_rate),
        "lines_read": stats.lines_read,
        "lines_ignored": stats.lines_ignored,
        "continuation_lines": stats.continuation_lines,
        "files": stats.files,
        "bytes_read": stats.bytes_read,
        "hours_present": MetadataValue.json(stats.hours_present),
        "missing_hours": MetadataValue.json(stats.missing_hours),
        "duration_s": MetadataValue.float(stats.duration_s),
        "manifest": MetadataValue.path(stats.manifest or ""),
    }


def dlq_metadata(stats: PartitionStats) -> dict[str, Any]:
    """Materialization metadata of one `S/dlq` partition."""
    return {
        "dagster/row_count": stats.rows_quarantined,
        "rows_quarantined": stats.rows_quarantined,
        "failed_checks": MetadataValue.json(stats.failed_checks),
        "manifest": MetadataValue.path(stats.manifest or ""),
    }


def quarantine_rate_result(spec: SourceSpec, days: Sequence[PartitionStats]) -> AssetCheckResult:
    """Blocking check: every day of the run is within the source's error budget."""
    over_budget = [stats.partition_date for stats in days if not stats.within_error_budget]
    rows_read = sum(stats.rows_read for stats in days)
    rows_quarantined = sum(stats.rows_quarantined for stats in days)
    failed_checks: dict[str, int] = {}
    samples: list[dict[str, object]] = []
    for stats in days:
        for rule, count in stats.failed_checks.items():
            failed_checks[rule] = failed_checks.get(rule, 0) + count
        samples.extend(stats.sample_quarantined[: max(0, 5 - len(samples))])
    worst = max(days, key=lambda stats: stats.quarantine_rate)
    return AssetCheckResult(
        asset_key=events_key(spec),
        check_name=QUARANTINE_RATE_CHECK,
        passed=not over_budget,
        severity=AssetCheckSeverity.ERROR,
        description=(
            f"{len(over_budget)} day(s) above the {spec.error_budget:.2%} error budget: {', '.join(over_budget)}"
            if over_budget
            else f"All {len(days)} day(s) within the {spec.error_budget:.2%} error budget"
        ),
        metadata={
            "quarantine_rate": MetadataValue.float(worst.quarantine_rate),
            "worst_day": worst.partition_date,
            "error_budget": MetadataValue.float(spec.error_budget),
            "rows_read": rows_read,
            "rows_quarantined": rows_quarantined,
            "quarantine_rate_per_day": MetadataValue.json(
                {stats.partition_date: stats.quarantine_rate for stats in days}
            ),
            "days_over_budget": MetadataValue.json(over_budget),
            "failed_checks": MetadataValue.json(failed_checks),
            "sample_quarantined": MetadataValue.json(samples),
        },
    )


def hours_complete_result(spec: SourceSpec, days: Sequence[PartitionStats]) -> AssetCheckResult:
    """Warning check: every hour of every day has at least one file."""
    missing = {stats.partition_date: stats.missing_hours for stats in days if stats.missing_hours}
    return AssetCheckResult(
        asset_key=events_key(spec),
        check_name=HOURS_COMPLETE_CHECK,
        passed=not missing,
        severity=AssetCheckSeverity.WARN,
        description=(
            "Missing hours: " + "; ".join(f"{day}: {len(hours)} missing" for day, hours in missing.items())
            if missing
            else f"All 24 hours present on {len(days)} day(s)"
        ),
        metadata={"missing_hours": MetadataValue.json(missing)},
    )


def build_source_assets(spec: SourceSpec) -> list[AssetsDefinition]:
    """Build the assets and checks of one source from its definition."""
    partitions = daily_partitions(spec)
    group = spec.name
    ingest_specs = [
        AssetSpec(
            events_key(spec),
            description=f"Validated rows of `{spec.name}` ({spec.description}), one partition per UTC day. "
            f"Table `{spec.name}.events` in the warehouse.",
            group_name=group,
            partitions_def=partitions,
            kinds={"duckdb"},
        ),
        AssetSpec(
            dlq_key(spec),
            description=f"Quarantined lines of `{spec.name}` with the raw line and every failed check. "
            f"Table `{spec.name}.dlq`.",
            group_name=group,
            partitions_def=partitions,
            kinds={"duckdb"},
        ),
    ]
    check_specs = [
        AssetCheckSpec(
            QUARANTINE_RATE_CHECK,
            asset=events_key(spec),
            blocking=True,
            description=f"Fails (ERROR) when more than {spec.error_budget:.2%} of a day's rows are quarantined; "
            "blocks downstream assets.",
        ),
        AssetCheckSpec(
            HOURS_COMPLETE_CHECK,
            asset=events_key(spec),
            description="Warns when an hour of the day has no file.",
        ),
    ]

    @multi_asset(
        name=f"{spec.name}_ingest",
        specs=ingest_specs,
        check_specs=check_specs,
        backfill_policy=BackfillPolicy.single_run(),
        description=f"Parse, validate and load `{spec.name}` log files of each day.",
    )
    def ingest(context: AssetExecutionContext, config: IngestConfig, pipeline: PipelineResource) -> Iterator[Any]:
        days = days_in_range(context.partition_key_range)
        context.log.info(
            "run %s: source=%s days=%s..%s (%d) %s chunk_bytes=%d",
            context.run_id,
            spec.name,
            days[0],
            days[-1],
            len(days),
            pipeline.describe(),
            config.chunk_bytes,
        )
        landing, output, warehouse = pipeline.landing(), pipeline.output(), pipeline.warehouse()
        # An audit stamp for the DLQ, not data logic: the data date is the partition key.
        quarantined_at = dt.datetime.now(dt.UTC)
        results: list[PartitionStats] = []
        for day in days:
            stats = ingest_partition(
                spec,
                day,
                landing=landing,
                output=output,
                warehouse=warehouse,
                run_id=context.run_id,
                quarantined_at=quarantined_at,
                chunk_bytes=config.chunk_bytes,
                log=context.log,
            )
            key = day.isoformat()
            context.add_asset_metadata(events_metadata(stats), asset_key=events_key(spec), partition_key=key)
            context.add_asset_metadata(dlq_metadata(stats), asset_key=dlq_key(spec), partition_key=key)
            results.append(stats)
        yield MaterializeResult(asset_key=events_key(spec))
        yield MaterializeResult(asset_key=dlq_key(spec))
        yield quarantine_rate_result(spec, results)
        yield hours_complete_result(spec, results)

    @asset(
        key=metrics_key(spec),
        deps=[events_key(spec)],
        partitions_def=partitions,
        backfill_policy=BackfillPolicy.single_run(),
        group_name=group,
        kinds={"duckdb"},
        description=f"Daily figures of `{spec.name}` for on-call: {', '.join(spec.daily_metrics)}. "
        f"Table `{spec.name}.daily_metrics`, one row per day with events.",
    )
    def daily_metrics(context: AssetExecutionContext, pipeline: PipelineResource) -> MaterializeResult:
        warehouse = pipeline.warehouse()
        with warehouse.connect() as connection:
            warehouse.ensure_tables(connection, spec)
            for day in days_in_range(context.partition_key_range):
                rows = warehouse.replace_daily_metrics(connection, spec, day)
                figures = warehouse.daily_metrics(connection, spec, day)
                context.log.info("daily_metrics %s %s: %d row(s) %s", spec.name, day, rows, figures)
                metadata: dict[str, Any] = {"dagster/row_count": rows}
                metadata.update(
                    {name: _metadata_value(value) for name, value in figures.items() if name != "partition_date"}
                )
                context.add_asset_metadata(metadata, partition_key=day.isoformat())
        return MaterializeResult()

    return [ingest, daily_metrics]


def _metadata_value(value: object) -> Any:
    if isinstance(value, bool) or value is None:
        return MetadataValue.text(str(value))
    if isinstance(value, int):
        return MetadataValue.int(value)
    if isinstance(value, float):
        return MetadataValue.float(value)
    if isinstance(value, dict):
        return MetadataValue.json({str(key): item for key, item in value.items()})
    return MetadataValue.text(str(value))
