"""Ingest one partition (a source and a data date): list, stream, parse, validate, load.

The data date is a parameter; nothing here reads the wall clock for data logic (the clock
only times the work and stamps `quarantined_at`, which the caller passes in). The day's
rows are replaced in one transaction, and a stats manifest is written on every exit path:
loaded, empty, or failed.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import polars as pl

from pipeline.engine.landing import HOURS, LandedFile, list_partition
from pipeline.engine.objects import ObjectStore
from pipeline.engine.parse import ParsedBatch, PartitionParser, quarantine_entry
from pipeline.engine.reader import DEFAULT_CHUNK_BYTES, FileReadError, iter_line_batches, open_log
from pipeline.engine.warehouse import Warehouse
from pipeline.sources.spec import SourceSpec

logger = logging.getLogger(__name__)

SAMPLE_SIZE = 5


@dataclass
class PartitionStats:
    """Everything one partition run did; the manifest and the Dagster metadata are built from it."""

    source: str
    partition_date: str
    run_id: str
    status: str = "running"  # loaded | empty | failed
    files: int = 0
    bytes_read: int = 0
    lines_read: int = 0
    lines_ignored: int = 0
    continuation_lines: int = 0
    rows_read: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    quarantine_rate: float = 0.0
    error_budget: float = 0.01
    hours_present: list[int] = field(default_factory=list)
    missing_hours: list[int] = field(default_factory=list)
    ignored_objects: list[str] = field(default_factory=list)
    failed_checks: dict[str, int] = field(default_factory=dict)
    sample_quarantined: list[dict[str, object]] = field(default_factory=list)
    duration_s: float = 0.0
    error: str | None = None
    manifest: str | None = None
    summary: str = ""

    @property
    def within_error_budget(self) -> bool:
        """Whether the share of quarantined rows is at most the source's error budget."""
        return self.quarantine_rate <= self.error_budget

    def sentence(self) -> str:
        """One human sentence saying what happened to this partition."""
        day = self.partition_date
        if self.status == "failed":
            return (
                f"{self.source} {day}: FAILED after reading {self.lines_read:,} lines from {self.files} files; "
                f"nothing was changed for this day (transaction rolled back). Error: {self.error}"
            )
        if self.status == "empty":
            return f"{self.source} {day}: No log files found for {day}."
        hours = f"{len(self.hours_present)} of 24 hours present"
        if self.missing_hours:
            hours += "; missing: " + ", ".join(f"{hour:02d}" for hour in self.missing_hours)
        return (
            f"{self.source} {day}: {self.rows_loaded:,} rows loaded, {self.rows_quarantined:,} quarantined "
            f"({self.quarantine_rate:.2%}) from {self.files} files; {hours}."
        )

    def to_json(self) -> str:
        """The manifest document."""
        document = asdict(self)
        document["within_error_budget"] = self.within_error_budget
        document["summary"] = self.sentence()
        return json.dumps(document, indent=2, default=str, sort_keys=False)


def manifest_key(source: str, day: dt.date) -> str:
    """Where a partition's manifest lives in the output store."""
    return f"manifests/{source}/{day.isoformat()}.json"


def ingest_partition(
    spec: SourceSpec,
    day: dt.date,
    *,
    landing: ObjectStore,
    output: ObjectStore,
    warehouse: Warehouse,
    run_id: str,
    quarantined_at: dt.datetime,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    log: logging.Logger | logging.LoggerAdapter = logger,  # type: ignore[type-arg]
) -> PartitionStats:
    """Replace one day of one source in the warehouse from the files of its landing folder.

    Returns the partition's stats; the manifest is written whatever happens, and any error
    is re-raised after it has been recorded.
    """
    started = time.perf_counter()
    stats = PartitionStats(
        source=spec.name, partition_date=day.isoformat(), run_id=run_id, error_budget=spec.error_budget
    )
    failed_checks: Counter[str] = Counter()
    try:
        listing = list_partition(landing, spec.name, day)
        stats.files = len(listing.files)
        stats.hours_present = listing.hours_present
        stats.missing_hours = listing.missing_hours
        stats.ignored_objects = listing.ignored_objects
        log.info(
            "ingest %s %s: %d files in %d of 24 hours from %s/%s (chunk %d bytes)",
            spec.name,
            day,
            stats.files,
            len(stats.hours_present),
            landing.url,
            spec.name,
            chunk_bytes,
        )
        for ignored in listing.ignored_objects:
            log.warning("ingest %s %s: ignoring %s (not an hour folder's .log/.log.gz file)", spec.name, day, ignored)
        parser = PartitionParser(spec, day)
        constants = [
            pl.lit(day, dtype=pl.Date).alias("partition_date"),
            pl.lit(run_id, dtype=pl.String).alias("run_id"),
        ]
        quarantine_constants = [
            *constants,
            pl.lit(quarantined_at, dtype=pl.Datetime("us", "UTC")).alias("quarantined_at"),
        ]

        def load(connection: object, batch: ParsedBatch) -> None:
            if batch.events.height:
                Warehouse.insert(connection, f'"{spec.name}".events', batch.events.with_columns(constants))  # type: ignore[arg-type]
            if batch.quarantined.height:
                Warehouse.insert(connection, f'"{spec.name}".dlq', batch.quarantined.with_columns(quarantine_constants))  # type: ignore[arg-type]
            stats.lines_read += batch.lines_read
            stats.lines_ignored += batch.lines_ignored
            stats.continuation_lines += batch.continuation_lines
            stats.rows_loaded += batch.events.height
            stats.rows_quarantined += batch.quarantined.height
            if batch.quarantined.height:
                _count_failures(batch.quarantined, failed_checks)
                room = SAMPLE_SIZE - len(stats.sample_quarantined)
                if room > 0:
                    stats.sample_quarantined.extend(
                        batch.quarantined.head(room)
                        .select("source_file", "line_number", "reason", "raw_line")
                        .to_dicts()
                    )

        with warehouse.connect() as connection:
            warehouse.ensure_tables(connection, spec)
            connection.execute("BEGIN TRANSACTION")
            try:
                Warehouse.delete_partition(connection, spec, day)
                for landed in listing.files:
                    _ingest_file(
                        landed, parser, landing, chunk_bytes, lambda batch: load(connection, batch), stats, log
                    )
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        stats.rows_read = stats.rows_loaded + stats.rows_quarantined
        stats.quarantine_rate = round(stats.rows_quarantined / stats.rows_read, 6) if stats.rows_read else 0.0
        stats.status = "loaded" if stats.files else "empty"
    except BaseException as error:
        stats.status = "failed"
        stats.error = f"{type(error).__name__}: {error}"
        log.exception("ingest %s %s failed", spec.name, day)
        raise
    finally:
        stats.rows_read = stats.rows_loaded + stats.rows_quarantined
        stats.failed_checks = dict(failed_checks.most_common())
        stats.duration_s = round(time.perf_counter() - started, 3)
        stats.summary = stats.sentence()
        _write_manifest(output, spec.name, day, stats, log)
    log.info("%s (%.2f s, %d lines read)", stats.summary, stats.duration_s, stats.lines_read)
    return stats


