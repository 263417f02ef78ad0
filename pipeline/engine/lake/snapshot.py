"""Reading the lake: a consistent snapshot of every table, and a DuckDB connection over it.

A day is replaced by one commit per table (events, then dlq, then daily_metrics) and sealed
by its `loads` row. A reader of the raw tables could catch a day between two of those
commits (or after a writer was killed between them): events of the new load beside the DLQ
of the old one. Through this module it cannot:

1. `loads` is read first. For each day, the latest attempt that sealed it names the run whose
   rows the day must show, how many rows each table got, and the table versions it committed.
2. Each data table's current files are grouped by day, from the Delta log alone (row counts
   and the `run_id` statistics of each file; no data is read).
3. A day whose current files are exactly the sealing run's (same run, same row count) is read
   from them. A day caught mid-replacement (or left half-replaced) is read from the table
   *at the version its sealing load committed*, i.e. as that load left it. Rows of a day no
   load has sealed yet are not shown.

So all of a day's tables always show the rows of one run. Files are pinned when the snapshot
is taken: a long query keeps reading them while writers commit, never blocking them (Delta
only removes files logically; `vacuum` deletes them after the retention, see maintenance.py).

DuckDB 2.0 here has no `delta` (nor `httpfs`) extension, so each table is handed to DuckDB as
a pyarrow dataset over the chosen files (through delta-rs's own object store on S3), which
DuckDB scans with projection and filter pushdown.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError, TableNotFoundError

from pipeline.engine.lake.datasets import files_dataset, table_files
from pipeline.engine.lake.loads import LoadRecord, sealed_by_day
from pipeline.engine.lake.location import LakeLocation
from pipeline.engine.lake.schemas import DATA_TABLES, PARTITION_COLUMN
from pipeline.engine.lake.tables import SourceTables
from pipeline.sources.spec import SourceSpec

logger = logging.getLogger(__name__)

AsOf = int | dt.datetime | None


class UnreadableTable(Exception):
    """A table of a source whose Delta log cannot be read (a corrupt or hand-edited entry)."""

    def __init__(self, table: str, error: BaseException) -> None:
        # The first line only: delta-rs appends a Rust backtrace when RUST_BACKTRACE is set.
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        super().__init__(f"{table}: {reason}")


def expected_rows(record: LoadRecord, table: str) -> int:
    """How many rows the sealing load left in `table` for its day."""
    return {"events": record.rows_loaded, "dlq": record.rows_quarantined, "daily_metrics": record.metrics_rows}[table]


def committed_version(record: LoadRecord, table: str) -> int | None:
    """The version of `table` the sealing load committed."""
    return {"events": record.events_version, "dlq": record.dlq_version, "daily_metrics": record.daily_metrics_version}[
        table
    ]


@dataclass
class DayFiles:
    """The files of one day in one table snapshot, summarised from the Delta log."""

    paths: list[str] = field(default_factory=list)
    rows: int = 0
    runs: set[str] = field(default_factory=set)

    def matches(self, run_id: str, rows: int) -> bool:
        """Whether these files are exactly what the given load wrote."""
        return self.rows == rows and (rows == 0 or self.runs == {run_id})


def files_by_day(delta_table: DeltaTable) -> dict[str, DayFiles]:
    """Each day's files, row count and the runs that wrote them, from the add actions."""
    actions = pa.table(delta_table.get_add_actions(flatten=True))
    days: dict[str, DayFiles] = {}
    if actions.num_rows == 0:
        return days
    names = set(actions.column_names)
    columns = {
        "path": actions.column("path").to_pylist(),
        "rows": actions.column("num_records").to_pylist(),
        "day": actions.column(f"partition.{PARTITION_COLUMN}").to_pylist(),
        "min": actions.column("min.run_id").to_pylist() if "min.run_id" in names else [None] * actions.num_rows,
        "max": actions.column("max.run_id").to_pylist() if "max.run_id" in names else [None] * actions.num_rows,
    }
    for path, rows, day, low, high in zip(*columns.values(), strict=True):
        entry = days.setdefault(_day_key(day), DayFiles())
        entry.paths.append(path)
        entry.rows += int(rows or 0)
        # A file without statistics cannot be attributed to a run: mark it so it never matches.
        entry.runs.update({low, high} if low is not None and high is not None else {"<unknown>"})
    return days


