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
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import asdict, dataclass, field
from decimal import Decimal

import duckdb
import polars as pl

from pipeline.engine.landing import HOURS, LandedFile, PartitionListing, list_partition
from pipeline.engine.objects import ObjectStore
from pipeline.engine.parse import JUDGE_ROWS, ParsedBatch, PartitionParser, PendingValidation, quarantine_entry
from pipeline.engine.reader import DEFAULT_CHUNK_BYTES, FileReadError, iter_line_batches, open_log
from pipeline.engine.warehouse import Warehouse
from pipeline.sources.spec import SourceSpec

logger = logging.getLogger(__name__)

SAMPLE_SIZE = 5
# Files parsed at once: one per core keeps both cores busy while this thread loads.
DEFAULT_PARSE_WORKERS = min(4, os.cpu_count() or 1)


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
        """Whether the share of quarantined rows is at most the source's error budget, from the
        exact counts (`quarantine_rate` is rounded to 6 places: on a day of millions of rows it
        reads 1% when the share is a hair above)."""
        return self.rows_quarantined <= Decimal(str(self.error_budget)) * self.rows_read

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
    listing: PartitionListing | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    parse_workers: int = DEFAULT_PARSE_WORKERS,
    sleep_between_batches_s: float = 0.0,
    on_progress: Callable[[PartitionStats], None] | None = None,
    log: logging.Logger | logging.LoggerAdapter = logger,  # type: ignore[type-arg]
) -> PartitionStats:
    """Replace one day of one source in the warehouse from the files of its landing folder.

    The day's files are `listing` when the caller already listed them (`landing_state`), else
    listed here. Files are parsed on `parse_workers` threads while this thread loads the
    batches into the warehouse (one writer); `on_progress` is called with the running stats
    after each batch, and `sleep_between_batches_s` throttles the load. Returns the partition's stats;
    the manifest is written whatever happens, and any error is re-raised after it has been
    recorded.
    """
    started = time.perf_counter()
    stats = PartitionStats(
        source=spec.name, partition_date=day.isoformat(), run_id=run_id, error_budget=spec.error_budget
    )
    failed_checks: Counter[str] = Counter()
    try:
        if listing is None:
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
        with warehouse.connect(log=log) as connection:
            Warehouse.configure_for_load(connection)
            warehouse.ensure_tables(connection, spec)
            connection.execute("BEGIN TRANSACTION")
            try:
                Warehouse.delete_partition(connection, spec, day)
                load = _PartitionLoad(
                    connection, parser, stats, failed_checks, run_id, quarantined_at, on_progress, log
                )
                files: dict[str, _FileProgress] = {}
                # Closed on any exit: an error must also stop the parse threads, or they wait on
                # the full hand-over queue and the process never exits.
                batches = parsed_batches(listing.files, parser, landing, chunk_bytes, parse_workers, log, load.pending)
                with closing(batches):
                    for landed, batch in batches:
                        progress = files.get(landed.key)
                        if progress is None:
                            progress = files[landed.key] = _FileProgress()
                        if batch is None:
                            stats.bytes_read += landed.size
                            progress.log_done(log, landed.key)
                            continue
                        load.batch(batch)
                        progress.add(batch)
                        log.debug(
                            "batch of %s: %d lines, %d loaded, %d quarantined, %d held",
                            landed.key,
                            batch.lines_read,
                            batch.events.height,
                            batch.quarantined.height,
                            batch.held,
                        )
                        if load.pending.count >= JUDGE_ROWS:
                            load.judge_pending()
                        if sleep_between_batches_s > 0:
                            # Throttle: leave the warehouse and the machine room between batches.
                            time.sleep(sleep_between_batches_s)
                if load.pending.count:
                    load.judge_pending()
                connection.execute("COMMIT")
            except BaseException:
                # Nothing this run loaded stays: its row figures say so (lines_read keeps how far
                # it got), rather than counts of rows that were rolled back.
                stats.rows_loaded = stats.rows_quarantined = 0
                stats.sample_quarantined = []
                failed_checks.clear()
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


def load_columns(day: dt.date, run_id: str) -> list[pl.Expr]:
    """The columns the load adds to every parsed row: the partition and the run."""
    return [pl.lit(day, dtype=pl.Date).alias("partition_date"), pl.lit(run_id, dtype=pl.String).alias("run_id")]


