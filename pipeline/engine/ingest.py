"""Load one partition (a source and a data date): list, stream, parse, validate, replace the day.

The data date is a parameter; nothing here reads the wall clock for data logic (the clock
only times the work and stamps `started_at`/`quarantined_at`). A day is replaced whole:

1. under the day's lock (`lake.locks`: two writers of one day never interleave), the files
   are parsed on worker threads while this thread writes the valid rows and the quarantined
   ones into new Parquet files of `events` and `dlq` (bounded memory; nothing is visible yet);
2. the day is committed table by table: `events`, `dlq`, then `daily_metrics`, computed by
   DuckDB from the events just committed when the day is within its error budget, removed
   otherwise (a bad day blocks its own metrics, never another day's);
3. the attempt's row is appended to `loads`: that append *seals* the day. Readers see a day
   as its last sealing load left it (`lake.snapshot`), so a kill between two commits never
   shows a half-replaced day;
4. the stats manifest is written from that row, on every exit path (loaded, empty, failed).

An attempt that fails after some commits puts those tables' day back as the last seal left
it, so the raw tables are consistent again too, and records itself as `failed`.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import queue
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any, NoReturn

import duckdb
import polars as pl
import pyarrow as pa

from pipeline.engine.lake import Lake, LoadRecord
from pipeline.engine.lake.errors import error_text, lake_storage_error, without_rust_backtrace
from pipeline.engine.lake.files import DayFileWriter
from pipeline.engine.lake.loads import EMPTY, FAILED, LOADED, sealed_by_day
from pipeline.engine.lake.schemas import metrics_select
from pipeline.engine.lake.snapshot import day_dataset
from pipeline.engine.lake.tables import SourceTables
from pipeline.engine.landing import LandedFile
from pipeline.engine.landing_state import LandingState, landing_state
from pipeline.engine.objects import ObjectStore
from pipeline.engine.parse import JUDGE_ROWS, ParsedBatch, PartitionParser, PendingValidation, quarantine_entry
from pipeline.engine.reader import DEFAULT_CHUNK_BYTES, FileReadError, iter_line_batches, open_log
from pipeline.engine.records import count_failed_checks, rules_by_rows
from pipeline.sources.spec import SourceSpec
from pipeline.sources.version import definition_version

logger = logging.getLogger(__name__)
Log = logging.Logger | logging.LoggerAdapter  # type: ignore[type-arg]

SAMPLE_SIZE = 5
# Files parsed at once: one per core keeps both cores busy while this thread writes.
DEFAULT_PARSE_WORKERS = min(4, os.cpu_count() or 1)
_TRACEBACK_LINES = 12


@dataclass(frozen=True)
class RunInfo:
    """Who is loading: the run, the run it retries (its root), the job; and the audit stamp of
    its quarantined rows (not data logic: the data date is the partition)."""

    run_id: str
    quarantined_at: dt.datetime
    root_run_id: str | None = None
    job_name: str | None = None


@dataclass(frozen=True)
class IngestOptions:
    """How to load: batch size, parse threads, throttle, and whether an unchanged day may be
    skipped (a retry resumes at the first day not yet loaded)."""

    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    parse_workers: int = DEFAULT_PARSE_WORKERS
    sleep_between_batches_s: float = 0.0
    # Skip a day whose last sealing load was made by this run or another run of its family
    # (same root run: retries and re-executions) from the same landing files under the same
    # definition. `skip_unchanged_days` extends that to any earlier run.
    resume: bool = True
    skip_unchanged_days: bool = False
    # A day loaded with rows whose landing folder is now empty (the files expired) is kept, and
    # the attempt fails saying so, unless emptying it is what the operator asked for.
    allow_emptying_loaded_days: bool = False


class LandingEmptiedError(RuntimeError):
    """A loaded day's landing folder has no files any more: replacing it would lose its rows."""


def manifest_key(source: str, day: dt.date) -> str:
    """Where a partition's manifest lives in the output store."""
    return f"manifests/{source}/{day.isoformat()}.json"


