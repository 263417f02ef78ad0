"""What each day's materializations and check results say, built from its `loads` row.

Every partition of `S/events`, `S/dlq` and `S/daily_metrics` gets its own metadata (an
empty day too: 0 rows), recorded as soon as the day is committed, so a range run shows its
days one by one and a later failure never hides one that was loaded.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa
from dagster import (
    AssetCheckEvaluation,
    AssetCheckSeverity,
    AssetKey,
    AssetMaterialization,
    AssetObservation,
    AssetRecordsFilter,
    DagsterInstance,
    MetadataValue,
    TableColumn,
    TableColumnConstraints,
    TableColumnDep,
    TableColumnLineage,
    TableRecord,
    TableSchema,
)

# Not exported by `dagster`, but the only way to tie an evaluation to its materialization (what
# `AssetCheckResult` does for single-partition steps); issue 16 tracks private imports.
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData as CheckTarget,
)

from pipeline.engine.completeness import format_hours
from pipeline.engine.lake.loads import LoadRecord
from pipeline.engine.lake.schemas import DLQ_SCHEMA, metrics_schema
from pipeline.engine.volume import VolumeVerdict
from pipeline.sources.metrics import metric_columns
from pipeline.sources.spec import SourceSpec

RULES_SCHEMA = TableSchema(
    columns=[
        TableColumn("rule", "string", description="field: check"),
        TableColumn("rows", "int", description="quarantined rows failing it"),
        TableColumn("share", "string", description="of the day's rows"),
    ]
)
SAMPLES_SCHEMA = TableSchema(
    columns=[
        TableColumn("file", "string"),
        TableColumn("line", "int"),
        TableColumn("reason", "string"),
        TableColumn("raw_line", "string"),
    ]
)
VOLUME_SAMPLE_SCHEMA = TableSchema(
    columns=[
        TableColumn("day", "string", description="the same weekday, a week apart"),
        TableColumn("rows", "int", description="rows loaded"),
    ]
)
BLOCKED_DAYS_SCHEMA = TableSchema(
    columns=[
        TableColumn("day", "string"),
        TableColumn("quarantined", "string", description="share of the day's rows, percent"),
        TableColumn("rows_read", "int"),
        TableColumn("rows_quarantined", "int"),
        TableColumn("top_rule", "string", description="field: check failed by the most rows"),
        TableColumn("missing_hours", "string"),
    ]
)
_COLUMN_TYPES = {"string": "string", "integer": "int", "float": "float", "timestamp": "timestamp"}

QUARANTINE_RATE_CHECK = "quarantine_rate"
HOURS_COMPLETE_CHECK = "hours_complete"
VOLUME_NORMAL_CHECK = "volume_normal"
CODE_VERSION_TAG = "dagster/code_version"


def location(url: str | None) -> MetadataValue:
    """An object-store location: a URL in S3 mode, a path locally."""
    if url and url.startswith("s3://"):
        return MetadataValue.url(url)
    return MetadataValue.path(url or "")


def rules_table(record: LoadRecord) -> MetadataValue:
    """Quarantined rows per failed rule, as a table."""
    records = [
        TableRecord(
            {"rule": rule, "rows": rows, "share": f"{rows / record.rows_read:.2%}" if record.rows_read else "-"}
        )
        for rule, rows in record.failed_checks.items()
    ]
    return MetadataValue.table(records, schema=RULES_SCHEMA)


def samples_table(record: LoadRecord) -> MetadataValue:
    """The day's first quarantined rows (by file and line), as a table."""
    records = [
        TableRecord(
            {
                "file": str(sample.get("source_file", "")),
                "line": int(sample.get("line_number") or 0),
                "reason": str(sample.get("reason", "")),
                "raw_line": str(sample.get("raw_line", ""))[:500],
            }
        )
        for sample in record.sample_quarantined
    ]
    return MetadataValue.table(records, schema=SAMPLES_SCHEMA)


