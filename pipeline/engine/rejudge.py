"""Re-judge a day's quarantined rows through the source's *current* definition, from the lake.

After a definition is fixed (a level it did not know, a timestamp format it misread), the
rows it quarantined can be judged again without the landing files, which teams usually
expire after weeks: the DLQ keeps each record's exact text (`raw_line`, and `raw_bytes` when
it was not UTF-8). A re-judge is a replacement of the day like any load, under the day's lock,
sealed by its own `loads` row (operation `rejudge`):

- every record of the day's DLQ (as its last sealing load left it) is parsed and validated
  again; the ones that pass now join the day's events, the others stay in the DLQ with their
  new reasons; rows recording a file that could not be read (`file: ...`) are evidence, not
  records, and stay as they are;
- the day's events are rewritten whole with the re-judge's `run_id`, so that, as after any
  load, all of a day's rows name one run (what the consistent reader relies on);
- the day's metrics are recomputed (removed if the day is still over its budget);
- the line accounting of the original load still holds: the records read are the same, only
  their split between loaded and quarantined changed.

A multi-line record is parsed on its own (its lines, as folded when it was quarantined), so
its verdict cannot depend on the records around it; single-line records are parsed together.
"""

from __future__ import annotations

import bisect
import datetime as dt
import logging
import time
from collections import Counter
from typing import Any

import polars as pl
import pyarrow as pa

from pipeline.engine.ingest import (
    IngestResult,
    RunInfo,
    _DayLoad,
    _fail_attempt,
    _finish,
    _write_manifest,
)
from pipeline.engine.lake import Lake, LoadRecord
from pipeline.engine.lake.loads import EMPTY, LOADED, sealed_by_day
from pipeline.engine.lake.snapshot import day_dataset
from pipeline.engine.objects import ObjectStore
from pipeline.engine.parse import ParsedBatch, PartitionParser, PendingValidation
from pipeline.engine.reader import LineBatch
from pipeline.engine.records import count_failed_checks, rules_by_rows
from pipeline.sources.spec import SourceSpec
from pipeline.sources.version import definition_version

logger = logging.getLogger(__name__)
Log = logging.Logger | logging.LoggerAdapter  # type: ignore[type-arg]

REJUDGE = "rejudge"
_BATCH_ROWS = 50_000


class NothingToRejudge(RuntimeError):
    """The day was never loaded: there is no DLQ to re-judge (load it from its landing files)."""


class CannotRejudge(RuntimeError):
    """The source's records cannot be re-read from the DLQ alone."""


def check_rejudgeable(spec: SourceSpec, sealed: LoadRecord) -> None:
    """Refuse a day whose records cannot be parsed from the DLQ: a delimited layout read from a
    header line of each file (`#Fields:`) needs the header lines, which `loads` keeps since
    header lines are recorded; a day loaded before that has none to read them with."""
    header = getattr(spec.format, "header", None)
    if header is not None and sealed.header_lines is None:
        raise CannotRejudge(
            f"source {spec.name!r} reads its columns from the {header!r} header line of each file, and the load of "
            f"{sealed.partition_date} (run {sealed.run_id}) was recorded before header lines were kept in `loads`: "
            "re-run the day from its landing files (once; later re-judges of it then work)"
        )