@dataclass
class IngestResult:
    """What `ingest_partition` did: the attempt's record, the day's metrics row (empty when
    none was written), and whether the day was skipped because it was already loaded from
    the same files (then `record` is that earlier load)."""

    record: LoadRecord
    metrics: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False


def ingest_partition(
    spec: SourceSpec,
    day: dt.date,
    *,
    landing: ObjectStore,
    output: ObjectStore,
    lake: Lake,
    run: RunInfo,
    options: IngestOptions = IngestOptions(),
    state: LandingState | None = None,
    on_progress: Callable[[LoadRecord], None] | None = None,
    log: Log = logger,
) -> IngestResult:
    """Replace one day of one source from the files of its landing folder (see the module
    docstring). `state` is the day's listing when the caller already took it. Returns the
    attempt's record; on failure the attempt is recorded (row and manifest) and the error
    re-raised."""
    record = LoadRecord(
        source=spec.name,
        partition_date=day.isoformat(),
        run_id=run.run_id,
        definition_version=definition_version(spec),
        error_budget=spec.error_budget,
        started_at=dt.datetime.now(dt.UTC),
        root_run_id=run.root_run_id or run.run_id,
        job_name=run.job_name,
        manifest=output.location(manifest_key(spec.name, day)),
    )
    started = time.perf_counter()
    tables = lake.tables(spec)
    day_load: _DayLoad | None = None
    try:
        tables.ensure(log)
        if state is None:
            state = landing_state(landing, spec.name, day)
        _record_listing(record, state, log)
        with lake.day_lock(spec.name, day, owner=run.run_id, log=log) as lock:
            history = tables.read_loads([day])
            record.attempt = max((item.attempt for item in history), default=0) + 1
            previous = sealed_by_day(history).get(day.isoformat())
            if previous is not None and _may_skip(previous, record, options):
                log.info(
                    "%s %s: skipped, already loaded by run %s (attempt %d, %s) from the same %d files under "
                    "definition %s",
                    spec.name,
                    day,
                    previous.run_id,
                    previous.attempt,
                    previous.status,
                    previous.files,
                    previous.definition_version,
                )
                _write_manifest(output, previous, log)
                return IngestResult(previous, skipped=True)
            if previous is not None and previous.rows_read and not state.listing.files:
                if not options.allow_emptying_loaded_days:
                    raise LandingEmptiedError(
                        f"{spec.name} {day}: its landing folder has no files now, but the lake holds the "
                        f"{previous.rows_read:,} rows of run {previous.run_id} (attempt {previous.attempt}, "
                        f"{previous.files} files); the day is kept as it is. If the landing files expired, re-judge "
                        "its quarantined rows instead (`pipeline dlq rejudge`); to empty the day on purpose, re-run "
                        "it with allow_emptying_loaded_days: true"
                    )
                log.warning(
                    "%s %s: replacing the %d rows of run %s with an empty day (allow_emptying_loaded_days)",
                    spec.name,
                    day,
                    previous.rows_read,
                    previous.run_id,
                )
            day_load = _DayLoad(tables, spec, day, record, previous, run, lock, log)
            day_load.write_files(state, landing, options, on_progress)
            day_load.commit()
            record.status = LOADED if record.files else EMPTY
            _finish(record, started)
            tables.append_loads([record])
    except BaseException as error:
        _fail_attempt(tables, output, record, day_load, error, started, log, "load")
    _write_manifest(output, record, log)
    log.info("%s (%.2f s, %d lines read)", record.summary, record.duration_s, record.lines_read)
    return IngestResult(record, metrics=day_load.metrics if day_load is not None else {})


def _may_skip(previous: LoadRecord, record: LoadRecord, options: IngestOptions) -> bool:
    same_input = (
        previous.landing_fingerprint == record.landing_fingerprint
        and previous.definition_version == record.definition_version
    )
    same_family = previous.root_run_id is not None and previous.root_run_id == record.root_run_id
    return same_input and (options.skip_unchanged_days or (options.resume and same_family))