class _PartitionLoad:
    """The loading side of one partition's transaction: appends each parsed batch to the
    warehouse, keeps the running stats, and has pandera judge the rows held back."""

    def __init__(
        self,
        connection: duckdb.DuckDBPyConnection,
        parser: PartitionParser,
        stats: PartitionStats,
        failed_checks: Counter[str],
        run_id: str,
        quarantined_at: dt.datetime,
        on_progress: Callable[[PartitionStats], None] | None,
        log: logging.Logger | logging.LoggerAdapter,  # type: ignore[type-arg]
    ) -> None:
        self.connection = connection
        self.parser = parser
        self.stats = stats
        self.failed_checks = failed_checks
        self.on_progress = on_progress
        self.log = log
        # Rows that may fail the schema, from every file: pandera judges them together.
        self.pending = PendingValidation()
        name = parser.spec.name
        self.events_table, self.dlq_table = f'"{name}".events', f'"{name}".dlq'
        self.constants = load_columns(parser.day, run_id)
        self.quarantine_constants = [
            *self.constants,
            pl.lit(quarantined_at, dtype=pl.Datetime("us", "UTC")).alias("quarantined_at"),
        ]

    def batch(self, batch: ParsedBatch) -> None:
        """Append a batch's events and quarantined rows; count them."""
        if batch.events.height:
            Warehouse.insert(self.connection, self.events_table, batch.events.with_columns(self.constants))
        if batch.quarantined.height:
            quarantined = batch.quarantined.with_columns(self.quarantine_constants)
            Warehouse.insert(self.connection, self.dlq_table, quarantined)
            _count_failures(batch.quarantined, self.failed_checks)
            _keep_samples(self.stats, batch.quarantined)
        _add_batch(self.stats, batch)
        if self.on_progress is not None:
            self.on_progress(self.stats)

    def judge_pending(self) -> None:
        """Validate the held rows with pandera and load the verdict."""
        started, held = time.perf_counter(), self.pending.count
        judged = self.parser.judge(self.pending)
        self.batch(judged)
        self.log.info(
            "schema validation of %d held rows: %d loaded, %d quarantined in %.2f s",
            held,
            judged.events.height,
            judged.quarantined.height,
            time.perf_counter() - started,
        )


@dataclass
class _FileProgress:
    """What one file has given so far, for its log line."""

    started: float = field(default_factory=time.perf_counter)
    lines: int = 0
    loaded: int = 0
    quarantined: int = 0
    held: int = 0

    def add(self, batch: ParsedBatch) -> None:
        self.lines += batch.lines_read
        self.loaded += batch.events.height
        self.quarantined += batch.quarantined.height
        self.held += batch.held

    def log_done(self, log: logging.Logger | logging.LoggerAdapter, key: str) -> None:  # type: ignore[type-arg]
        log.info(
            "file %s: %d lines, %d rows loaded, %d quarantined, %d held for schema validation in %.2f s",
            key,
            self.lines,
            self.loaded,
            self.quarantined,
            self.held,
            time.perf_counter() - self.started,
        )


def file_batches(
    landed: LandedFile,
    parser: PartitionParser,
    landing: ObjectStore,
    chunk_bytes: int,
    log: logging.Logger | logging.LoggerAdapter,  # type: ignore[type-arg]
    pending: PendingValidation | None = None,
) -> Iterator[ParsedBatch]:
    """Parsed batches of one file; a file that cannot be read to its end ends with a DLQ entry.
    Suspect rows are held in `pending` when given (see `PartitionParser.parse_file`)."""
    log.info("file %s (%d bytes): reading", landed.key, landed.size)
    try:
        with landing.open(landed.key) as raw_stream, open_log(raw_stream, landed.gzipped) as stream:
            yield from parser.parse_file(iter_line_batches(stream, chunk_bytes), landed.key, pending)
    except FileNotFoundError as error:
        log.warning("file %s vanished after listing: %s", landed.key, error)
        yield _evidence(landed.key, 0, "file", "exists_when_read", f"vanished after listing: {error}")
    except FileReadError as error:
        log.warning("file %s unreadable from line %d: %s", landed.key, error.line_number, error)
        yield _evidence(landed.key, error.line_number, "file", "readable_to_end", str(error), error.partial)


