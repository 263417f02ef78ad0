"""Try a source's definition on sample files with the real parser, writing nothing.

`check_sample` streams each file through the same reader and `PartitionParser` as an ingest
(bounded memory: it keeps the first rows of each kind and counts the rest), so what it
reports - parsed rows, quarantined lines with their reasons, the accounting and the
quarantine rate against the source's error budget - is what a load of those files would do.
The data date of each file is the caller's: nothing here reads the clock.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import BinaryIO

import polars as pl

from pipeline.engine.parse import ParsedBatch, PartitionParser, PendingValidation, events_schema, quarantine_entry
from pipeline.engine.reader import DEFAULT_CHUNK_BYTES, FileReadError, iter_line_batches, open_log
from pipeline.engine.records import QUARANTINE_SCHEMA, count_failed_checks
from pipeline.sources.spec import SourceSpec


@dataclass(frozen=True)
class SampleFile:
    """One file to try: a name to show, its data date, and how to open its bytes."""

    name: str
    day: dt.date
    open: Callable[[], AbstractContextManager[BinaryIO]]
    gzipped: bool = False


@dataclass
class SampleReport:
    """What parsing the sample did: counts of everything, the first rows of each kind."""

    source: SourceSpec
    lines_read: int = 0
    lines_ignored: int = 0
    continuation_lines: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    events: pl.DataFrame = field(default_factory=pl.DataFrame)
    quarantined: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=QUARANTINE_SCHEMA))
    per_file: dict[str, dict[str, int]] = field(default_factory=dict)
    failed_checks: Counter[str] = field(default_factory=Counter)

    @property
    def rows_read(self) -> int:
        """Records read: loaded plus quarantined (a multi-line record is one)."""
        return self.rows_loaded + self.rows_quarantined

    @property
    def quarantine_rate(self) -> float:
        """Share of records quarantined (0 for an empty sample)."""
        return self.rows_quarantined / self.rows_read if self.rows_read else 0.0

    @property
    def within_error_budget(self) -> bool:
        """Whether a day like this sample would pass the blocking `quarantine_rate` check
        (exact counts, as the ingest compares them)."""
        return self.rows_quarantined <= Decimal(str(self.source.error_budget)) * self.rows_read

    @property
    def balanced(self) -> bool:
        """The accounting identity: every line read is loaded, quarantined, folded or ignored."""
        accounted = self.rows_loaded + self.rows_quarantined + self.continuation_lines + self.lines_ignored
        return self.lines_read == accounted


def check_sample(
    spec: SourceSpec,
    files: Iterable[SampleFile],
    *,
    keep_rows: int = 10,
    keep_quarantined: int = 50,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> SampleReport:
    """Parse and validate `files` as the ingest would (files of one data date share one
    pandera judgement); keep the first `keep_rows` events and `keep_quarantined` quarantined
    rows, count everything. A file that cannot be read to its end gets a quarantine row, as
    in a load; one that cannot be opened raises (`OSError`, `ObjectStoreError`)."""
    report = SampleReport(spec, events=pl.DataFrame(schema=events_schema(spec)))
    parsers: dict[dt.date, tuple[PartitionParser, PendingValidation]] = {}
    for sample in files:
        parser, pending = parsers.get(sample.day) or parsers.setdefault(
            sample.day, (PartitionParser(spec, sample.day), PendingValidation())
        )
        counts = report.per_file.setdefault(sample.name, {"lines_read": 0})
        for batch in _file_batches(sample, parser, pending, chunk_bytes):
            counts["lines_read"] += batch.lines_read
            _add(report, batch, keep_rows, keep_quarantined)
    for parser, pending in parsers.values():
        _add(report, parser.judge(pending), keep_rows, keep_quarantined)
    return report


def _file_batches(
    sample: SampleFile, parser: PartitionParser, pending: PendingValidation, chunk_bytes: int
) -> Iterable[ParsedBatch]:
    with sample.open() as raw, open_log(raw, sample.gzipped) as stream:
        try:
            yield from parser.parse_file(iter_line_batches(stream, chunk_bytes), sample.name, pending)
        except FileReadError as error:
            # As in a load: the evidence of the cut line is one quarantined row, one line read.
            evidence = quarantine_entry(
                sample.name, error.line_number, "file", "readable_to_end", str(error), error.partial
            )
            yield ParsedBatch(pl.DataFrame(schema=events_schema(parser.spec)), evidence, 1, 0, 0)


def _add(report: SampleReport, batch: ParsedBatch, keep_rows: int, keep_quarantined: int) -> None:
    report.lines_read += batch.lines_read
    report.lines_ignored += batch.lines_ignored
    report.continuation_lines += batch.continuation_lines
    report.rows_loaded += batch.events.height
    report.rows_quarantined += batch.quarantined.height
    # Keep the first rows by file and line (held rows are judged later than their neighbours).
    if batch.events.height:
        events = pl.concat([report.events, batch.events.head(keep_rows)], how="vertical_relaxed")
        report.events = events.sort("source_file", "line_number").head(keep_rows)
    if batch.quarantined.height:
        quarantined = pl.concat([report.quarantined, batch.quarantined.head(keep_quarantined)])
        report.quarantined = quarantined.sort("source_file", "line_number").head(keep_quarantined)
        count_failed_checks(batch.quarantined, report.failed_checks)
