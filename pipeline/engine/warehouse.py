"""The DuckDB warehouse: one schema per source with `events`, `dlq` and `daily_metrics`.

DuckDB allows one writing process per database file. Every connection here waits for the
file lock (bounded, logged) instead of failing, so concurrent runs are serialised; the lock
is an OS file lock, released when a process dies, so a killed run never blocks the next.
Each partition is replaced as a whole inside one transaction: a re-run, an overlapping run
or a resumed backfill leaves exactly the rows of one clean run.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import polars as pl

from pipeline.sources.spec import SourceSpec

logger = logging.getLogger(__name__)

# DuckDB's buffer pool may grow to 80% of RAM and keeps every block the load writes cached:
# capped for the load, memory stays flat however large the day (written blocks are evicted,
# not lost; a re-run deleting a 20-million-row day works within it). Measured by
# `python -m benchmarks.run` (peak RSS of a 1x and a 10x day).
LOAD_MEMORY_LIMIT = "64MB"
DUCKDB_TYPES = {"string": "VARCHAR", "integer": "BIGINT", "float": "DOUBLE", "timestamp": "TIMESTAMPTZ"}
DLQ_COLUMNS = """
    partition_date DATE NOT NULL,
    source_file VARCHAR NOT NULL,
    line_number BIGINT NOT NULL,
    raw_line VARCHAR NOT NULL,
    raw_bytes BLOB,
    reasons STRUCT(field VARCHAR, "check" VARCHAR, value VARCHAR)[] NOT NULL,
    reason VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL,
    quarantined_at TIMESTAMPTZ NOT NULL
