"""The `loads` table: one row per partition attempt, appended and never rewritten.

It is the product's record of what happened (seed 004's durable per-execution history) and
the single source of truth for everything that decides: the completeness scan, the landing
sensor, the backfill guard, the notifications and `pipeline summary` read the latest attempt
per day from here. The stats manifest of a day is written *from* its row.

A load that ends `loaded` or `empty` *seals* its day: its row names the run whose rows the
day's tables hold and the table versions it committed, which is how readers are kept from
seeing a day half-replaced (see snapshot.py). The table has `delta.appendOnly = true`, so
Delta itself refuses any write that would remove an attempt.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from decimal import Decimal
from typing import Any

import pyarrow as pa

# Attempt statuses. `loaded` and `empty` seal the day; `failed` leaves the previous seal.
LOADED = "loaded"
EMPTY = "empty"
FAILED = "failed"
SEALING_STATUSES = frozenset({LOADED, EMPTY})
# What an attempt did: a load from the landing files (others may come: a DLQ re-judge).
LOAD = "load"

_FAILED_CHECK = pa.struct([("rule", pa.large_string()), ("rows", pa.int64())])
_SAMPLE = pa.struct(
    [
        ("source_file", pa.large_string()),
        ("line_number", pa.int64()),
        ("reason", pa.large_string()),
        ("raw_line", pa.large_string()),
    ]
)
_HEADER_LINE = pa.struct([("source_file", pa.large_string()), ("line_number", pa.int64()), ("line", pa.large_string())])
_TIMESTAMP = pa.timestamp("us", tz="UTC")

LOADS_SCHEMA = pa.schema(
    [
        pa.field("partition_date", pa.date32(), nullable=False),
        pa.field("source", pa.large_string(), nullable=False),
        pa.field("run_id", pa.large_string(), nullable=False),
        pa.field("attempt", pa.int64(), nullable=False),
        pa.field("operation", pa.large_string(), nullable=False),
        pa.field("status", pa.large_string(), nullable=False),
        pa.field("started_at", _TIMESTAMP, nullable=False),
        pa.field("ended_at", _TIMESTAMP, nullable=False),
        pa.field("duration_s", pa.float64(), nullable=False),
        pa.field("files", pa.int64(), nullable=False),
        pa.field("bytes_read", pa.int64(), nullable=False),
        pa.field("lines_read", pa.int64(), nullable=False),
        pa.field("lines_ignored", pa.int64(), nullable=False),
        pa.field("continuation_lines", pa.int64(), nullable=False),
        pa.field("rows_read", pa.int64(), nullable=False),
        pa.field("rows_loaded", pa.int64(), nullable=False),
        pa.field("rows_quarantined", pa.int64(), nullable=False),
        pa.field("quarantine_rate", pa.float64(), nullable=False),
        pa.field("error_budget", pa.float64(), nullable=False),
        pa.field("within_error_budget", pa.bool_(), nullable=False),
        pa.field("hours_present", pa.large_list(pa.int32()), nullable=False),
        pa.field("missing_hours", pa.large_list(pa.int32()), nullable=False),
        pa.field("ignored_objects", pa.large_list(pa.large_string()), nullable=False),
        pa.field("failed_checks", pa.large_list(_FAILED_CHECK), nullable=False),
        pa.field("sample_quarantined", pa.large_list(_SAMPLE), nullable=False),
        pa.field("metrics_rows", pa.int64(), nullable=False),
        pa.field("landing_fingerprint", pa.large_string()),
        pa.field("definition_version", pa.large_string(), nullable=False),
        pa.field("events_version", pa.int64()),
        pa.field("dlq_version", pa.int64()),
        pa.field("daily_metrics_version", pa.int64()),
        pa.field("root_run_id", pa.large_string()),
        pa.field("job_name", pa.large_string()),
        pa.field("error", pa.large_string()),
        pa.field("error_traceback", pa.large_string()),
        pa.field("summary", pa.large_string(), nullable=False),
        pa.field("manifest", pa.large_string()),
        # NULL in rows written before header lines were recorded (a re-judge then refuses).
        pa.field("header_lines", pa.large_list(_HEADER_LINE)),
    ]
)


@dataclass
class LoadRecord:
    """One attempt at one partition: everything it did. The `loads` row, the manifest and the
    Dagster metadata are all built from it."""

    source: str
    partition_date: str
    run_id: str
    definition_version: str
    error_budget: float = 0.01
    attempt: int = 1
    operation: str = LOAD
    status: str = "running"  # loaded | empty | failed once recorded
    started_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    duration_s: float = 0.0
    files: int = 0
    bytes_read: int = 0
    lines_read: int = 0
    lines_ignored: int = 0
    continuation_lines: int = 0
    rows_read: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    quarantine_rate: float = 0.0
    hours_present: list[int] = field(default_factory=list)
    missing_hours: list[int] = field(default_factory=list)
    ignored_objects: list[str] = field(default_factory=list)
    failed_checks: dict[str, int] = field(default_factory=dict)
    sample_quarantined: list[dict[str, Any]] = field(default_factory=list)
    metrics_rows: int = 0
    landing_fingerprint: str | None = None
    events_version: int | None = None
    dlq_version: int | None = None
    daily_metrics_version: int | None = None
    root_run_id: str | None = None
    job_name: str | None = None
    error: str | None = None
    error_traceback: str | None = None
    summary: str = ""
    manifest: str | None = None
    # The header lines read from the files (a delimited source's `#Fields:`), by file and line:
    # what a re-judge needs to read the DLQ's records with their layout. None: not recorded.
    header_lines: list[dict[str, Any]] | None = field(default_factory=list)

    @property
    def day(self) -> dt.date:
        """The data date."""
        return dt.date.fromisoformat(self.partition_date)

    @property
    def within_error_budget(self) -> bool:
        """Whether the share of quarantined rows is at most the source's error budget, from the
        exact counts (`quarantine_rate` is rounded to 6 places: on a day of millions of rows it
        reads 1% when the share is a hair above)."""
        return self.rows_quarantined <= Decimal(str(self.error_budget)) * self.rows_read

    @property
    def seals(self) -> bool:
        """Whether this attempt replaced the day (its rows are the day's rows now)."""
        return self.status in SEALING_STATUSES

    def sentence(self) -> str:
        """One human sentence saying what happened to this partition."""
        day = self.partition_date
        if self.status == FAILED:
            return (
                f"{self.source} {day}: FAILED after reading {self.lines_read:,} lines from {self.files} files; "
                f"the day's tables still show what the last complete load left. Error: {self.error}"
            )
        if self.status == EMPTY:
            return f"{self.source} {day}: No log files found for {day}."
        hours = f"{len(self.hours_present)} of 24 hours present"
        if self.missing_hours:
            hours += "; missing: " + ", ".join(f"{hour:02d}" for hour in self.missing_hours)
        return (
            f"{self.source} {day}: {self.rows_loaded:,} rows loaded, {self.rows_quarantined:,} quarantined "
            f"({self.quarantine_rate:.2%}) from {self.files} files; {hours}."
        )

    def to_manifest(self) -> str:
        """The stats manifest document (seed 000): the row's figures and its sentence."""
        document = asdict(self)
        document["within_error_budget"] = self.within_error_budget
        document["summary"] = self.summary or self.sentence()
        return json.dumps(document, indent=2, default=_json_default)

    def to_row(self) -> dict[str, Any]:
        """The `loads` row."""
        row = asdict(self)
        row["partition_date"] = self.day
        row["within_error_budget"] = self.within_error_budget
        row["failed_checks"] = [{"rule": rule, "rows": rows} for rule, rows in self.failed_checks.items()]
        row["sample_quarantined"] = [
            {key: sample.get(key) for key in ("source_file", "line_number", "reason", "raw_line")}
            for sample in self.sample_quarantined
        ]
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> LoadRecord:
        """A record read back from `loads`."""
        names = {item.name for item in fields(cls)}
        values = {key: value for key, value in row.items() if key in names}
        values["partition_date"] = _as_date(row["partition_date"]).isoformat()
        values["failed_checks"] = {item["rule"]: int(item["rows"]) for item in row.get("failed_checks") or []}
        values["sample_quarantined"] = list(row.get("sample_quarantined") or [])
        values["hours_present"] = list(row.get("hours_present") or [])
        values["missing_hours"] = list(row.get("missing_hours") or [])
        values["ignored_objects"] = list(row.get("ignored_objects") or [])
        headers = row.get("header_lines")
        values["header_lines"] = None if headers is None else list(headers)
        return cls(**values)


def records_table(records: Iterable[LoadRecord]) -> pa.Table:
    """`loads` rows as an Arrow table of `LOADS_SCHEMA`."""
    rows = [record.to_row() for record in records]
    return pa.Table.from_pylist(rows, schema=LOADS_SCHEMA)


def latest_by_day(records: Iterable[LoadRecord]) -> dict[str, LoadRecord]:
    """The latest attempt of each day (attempts of one day are numbered in order)."""
    latest: dict[str, LoadRecord] = {}
    for record in records:
        current = latest.get(record.partition_date)
        if current is None or (record.attempt, _ended(record)) > (current.attempt, _ended(current)):
            latest[record.partition_date] = record
    return latest


def sealed_by_day(records: Iterable[LoadRecord]) -> dict[str, LoadRecord]:
    """The latest attempt of each day that sealed it (loaded or empty)."""
    return latest_by_day(record for record in records if record.seals)


def _ended(record: LoadRecord) -> dt.datetime:
    return record.ended_at or dt.datetime.min.replace(tzinfo=dt.UTC)


def _as_date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)
