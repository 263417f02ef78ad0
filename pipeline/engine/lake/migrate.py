"""Migrating a source's tables to a changed definition: the one schema change that needs a step.

Adding fields or metrics needs none (`SourceTables.ensure` adds the columns). A changed type,
a removed or a renamed column is refused at the first load; `pipeline lake migrate` shows
what would change and, with `--apply`, rewrites each affected table under the declared schema
in one Delta commit per table (the previous version stays readable by time travel until
vacuumed):

- a column no longer declared is dropped (unless `--rename OLD=NEW` keeps its data under the
  new name);
- a column whose type changed is cast; a value that does not convert (e.g. text into an
  integer) stops the migration before anything is written, with the count and an example;
- `daily_metrics` is rewritten the same way (a changed metric is recomputed by materializing
  `S/daily_metrics` for the days afterwards).

Pause the writers first (`dagster instance concurrency set lake_writers 0`): a day replaced
while a table is rewritten makes one of the two commits fail.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, write_deltalake

from pipeline.engine.lake.datasets import files_dataset, table_files
from pipeline.engine.lake.schemas import DATA_TABLES, PARTITION_COLUMN
from pipeline.engine.lake.tables import SourceTables, plan_schema

logger = logging.getLogger(__name__)


class MigrationError(RuntimeError):
    """The tables cannot be migrated as asked; nothing was written."""


@dataclass
class TableMigration:
    """How one table changes."""

    table: str
    renamed: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    cast: dict[str, str] = field(default_factory=dict)  # column -> "old -> new"
    added: list[str] = field(default_factory=list)
    rows: int = 0

    @property
    def needed(self) -> bool:
        """Whether the table's files must be rewritten."""
        return bool(self.renamed or self.dropped or self.cast)

    def describe(self) -> str:
        """One line per change."""
        parts = [f"rename {old} -> {new}" for old, new in self.renamed.items()]
        parts += [f"drop {name}" for name in self.dropped]
        parts += [f"cast {name}: {change}" for name, change in self.cast.items()]
        parts += [f"add {name} (NULL for earlier days)" for name in self.added]
        return f"{self.table}: " + ("; ".join(parts) if parts else "no change")


def plan_migration(tables: SourceTables, renames: Mapping[str, str]) -> list[TableMigration]:
    """What migrating each table to the declared schema means."""
    plans = []
    for table in DATA_TABLES:
        if not tables.exists(table):
            continue
        current = pa.schema(tables.open(table).schema().to_arrow())
        declared = tables.schemas[table]
        migration = TableMigration(table)
        for old, new in renames.items():
            if old in current.names:
                if new not in declared.names:
                    raise MigrationError(f"--rename {old}={new}: {new!r} is not declared in {table}")
                migration.renamed[old] = new
        renamed_names = [migration.renamed.get(name, name) for name in current.names]
        plan = plan_schema(
            tables.spec, table, pa.schema([pa.field(n, current.field(i).type) for i, n in enumerate(renamed_names)])
        )
        migration.added = [column.name for column in plan.added]
        for name in renamed_names:
            if name not in declared.names:
                migration.dropped.append(name)
            else:
                old_type = current.field(renamed_names.index(name)).type
                new_type = declared.field(name).type
                if not _same(old_type, new_type):
                    migration.cast[name] = f"{old_type} -> {new_type}"
        migration.rows = tables.open(table).count()
        plans.append(migration)
    return plans


def _same(left: pa.DataType, right: pa.DataType) -> bool:
    def normal(kind: pa.DataType) -> str:
        return str(kind).replace("large_string", "string").replace("large_list", "list")

    return normal(left) == normal(right)


def apply_migration(
    tables: SourceTables,
    plans: list[TableMigration],
    log: logging.Logger | logging.LoggerAdapter = logger,  # type: ignore[type-arg]
) -> dict[str, int]:
    """Rewrite each table that needs it; returns table -> new version."""
    versions: dict[str, int] = {}
    for migration in plans:
        if not migration.needed:
            continue
        declared = tables.schemas[migration.table]
        source = tables.open(migration.table)
        current = pa.schema(source.schema().to_arrow())
        dataset = files_dataset(tables.location, tables.uri(migration.table), current, table_files(source))
        _precheck_casts(dataset, migration, declared)
        batches = _converted(dataset.to_batches(), migration, declared)
        target = tables.open(migration.table)
        write_deltalake(
            target,
            pa.RecordBatchReader.from_batches(declared, batches),
            mode="overwrite",
            schema_mode="overwrite",
            partition_by=[PARTITION_COLUMN],
            commit_properties=CommitProperties(
                custom_metadata={"pipeline.operation": "migrate", "pipeline.plan": migration.describe()}
            ),
        )
        versions[migration.table] = target.version()
        log.info(
            "migrated %s.%s (%s) to version %d",
            tables.spec.name,
            migration.table,
            migration.describe(),
            target.version(),
        )
    return versions


def _converted(
    batches: Iterator[pa.RecordBatch], migration: TableMigration, declared: pa.Schema
) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        names = [migration.renamed.get(name, name) for name in batch.schema.names]
        table = pa.Table.from_batches([batch]).rename_columns(names)
        columns = []
        for column in declared:
            if column.name in table.column_names:
                columns.append(pc.cast(table.column(column.name), column.type, safe=True))
            else:
                columns.append(pa.nulls(table.num_rows, column.type))
        yield from pa.Table.from_arrays(columns, schema=declared).to_batches()


def _precheck_casts(dataset: object, migration: TableMigration, declared: pa.Schema) -> None:
    """Refuse a cast that would turn a value into NULL (text into a number, say), before any
    write: counted with polars' non-strict cast (null where a value does not convert)."""
    for name in migration.cast:
        old_name = next((old for old, new in migration.renamed.items() if new == name), name)
        target = pl.from_arrow(pa.table({"x": pa.array([], declared.field(name).type)})).schema["x"]
        failures, example = 0, None
        for batch in dataset.to_batches(columns=[old_name]):  # type: ignore[attr-defined]
            column = pl.from_arrow(batch.column(0))
            converted = column.cast(target, strict=False)
            mismatched = column.is_not_null() & converted.is_null()
            failures += int(mismatched.sum())
            if example is None and mismatched.any():
                example = column.filter(mismatched)[0]
        if failures:
            raise MigrationError(
                f"{migration.table}.{name}: {failures:,} value(s) do not convert ({migration.cast[name]}), e.g. "
                f"{example!r}; nothing was written. Keep the old type, or declare the field under a new name."
            )