"""


class WarehouseLockTimeout(RuntimeError):
    """Another process held the warehouse for longer than the configured wait."""


class SchemaMismatchError(RuntimeError):
    """The warehouse table does not have the columns the source declares."""


def _is_lock_error(error: duckdb.Error) -> bool:
    return "lock" in str(error).lower()


class Warehouse:
    """Access to the DuckDB database file at `path`."""

    def __init__(self, path: Path, lock_timeout_s: float = 600.0) -> None:
        self.path = path
        self.lock_timeout_s = lock_timeout_s

    @contextmanager
    def connect(
        self,
        read_only: bool = False,
        log: logging.Logger | logging.LoggerAdapter | None = None,  # type: ignore[type-arg]
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open the database, waiting while another process holds it (any connection, read-only
        ones too), with a line every ~10 s on `log` (the run's log: a plain module logger is
        not shown in Dagster's run log)."""
        log = logger if log is None else log
        self.path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        deadline = started + self.lock_timeout_s
        delay, last_log = 0.05, float("-inf")
        while True:
            try:
                connection = duckdb.connect(str(self.path), read_only=read_only)
                break
            except duckdb.IOException as error:
                if not _is_lock_error(error):
                    raise
                now = time.monotonic()
                if now >= deadline:
                    raise WarehouseLockTimeout(
                        f"warehouse {self.path} stayed locked by another process for "
                        f"{self.lock_timeout_s:.0f} s: {error}"
                    ) from error
                if now - last_log > 10:
                    log.info(
                        "warehouse %s is in use by another process; waiting (%.0f s so far, at most %.0f s)",
                        self.path,
                        now - started,
                        self.lock_timeout_s,
                    )
                    last_log = now
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        try:
            yield connection
        finally:
            connection.close()

    @staticmethod
    def configure_for_load(connection: duckdb.DuckDBPyConnection) -> None:
        """Settings of the connection that loads a partition (the ingest, and the benchmark of
        the append alone)."""
        connection.execute(f"SET memory_limit = '{LOAD_MEMORY_LIMIT}'")
        # One DuckDB thread: the parse threads already use every core, and a single-threaded
        # append of batches this size is faster than a contended parallel one (measured:
        # ~1.2M vs ~0.85M rows/s on 2 cores).
        connection.execute("SET threads = 1")

    # -- tables --------------------------------------------------------------------------
    def ensure_tables(self, connection: duckdb.DuckDBPyConnection, spec: SourceSpec) -> None:
        """Create the source's schema and tables if absent; refuse a table whose columns differ."""
        schema = spec.name
        columns = {spec.timestamp.field: "TIMESTAMPTZ"}
        columns.update({name: DUCKDB_TYPES[field.type] for name, field in spec.fields.items()})
        declared = ",\n".join(f'    "{name}" {sql_type}' for name, sql_type in columns.items())
        connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        connection.execute(
            f"""CREATE TABLE IF NOT EXISTS "{schema}".events (
    partition_date DATE NOT NULL,
    source_file VARCHAR NOT NULL,
    line_number BIGINT NOT NULL,
{declared},
    run_id VARCHAR NOT NULL
)"""
        )
        connection.execute(f'CREATE TABLE IF NOT EXISTS "{schema}".dlq ({DLQ_COLUMNS})')
        metric_columns = ",\n".join(f'    {expression} AS "{name}"' for name, expression in spec.daily_metrics.items())
        connection.execute(
            f"""CREATE TABLE IF NOT EXISTS "{schema}".daily_metrics AS
SELECT partition_date,
{metric_columns}
FROM "{schema}".events WHERE false GROUP BY partition_date"""
        )
        expected = ["partition_date", "source_file", "line_number", *columns, "run_id"]
        actual = [
            row[0]
            for row in connection.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = ? AND table_name = 'events' ORDER BY ordinal_position",
                [schema],
            ).fetchall()
        ]
        if actual != expected:
            raise SchemaMismatchError(
                f'table "{schema}".events in {self.path} has columns {actual}, but source '
                f"{schema!r} declares {expected}; migrate or drop the table before loading"
            )

    # -- partition replacement --------------------------------------------------------------
    @staticmethod
    def delete_partition(connection: duckdb.DuckDBPyConnection, spec: SourceSpec, day: dt.date) -> None:
        """Remove a day's events, quarantined rows and metrics (inside the caller's transaction).

        The metrics go too: they describe the events being replaced, and `daily_metrics`
        recomputes them only when the new load passes its blocking check; otherwise the day
        has no metrics row rather than one that contradicts its events.
        """
        for table in ("events", "dlq", "daily_metrics"):
            connection.execute(f'DELETE FROM "{spec.name}".{table} WHERE partition_date = ?', [day])

    @staticmethod
    def insert(connection: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> None:
        """Append a batch (columns matched by name) to `table`."""
        if frame.height == 0:
            return
        # Arrow string views: DuckDB reads them without a conversion pass (~10% of the insert).
        batch = frame.to_arrow(compat_level=pl.CompatLevel.newest())  # noqa: F841 - read by name by DuckDB
        connection.execute(f"INSERT INTO {table} BY NAME SELECT * FROM batch")

    @staticmethod
    def replace_daily_metrics(connection: duckdb.DuckDBPyConnection, spec: SourceSpec, day: dt.date) -> int:
        """Recompute a day's metrics from its events; returns the rows written (0 for an empty day)."""
        schema = spec.name
        metric_columns = ", ".join(f'{expression} AS "{name}"' for name, expression in spec.daily_metrics.items())
        connection.execute("BEGIN TRANSACTION")
        try:
            connection.execute(f'DELETE FROM "{schema}".daily_metrics WHERE partition_date = ?', [day])
            connection.execute(
                f'INSERT INTO "{schema}".daily_metrics BY NAME SELECT partition_date, {metric_columns} '
                f'FROM "{schema}".events WHERE partition_date = ? GROUP BY partition_date',
                [day],
            )
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        row = connection.execute(
            f'SELECT count(*) FROM "{schema}".daily_metrics WHERE partition_date = ?', [day]
        ).fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    def daily_metrics(connection: duckdb.DuckDBPyConnection, spec: SourceSpec, day: dt.date) -> dict[str, object]:
        """The stored metrics row of a day as a dict (empty when the day had no events)."""
        cursor = connection.execute(f'SELECT * FROM "{spec.name}".daily_metrics WHERE partition_date = ?', [day])
        row = cursor.fetchone()
        if row is None:
            return {}
        return {column[0]: value for column, value in zip(cursor.description, row, strict=True)}
