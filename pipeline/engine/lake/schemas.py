"""The Arrow schemas of a source's four Delta tables, derived from its definition.

- `events`: the partition, where each row came from, the timestamp, the declared fields, the run.
- `dlq`: every quarantined record with its evidence and reasons (the same for every source).
- `daily_metrics`: the partition, one column per `daily_metrics` expression (typed by DuckDB
  evaluating the expressions over an empty events relation), the run whose events they describe.
- `loads`: one row per partition attempt (the same for every source; see `loads.py`).

String columns are Arrow `large_string`, what polars hands over without a copy; Delta stores
them as `string` either way.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from pipeline.sources.spec import SourceSpec

PARTITION_COLUMN = "partition_date"
TABLES = ("events", "dlq", "daily_metrics", "loads")
DATA_TABLES = ("events", "dlq", "daily_metrics")

ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.large_string(),
    "integer": pa.int64(),
    "float": pa.float64(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}
DUCKDB_TYPES = {"string": "VARCHAR", "integer": "BIGINT", "float": "DOUBLE", "timestamp": "TIMESTAMPTZ"}

REASON_TYPE = pa.struct([("field", pa.large_string()), ("check", pa.large_string()), ("value", pa.large_string())])

DLQ_SCHEMA = pa.schema(
    [
        pa.field(PARTITION_COLUMN, pa.date32(), nullable=False),
        pa.field("source_file", pa.large_string(), nullable=False),
        pa.field("line_number", pa.int64(), nullable=False),
        pa.field("raw_line", pa.large_string(), nullable=False),
        pa.field("raw_bytes", pa.large_binary()),
        pa.field("reasons", pa.large_list(REASON_TYPE), nullable=False),
        pa.field("reason", pa.large_string(), nullable=False),
        pa.field("run_id", pa.large_string(), nullable=False),
        pa.field("quarantined_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)


def events_schema(spec: SourceSpec) -> pa.Schema:
    """Columns of `S.events`, in table order."""
    fields = [
        pa.field(PARTITION_COLUMN, pa.date32(), nullable=False),
        pa.field("source_file", pa.large_string(), nullable=False),
        pa.field("line_number", pa.int64(), nullable=False),
        pa.field(spec.timestamp.field, ARROW_TYPES["timestamp"], nullable=False),
    ]
    # Declared fields are nullable in the table whatever the definition says (pandera enforces
    # `nullable` before a row is written): rows loaded before a field existed read NULL, and a
    # field becoming nullable later needs no change to the table.
    fields += [pa.field(name, ARROW_TYPES[field.type]) for name, field in spec.fields.items()]
    fields.append(pa.field("run_id", pa.large_string(), nullable=False))
    return pa.schema(fields)


def empty_events_relation(spec: SourceSpec) -> str:
    """A DuckDB `SELECT` of zero rows with the events columns and their SQL types, to type
    (and check) the metric expressions without any data."""
    columns = [
        ("partition_date", "DATE"),
        ("source_file", "VARCHAR"),
        ("line_number", "BIGINT"),
        (spec.timestamp.field, "TIMESTAMPTZ"),
        *[(name, DUCKDB_TYPES[field.type]) for name, field in spec.fields.items()],
        ("run_id", "VARCHAR"),
    ]
    select = ", ".join(f'NULL::{sql_type} AS "{name}"' for name, sql_type in columns)
    return f"SELECT {select} WHERE false"


def metrics_select(spec: SourceSpec, relation: str) -> str:
    """The SQL computing one row of daily metrics per `partition_date` of `relation`."""
    columns = ", ".join(f'{expression} AS "{name}"' for name, expression in spec.daily_metrics.items())
    return f"SELECT partition_date, {columns}, any_value(run_id) AS run_id FROM ({relation}) GROUP BY partition_date"


def delta_compatible(arrow_type: pa.DataType) -> pa.DataType:
    """The nearest type Delta can store: unsigned integers become signed 64-bit integers
    (DuckDB's `count` and `histogram` produce unsigned ones), strings become large strings,
    nested types are converted member by member."""
    if pa.types.is_unsigned_integer(arrow_type):
        return pa.int64()
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or pa.types.is_string_view(arrow_type):
        return pa.large_string()
    if pa.types.is_map(arrow_type):
        return pa.map_(delta_compatible(arrow_type.key_type), delta_compatible(arrow_type.item_type))
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return pa.large_list(delta_compatible(arrow_type.value_type))
    if pa.types.is_struct(arrow_type):
        return pa.struct([pa.field(f.name, delta_compatible(f.type), f.nullable) for f in arrow_type])
    if pa.types.is_timestamp(arrow_type):
        # Delta's `timestamp` is UTC microseconds; a zone-less timestamp is read as UTC.
        return pa.timestamp("us", tz="UTC")
    return arrow_type


def metrics_schema(spec: SourceSpec) -> pa.Schema:
    """Columns of `S.daily_metrics`: the partition, the metrics typed by DuckDB, the run."""
    with duckdb.connect() as connection:
        result = connection.sql(metrics_select(spec, empty_events_relation(spec))).to_arrow_table()
    fields = [pa.field(PARTITION_COLUMN, pa.date32(), nullable=False)]
    for name in spec.daily_metrics:
        fields.append(pa.field(name, delta_compatible(result.schema.field(name).type)))
    fields.append(pa.field("run_id", pa.large_string(), nullable=False))
    return pa.schema(fields)


def table_schema(spec: SourceSpec, table: str) -> pa.Schema:
    """The declared schema of one of a source's tables."""
    from pipeline.engine.lake.loads import LOADS_SCHEMA

    if table == "events":
        return events_schema(spec)
    if table == "dlq":
        return DLQ_SCHEMA
    if table == "daily_metrics":
        return metrics_schema(spec)
    if table == "loads":
        return LOADS_SCHEMA
    raise ValueError(f"unknown table {table!r}; expected one of {TABLES}")


def stats_columns(spec: SourceSpec, table: str) -> list[str]:
    """Columns whose min/max each data file records (Delta's data skipping): the ones readers
    filter on, and `run_id`, which tells which load a day's files come from (see snapshot.py)."""
    if table == "events":
        numeric = [name for name, field in spec.fields.items() if field.type in ("integer", "float", "timestamp")]
        return ["line_number", spec.timestamp.field, *numeric, "run_id"]
    if table == "dlq":
        return ["line_number", "run_id", "quarantined_at"]
    if table == "daily_metrics":
        return ["run_id"]
    return ["run_id", "attempt", "status", "ended_at"]


def table_configuration(spec: SourceSpec, table: str) -> dict[str, str]:
    """Delta table properties set when a table is created."""
    configuration = {"delta.dataSkippingStatsColumns": ",".join(stats_columns(spec, table))}
    if table == "loads":
        # The audit history: Delta itself refuses any write that would remove a row.
        configuration["delta.appendOnly"] = "true"
    return configuration