def _record_listing(record: LoadRecord, state: LandingState, log: Log) -> None:
    listing = state.listing
    record.files = len(listing.files)
    record.hours_present = listing.hours_present
    record.missing_hours = listing.missing_hours
    record.ignored_objects = listing.ignored_objects
    record.landing_fingerprint = state.fingerprint
    for ignored in listing.ignored_objects:
        log.warning("%s %s: ignoring %s (not an hour folder's .log/.log.gz file)", record.source, record.day, ignored)


def _finish(record: LoadRecord, started: float) -> None:
    record.rows_read = record.rows_loaded + record.rows_quarantined
    record.quarantine_rate = round(record.rows_quarantined / record.rows_read, 6) if record.rows_read else 0.0
    record.ended_at = dt.datetime.now(dt.UTC)
    record.duration_s = round(time.perf_counter() - started, 3)
    record.summary = record.sentence()


def _fail_attempt(
    tables: SourceTables,
    output: ObjectStore,
    record: LoadRecord,
    day_load: _DayLoad | None,
    error: BaseException,
    started: float,
    log: Log,
    operation: str,
) -> NoReturn:
    """What every failed attempt (a load, a re-judge) leaves: its commits undone, its `loads`
    row and its manifest saying `failed` with the error; then the error is raised again (a
    failed S3 call of the lake's own clients as the `ObjectStoreError` naming its bucket and
    key, see `lake.errors`). Called while handling `error`."""
    failure = lake_storage_error(error) or error
    if day_load is not None:
        day_load.undo(failure)
    _record_failure(record, failure, started)
    _number_after_recorded(tables, record, log)
    log.exception("%s of %s %s failed", operation, record.source, record.partition_date)
    try:
        tables.append_loads([record])
    except Exception:
        # The failure stays visible in the run, its log and the manifest; never mask it.
        log.exception(
            "could not record the failed %s of %s %s in %s",
            operation,
            record.source,
            record.partition_date,
            tables.uri("loads"),
        )
    _write_manifest(output, record, log)
    if failure is error:
        raise error
    raise failure from error


def _number_after_recorded(tables: SourceTables, record: LoadRecord, log: Log) -> None:
    """Number a failed attempt after every attempt of its day recorded so far. An attempt is
    numbered under the day's lock; one that failed before (the tables refused, the listing
    failed) still has the default number 1, which an earlier attempt of the day already holds."""
    try:
        taken = max((item.attempt for item in tables.read_loads([record.day])), default=0)
    except Exception as error:  # the failure itself must still be recorded
        log.warning("could not read the attempts of %s %s to number this one: %s", record.source, record.day, error)
        return
    if taken >= record.attempt:
        record.attempt = taken + 1


def _record_failure(record: LoadRecord, error: BaseException, started: float) -> None:
    record.status = FAILED
    # Nothing this attempt wrote stays: its row figures say so (lines_read keeps how far it got).
    record.rows_loaded = record.rows_quarantined = record.metrics_rows = 0
    record.sample_quarantined = []
    record.failed_checks = {}
    record.events_version = record.dlq_version = record.daily_metrics_version = None
    # Without delta-rs's Rust backtrace (RUST_BACKTRACE): 40 frame lines would push the Python
    # frames out of the kept tail, and an operator reads `loads.error` as a sentence.
    record.error = error_text(error)
    lines = traceback.format_exception(error)
    record.error_traceback = without_rust_backtrace("".join(lines[-_TRACEBACK_LINES:]))[-4000:]
    _finish(record, started)