def blocked_days_table(records: list[LoadRecord]) -> MetadataValue:
    """Days over their error budget with their figures, as a table."""
    rows = []
    for record in records:
        top = next(iter(record.failed_checks.items()), None)
        rows.append(
            TableRecord(
                {
                    "day": record.partition_date,
                    "quarantined": f"{record.quarantine_rate:.2%}",
                    "rows_read": record.rows_read,
                    "rows_quarantined": record.rows_quarantined,
                    "top_rule": f"{top[0]} ({top[1]:,})" if top else "-",
                    "missing_hours": missing_hours_text(record),
                }
            )
        )
    return MetadataValue.table(rows, schema=BLOCKED_DAYS_SCHEMA)


def verdict(record: LoadRecord) -> str:
    """What an operator reads first about a day: trusted or not, and why (markdown)."""
    rate, budget = f"{record.quarantine_rate:.2%}", f"{record.error_budget:.2%}"
    if record.status == "failed":
        return (
            f"✗ **{record.partition_date} failed**: {record.error}. Nothing changed; re-run the day "
            "(runbook, *Re-running failed partitions*)."
        )
    parts = []
    if record.within_error_budget:
        parts.append(f"✓ {rate} quarantined ≤ {budget} budget")
    else:
        top = next(iter(record.failed_checks.items()), None)
        parts.append(
            f"✗ {rate} quarantined > {budget} budget"
            + (f"; top rule `{top[0]}` ({top[1]:,})" if top else "")
            + "; daily_metrics blocked"
        )
    if record.status == "empty":
        parts.append("no file landed")
    elif record.missing_hours:
        hours = missing_hours_text(record)
        parts.append(f"missing hour{'s' if len(record.missing_hours) > 1 else ''} {hours}")
    else:
        parts.append("all 24 hours present")
    text = "; ".join(parts)
    if not record.within_error_budget:
        text += " — read the DLQ of the day, fix the source or its definition, re-run (runbook, *Reading the DLQ*)"
    elif record.missing_hours and record.status != "empty":
        text += " — a late file is loaded by the landing sensor or the weekly completeness scan"
    return text


def column_schema(spec: SourceSpec) -> TableSchema:
    """`dagster/column_schema` of `S/events`: every column, its type, nullability and checks."""
    columns = [
        TableColumn(
            "partition_date",
            "date",
            description="the data date (UTC day)",
            constraints=TableColumnConstraints(nullable=False),
        ),
        TableColumn(
            "source_file",
            "string",
            description="landing key of the file",
            constraints=TableColumnConstraints(nullable=False),
        ),
        TableColumn(
            "line_number",
            "int",
            description="first line of the record",
            constraints=TableColumnConstraints(nullable=False),
        ),
        TableColumn(
            spec.timestamp.field,
            "timestamp",
            description=f"event time, UTC (format {spec.timestamp.format_label})",
            constraints=TableColumnConstraints(
                nullable=False, other=[f"within the day ± {spec.timestamp.tolerance_minutes} min"]
            ),
        ),
    ]
    for name, field in spec.fields.items():
        checks = [f"{check} {args}" for check, args in field.checks.items()]
        columns.append(
            TableColumn(
                name,
                _COLUMN_TYPES[field.type],
                constraints=TableColumnConstraints(nullable=field.nullable, other=checks),
            )
        )
    columns.append(TableColumn("run_id", "string", description="the load the day's rows come from"))
    return TableSchema(columns=columns)


DLQ_COLUMNS = {
    "partition_date": "the data date (UTC day)",
    "source_file": "landing key of the file",
    "line_number": "first line of the record",
    "raw_line": "the record without its line terminators (bytes that are not UTF-8 as \\xNN)",
    "raw_bytes": "the exact bytes, only when they are not valid UTF-8",
    "reasons": "every failed check: {field, check, value}",
    "reason": "the failed checks as text",
    "run_id": "the load that quarantined the row",
    "quarantined_at": "when that load quarantined it",
}


