"""A source's four Delta tables: created up front, evolved on purpose, a day replaced at a time.

- **Created up front**, empty, with their schema, partitioning and properties, before the
  first write: a first write without a predicate never creates (or overwrites) a table
  (dagster issue #34064 shows how that lost whole tables).
- **Evolved on purpose**: a field or metric added to the definition adds a nullable column
  (older days read NULL); a changed type, a removed or a renamed column is refused before any
  write, naming the source, the column, the old and new types and what to do.
- **A day replaced** is one Delta transaction per table that adds the day's new files and
  removes all of its old ones (an overwrite restricted to `partition_date = day`). Delta's
  optimistic concurrency makes two writers of *different* days both succeed and two writers
  of the *same* day fail one of them cleanly (`CommitFailedError`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable
from deltalake import Field as DeltaField
from deltalake import Schema as DeltaSchema
from deltalake.exceptions import CommitFailedError, TableNotFoundError
from deltalake.transaction import AddAction

from pipeline.engine.lake.datasets import files_dataset, table_files
from pipeline.engine.lake.loads import SEALING_STATUSES, LoadRecord, latest_by_day, records_table, sealed_by_day
from pipeline.engine.lake.location import LakeLocation
from pipeline.engine.lake.schemas import (
    ARROW_TYPES,
    PARTITION_COLUMN,
    TABLES,
    stats_columns,
    table_configuration,
    table_schema,
)
from pipeline.sources.spec import SourceSpec

logger = logging.getLogger(__name__)

# Custom commit metadata key: a unique token per commit, to find the version it got.
COMMIT_TOKEN = "pipeline.commit"
# Tries of one day's commit racing with commits to other days (see `replace_day`).
COMMIT_ATTEMPTS = 10


class SchemaChangeError(RuntimeError):
    """A table's columns cannot follow the source definition without a migration."""


@dataclass
class SchemaPlan:
    """How one table must change to follow the definition."""

    table: str
    added: list[pa.Field] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _delta_types(schema: pa.Schema) -> dict[str, Any]:
    """Column name -> Delta type (JSON form), which is how two schemas are compared: Arrow's
    string and large_string are the same Delta `string`."""
    document = json.loads(DeltaSchema.from_arrow(schema).to_json())
    return {item["name"]: item["type"] for item in document["fields"]}


def _type_name(delta_type: Any) -> str:
    """A Delta type as the source definition names it where it can (`integer`, `string`...)."""
    names = {json.dumps(_delta_types(pa.schema([("x", arrow)]))["x"]): name for name, arrow in ARROW_TYPES.items()}
    text = json.dumps(delta_type)
    return names.get(text, delta_type if isinstance(delta_type, str) else text)


def plan_schema(spec: SourceSpec, table: str, current: pa.Schema) -> SchemaPlan:
    """Compare a table's current schema with what the definition declares."""
    declared = table_schema(spec, table)
    plan = SchemaPlan(table)
    have, want = _delta_types(current), _delta_types(declared)
    removed = [name for name in have if name not in want]
    added = [name for name in want if name not in have]
    kind = "metric" if table == "daily_metrics" else "field"
    for name in want:
        if name in have and have[name] != want[name]:
            plan.problems.append(
                f"{kind} {name!r} changed type from {_type_name(have[name])} to {_type_name(want[name])}"
            )
    for name in removed:
        plan.problems.append(
            f"{kind} {name!r} ({_type_name(have[name])}) is in the table but no longer declared"
            + (f" (renamed to {added[0]!r}?)" if len(removed) == 1 and len(added) == 1 else "")
        )
    plan.added = [declared.field(name).with_nullable(True) for name in added]
    return plan


def schema_change_message(spec: SourceSpec, location: LakeLocation, plans: Sequence[SchemaPlan]) -> str:
    """The refusal an operator reads: what changed, where, and the way out."""
    lines = [
        f"source {spec.name!r}: the definition no longer matches its tables in {location.root}, so nothing was written:"
    ]
    for plan in plans:
        lines.extend(f"  - {spec.name}.{plan.table}: {problem}" for problem in plan.problems)
    lines.append(
        "Adding fields or metrics needs no step. To change a type, remove or rename a column, either revert the "
        f"definition or migrate the table: `pipeline lake migrate --source {spec.name}` shows the plan and "
        "`--apply` rewrites the table under the new schema (README, 'Schema changes'); "
        "a rename keeps its data with `--rename OLD=NEW`."
    )
    return "\n".join(lines)