class _DayLoad:
    """The writing side of one attempt: data files, then commits, and how to undo them."""

    def __init__(
        self,
        tables: SourceTables,
        spec: SourceSpec,
        day: dt.date,
        record: LoadRecord,
        previous: LoadRecord | None,
        run: RunInfo,
        lock: object,
        log: Log,
    ) -> None:
        self.tables = tables
        self.spec = spec
        self.day = day
        self.record = record
        self.previous = previous
        self.run = run
        self.lock = lock
        self.log = log
        # Read now: a replacement of the same day committed after this makes ours fail.
        self.snapshots = {table: tables.open(table) for table in ("events", "dlq", "daily_metrics")}
        prefix = f"{record.attempt:04d}-{run.run_id[:8]}"
        self.writers = {
            table: DayFileWriter(
                tables.location.filesystem(tables.uri(table)),
                tables.schemas[table],
                day,
                tables.stats_columns(table),
                prefix,
            )
            for table in ("events", "dlq", "daily_metrics")
        }
        self.committed: list[str] = []
        self.failed_checks: Counter[str] = Counter()
        self.metrics: dict[str, Any] = {}

    # -- 1. data files --------------------------------------------------------------------
    def write_files(
        self,
        state: LandingState,
        landing: ObjectStore,
        options: IngestOptions,
        on_progress: Callable[[LoadRecord], None] | None,
    ) -> None:
        spec, record, log = self.spec, self.record, self.log
        log.info(
            "load %s %s (attempt %d): %d files in %d of 24 hours from %s/%s (chunk %d bytes)",
            spec.name,
            self.day,
            record.attempt,
            record.files,
            len(record.hours_present),
            landing.url,
            spec.name,
            options.chunk_bytes,
        )
        parser = PartitionParser(spec, self.day)
        pending = PendingValidation()
        events_columns = [
            pl.lit(self.day, dtype=pl.Date).alias("partition_date"),
            pl.lit(self.run.run_id, dtype=pl.String).alias("run_id"),
        ]
        dlq_columns = [
            *events_columns,
            pl.lit(self.run.quarantined_at, dtype=pl.Datetime("us", "UTC")).alias("quarantined_at"),
        ]

        def add(batch: ParsedBatch) -> None:
            if batch.events.height:
                self.writers["events"].write(batch.events.with_columns(events_columns).to_arrow())
            if batch.quarantined.height:
                self.writers["dlq"].write(batch.quarantined.with_columns(dlq_columns).to_arrow())
                count_failed_checks(batch.quarantined, self.failed_checks)
                _keep_samples(record, batch.quarantined)
            record.lines_read += batch.lines_read
            record.lines_ignored += batch.lines_ignored
            record.continuation_lines += batch.continuation_lines
            record.rows_loaded += batch.events.height
            record.rows_quarantined += batch.quarantined.height
            if on_progress is not None:
                on_progress(record)

        def judge() -> None:
            began, held = time.perf_counter(), pending.count
            judged = parser.judge(pending)
            add(judged)
            log.debug(
                "schema validation of %d held rows: %d loaded, %d quarantined in %.2f s",
                held,
                judged.events.height,
                judged.quarantined.height,
                time.perf_counter() - began,
            )

        files: dict[str, _FileProgress] = {}
        # Closed on any exit: an error must also stop the parse threads, or they wait on the
        # full hand-over queue and the process never exits.
        batches = parsed_batches(
            state.listing.files, parser, landing, options.chunk_bytes, options.parse_workers, log, pending
        )
        with closing(batches):
            for landed, batch in batches:
                progress = files.setdefault(landed.key, _FileProgress())
                if batch is None:
                    record.bytes_read += landed.size
                    progress.log_done(log, landed.key)
                    continue
                add(batch)
                progress.add(batch)
                if batch.header_lines and record.header_lines is not None:
                    record.header_lines.extend(
                        {"source_file": landed.key, "line_number": number, "line": line}
                        for number, line in batch.header_lines
                    )
                if pending.count >= JUDGE_ROWS:
                    judge()
                if options.sleep_between_batches_s > 0:
                    # Throttle: leave the machine and the object store room between batches.
                    time.sleep(options.sleep_between_batches_s)
        if pending.count:
            judge()
        record.failed_checks = rules_by_rows(self.failed_checks)
        record.rows_read = record.rows_loaded + record.rows_quarantined
        if record.header_lines:  # the files were parsed in parallel: one order, whatever finished first
            record.header_lines.sort(key=lambda header: (header["source_file"], header["line_number"]))

    # -- 2. commits -------------------------------------------------------------------------
    def commit(self) -> None:
        """Commit events, dlq and daily_metrics, in that order (the `loads` row follows)."""
        record = self.record
        actions = {table: self.writers[table].finish() for table in ("events", "dlq")}
        for table, version_field in (("events", "events_version"), ("dlq", "dlq_version")):
            self.lock.ensure_held()  # type: ignore[attr-defined]
            version = self.tables.replace_day(
                table,
                self.day,
                actions[table],
                run_id=self.run.run_id,
                attempt=record.attempt,
                snapshot=self.snapshots[table],
            )
            setattr(record, version_field, version)
            self.committed.append(table)
        record.rows_read = record.rows_loaded + record.rows_quarantined
        metrics = []
        if record.rows_loaded and record.within_error_budget:
            events = day_dataset(self.tables, "events", self.day, record.events_version or 0)
            metrics_rows = compute_daily_metrics(self.spec, events, self.tables.schemas["daily_metrics"])
            self.writers["daily_metrics"].write(metrics_rows)
            metrics = self.writers["daily_metrics"].finish()
            record.metrics_rows = metrics_rows.num_rows
            self.metrics = metrics_rows.to_pylist()[0] if metrics_rows.num_rows else {}
        elif record.rows_loaded:
            self.log.warning(
                "%s %s: %d of %d rows quarantined is above the %.2f%% error budget: its daily metrics are removed "
                "until the day is loaded within budget",
                self.spec.name,
                self.day,
                record.rows_quarantined,
                record.rows_read,
                100 * self.spec.error_budget,
            )
        self.lock.ensure_held()  # type: ignore[attr-defined]
        record.daily_metrics_version = self.tables.replace_day(
            "daily_metrics",
            self.day,
            metrics,
            run_id=self.run.run_id,
            attempt=record.attempt,
            snapshot=self.snapshots["daily_metrics"],
        )
        self.committed.append("daily_metrics")

    # -- on failure -----------------------------------------------------------------------
    def undo(self, error: BaseException) -> None:
        """Delete uncommitted files; put the committed tables' day back as the last seal left
        it. Best effort: whatever cannot be undone, readers still do not see (snapshot.py)."""
        for writer in self.writers.values():
            writer.abort()
        for table in self.committed:
            try:
                self.tables.restore_day(
                    table, self.day, self.previous, run_id=self.run.run_id, attempt=self.record.attempt
                )
                self.log.info(
                    "%s %s: %s put back as run %s left it", self.spec.name, self.day, table, self._previous_run()
                )
            except Exception:
                self.log.exception(
                    "%s %s: could not put %s back after %s; readers keep seeing the last complete load, and the "
                    "next load of the day replaces it",
                    self.spec.name,
                    self.day,
                    table,
                    type(error).__name__,
                )

    def _previous_run(self) -> str:
        return self.previous.run_id if self.previous is not None else "no load (empty)"


