"""Looking after a source's tables: repair half-replaced days, compact small files, vacuum.

Run weekly (the `lake_maintenance` job) or by hand (`pipeline lake maintain`):

1. **Repair**: a day whose current files in some table are not those of its last sealing load
   (a writer killed between two commits, whose day was never re-run) is put back as that load
   left it (`SourceTables.restore_day`, no data copied), under the day's lock, so raw readers
   of the tables (Spark, Trino, Athena) see it consistent too. Rows of a day no load ever
   sealed are removed. A day whose lock is held is being replaced right now: left alone.
2. **Compact**: many small files (a day's `loads` attempts, small days) are rewritten into
   fewer (`optimize.compact`; rows unchanged, `dataChange=false`). It loses any race with a
   writer of the same table (Delta refuses the commit); it is tried again, then reported.
3. **Vacuum**: files no snapshot younger than the retention needs are deleted, including data
   files of writes killed before their commit. The retention is never shorter than the
   longest read or a running backfill (the caller computes the floor), because a reader or a
   writer still holding an older snapshot would otherwise find its files gone. Log entries
   older than `delta.logRetentionDuration` (30 days) are removed after a checkpoint.

Every run writes a report (`{output}/maintenance/{source}/{YYYY-MM-DD}.json`) with a sentence.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import asdict, dataclass, field

from deltalake.exceptions import CommitFailedError

from pipeline.engine.lake import Lake
from pipeline.engine.lake.locks import DayLockTimeout
from pipeline.engine.lake.schemas import DATA_TABLES, TABLES
from pipeline.engine.lake.tables import SourceTables
from pipeline.engine.objects import ObjectStore
from pipeline.sources.spec import SourceSpec

logger = logging.getLogger(__name__)

DEFAULT_RETENTION_HOURS = 168
MINIMUM_RETENTION_HOURS = 1
COMPACT_TARGET_BYTES = 128 * 1024 * 1024
_COMPACT_ATTEMPTS = 3
_REPAIR_LOCK_WAIT_S = 5.0


@dataclass
class TableReport:
    """What maintenance did to one table."""

    table: str
    version_before: int
    version_after: int
    files_before: int
    files_after: int
    files_vacuumed: int = 0
    compacted: str = ""  # "", "skipped: ..." or a summary of the compaction


@dataclass
class MaintenanceReport:
    """The maintenance report of one source (written as its manifest)."""

    source: str
    started_at: str
    retention_hours: int
    dry_run: bool
    tables: list[TableReport] = field(default_factory=list)
    repaired_days: dict[str, list[str]] = field(default_factory=dict)
    busy_days: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    finished_at: str | None = None
    summary: str = ""

    @property
    def status(self) -> str:
        """`ok`, or `problems` when a step could not be done."""
        return "problems" if self.problems else "ok"

    def sentence(self) -> str:
        """What maintenance did, in one sentence."""
        before = sum(table.files_before for table in self.tables)
        after = sum(table.files_after for table in self.tables)
        vacuumed = sum(table.files_vacuumed for table in self.tables)
        verb = "would vacuum" if self.dry_run else "vacuumed"
        text = (
            f"{self.source}: {len(self.tables)} tables, {before:,} -> {after:,} data files; {verb} {vacuumed:,} "
            f"unreferenced files older than {self.retention_hours} h; "
            f"repaired {len(self.repaired_days)} half-replaced day(s)"
        )
        if self.repaired_days:
            text += " (" + ", ".join(f"{day}: {'/'.join(tables)}" for day, tables in self.repaired_days.items()) + ")"
        if self.busy_days:
            text += f"; left {len(self.busy_days)} day(s) being loaded alone ({', '.join(self.busy_days)})"
        if self.problems:
            text += ". Problems: " + "; ".join(self.problems)
        return text + "."

    def to_json(self) -> str:
        """The report document."""
        document = asdict(self)
        document["status"] = self.status
        document["summary"] = self.sentence()
        return json.dumps(document, indent=2)


def report_key(source: str, day: dt.date) -> str:
    """Where a maintenance report lives in the output store."""
    return f"maintenance/{source}/{day.isoformat()}.json"


def maintain_source(
    lake: Lake,
    spec: SourceSpec,
    *,
    retention_hours: int = DEFAULT_RETENTION_HOURS,
    dry_run: bool = False,
    owner: str = "maintenance",
    log: logging.Logger | logging.LoggerAdapter = logger,  # type: ignore[type-arg]
) -> MaintenanceReport:
    """Repair, compact and vacuum one source's tables (see the module docstring)."""
    if retention_hours < MINIMUM_RETENTION_HOURS:
        raise ValueError(f"retention of {retention_hours} h is too short (at least {MINIMUM_RETENTION_HOURS} h)")
    report = MaintenanceReport(
        source=spec.name,
        started_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        retention_hours=retention_hours,
        dry_run=dry_run,
    )
    tables = lake.tables(spec)
    tables.ensure(log)
    _repair(lake, spec, report, dry_run=dry_run, owner=owner, log=log)
    for table in TABLES:
        report.tables.append(_maintain_table(tables, table, report, retention_hours, dry_run, log))
    report.finished_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    report.summary = report.sentence()
    log.info("%s", report.summary)
    return report