class SourceTables:
    """The Delta tables of one source at one lake location."""

    def __init__(self, location: LakeLocation, spec: SourceSpec) -> None:
        self.location = location
        self.spec = spec
        self._ensured = False

    def uri(self, table: str) -> str:
        """URI of one of the source's tables."""
        return self.location.table_uri(self.spec.name, table)

    @cached_property
    def schemas(self) -> dict[str, pa.Schema]:
        """The declared schema of each table."""
        return {table: table_schema(self.spec, table) for table in TABLES}

    def open(self, table: str, version: int | None = None) -> DeltaTable:
        """The table's current snapshot (or the one at `version`)."""
        return DeltaTable(self.uri(table), version=version, storage_options=self.location.options())

    def exists(self, table: str) -> bool:
        """Whether the table has been created."""
        return DeltaTable.is_deltatable(self.uri(table), storage_options=self.location.options())

    # -- creation and evolution -------------------------------------------------------------
    def ensure(self, log: logging.Logger | logging.LoggerAdapter = logger) -> list[str]:  # type: ignore[type-arg]
        """Create missing tables, add declared columns that are new; refuse any other schema
        change (`SchemaChangeError`) before anything is written. Returns what was changed.
        Checked once per object (a run's loads of many days check once)."""
        if self._ensured:
            return []
        changes: list[str] = []
        plans: list[tuple[DeltaTable, SchemaPlan]] = []
        for table in TABLES:
            delta_table = self._open_or_create(table, changes, log)
            plan = plan_schema(self.spec, table, pa.schema(delta_table.schema().to_arrow()))
            plans.append((delta_table, plan))
        problems = [plan for _, plan in plans if plan.problems]
        if problems:
            raise SchemaChangeError(schema_change_message(self.spec, self.location, problems))
        for delta_table, plan in plans:
            if plan.added:
                delta_table.alter.add_columns([DeltaField.from_arrow(column) for column in plan.added])
                names = ", ".join(column.name for column in plan.added)
                changes.append(f"{self.spec.name}.{plan.table}: added {names} (earlier days read NULL)")
                log.info("lake: %s", changes[-1])
        self._ensured = True
        return changes

    def _open_or_create(
        self,
        table: str,
        changes: list[str],
        log: logging.Logger | logging.LoggerAdapter,  # type: ignore[type-arg]
    ) -> DeltaTable:
        try:
            return self.open(table)
        except TableNotFoundError:
            pass
        created = DeltaTable.create(
            self.uri(table),
            self.schemas[table],
            # Another process may create it at the same moment: "ignore" keeps whichever won.
            mode="ignore",
            partition_by=[PARTITION_COLUMN],
            name=f"{self.spec.name}.{table}",
            description=f"{table} of log source {self.spec.name!r} (one partition per UTC day)",
            configuration=table_configuration(self.spec, table),
            storage_options=self.location.options(),
        )
        changes.append(f"{self.spec.name}.{table}: created at {self.uri(table)}")
        log.info("lake: %s", changes[-1])
        return created

    # -- writes ---------------------------------------------------------------------------
    def replace_day(
        self,
        table: str,
        day: dt.date,
        actions: list[AddAction],
        *,
        run_id: str,
        attempt: int,
        snapshot: DeltaTable | None = None,
    ) -> int:
        """Commit `actions` as the whole content of `day` in `table` (removing every file the
        day had); returns the committed version. The caller holds the day's lock.

        delta-rs records no read predicate for such a commit, so it conflicts with any
        concurrent commit that removed files, even of another day (another day replaced, a
        compaction). Holding the day's lock, nothing else replaces *this* day, so the commit is
        simply made again on the newest version: it then removes whatever the day holds by
        then (a compaction's rewrite of its old files included)."""
        delta_table = snapshot if snapshot is not None else self.open(table)
        for attempt_number in range(1, COMMIT_ATTEMPTS + 1):
            read_version = delta_table.version()
            token = uuid.uuid4().hex
            try:
                delta_table.create_write_transaction(
                    actions,
                    mode="overwrite",
                    schema=delta_table.schema(),
                    partition_by=[PARTITION_COLUMN],
                    partition_filters=[(PARTITION_COLUMN, "=", day.isoformat())],
                    commit_properties=CommitProperties(
                        custom_metadata={
                            "pipeline.operation": "replace_day",
                            "pipeline.partition_date": day.isoformat(),
                            "pipeline.run_id": run_id,
                            "pipeline.attempt": attempt,
                            COMMIT_TOKEN: token,
                        }
                    ),
                )
                return committed_version(delta_table, read_version, token)
            except CommitFailedError as error:
                if attempt_number == COMMIT_ATTEMPTS:
                    raise
                logger.info(
                    "%s.%s %s: commit on version %d lost a race with a concurrent commit (%s); committing again on "
                    "the newest version",
                    self.spec.name,
                    table,
                    day,
                    read_version,
                    str(error).splitlines()[0],
                )
                time.sleep(0.05 * attempt_number)
                delta_table = self.open(table)
        raise AssertionError("unreachable")

    def restore_day(self, table: str, day: dt.date, sealed: LoadRecord | None, *, run_id: str, attempt: int) -> int:
        """Put `day` of `table` back as the load `sealed` left it (no day at all when None),
        by committing that load's data files again: they still exist (a replacement only
        removes files logically), so nothing is copied. Returns the committed version."""
        version = None if sealed is None else getattr(sealed, f"{table}_version")
        actions = [] if version is None else add_actions_of_day(self.open(table, version=version), day)
        return self.replace_day(table, day, actions, run_id=run_id, attempt=attempt)

    def append_loads(self, records: Iterable[LoadRecord]) -> int:
        """Append attempts to `loads`; returns the committed version. The append is what
        seals a day (see snapshot.py), so it is the last commit of a load."""
        from deltalake import write_deltalake

        delta_table = self.open("loads")
        read_version = delta_table.version()
        token = uuid.uuid4().hex
        write_deltalake(
            delta_table,
            records_table(records),
            mode="append",
            commit_properties=CommitProperties(
                custom_metadata={"pipeline.operation": "append_loads", COMMIT_TOKEN: token}
            ),
        )
        return committed_version(delta_table, read_version, token)

    # -- reads ----------------------------------------------------------------------------
    def read_loads(
        self, days: Sequence[dt.date] | None = None, *, delta_table: DeltaTable | None = None
    ) -> list[LoadRecord]:
        """Every attempt recorded for `days` (all days when None), oldest first; none before
        the table is created."""
        if delta_table is None:
            try:
                delta_table = self.open("loads")
            except TableNotFoundError:
                return []
        if days is not None and not days:
            return []
        paths = table_files(delta_table, days)
        rows = files_dataset(self.location, self.uri("loads"), self.schemas["loads"], paths).to_table()
        if rows.num_rows == 0:
            return []
        rows = rows.sort_by([(PARTITION_COLUMN, "ascending"), ("attempt", "ascending")])
        return [LoadRecord.from_row(row) for row in rows.to_pylist()]

    def latest_attempts(self, days: Sequence[dt.date]) -> dict[str, LoadRecord]:
        """The latest attempt of each of `days` that has one (ISO day -> record)."""
        return latest_by_day(self.read_loads(days))

    def sealed_attempts(self, days: Sequence[dt.date]) -> dict[str, LoadRecord]:
        """The latest attempt of each of `days` that sealed it (loaded or empty)."""
        return sealed_by_day(self.read_loads(days))

    def success_summary(self) -> tuple[dt.datetime | None, LoadRecord | None]:
        """When the newest sealing attempt (of any day) ended, and the newest sealed day's
        sealing attempt. From the `loads` log's statistics (each file's status and `ended_at`
        range) plus the rows of files that mix statuses and of that one day: no full scan,
        however long the history."""
        try:
            delta_table = self.open("loads")
        except TableNotFoundError:
            return None, None
        actions = pa.table(delta_table.get_add_actions(flatten=True))
        if actions.num_rows == 0:
            return None, None
        names = set(actions.column_names)
        if not {"min.status", "max.status", "max.ended_at"} <= names:
            records = self.read_loads(delta_table=delta_table)
            sealed = [record for record in records if record.seals]
            if not sealed:
                return None, None
            newest = max(sealed, key=lambda record: (record.partition_date, record.attempt))
            return max(record.ended_at for record in sealed if record.ended_at), newest
        last_success: dt.datetime | None = None
        newest_day: dt.date | None = None
        mixed: list[str] = []
        for row in actions.select(
            ["path", "min.status", "max.status", "max.ended_at", f"partition.{PARTITION_COLUMN}"]
        ).to_pylist():
            low, high = row["min.status"], row["max.status"]
            if low != high:
                mixed.append(row["path"])
                continue
            if low in SEALING_STATUSES:
                ended, day = row["max.ended_at"], row[f"partition.{PARTITION_COLUMN}"]
                last_success = ended if last_success is None or ended > last_success else last_success
                newest_day = day if newest_day is None or day > newest_day else newest_day
        if mixed:
            dataset = files_dataset(self.location, self.uri("loads"), self.schemas["loads"], mixed)
            table = dataset.to_table(columns=["partition_date", "status", "ended_at"])
            for day, status, ended in zip(
                *(table.column(name).to_pylist() for name in table.column_names), strict=True
            ):
                if status in SEALING_STATUSES:
                    last_success = ended if last_success is None or ended > last_success else last_success
                    newest_day = day if newest_day is None or day > newest_day else newest_day
        if newest_day is None:
            return last_success, None
        return last_success, self.sealed_attempts([newest_day]).get(newest_day.isoformat())

    def day_rows(self, table: str, day: dt.date, version: int | None = None) -> pa.Table:
        """A day's rows of a table at its current (or given) version."""
        paths = table_files(self.open(table, version=version), [day])
        return files_dataset(self.location, self.uri(table), self.schemas[table], paths).to_table()

    def stats_columns(self, table: str) -> list[str]:
        """Columns whose statistics data files of `table` carry."""
        return stats_columns(self.spec, table)