def recompute_daily_metrics(
    spec: SourceSpec,
    day: dt.date,
    *,
    lake: Lake,
    run: RunInfo,
    log: Log = logger,
) -> tuple[LoadRecord | None, dict[str, Any]]:
    """Recompute a day's metrics from the events its last sealing load left (no landing
    files are read), e.g. after a metric was added to the definition. Returns that load and
    the new metrics row; a day never loaded, or over its error budget, gets none (and any
    stale row is removed)."""
    tables = lake.tables(spec)
    tables.ensure(log)
    with lake.day_lock(spec.name, day, owner=run.run_id, log=log) as lock:
        sealed = sealed_by_day(tables.read_loads([day])).get(day.isoformat())
        rows: pa.Table | None = None
        if (
            sealed is not None
            and sealed.rows_loaded
            and sealed.within_error_budget
            and sealed.events_version is not None
        ):
            events = day_dataset(tables, "events", day, sealed.events_version)
            rows = compute_daily_metrics(spec, events, tables.schemas["daily_metrics"])
        writer = DayFileWriter(
            tables.location.filesystem(tables.uri("daily_metrics")),
            tables.schemas["daily_metrics"],
            day,
            tables.stats_columns("daily_metrics"),
            f"metrics-{run.run_id[:8]}",
        )
        try:
            if rows is not None:
                writer.write(rows)
            actions = writer.finish()
            lock.ensure_held()
            tables.replace_day(
                "daily_metrics", day, actions, run_id=run.run_id, attempt=sealed.attempt if sealed else 0
            )
        except BaseException:
            writer.abort()
            raise
    figures = rows.to_pylist()[0] if rows is not None and rows.num_rows else {}
    log.info(
        "%s %s: daily metrics recomputed from run %s's events: %s",
        spec.name,
        day,
        sealed.run_id if sealed else "-",
        figures,
    )
    return sealed, figures