def _day_key(value: object) -> str:
    return value.isoformat() if isinstance(value, dt.date) else str(value)


class SourceSnapshot:
    """A consistent snapshot of one source's tables (see the module docstring)."""

    def __init__(self, tables: SourceTables, as_of: AsOf = None) -> None:
        self.tables = tables
        self.spec = tables.spec
        self.as_of = as_of
        self.warnings: list[str] = []
        loads = self._open("loads")
        self.loads_table = loads
        self.records: list[LoadRecord] = tables.read_loads(delta_table=loads) if loads is not None else []
        self.sealed: dict[str, LoadRecord] = sealed_by_day(self.records)
        self._versions: dict[tuple[str, int], dict[str, DayFiles] | None] = {}
        self.schemas: dict[str, pa.Schema] = dict(tables.schemas)
        self.files: dict[str, list[str]] = {}
        hidden: set[str] = set()
        chosen: dict[str, dict[str, list[str]]] = {}
        for table in DATA_TABLES:
            chosen[table], unreadable = self._choose(table)
            hidden |= unreadable
        for table in DATA_TABLES:
            self.files[table] = [
                path for day, paths in sorted(chosen[table].items()) if day not in hidden for path in paths
            ]
        self.hidden_days = sorted(hidden)

    def _open(self, table: str, version: int | None = None) -> DeltaTable | None:
        try:
            delta_table = self.tables.open(table, version=version)
        except TableNotFoundError:
            return None
        except DeltaError as error:
            raise UnreadableTable(f"{self.spec.name}.{table}", error) from error
        if version is None and self.as_of is not None:
            try:
                delta_table.load_as_version(self.as_of)
            except (DeltaError, ValueError, OSError) as error:
                logger.info("%s.%s did not exist at %s: %s", self.spec.name, table, self.as_of, error)
                return None
        return delta_table

    def _at_version(self, table: str, version: int) -> dict[str, DayFiles] | None:
        key = (table, version)
        if key not in self._versions:
            try:
                delta_table = self.tables.open(table, version=version)
                self._versions[key] = files_by_day(delta_table)
            except (DeltaError, OSError, ValueError) as error:
                logger.warning("%s.%s version %d is no longer readable: %s", self.spec.name, table, version, error)
                self._versions[key] = None
        return self._versions[key]

    def _choose(self, table: str) -> tuple[dict[str, list[str]], set[str]]:
        """Per sealed day, the files to read; and the days that cannot be shown consistently."""
        delta_table = self._open(table)
        if delta_table is not None:
            # Read with the table's own schema, not the definition's: a definition changed but
            # not migrated yet (see migrate.py) must not make the stored rows unreadable.
            self.schemas[table] = pa.schema(delta_table.schema().to_arrow(as_large_types=True))
        current = files_by_day(delta_table) if delta_table is not None else {}
        chosen: dict[str, list[str]] = {}
        unreadable: set[str] = set()
        for day, record in self.sealed.items():
            rows = expected_rows(record, table)
            files = current.get(day, DayFiles())
            if files.matches(record.run_id, rows):
                chosen[day] = files.paths
                continue
            version = committed_version(record, table)
            older = self._at_version(table, version) if version is not None else None
            files = (older or {}).get(day, DayFiles()) if older is not None else None
            if files is not None and files.matches(record.run_id, rows):
                chosen[day] = files.paths
                continue
            unreadable.add(day)
            why = (
                f"its version {version} is no longer readable (vacuumed?)"
                if version is not None and older is None
                else f"its version {version} does not hold them either"
            )
            self.warnings.append(
                f"{self.spec.name} {day}: {table} does not hold the rows of its last complete load (run "
                f"{record.run_id}, {rows:,} rows) and {why}; the day is left out of every table. "
                "Re-run the day to replace it."
            )
        unsealed = sorted(set(current) - set(self.sealed))
        if unsealed:
            logger.debug("%s.%s: rows of days no load has sealed yet are hidden: %s", self.spec.name, table, unsealed)
        return chosen, unreadable

    def torn_days(self) -> dict[str, list[str]]:
        """Days whose current files in some table are not their sealing load's (a replacement in
        progress, or one left half-done by a killed writer): day -> tables."""
        torn: dict[str, list[str]] = {}
        for table in DATA_TABLES:
            delta_table = self._open(table)
            current = files_by_day(delta_table) if delta_table is not None else {}
            for day, record in self.sealed.items():
                if not current.get(day, DayFiles()).matches(record.run_id, expected_rows(record, table)):
                    torn.setdefault(day, []).append(table)
            for day in set(current) - set(self.sealed):
                torn.setdefault(day, []).append(table)
        return dict(sorted(torn.items()))

    def dataset(self, table: str) -> ds.Dataset:
        """The snapshot of one table as a pyarrow dataset (partition column included)."""
        if table == "loads":
            paths = table_files(self.loads_table) if self.loads_table is not None else []
        else:
            paths = self.files[table]
        return files_dataset(self.tables.location, self.tables.uri(table), self.schemas[table], paths)