def _arrow_type(kind: pa.DataType) -> str:
    if pa.types.is_date(kind):
        return "date"
    if pa.types.is_timestamp(kind):
        return "timestamp"
    if pa.types.is_integer(kind):
        return "int"
    if pa.types.is_floating(kind):
        return "float"
    if pa.types.is_decimal(kind):
        return f"decimal({kind.precision},{kind.scale})"
    if pa.types.is_boolean(kind):
        return "bool"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "string"
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return "binary"
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return f"list<{_arrow_type(kind.value_type)}>"
    if pa.types.is_map(kind):
        return f"map<{_arrow_type(kind.key_type)}, {_arrow_type(kind.item_type)}>"
    if pa.types.is_struct(kind):
        return "struct<" + ", ".join(f"{field.name}: {_arrow_type(field.type)}" for field in kind) + ">"
    return str(kind)


def _table_schema(schema: pa.Schema, descriptions: dict[str, str]) -> TableSchema:
    return TableSchema(
        columns=[
            TableColumn(
                field.name,
                _arrow_type(field.type),
                description=descriptions.get(field.name),
                constraints=TableColumnConstraints(nullable=field.nullable),
            )
            for field in schema
        ]
    )


def dlq_column_schema() -> TableSchema:
    """`dagster/column_schema` of `S/dlq` (the same for every source)."""
    return _table_schema(DLQ_SCHEMA, DLQ_COLUMNS)


def metrics_column_schema(spec: SourceSpec) -> TableSchema:
    """`dagster/column_schema` of `S/daily_metrics`: each metric typed as DuckDB computes it, its
    SQL as its description."""
    descriptions = {"partition_date": "the data date (UTC day)", "run_id": "the load whose events they describe"}
    return _table_schema(metrics_schema(spec), descriptions | dict(spec.daily_metrics))


def metrics_column_lineage(spec: SourceSpec, events: AssetKey) -> TableColumnLineage:
    """`dagster/column_lineage` of `S/daily_metrics`: the events columns each metric reads
    (`count(*)` and the like read none and are left out)."""
    reads = metric_columns(
        spec.timestamp.field, {name: field.type for name, field in spec.fields.items()}, spec.daily_metrics
    )
    return TableColumnLineage(
        deps_by_column={
            metric: [TableColumnDep(asset_key=events, column_name=column) for column in columns]
            for metric, columns in reads.items()
            if columns
        }
    )


def missing_hours_text(record: LoadRecord) -> str:
    """`04, 13-15`, `none`, or `all 24 hours`."""
    return format_hours(record.missing_hours) if record.missing_hours else "none"


def events_metadata(record: LoadRecord) -> dict[str, Any]:
    """Materialization metadata of one `S/events` partition."""
    return {
        "dagster/row_count": record.rows_loaded,
        "verdict": MetadataValue.md(verdict(record)),
        "status": record.status,
        "summary": record.summary,
        "rows_read": record.rows_read,
        "rows_loaded": record.rows_loaded,
        "rows_quarantined": record.rows_quarantined,
        "quarantine_rate": MetadataValue.float(record.quarantine_rate),
        "quarantined_percent": f"{record.quarantine_rate:.2%}",
        "error_budget": MetadataValue.float(record.error_budget),
        "within_error_budget": MetadataValue.bool(record.within_error_budget),
        "lines_read": record.lines_read,
        "lines_ignored": record.lines_ignored,
        "continuation_lines": record.continuation_lines,
        "files": record.files,
        "bytes_read": record.bytes_read,
        "hours_present": len(record.hours_present),
        "missing_hours": missing_hours_text(record),
        "missing_hours_count": len(record.missing_hours),
        "duration_s": MetadataValue.float(record.duration_s),
        "manifest": location(record.manifest),
        "landing_fingerprint": record.landing_fingerprint or "",
        "definition_version": record.definition_version,
        "attempt": record.attempt,
        "lake_version": record.events_version if record.events_version is not None else -1,
    }