def rejudge_partition(
    spec: SourceSpec,
    day: dt.date,
    *,
    output: ObjectStore,
    lake: Lake,
    run: RunInfo,
    log: Log = logger,
) -> IngestResult:
    """Re-judge one day's DLQ (see the module docstring); returns the attempt's record. On
    failure the attempt is recorded (row and manifest), the day left as it was, and the error
    re-raised."""
    from pipeline.engine.ingest import manifest_key

    tables = lake.tables(spec)
    record = LoadRecord(
        source=spec.name,
        partition_date=day.isoformat(),
        run_id=run.run_id,
        definition_version=definition_version(spec),
        error_budget=spec.error_budget,
        operation=REJUDGE,
        started_at=dt.datetime.now(dt.UTC),
        root_run_id=run.root_run_id or run.run_id,
        job_name=run.job_name,
        manifest=output.location(manifest_key(spec.name, day)),
    )
    started = time.perf_counter()
    day_load: _DayLoad | None = None
    try:
        tables.ensure(log)
        with lake.day_lock(spec.name, day, owner=run.run_id, log=log) as lock:
            history = tables.read_loads([day])
            record.attempt = max((item.attempt for item in history), default=0) + 1
            sealed = sealed_by_day(history).get(day.isoformat())
            if sealed is None or sealed.events_version is None or sealed.dlq_version is None:
                raise NothingToRejudge(
                    f"{spec.name} {day} was never loaded: there is no DLQ to re-judge; load it from its landing files"
                )
            check_rejudgeable(spec, sealed)
            _copy_listing(record, sealed)
            day_load = _DayLoad(tables, spec, day, record, sealed, run, lock, log)
            moved, still = _rewrite(day_load, sealed)
            day_load.commit()
            record.status = LOADED if record.files else EMPTY
            _finish(record, started)
            record.summary = (
                f"{record.sentence()} Re-judged {moved + still:,} quarantined record(s) of run "
                f"{sealed.run_id} under definition {record.definition_version}: {moved:,} now pass, "
                f"{still:,} stay quarantined."
            )
            tables.append_loads([record])
    except BaseException as error:
        _fail_attempt(tables, output, record, day_load, error, started, log, "re-judge")
    _write_manifest(output, record, log)
    log.info("%s (%.2f s)", record.summary, record.duration_s)
    return IngestResult(record, metrics=day_load.metrics)


def _copy_listing(record: LoadRecord, sealed: LoadRecord) -> None:
    """What the original load read: its files and lines (the records are the same ones)."""
    for name in (
        "files",
        "bytes_read",
        "lines_read",
        "lines_ignored",
        "continuation_lines",
        "hours_present",
        "missing_hours",
        "ignored_objects",
        "landing_fingerprint",
        "header_lines",
    ):
        setattr(record, name, getattr(sealed, name))


def _rewrite(day_load: _DayLoad, sealed: LoadRecord) -> tuple[int, int]:
    """Fill the day load's writers: the old events with this run's id, the re-judged records.
    Returns (records that now pass, records still quarantined)."""
    tables, spec, day, record = day_load.tables, day_load.spec, day_load.day, day_load.record
    run_id = day_load.run.run_id
    for batch in day_dataset(tables, "events", day, sealed.events_version or 0).to_batches(batch_size=_BATCH_ROWS):
        table = pa.Table.from_batches([batch])
        table = table.set_column(
            table.schema.get_field_index("run_id"), "run_id", pa.array([run_id] * table.num_rows, pa.large_string())
        )
        day_load.writers["events"].write(table)
    record.rows_loaded = sealed.rows_loaded
    dlq = pl.from_arrow(day_dataset(tables, "dlq", day, sealed.dlq_version or 0).to_table())
    assert isinstance(dlq, pl.DataFrame)
    is_evidence = dlq["reasons"].list.eval(pl.element().struct.field("field") == "file").list.any()
    evidence, records = dlq.filter(is_evidence), dlq.filter(~is_evidence)
    parser = PartitionParser(spec, day)
    pending = PendingValidation()
    outcomes: list[ParsedBatch] = []
    headers = _header_lines_by_file(sealed)
    for source_file, group in records.group_by("source_file", maintain_order=True):
        name = str(source_file[0])
        outcomes.extend(_judge_file(parser, name, group, headers.get(name, []), pending))
    if pending.count:
        outcomes.append(parser.judge(pending))
    events_columns = [
        pl.lit(day, dtype=pl.Date).alias("partition_date"),
        pl.lit(run_id, dtype=pl.String).alias("run_id"),
    ]
    dlq_columns = [
        *events_columns,
        pl.lit(day_load.run.quarantined_at, dtype=pl.Datetime("us", "UTC")).alias("quarantined_at"),
    ]
    failed: Counter[str] = Counter()
    moved = still = 0
    for batch in outcomes:
        if batch.events.height:
            day_load.writers["events"].write(batch.events.with_columns(events_columns).to_arrow())
            moved += batch.events.height
        if batch.quarantined.height:
            day_load.writers["dlq"].write(batch.quarantined.with_columns(dlq_columns).to_arrow())
            still += batch.quarantined.height
            count_failed_checks(batch.quarantined, failed)
            _samples(record, batch.quarantined)
    if evidence.height:
        kept = evidence.with_columns(pl.lit(run_id, dtype=pl.String).alias("run_id"))
        day_load.writers["dlq"].write(kept.to_arrow())
        count_failed_checks(evidence, failed)
        _samples(record, evidence)
    record.rows_loaded = sealed.rows_loaded + moved
    record.rows_quarantined = still + evidence.height
    record.failed_checks = rules_by_rows(failed)
    record.rows_read = record.rows_loaded + record.rows_quarantined
    return moved, still