def connect(
    location: LakeLocation,
    specs: Iterable[SourceSpec],
    *,
    as_of: AsOf = None,
    connection: duckdb.DuckDBPyConnection | None = None,
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with one schema per source and a view per table (`access.events`,
    `access.dlq`, `access.daily_metrics`, `access.loads`, ...) over a consistent snapshot,
    optionally as of a past version or time. Nothing is copied: DuckDB reads the Parquet files.

    Warnings about days that could not be shown are logged, and listed in the view
    `pipeline_lake.warnings`."""
    connection = connection if connection is not None else duckdb.connect()
    warnings: list[tuple[str, str]] = []
    for spec in specs:
        connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{spec.name}"')
        try:
            snapshot = SourceSnapshot(SourceTables(location, spec), as_of=as_of)
        except UnreadableTable as error:
            # One broken table must not take every other source down with it: this source's
            # views fail, when queried, with the reason; the others read as usual.
            problem = (
                f"{spec.name} is unreadable: {error}; re-run after repairing or restoring that table's _delta_log "
                "(its tables are not shown, so that no day is shown half-replaced)"
            )
            logger.warning("%s", problem)
            warnings.append((spec.name, problem))
            quoted = problem.replace("'", "''")
            for table in (*DATA_TABLES, "loads"):
                connection.execute(
                    f'CREATE OR REPLACE VIEW "{spec.name}".{table} AS SELECT * FROM (SELECT 1 AS unreadable) '
                    f"WHERE error('{quoted}') IS NULL"
                )
            continue
        for table in (*DATA_TABLES, "loads"):
            name = f"__lake_{spec.name}_{table}"
            connection.register(name, snapshot.dataset(table))
            connection.execute(f'CREATE OR REPLACE VIEW "{spec.name}".{table} AS SELECT * FROM "{name}"')
        for warning in snapshot.warnings:
            logger.warning("%s", warning)
            warnings.append((spec.name, warning))
    connection.execute("CREATE SCHEMA IF NOT EXISTS pipeline_lake")
    connection.register(
        "__lake_warnings",
        pa.table(
            {"source": [w[0] for w in warnings], "warning": [w[1] for w in warnings]},
            schema=pa.schema([("source", pa.string()), ("warning", pa.string())]),
        ),
    )
    connection.execute("CREATE OR REPLACE VIEW pipeline_lake.warnings AS SELECT * FROM __lake_warnings")
    return connection


def day_dataset(tables: SourceTables, table: str, day: dt.date, version: int) -> ds.Dataset:
    """One day of one table exactly as committed at `version` (e.g. the events a load just
    wrote, for its metrics)."""
    paths = table_files(tables.open(table, version=version), [day])
    return files_dataset(tables.location, tables.uri(table), tables.schemas[table], paths)


__all__ = ["AsOf", "DayFiles", "SourceSnapshot", "UnreadableTable", "connect", "day_dataset", "files_by_day"]