def _ingest_file(
    landed: LandedFile,
    parser: PartitionParser,
    landing: ObjectStore,
    chunk_bytes: int,
    load: object,
    stats: PartitionStats,
    log: logging.Logger | logging.LoggerAdapter,  # type: ignore[type-arg]
) -> None:
    """Stream one file through the parser into `load`; an unreadable file becomes a DLQ entry."""
    file_started = time.perf_counter()
    before = (stats.lines_read, stats.rows_loaded, stats.rows_quarantined)
    log.info("file %s (%d bytes): reading", landed.key, landed.size)
    try:
        with landing.open(landed.key) as raw_stream, open_log(raw_stream, landed.gzipped) as stream:
            for batch in parser.parse_file(iter_line_batches(stream, chunk_bytes), landed.key):
                load(batch)  # type: ignore[operator]
    except FileNotFoundError as error:
        log.warning("file %s vanished after listing: %s", landed.key, error)
        load(_evidence(landed.key, 0, "file", "exists_when_read", f"vanished after listing: {error}"))  # type: ignore[operator]
    except FileReadError as error:
        log.warning("file %s unreadable from line %d: %s", landed.key, error.line_number, error)
        evidence = _evidence(landed.key, error.line_number, "file", "readable_to_end", str(error), error.partial)
        load(evidence)  # type: ignore[operator]
    stats.bytes_read += landed.size
    lines, loaded, quarantined = (
        stats.lines_read - before[0],
        stats.rows_loaded - before[1],
        stats.rows_quarantined - before[2],
    )
    log.info(
        "file %s: %d lines, %d rows loaded, %d quarantined in %.2f s",
        landed.key,
        lines,
        loaded,
        quarantined,
        time.perf_counter() - file_started,
    )


def _evidence(
    source_file: str, line_number: int, field_name: str, check: str, value: str, partial: bytes = b""
) -> ParsedBatch:
    """A batch holding one quarantine row that records a problem with a whole file (and the
    bytes of a line cut by it, if any)."""
    quarantined = quarantine_entry(source_file, line_number, field_name, check, value, partial)
    return ParsedBatch(pl.DataFrame(), quarantined, lines_read=0, lines_ignored=0, continuation_lines=0)


def _count_failures(quarantined: pl.DataFrame, counter: Counter[str]) -> None:
    rules = (
        quarantined.select(pl.col("reasons").explode())
        .unnest("reasons")
        .select(pl.format("{}: {}", "field", "check").alias("rule"))
        .group_by("rule")
        .len()
    )
    for rule, count in rules.iter_rows():
        counter[rule] += count


def _write_manifest(
    output: ObjectStore,
    source: str,
    day: dt.date,
    stats: PartitionStats,
    log: logging.Logger | logging.LoggerAdapter,  # type: ignore[type-arg]
) -> None:
    key = manifest_key(source, day)
    try:
        stats.manifest = output.write_atomic(key, stats.to_json().encode())
    except Exception:
        # Never mask the partition's own outcome; but say loudly that the manifest is missing.
        log.exception("could not write manifest %s to %s", key, output.url)
        if stats.status != "failed":
            raise


__all__ = ["HOURS", "PartitionStats", "ingest_partition", "manifest_key"]