def _header_lines_by_file(sealed: LoadRecord) -> dict[str, list[tuple[int, bytes]]]:
    """The header lines the original load read, per file, in line order."""
    by_file: dict[str, list[tuple[int, bytes]]] = {}
    for header in sealed.header_lines or []:
        line = (int(header["line_number"]), str(header["line"]).encode("utf-8"))
        by_file.setdefault(str(header["source_file"]), []).append(line)
    return {name: sorted(lines) for name, lines in by_file.items()}


def _judge_file(
    parser: PartitionParser,
    source_file: str,
    group: pl.DataFrame,
    header_lines: list[tuple[int, bytes]],
    pending: PendingValidation,
) -> list[ParsedBatch]:
    """Parse one file's quarantined records again, keeping their original line numbers.

    Single-line records are parsed as one batch, the file's header lines among them at their
    places (their verdicts, pandera's included, come out of that call, numbered 1..n, then
    mapped back); a multi-line record is parsed alone, starting at its own line number, after
    the header line in force at it, its suspect rows held in `pending` for one verdict."""
    rows = group.sort("line_number").select("line_number", "raw_line", "raw_bytes").to_dicts()
    records = [(int(row["line_number"]), _record_bytes(row)) for row in rows]
    if not parser.spec.multiline:
        # A header line and the record it precedes never share a number; the header sorts first.
        lines = sorted([*header_lines, *records], key=lambda numbered: numbered[0])
        originals = [number for number, _ in lines]
        batch = LineBatch(pa.array([text for _, text in lines], pa.large_binary()), 1)
        parsed = parser.parse_file([batch], source_file)
        return [_renumbered(batch, originals) for batch in parsed]
    results: list[ParsedBatch] = []
    header_numbers = [number for number, _ in header_lines]
    for number, text in records:
        lines = text.split(b"\n")
        in_force = bisect.bisect_left(header_numbers, number) - 1
        if in_force >= 0:
            # The header line goes right above the record, which keeps its own numbers.
            lines.insert(0, header_lines[in_force][1])
            number -= 1
        batch = LineBatch(pa.array(lines, pa.large_binary()), number)
        results.extend(parser.parse_file([batch], source_file, pending))
    return results


def _record_bytes(row: dict[str, Any]) -> bytes:
    raw = row.get("raw_bytes")
    return bytes(raw) if raw is not None else str(row["raw_line"]).encode("utf-8")


def _renumbered(batch: ParsedBatch, originals: list[int]) -> ParsedBatch:
    """Map the synthetic line numbers (1..n, or 1 for a record parsed alone) back to the lines
    the records had in their file."""
    mapping = pl.DataFrame(
        {"line_number": list(range(1, len(originals) + 1)), "original": originals},
        schema={"line_number": pl.Int64, "original": pl.Int64},
    )

    def renumber(frame: pl.DataFrame) -> pl.DataFrame:
        if not frame.height:
            return frame
        joined = frame.join(mapping, on="line_number", how="left", maintain_order="left")
        return joined.with_columns(pl.col("original").alias("line_number")).drop("original")

    return ParsedBatch(
        renumber(batch.events),
        renumber(batch.quarantined),
        batch.lines_read,
        batch.lines_ignored,
        batch.continuation_lines,
        batch.held,
    )


def _samples(record: LoadRecord, quarantined: pl.DataFrame) -> None:
    from pipeline.engine.ingest import _keep_samples

    _keep_samples(record, quarantined)