def compute_daily_metrics(spec: SourceSpec, events: object, schema: pa.Schema) -> pa.Table:
    """The day's metrics row from its events (any relation DuckDB can scan: a pyarrow dataset
    of the committed files), typed as the `daily_metrics` table."""
    with duckdb.connect() as connection:
        connection.execute("SET threads = 1")
        connection.register("day_events", events)
        result = connection.sql(metrics_select(spec, "SELECT * FROM day_events")).to_arrow_table()
    return result.select(schema.names).cast(schema)


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

    def log_done(self, log: Log, key: str) -> None:
        log.debug(
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
    log: Log,
    pending: PendingValidation | None = None,
) -> Iterator[ParsedBatch]:
    """Parsed batches of one file; a file that cannot be read to its end ends with a DLQ entry.
    Suspect rows are held in `pending` when given (see `PartitionParser.parse_file`)."""
    log.debug("file %s (%d bytes): reading", landed.key, landed.size)
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
    log: Log,
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


def _keep_samples(record: LoadRecord, quarantined: pl.DataFrame) -> None:
    """Keep the first few quarantined rows by file and line: the same samples whatever the
    order in which the threads finished."""
    candidates = quarantined.head(SAMPLE_SIZE).select("source_file", "line_number", "reason", "raw_line").to_dicts()
    merged = sorted(
        [*record.sample_quarantined, *candidates], key=lambda row: (str(row["source_file"]), int(row["line_number"]))
    )
    record.sample_quarantined = merged[:SAMPLE_SIZE]


def _evidence(
    source_file: str, line_number: int, field_name: str, check: str, value: str, partial: bytes = b""
) -> ParsedBatch:
    """A batch holding one quarantine row that records a problem with a whole file (and the
    bytes of a line cut by it, if any)."""
    quarantined = quarantine_entry(source_file, line_number, field_name, check, value, partial)
    # The row stands for one line (the cut one, or the unreadable file), so that
    # lines_read = rows_loaded + rows_quarantined + continuation_lines + lines_ignored still holds.
    return ParsedBatch(pl.DataFrame(), quarantined, lines_read=1, lines_ignored=0, continuation_lines=0)


def _write_manifest(output: ObjectStore, record: LoadRecord, log: Log) -> None:
    """The day's stats manifest, from its `loads` row. A failed day's manifest that cannot be
    written is logged, never allowed to mask the day's own error."""
    key = manifest_key(record.source, record.day)
    try:
        record.manifest = output.write_atomic(key, record.to_manifest().encode())
    except Exception:
        log.exception("could not write manifest %s to %s", key, output.url)
        if record.status != FAILED:
            raise


__all__ = [
    "IngestOptions",
    "IngestResult",
    "RunInfo",
    "compute_daily_metrics",
    "file_batches",
    "ingest_partition",
    "manifest_key",
    "parsed_batches",
]