def parsed_batches(
    files: list[LandedFile],
    parser: PartitionParser,
    landing: ObjectStore,
    chunk_bytes: int,
    workers: int,
    log: logging.Logger | logging.LoggerAdapter,  # type: ignore[type-arg]
    pending: PendingValidation | None = None,
) -> Iterator[tuple[LandedFile, ParsedBatch | None]]:
    """Parse `files` on `workers` threads; yield `(file, batch)` as batches are ready and
    `(file, None)` once a file is finished.

    polars, numpy and pyarrow release the GIL, so threads use every core. The hand-over
    queue is bounded, so at most about `3 * workers` batches are in memory at once, however
    large the day.
    """
    if workers <= 1 or len(files) <= 1:
        for landed in files:
            for batch in file_batches(landed, parser, landing, chunk_bytes, log, pending):
                yield landed, batch
            yield landed, None
        return
    handover: queue.Queue[tuple[str, LandedFile, object]] = queue.Queue(maxsize=2 * workers)
    stop = threading.Event()

    def work(landed: LandedFile) -> None:
        try:
            for batch in file_batches(landed, parser, landing, chunk_bytes, log, pending):
                if stop.is_set():
                    return
                handover.put(("batch", landed, batch))
            handover.put(("done", landed, None))
        except BaseException as error:  # handed to the consuming thread, which re-raises it
            handover.put(("error", landed, error))

    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="parse")
    futures = [executor.submit(work, landed) for landed in files]
    remaining = len(files)
    try:
        while remaining:
            kind, landed, payload = handover.get()
            if kind == "error":
                raise payload  # type: ignore[misc]
            if kind == "done":
                remaining -= 1
                yield landed, None
            else:
                yield landed, payload  # type: ignore[misc]
    finally:
        # Stop the workers and unblock any of them waiting on a full queue.
        stop.set()
        for future in futures:
            future.cancel()
        while not all(future.done() for future in futures):
            try:
                handover.get(timeout=0.05)
            except queue.Empty:
                pass
        executor.shutdown(wait=True)


def _add_batch(stats: PartitionStats, batch: ParsedBatch) -> None:
    stats.lines_read += batch.lines_read
    stats.lines_ignored += batch.lines_ignored
    stats.continuation_lines += batch.continuation_lines
    stats.rows_loaded += batch.events.height
    stats.rows_quarantined += batch.quarantined.height


def _keep_samples(stats: PartitionStats, quarantined: pl.DataFrame) -> None:
    """Keep the first few quarantined rows by file and line: the same samples whatever the
    order in which the threads finished."""
    candidates = quarantined.head(SAMPLE_SIZE).select("source_file", "line_number", "reason", "raw_line").to_dicts()
    merged = sorted(
        [*stats.sample_quarantined, *candidates], key=lambda row: (str(row["source_file"]), int(row["line_number"]))
    )
    stats.sample_quarantined = merged[:SAMPLE_SIZE]


def _evidence(
    source_file: str, line_number: int, field_name: str, check: str, value: str, partial: bytes = b""
) -> ParsedBatch:
    """A batch holding one quarantine row that records a problem with a whole file (and the
    bytes of a line cut by it, if any)."""
    quarantined = quarantine_entry(source_file, line_number, field_name, check, value, partial)
    # The row stands for one line (the cut one, or the unreadable file), so that
    # lines_read = rows_loaded + rows_quarantined + continuation_lines + lines_ignored still holds.
    return ParsedBatch(pl.DataFrame(), quarantined, lines_read=1, lines_ignored=0, continuation_lines=0)


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


def write_failed_manifest(
    spec: SourceSpec,
    day: dt.date,
    *,
    output: ObjectStore,
    run_id: str,
    error: BaseException,
    log: logging.Logger | logging.LoggerAdapter = logger,  # type: ignore[type-arg]
) -> PartitionStats:
    """Record a partition that failed before `ingest_partition` could start (which writes the
    manifest on its own exit paths). A manifest that cannot be written is logged, never
    allowed to mask `error`."""
    stats = PartitionStats(
        source=spec.name,
        partition_date=day.isoformat(),
        run_id=run_id,
        status="failed",
        error_budget=spec.error_budget,
        error=f"{type(error).__name__}: {error}",
    )
    stats.summary = stats.sentence()
    _write_manifest(output, spec.name, day, stats, log)
    return stats


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


__all__ = ["HOURS", "PartitionStats", "ingest_partition", "load_columns", "manifest_key", "write_failed_manifest"]
