"""Prove a source's `daily_metrics` SQL binds against its events columns, before anything runs.

Each metric is a DuckDB aggregate expression over one day's events. It is bound (parsed, its
columns and functions resolved, its type found) by DuckDB against an *empty* events table of
the source's schema, inside the very query shape that computes the metrics, so a typo in a
column, a syntax error or a non-aggregate expression is refused when the definitions load,
not when a day has already been loaded. Nothing is read: the table is empty and in memory.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping

import duckdb

DUCKDB_TYPES = {"string": "VARCHAR", "integer": "BIGINT", "float": "DOUBLE", "timestamp": "TIMESTAMPTZ"}
_lock = threading.Lock()
_database: duckdb.DuckDBPyConnection | None = None


def events_columns(timestamp_field: str, field_types: Mapping[str, str]) -> dict[str, str]:
    """The events table's columns and DuckDB types, in table order."""
    columns = {"partition_date": "DATE", "source_file": "VARCHAR", "line_number": "BIGINT"}
    columns[timestamp_field] = "TIMESTAMPTZ"
    columns.update({name: DUCKDB_TYPES[kind] for name, kind in field_types.items()})
    columns["run_id"] = "VARCHAR"
    return columns


def metric_query(expression: str, name: str, table: str = "events") -> str:
    """The query that computes one metric of a day (the day is the query's parameter)."""
    return (
        f'SELECT partition_date, {expression} AS "{name}" FROM {table} WHERE partition_date = ? GROUP BY partition_date'
    )


def _cursor() -> duckdb.DuckDBPyConnection:
    """A fresh connection to one shared in-memory database (cheap; temporary tables are its own)."""
    global _database
    with _lock:
        if _database is None:
            _database = duckdb.connect(":memory:", config={"threads": 1})
        return _database.cursor()


def check_metrics(timestamp_field: str, field_types: Mapping[str, str], metrics: Mapping[str, str]) -> None:
    """Raise `ValueError` naming the first metric that does not bind, DuckDB's reason, and the
    columns it may use."""
    columns = events_columns(timestamp_field, field_types)
    failure = _first_failure(columns, metrics)
    if failure is not None:
        name, problem = failure
        available = ", ".join(f"{column} {kind}" for column, kind in columns.items())
        raise ValueError(
            f"daily_metrics.{name}: {metrics[name]!r} does not bind against the events columns: {problem}. "
            f"Write one aggregate SQL expression (e.g. count(*), sum(bytes)) over: {available}"
        )


def _first_failure(columns: Mapping[str, str], metrics: Mapping[str, str]) -> tuple[str, str] | None:
    """(metric, DuckDB's reason) of the first metric that does not bind, or None. The error is
    raised by the caller, outside this frame, so that no traceback keeps a DuckDB connection."""
    cursor = _cursor()
    try:
        declared = ", ".join(f'"{column}" {kind}' for column, kind in columns.items())
        cursor.execute(f"CREATE TEMP TABLE events ({declared})")
        for name, expression in metrics.items():
            problem = _bind_problem(cursor, expression, name)
            if problem:
                return name, problem
        return None
    finally:
        cursor.close()


def _bind_problem(cursor: duckdb.DuckDBPyConnection, expression: str, name: str) -> str | None:
    """Why `expression` cannot be a metric, or None. It must be one expression both as written
    and in parentheses: a comment or a `FROM` inside it would otherwise change the query."""
    for candidate in (f"({expression})", expression):
        query = metric_query(candidate, name)
        try:
            if len(duckdb.extract_statements(query)) != 1:
                return "it is more than one SQL statement"
            cursor.execute(query, ["2000-01-01"])
        except duckdb.Error as error:
            return str(error).strip().splitlines()[0]
    return None


def metric_columns(
    timestamp_field: str, field_types: Mapping[str, str], metrics: Mapping[str, str]
) -> dict[str, list[str]]:
    """The events columns each metric reads, in table order (`count(*)` reads none): from
    DuckDB's own parse tree of the expression, so a column named inside a string literal is not
    one. For the catalog's column lineage of `S/daily_metrics`."""
    columns = events_columns(timestamp_field, field_types)
    cursor = _cursor()
    try:
        found: dict[str, list[str]] = {}
        for name, expression in metrics.items():
            (tree,) = cursor.execute("SELECT json_serialize_sql(?)", [f"SELECT {expression} FROM events"]).fetchone()
            referenced = {names[-1] for names in _column_refs(json.loads(tree))}
            found[name] = [column for column in columns if column in referenced]
        return found
    finally:
        cursor.close()


def _column_refs(node: object) -> Iterator[list[str]]:
    if isinstance(node, dict):
        if node.get("class") == "COLUMN_REF" and isinstance(node.get("column_names"), list):
            yield node["column_names"]
        for value in node.values():
            yield from _column_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _column_refs(value)