def _repair(
    lake: Lake,
    spec: SourceSpec,
    report: MaintenanceReport,
    *,
    dry_run: bool,
    owner: str,
    log: logging.Logger | logging.LoggerAdapter,  # type: ignore[type-arg]
) -> None:
    tables = lake.tables(spec)
    torn = lake.snapshot(spec).torn_days()
    for day_text in torn:
        day = dt.date.fromisoformat(day_text)
        if dry_run:
            report.repaired_days[day_text] = torn[day_text]
            continue
        repair_lake = Lake(
            lake.location, s3_client=lake.s3_client, lock_wait_s=_REPAIR_LOCK_WAIT_S, lease_s=lake.lease_s
        )
        try:
            with repair_lake.day_lock(spec.name, day, owner=owner, log=log):
                # Looked at again under the lock: the writer that tore it may have finished since.
                still = lake.snapshot(spec).torn_days().get(day_text, [])
                sealed = tables.sealed_attempts([day]).get(day_text)
                for table in still:
                    if table in DATA_TABLES:
                        tables.restore_day(table, day, sealed, run_id=owner, attempt=sealed.attempt if sealed else 0)
                if still:
                    report.repaired_days[day_text] = still
                    log.warning(
                        "%s %s: %s put back as %s left them",
                        spec.name,
                        day_text,
                        ", ".join(still),
                        f"run {sealed.run_id}" if sealed else "no complete load (removed)",
                    )
        except DayLockTimeout:
            report.busy_days.append(day_text)


def _maintain_table(
    tables: SourceTables,
    table: str,
    report: MaintenanceReport,
    retention_hours: int,
    dry_run: bool,
    log: logging.Logger | logging.LoggerAdapter,  # type: ignore[type-arg]
) -> TableReport:
    delta_table = tables.open(table)
    result = TableReport(
        table=table,
        version_before=delta_table.version(),
        version_after=delta_table.version(),
        files_before=len(delta_table.file_uris()),
        files_after=len(delta_table.file_uris()),
    )
    if not dry_run:
        for attempt in range(1, _COMPACT_ATTEMPTS + 1):
            try:
                metrics = tables.open(table).optimize.compact(target_size=COMPACT_TARGET_BYTES)
                result.compacted = (
                    f"{metrics.get('numFilesRemoved', 0)} files rewritten into {metrics.get('numFilesAdded', 0)}"
                )
                break
            except CommitFailedError as error:
                if attempt == _COMPACT_ATTEMPTS:
                    result.compacted = "skipped: a writer kept committing to the same files"
                    report.problems.append(f"{table}: compaction lost {attempt} races with writers ({error})")
                    break
                time.sleep(attempt)
    try:
        delta_table = tables.open(table)
        vacuumed = delta_table.vacuum(
            retention_hours=retention_hours, dry_run=dry_run, enforce_retention_duration=False, full=True
        )
        result.files_vacuumed = len(vacuumed)
        if not dry_run:
            delta_table.create_checkpoint()
            delta_table.cleanup_metadata()
    except Exception as error:
        report.problems.append(f"{table}: vacuum failed: {type(error).__name__}: {error}")
        log.exception("vacuum of %s.%s failed", tables.spec.name, table)
    final = tables.open(table)
    result.version_after = final.version()
    result.files_after = len(final.file_uris())
    return result


def write_report(output: ObjectStore, report: MaintenanceReport, day: dt.date) -> str:
    """Write the report; returns its location."""
    return output.write_atomic(report_key(report.source, day), report.to_json().encode())
