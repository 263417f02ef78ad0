"""Writing one day's rows as the Parquet data files of a Delta table.

The files are written with pyarrow (streaming: one row group in memory at a time, whatever
the day's size) and committed afterwards in a single Delta transaction (`tables.py`), so the
writer's costs are ours to choose: codec, row-group and file size, and which columns carry
statistics. Each file's Delta statistics (`numRecords`, `minValues`, `maxValues`,
`nullCount`) are computed from the rows as they are written, for exactly the columns named
by the table's `delta.dataSkippingStatsColumns`, in the format delta-rs itself writes.

Until the commit, nothing references the files: a reader never sees them, a failed write
deletes them, and a killed one leaves them for `vacuum` (full mode) to remove.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pa_fs
import pyarrow.parquet as pq
from deltalake.transaction import AddAction

from pipeline.engine.lake.schemas import PARTITION_COLUMN

logger = logging.getLogger(__name__)

# Rows per row group: large enough for dictionaries and compression to pay off, small enough
# that the group buffered before each write stays well under 100 MB (131,072 against 262,144:
# peak RSS of a 2M-line ingest 527 against 582 MB, 6.7 against 7.1 s, 2026-12-02).
ROW_GROUP_ROWS = 131_072
# ... and at most this many bytes (Arrow, uncompressed): rows differ in size by table. A dlq row
# (raw line, reasons, reason) is ~480 bytes against ~290 for an access event, and a 20M-line day
# has 200,000 of them: 131,072 buffered dlq rows held ~63 MB until their first flush, which made
# the peak RSS of a 10x day follow its size (a 2M-line day never fills one group). At 16 MiB an
# events group is ~55k rows, a dlq one ~35k (peak RSS of a 10x day 700 -> 602 MB, 2026-12-03).
ROW_GROUP_BYTES = 16 * 1024 * 1024
# Rows per data file: a 2M-line day is a few files, a 20M-line day a few dozen of ~30-60 MB.
FILE_ROWS = 1_048_576
COMPRESSION = "zstd"
COMPRESSION_LEVEL = 1


@dataclass
class _ColumnStats:
    minimum: Any = None
    maximum: Any = None
    nulls: int = 0
    # Once a value cannot be summarised (a NaN or an infinity), min/max are left out for this file: a reader
    # then simply cannot skip it, which is always correct.
    usable: bool = True

    def add(self, column: pa.ChunkedArray | pa.Array) -> None:
        self.nulls += column.null_count
        if not self.usable or column.null_count == len(column):
            return
        if pa.types.is_floating(column.type) and pc.any(pc.or_(pc.is_nan(column), pc.is_inf(column))).as_py():
            self.usable = False
            return
        extremes = pc.min_max(column)
        low, high = extremes["min"].as_py(), extremes["max"].as_py()
        self.minimum = low if self.minimum is None or low < self.minimum else self.minimum
        self.maximum = high if self.maximum is None or high > self.maximum else self.maximum


@dataclass
class _OpenFile:
    path: str
    writer: pq.ParquetWriter
    stream: Any
    rows: int = 0
    stats: dict[str, _ColumnStats] = field(default_factory=dict)


class DayFileWriter:
    """Streams one day's rows into new Parquet files of the table at `table_uri`.

    `write()` takes batches in the table's schema (the partition column included; it goes into
    the file path, not the file). `finish()` returns the `AddAction`s to commit; `abort()`
    deletes whatever was written.
    """

    def __init__(
        self,
        filesystem: pa_fs.FileSystem,
        schema: pa.Schema,
        day: dt.date,
        stats_columns: Sequence[str],
        name_prefix: str,
        *,
        row_group_rows: int = ROW_GROUP_ROWS,
        row_group_bytes: int = ROW_GROUP_BYTES,
        file_rows: int = FILE_ROWS,
    ) -> None:
        self.filesystem = filesystem
        self.table_schema = schema
        self.file_schema = schema.remove(schema.get_field_index(PARTITION_COLUMN))
        self.day = day
        self.stats_columns = [name for name in stats_columns if name in self.file_schema.names]
        self.directory = f"{PARTITION_COLUMN}={day.isoformat()}"
        self.name_prefix = name_prefix
        self.row_group_rows = row_group_rows
        self.row_group_bytes = row_group_bytes
        self.file_rows = file_rows
        self.rows = 0
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._pending_bytes = 0
        self._current: _OpenFile | None = None
        self._finished: list[AddAction] = []
        self._written: list[str] = []
        self._directory_made = False

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Add rows (in any column order; cast to the table's types)."""
        if batch.num_rows == 0:
            return
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        table = table.select(self.file_schema.names).cast(self.file_schema)
        self._pending.extend(table.to_batches())
        self._pending_rows += table.num_rows
        self._pending_bytes += table.nbytes
        self.rows += table.num_rows
        while self._pending_rows >= self.row_group_rows or (
            self._pending_rows and self._pending_bytes >= self.row_group_bytes
        ):
            self._flush(min(self._pending_rows, self.row_group_rows))

    def finish(self) -> list[AddAction]:
        """Write what is buffered, close the files; the actions that add them to the table."""
        if self._pending_rows:
            self._flush(self._pending_rows)
        self._close_current()
        return list(self._finished)

    def abort(self) -> None:
        """Delete every file written so far (nothing references them yet). Never raises."""
        current, self._current = self._current, None
        if current is not None:
            try:
                current.writer.close()
                current.stream.close()
            except Exception:  # a broken stream is what we are cleaning up after
                logger.debug("closing %s while aborting", current.path, exc_info=True)
        for path in self._written:
            try:
                self.filesystem.delete_file(path)
            except Exception as error:
                logger.warning("could not delete uncommitted data file %s (vacuum will): %s", path, error)
        self._written.clear()
        self._finished.clear()

    # -- internals ----------------------------------------------------------------------
    def _flush(self, rows: int) -> None:
        table = pa.Table.from_batches(self._pending, schema=self.file_schema)
        group, rest = table.slice(0, rows), table.slice(rows)
        self._pending = rest.to_batches()
        self._pending_rows = rest.num_rows
        self._pending_bytes = rest.nbytes
        current = self._current or self._open()
        current.writer.write_table(group, row_group_size=rows)
        current.rows += group.num_rows
        for name in self.stats_columns:
            current.stats.setdefault(name, _ColumnStats()).add(group.column(name))
        if current.rows >= self.file_rows:
            self._close_current()

    def _open(self) -> _OpenFile:
        if not self._directory_made:
            self.filesystem.create_dir(self.directory, recursive=True)
            self._directory_made = True
        name = f"part-{self.name_prefix}-{len(self._written):05d}-{uuid.uuid4().hex[:12]}.{COMPRESSION}.parquet"
        path = f"{self.directory}/{name}"
        stream = self.filesystem.open_output_stream(path)
        self._written.append(path)
        writer = pq.ParquetWriter(
            stream,
            self.file_schema,
            compression=COMPRESSION,
            compression_level=COMPRESSION_LEVEL,
            write_statistics=self.stats_columns or False,
        )
        self._current = _OpenFile(path, writer, stream)
        return self._current

    def _close_current(self) -> None:
        current, self._current = self._current, None
        if current is None:
            return
        current.writer.close()
        current.stream.close()
        size = self.filesystem.get_file_info(current.path).size
        self._finished.append(
            AddAction(
                path=current.path,
                size=int(size or 0),
                partition_values={PARTITION_COLUMN: self.day.isoformat()},
                modification_time=int(time.time() * 1000),
                data_change=True,
                stats=_stats_json(current, self.stats_columns),
            )
        )