def dlq_metadata(record: LoadRecord) -> dict[str, Any]:
    """Materialization metadata of one `S/dlq` partition."""
    return {
        "dagster/row_count": record.rows_quarantined,
        "rows_quarantined": record.rows_quarantined,
        "day": record.partition_date,
        "failed_checks": rules_table(record),
        "sample_quarantined": samples_table(record),
        "manifest": location(record.manifest),
        "definition_version": record.definition_version,
        "lake_version": record.dlq_version if record.dlq_version is not None else -1,
    }


def metrics_metadata(record: LoadRecord, figures: dict[str, Any]) -> dict[str, Any]:
    """Materialization metadata of one `S/daily_metrics` partition: its row count (the table's
    rows for the day: 1, or 0 for a day without events), the day, how many events rows the
    figures describe and the run they come from, and one entry per metric."""
    metadata: dict[str, Any] = {
        "dagster/row_count": record.metrics_rows,
        "day": record.partition_date,
        # What the one row stands for: the day's events it was computed from.
        "events_rows": record.rows_loaded,
        "from_run": record.run_id,
    }
    for name, value in figures.items():
        if name not in ("partition_date", "run_id"):
            metadata[name] = _metadata_value(value)
    return metadata


def _metadata_value(value: object) -> Any:
    if value is None:
        return MetadataValue.text("NULL")
    if isinstance(value, bool):
        return MetadataValue.bool(value)
    if isinstance(value, int):
        return MetadataValue.int(value)
    if isinstance(value, float):
        return MetadataValue.float(value)
    if isinstance(value, dt.datetime):
        return MetadataValue.timestamp(value)
    if isinstance(value, list) and all(isinstance(item, tuple) and len(item) == 2 for item in value):
        return MetadataValue.json({str(key): item for key, item in value})  # a MAP column
    if isinstance(value, dict):
        return MetadataValue.json({str(key): item for key, item in value.items()})
    return MetadataValue.text(str(value))


def materializations(
    record: LoadRecord,
    figures: dict[str, Any],
    *,
    events: AssetKey,
    dlq: AssetKey,
    metrics: AssetKey,
) -> list[AssetMaterialization]:
    """The day's materializations: events and dlq always; daily_metrics only when the day is
    within its error budget (a bad day blocks its own metrics, whose row was removed)."""
    tags = {CODE_VERSION_TAG: record.definition_version}
    day = record.partition_date
    result = [
        AssetMaterialization(events, partition=day, metadata=events_metadata(record), tags=tags),
        AssetMaterialization(dlq, partition=day, metadata=dlq_metadata(record), tags=tags),
    ]
    if record.within_error_budget:
        result.append(
            AssetMaterialization(metrics, partition=day, metadata=metrics_metadata(record, figures), tags=tags)
        )
    return result


def metrics_removed(record: LoadRecord, metrics: AssetKey) -> AssetObservation:
    """What a day over its error budget says on its `S/daily_metrics` partition: its metrics row
    was removed with the load (so the partition's earlier materialization, whose figures
    described the replaced events, is not the last word on the day)."""
    return AssetObservation(
        metrics,
        partition=record.partition_date,
        metadata={
            "day": record.partition_date,
            "status": "removed",
            "rows": 0,
            "reason": MetadataValue.md(
                f"{record.partition_date}: metrics row removed by run `{record.run_id}`: the day's events are over "
                f"the error budget ({record.quarantine_rate:.2%} quarantined > {record.error_budget:.2%}). Any "
                "earlier materialization of this partition describes events that were replaced. Fix the source or "
                "its definition and re-run the day (runbook, *Reading the DLQ*)."
            ),
            "from_run": record.run_id,
        },
        tags={CODE_VERSION_TAG: record.definition_version},
    )