def committed_version(delta_table: DeltaTable, read_version: int, token: str) -> int:
    """The version our commit got: the table object is not moved to it by the commit, and other
    writers may have committed in between, so the commit carries a unique token to look for."""
    delta_table.update_incremental()
    newer = max(delta_table.version() - read_version, 1)
    for entry in delta_table.history(limit=newer):
        if entry.get(COMMIT_TOKEN) == token:
            return int(entry["version"])
    raise RuntimeError(f"commit {token} not found in the last {newer} versions of {delta_table.table_uri}")


def add_actions_of_day(delta_table: DeltaTable, day: dt.date) -> list[AddAction]:
    """The add actions of a day's files in a snapshot, statistics included, ready to be
    committed again."""
    actions = pa.table(delta_table.get_add_actions(flatten=True))
    if actions.num_rows == 0:
        return []
    mask = pc.equal(actions.column(f"partition.{PARTITION_COLUMN}"), pa.scalar(day, pa.date32()))
    rows = actions.filter(mask).to_pylist()
    restored = []
    for row in rows:
        minimum = {key[4:]: value for key, value in row.items() if key.startswith("min.") and value is not None}
        maximum = {key[4:]: value for key, value in row.items() if key.startswith("max.") and value is not None}
        nulls = {key[11:]: value for key, value in row.items() if key.startswith("null_count.") and value is not None}
        stats = {
            "numRecords": row["num_records"],
            "minValues": {key: _stat(value, upper=False) for key, value in minimum.items()},
            "maxValues": {key: _stat(value, upper=True) for key, value in maximum.items()},
            "nullCount": nulls,
        }
        restored.append(
            AddAction(
                path=row["path"],
                size=int(row["size_bytes"]),
                partition_values={PARTITION_COLUMN: day.isoformat()},
                modification_time=int(time.time() * 1000),
                data_change=True,
                stats=json.dumps(stats),
            )
        )
    return restored


def _stat(value: Any, *, upper: bool) -> Any:
    from pipeline.engine.lake.files import stat_value

    return stat_value(value, upper=upper)


def count_rows(delta_table: DeltaTable, day: dt.date) -> int:
    """Rows a day has in a table, from the files' statistics (no data read)."""
    actions = pa.table(delta_table.get_add_actions(flatten=True))
    if actions.num_rows == 0:
        return 0
    column = f"partition.{PARTITION_COLUMN}"
    mask = pc.equal(actions.column(column), pa.scalar(day, pa.date32()))
    return int(pc.sum(actions.filter(mask).column("num_records")).as_py() or 0)
