"""What parsing hands on: batches of events and quarantine rows, and the rows held for pandera.

`ParsedBatch` is the unit the ingest loads; `PendingValidation` holds the rows the vectorised
pre-filter suspects until pandera judges them together (`PartitionParser.judge`);
`quarantine_entry` records evidence that is not a whole line (an unreadable file).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import polars as pl

from pipeline.engine.records import QUARANTINE_SCHEMA


class PendingValidation:
    """Rows the pre-filter suspects, held until pandera judges them together, with the reasons
    already found for them. Keyed by file and line; safe to share between parse threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: list[pl.DataFrame] = []
        self._reasons: list[pl.DataFrame] = []
        self.count = 0

    def hold(self, rows: pl.DataFrame, reasons: list[pl.DataFrame]) -> None:
        """Keep `rows` (and their reasons) until judged, copied into buffers of their own."""
        rows = _compacted(rows)
        reasons = [_compacted(reason) for reason in reasons if reason.height]
        with self._lock:
            self._rows.append(rows)
            self._reasons.extend(reasons)
            self.count += rows.height

    def take(self) -> tuple[list[pl.DataFrame], list[pl.DataFrame]]:
        """Everything held so far (rows, reasons); the holder is empty afterwards."""
        with self._lock:
            taken = self._rows, self._reasons
            self._rows, self._reasons, self.count = [], [], 0
        return taken


def _compacted(frame: pl.DataFrame) -> pl.DataFrame:
    """A copy of `frame` that owns its string data.

    polars strings are views into shared buffers: a few rows filtered out of a batch would keep
    the whole batch's text alive while held (measured: peak RSS of a 20-million-line day
    doubled). Going through Arrow's offset-based layout copies just these rows' bytes.
    """
    return pl.from_arrow(frame.to_arrow(compat_level=pl.CompatLevel.oldest()))  # type: ignore[return-value]


@dataclass
class ParsedBatch:
    """The outcome of one batch of lines."""

    events: pl.DataFrame
    quarantined: pl.DataFrame
    lines_read: int
    lines_ignored: int
    continuation_lines: int
    # Rows of this batch held for pandera (`PendingValidation`): they come out as events or
    # quarantine rows of the batch that judges them. Over a whole file (or partition, once all
    # is judged): lines_read = events + quarantined + lines_ignored + continuation_lines.
    held: int = 0
    # The header lines of this batch that set the layout of the lines after them (a delimited
    # source's `#Fields:`), as (line number, text): kept in `loads` so that a re-judge can
    # read the file's quarantined records through the layout they were read with.
    header_lines: tuple[tuple[int, str], ...] = ()


def quarantine_entry(
    source_file: str, line_number: int, field: str, check: str, value: str, partial: bytes = b""
) -> pl.DataFrame:
    """A single quarantine row for evidence that is not a whole line (e.g. an unreadable
    file); `partial` is the part of a line read before the problem."""
    try:
        raw_line, raw_bytes = partial.decode("utf-8"), None
    except UnicodeDecodeError:
        raw_line, raw_bytes = partial.decode("utf-8", errors="backslashreplace"), partial
    return pl.DataFrame(
        {
            "source_file": [source_file],
            "line_number": [line_number],
            "raw_line": [raw_line],
            "raw_bytes": [raw_bytes],
            "reasons": [[{"field": field, "check": check, "value": value}]],
            "reason": [f"{field}: {check} ({value})"],
        },
        schema=QUARANTINE_SCHEMA,
    )
