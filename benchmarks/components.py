"""The ingest's two largest costs, each measured alone on the same partition.

- `regex_extract`: the polars extraction of the source's fields with its pattern (what the
  parser runs over every record), on lines already decoded in memory;
- `lake_write`: writing the partition's already-parsed rows as the day's Parquet files of the
  events table and committing them to its Delta log, the way the ingest's load does (same
  writer, same batches, the same one-day replacement).

Neither can be avoided by an ingest that parses with the source's pattern and writes the
lake, so together they bound it: on N cores it cannot beat
N / (regex seconds per line + write seconds per row × rows per line), however well the
rest is done. `benchmarks.run` prints that ceiling next to the targets.

- `duckdb_native_load`: DuckDB alone, on every core, splitting the access lines as
  space-delimited quoted records and inserting the typed fields into the events table in one
  statement. Not an ingest (no pattern, no validation, no quarantine, no line numbers; lines
  of another layout are skipped), into a table of its own database file: the speed of the
  parts DuckDB does natively, parse included, which no Python-driven design can hope to beat.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import duckdb
import polars as pl

from benchmarks.baselines import iter_lines
from pipeline.engine.ingest import file_batches
from pipeline.engine.lake import LakeLocation, SourceTables
from pipeline.engine.lake.files import DayFileWriter
from pipeline.engine.landing import list_partition
from pipeline.engine.objects import ObjectStore
from pipeline.engine.parse import PartitionParser, PendingValidation
from pipeline.engine.reader import DEFAULT_CHUNK_BYTES
from pipeline.sources.spec import SourceSpec

logger = logging.getLogger(__name__)


def decoded_lines(files: list[Path]) -> pl.Series:
    """The files' lines as text, in memory (prepared outside any timer)."""
    return pl.Series("text", list(iter_lines(files)), dtype=pl.String)


def regex_extract(pattern: str, lines: pl.Series) -> int:
    """Extract every field of `lines` with `pattern` (a parser's `record_pattern`); returns the
    lines matched against."""
    return lines.str.extract_groups(pattern).len()


def parsed_events(spec: SourceSpec, day: dt.date, landing: ObjectStore) -> list[pl.DataFrame]:
    """The partition's valid rows, in the parser's batches, with the columns the load adds
    (prepared outside any timer)."""
    parser = PartitionParser(spec, day)
    pending = PendingValidation()
    batches: list[pl.DataFrame] = []
    for landed in list_partition(landing, spec.name, day).files:
        for batch in file_batches(landed, parser, landing, DEFAULT_CHUNK_BYTES, logger, pending):
            batches.append(batch.events)
    batches.append(parser.judge(pending).events)
    constants = [
        pl.lit(day, dtype=pl.Date).alias("partition_date"),
        pl.lit("benchmark", dtype=pl.String).alias("run_id"),
    ]
    return [batch.with_columns(constants) for batch in batches if batch.height]


def lake_write(spec: SourceSpec, batches: list[pl.DataFrame], lake: Path, day: dt.date) -> int:
    """Write `batches` as the day's files of a fresh events table under `lake` and commit them
    as the day's replacement, as the ingest's load does; returns the rows written."""
    tables = SourceTables(LakeLocation.local(lake), spec)
    tables.ensure()
    snapshot = tables.open("events")
    writer = DayFileWriter(
        tables.location.filesystem(tables.uri("events")),
        tables.schemas["events"],
        day,
        tables.stats_columns("events"),
        "0001-benchmrk",
    )
    for batch in batches:
        writer.write(batch.to_arrow())
    tables.replace_day("events", day, writer.finish(), run_id="benchmark", attempt=1, snapshot=snapshot)
    return sum(batch.height for batch in batches)


# The combined access-log layout as DuckDB's CSV reader sees it: space-delimited, quoted
# fields, the bracketed timestamp two tokens ("[01/Mar/2024:17:00:00", "+0000]").
ACCESS_AS_DELIMITED = {
    "client": "VARCHAR",
    "ident": "VARCHAR",
    "remote_user": "VARCHAR",
    "time": "VARCHAR",
    "zone": "VARCHAR",
    "request": "VARCHAR",
    "status": "VARCHAR",
    "bytes": "VARCHAR",
    "referrer": "VARCHAR",
    "user_agent": "VARCHAR",
}


def duckdb_native_load(files: list[Path], database: Path, day: dt.date, threads: int) -> int:
    """Load the access `files` into a fresh events table in the DuckDB file `database` with
    DuckDB alone, in one statement on `threads` threads (see the module docstring); returns
    the rows inserted."""
    database.unlink(missing_ok=True)
    with duckdb.connect(str(database)) as connection:
        # DuckDB's own defaults but for the threads: the best it can do.
        connection.execute(f"SET threads = {threads}")
        connection.execute("SET enable_progress_bar = false")
        connection.execute(
            f"""CREATE TABLE events AS
SELECT ?::DATE AS partition_date, filename AS source_file, 0 AS line_number,
    try_strptime(time || ' ' || zone, '[%d/%b/%Y:%H:%M:%S %z]') AS timestamp,
    client, nullif(remote_user, '-') AS remote_user,
    split_part(request, ' ', 1) AS method, split_part(request, ' ', 2) AS path,
    split_part(request, ' ', 3) AS protocol,
    TRY_CAST(status AS BIGINT) AS status, TRY_CAST(nullif(bytes, '-') AS BIGINT) AS bytes,
    nullif(referrer, '-') AS referrer, nullif(user_agent, '-') AS user_agent, 'benchmark' AS run_id
FROM read_csv(?, columns = {ACCESS_AS_DELIMITED!r}, delim = ' ', quote = '"', escape = '\\',
    header = false, auto_detect = false, ignore_errors = true, filename = true)""",
            [day, [str(path) for path in files]],
        )
        inserted = connection.execute("SELECT count(*) FROM events").fetchone()
    return int(inserted[0]) if inserted else 0
