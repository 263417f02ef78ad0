"""The schema every parsed row must pass: pandera (polars backend), with a vectorised pre-filter.

pandera's `validate` costs a fixed ~30 ms per call plus a query per column and check, so it
only judges the rows a one-query pre-filter suspects; the pre-filter mirrors pandera's
built-in checks (same operators; nulls ignored by checks and caught by nullability), and
`pipeline_tests/test_parse_prefilter.py` proves it never passes a row pandera rejects.
Failures are reported by row position (`failure_cases.index`).
"""

from __future__ import annotations

import datetime as dt
import re

import pandera.polars as pa
import polars as pl
from pandera.errors import SchemaErrors

from pipeline.sources.spec import SourceSpec

ROW = "__row"
# Longest failing value kept in a reason; the full evidence is in `raw_line`.
MAX_VALUE_CHARS = 200
POLARS_TYPES: dict[str, pl.DataType] = {
    "string": pl.String(),
    "integer": pl.Int64(),
    "float": pl.Float64(),
    "timestamp": pl.Datetime("us", "UTC"),
}
# The check name of an event outside its partition's day (± the tolerance); which day and how
# far go into the reason's value, so that one rule has one name on every day.
WITHIN_DAY = "within_day"


def pandera_check(name: str, args: object) -> pa.Check:
    """The pandera built-in check a source declares as `{name: args}`."""
    factory = getattr(pa.Check, name)
    return factory(*args) if isinstance(args, list) and name in {"in_range", "str_length"} else factory(args)


def build_schema(spec: SourceSpec, earliest: dt.datetime, latest: dt.datetime) -> pa.DataFrameSchema:
    """The source's schema for one partition: the timestamp within [earliest, latest), and
    every field's type, nullability and checks."""
    columns = {
        spec.timestamp.field: pa.Column(
            POLARS_TYPES["timestamp"],
            checks=[pa.Check.in_range(earliest, latest, include_max=False)],
            nullable=False,
        )
    }
    for name, field in spec.fields.items():
        columns[name] = pa.Column(
            POLARS_TYPES[field.type],
            checks=[pandera_check(check, args) for check, args in field.checks.items()],
            nullable=field.nullable,
        )
    # Extra bookkeeping columns (row position, file, line) are allowed through.
    return pa.DataFrameSchema(columns, strict=False, name=f"{spec.name}_events")


class SchemaJudge:
    """Finds the rows that fail a partition's schema, and why."""

    def __init__(self, spec: SourceSpec, day: dt.date) -> None:
        self.spec = spec
        tolerance = spec.timestamp.tolerance_minutes
        day_start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
        self.earliest = day_start - dt.timedelta(minutes=tolerance)
        self.latest = day_start + dt.timedelta(days=1, minutes=tolerance)
        self.day_window = f"outside {day.isoformat()} UTC ±{tolerance} min"
        self.schema = build_schema(spec, self.earliest, self.latest)
        self._partial_schemas: dict[tuple[str, ...], pa.DataFrameSchema] = {}
        # Built once, not per batch: the expressions depend only on the schema.
        self._passes_per_column = [
            pl.all_horizontal(conditions).alias(name)
            for name, column in self.schema.columns.items()
            if (conditions := _passes(name, column))
        ]

    def suspects(self, typed_frame: pl.DataFrame) -> tuple[pl.Series, list[str]]:
        """Rows that may fail the schema, and the columns they may fail on, in one polars query."""
        if not self._passes_per_column:
            return typed_frame[ROW].clear(), []
        outcome = typed_frame.select(self._passes_per_column)
        all_pass = outcome.select(pl.all().all()).row(0, named=True)
        failing = [name for name in outcome.columns if not all_pass[name]]
        if not failing:
            return typed_frame[ROW].clear(), []
        ok = outcome.select(pl.all_horizontal(failing).alias("ok"))["ok"]
        return typed_frame[ROW].filter(~ok), failing

    def _schema_for(self, columns: tuple[str, ...]) -> pa.DataFrameSchema:
        """The schema restricted to `columns` (cached: few distinct combinations occur)."""
        schema = self._partial_schemas.get(columns)
        if schema is None:
            schema = self.schema.select_columns(list(columns))
            self._partial_schemas[columns] = schema
        return schema

    def failures(self, typed_frame: pl.DataFrame) -> list[pl.DataFrame]:
        """Run pandera on the suspect rows; return failures as (row, field, check, value)."""
        if not typed_frame.height:
            return []
        suspects, columns = self.suspects(typed_frame)
        if suspects.is_empty():
            return []
        subset = typed_frame.filter(pl.col(ROW).is_in(suspects.implode()))
        try:
            self._schema_for(tuple(columns)).validate(subset, lazy=True)
        except SchemaErrors as errors:
            cases = errors.failure_cases
            data_failures = cases.filter(pl.col("index").is_not_null())
            if data_failures.height < cases.height:
                # A failure without a row position is a schema problem (e.g. a column of the
                # wrong type): that is a bug in the source definition, not bad data.
                raise
            rows = subset[ROW].gather(data_failures["index"].cast(pl.UInt32))
            out_of_day = (pl.col("column") == self.spec.timestamp.field) & pl.col("check").str.starts_with("in_range")
            value = pl.col("failure_case").cast(pl.String).str.slice(0, MAX_VALUE_CHARS)
            judged = data_failures.select(
                pl.when(out_of_day).then(pl.lit(WITHIN_DAY)).otherwise(pl.col("check")).alias("check"),
                pl.when(out_of_day)
                .then(pl.format("{}, {}", value, pl.lit(self.day_window)))
                .otherwise(value)
                .alias("value"),
            )
            return [
                pl.DataFrame(
                    {
                        ROW: rows,
                        "field": data_failures["column"],
                        "check": judged["check"],
                        "value": judged["value"],
                    }
                )
            ]
        return []


def _check_expression(value: pl.Expr, check: pa.Check) -> pl.Expr:
    """The row-wise outcome of one pandera built-in check, as pandera's polars backend computes it."""
    arguments = check.statistics
    name = check.name
    if name == "in_range":
        lower = (
            value >= arguments["min_value"] if arguments.get("include_min", True) else value > arguments["min_value"]
        )
        upper = (
            value <= arguments["max_value"] if arguments.get("include_max", True) else value < arguments["max_value"]
        )
        return lower & upper
    if name == "greater_than_or_equal_to":
        return value >= arguments["min_value"]
    if name == "greater_than":
        return value > arguments["min_value"]
    if name == "less_than_or_equal_to":
        return value <= arguments["max_value"]
    if name == "less_than":
        return value < arguments["max_value"]
    if name == "isin":
        return value.is_in(list(arguments["allowed_values"]))
    if name == "notin":
        return value.is_in(list(arguments["forbidden_values"])).not_()
    if name == "str_length":
        return value.str.len_chars().is_between(arguments["min_value"], arguments["max_value"])
    if name == "str_matches":
        pattern = arguments["pattern"]
        pattern = pattern.pattern if isinstance(pattern, re.Pattern) else pattern
        return value.str.contains(pattern if pattern.startswith("^") else f"^{pattern}")
    # Unknown to the pre-filter: send every row to pandera rather than guess.
    return pl.lit(False)


def _passes(name: str, column: pa.Column) -> list[pl.Expr]:
    """Conditions a row must meet for one column: nullability, then each check (nulls pass checks)."""
    value = pl.col(name)
    conditions = [] if column.nullable else [value.is_not_null()]
    conditions.extend((_check_expression(value, check) | value.is_null()).fill_null(False) for check in column.checks)
    return conditions