def _stats_json(current: _OpenFile, columns: Sequence[str]) -> str:
    """Delta file statistics, as delta-rs writes them."""
    minimum: dict[str, Any] = {}
    maximum: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    for name in columns:
        stats = current.stats.get(name)
        if stats is None:
            continue
        nulls[name] = stats.nulls
        if stats.usable and stats.minimum is not None:
            minimum[name] = stat_value(stats.minimum, upper=False)
            maximum[name] = stat_value(stats.maximum, upper=True)
    return json.dumps({"numRecords": current.rows, "minValues": minimum, "maxValues": maximum, "nullCount": nulls})


def stat_value(value: Any, *, upper: bool) -> Any:
    """A statistic in Delta's JSON form. Timestamps have millisecond precision there: a
    maximum is rounded up and a minimum down, so that the range still contains every value
    (a reader skipping a file on a truncated maximum would lose rows)."""
    if isinstance(value, dt.datetime):
        value = value.astimezone(dt.UTC)
        truncated = value.replace(microsecond=value.microsecond // 1000 * 1000)
        if upper and truncated < value:
            truncated += dt.timedelta(milliseconds=1)
        return truncated.strftime("%Y-%m-%dT%H:%M:%S.") + f"{truncated.microsecond // 1000:03d}Z"
    if isinstance(value, dt.date):
        return value.isoformat()
    return value