def check_target(instance: DagsterInstance, events: AssetKey, day: str, run_id: str) -> CheckTarget | None:
    """The materialization of `events` for `day` that this run just recorded, as the target of the
    day's check results, or None if the newest one is another run's.

    Dagster counts a partition's check result in the check's per-partition status (its
    *Partitions* tab, asset health) only when it targets that partition's newest materialization.
    An `AssetCheckResult` finds it itself, but only in a single-partition step; a range step
    yields `AssetCheckEvaluation`s and must name it, with the same lookup Dagster makes.
    """
    records = instance.fetch_materializations(AssetRecordsFilter(asset_key=events, asset_partitions=[day]), limit=1)
    if not records.records or records.records[0].run_id != run_id:
        return None
    newest = records.records[0]
    return CheckTarget(run_id=newest.run_id, storage_id=newest.storage_id, timestamp=newest.timestamp)


def check_evaluations(
    record: LoadRecord, events: AssetKey, target: CheckTarget | None = None
) -> list[AssetCheckEvaluation]:
    """The day's check results, tied to its partition (so no other day's result replaces it) and,
    given `target`, to the day's materialization (see `check_target`)."""
    day = record.partition_date
    budget = f"{record.error_budget:.2%}"
    return [
        AssetCheckEvaluation(
            asset_key=events,
            check_name=QUARANTINE_RATE_CHECK,
            passed=record.within_error_budget,
            partition=day,
            target_materialization_data=target,
            severity=AssetCheckSeverity.ERROR,
            blocking=True,
            description=(
                f"{day}: {record.quarantine_rate:.2%} of {record.rows_read:,} rows quarantined, within the "
                f"{budget} error budget"
                if record.within_error_budget
                else f"{day}: {record.quarantine_rate:.2%} of {record.rows_read:,} rows quarantined, above the "
                f"{budget} error budget: daily_metrics blocked for this day"
            ),
            metadata={
                "day": day,
                "quarantine_rate": MetadataValue.float(record.quarantine_rate),
                "error_budget": MetadataValue.float(record.error_budget),
                "rows_read": record.rows_read,
                "rows_quarantined": record.rows_quarantined,
                "failed_checks": rules_table(record),
                "sample_quarantined": samples_table(record),
                "verdict": MetadataValue.md(verdict(record)),
            },
        ),
        AssetCheckEvaluation(
            asset_key=events,
            check_name=HOURS_COMPLETE_CHECK,
            passed=not record.missing_hours,
            partition=day,
            target_materialization_data=target,
            severity=AssetCheckSeverity.WARN,
            description=(
                f"{day}: all 24 hours present"
                if not record.missing_hours
                else f"{day}: {len(record.missing_hours)} hour(s) without a file: {missing_hours_text(record)}"
            ),
            metadata={
                "day": day,
                "missing_hours": missing_hours_text(record),
                "missing_hours_count": len(record.missing_hours),
            },
        ),
    ]


def volume_evaluation(
    verdict: VolumeVerdict, events: AssetKey, target: CheckTarget | None = None
) -> AssetCheckEvaluation:
    """`volume_normal` of one day: its rows against the same weekday's median (seed 004: a green
    run that loaded a fraction of the usual volume must not look fine)."""
    metadata = {name: value for name, value in verdict.metadata().items() if value is not None}
    metadata["sample"] = MetadataValue.table(
        [TableRecord({"day": day.isoformat(), "rows": rows}) for day, rows in verdict.sample],
        schema=VOLUME_SAMPLE_SCHEMA,
    )
    low, high = verdict.ratio_band
    metadata["ratio_band"] = f"{low:g}x-{high:g}x the median"
    if verdict.ratio is not None:
        metadata["ratio"] = MetadataValue.float(round(verdict.ratio, 4))
    if verdict.median is not None:
        metadata["median"] = MetadataValue.float(verdict.median)
    return AssetCheckEvaluation(
        asset_key=events,
        check_name=VOLUME_NORMAL_CHECK,
        passed=verdict.passed,
        partition=verdict.day.isoformat(),
        target_materialization_data=target,
        severity=AssetCheckSeverity.ERROR if verdict.severity == "error" else AssetCheckSeverity.WARN,
        description=verdict.sentence,
        metadata=metadata,
    )
