"""The baselines the pipeline is measured against, run on the same files.

(a) the seed articles' naive approach: Python `re` per line, a pydantic model per row, rows
    inserted into DuckDB in batches;
(b) a typical pandas + pandera (pandas backend) implementation;
(c) the floor: DuckDB merely reading the files' lines (one VARCHAR column, no parsing).
"""

from __future__ import annotations

import datetime as dt
import gzip
import re
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pandas as pd
import pandera.pandas as pandera_pandas
import pyarrow as pa
from pydantic import BaseModel, ValidationError, field_validator

ACCESS_PATTERN = re.compile(
    r"^(?P<client>[^ ,]+(?:, [^ ,]+)*) (?P<ident>\S+) (?P<remote_user>\S+) \[(?P<timestamp>[^\]]*)\] "
    r'"(?:(?P<method>[A-Za-z]+) (?P<path>[^ "]+)(?: (?P<protocol>[^ "]+))?|-|)" (?P<status>\S+) (?P<bytes>\S+)'
    r'(?: "(?P<referrer>[^"]*)" "(?P<user_agent>[^"]*)"(?: "[^"]*")*)?$'
)
TIMESTAMP_FORMAT = "%d/%b/%Y:%H:%M:%S %z"


def iter_lines(files: list[Path], limit: int | None = None) -> Iterator[str]:
    """Lines of the files, decoded, as a naive job reads them."""
    count = 0
    for path in files:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8", errors="replace", newline=None) as stream:  # type: ignore[operator]
            for line in stream:
                yield line.rstrip("\r\n")
                count += 1
                if limit is not None and count >= limit:
                    return


class AccessRow(BaseModel):
    """One access-log row, validated per row (the naive way)."""

    client: str
    remote_user: str | None
    timestamp: dt.datetime
    method: str | None
    path: str | None
    protocol: str | None
    status: int
    bytes: int | None
    referrer: str | None
    user_agent: str | None

    @field_validator("status")
    @classmethod
    def _status_range(cls, status: int) -> int:
        if not 100 <= status <= 599:
            raise ValueError("status out of range")
        return status


def seed_style(files: list[Path], database: Path, limit: int) -> int:
    """(a) `re` + pydantic per row + batched DuckDB inserts; returns lines processed."""
    connection = duckdb.connect(str(database))
    connection.execute(
        "CREATE OR REPLACE TABLE events (client VARCHAR, remote_user VARCHAR, timestamp TIMESTAMPTZ, method VARCHAR,"
        " path VARCHAR, protocol VARCHAR, status INTEGER, bytes BIGINT, referrer VARCHAR, user_agent VARCHAR)"
    )
    connection.execute("CREATE OR REPLACE TABLE dlq (line VARCHAR, error VARCHAR)")
    good: list[dict[str, object]] = []
    bad: list[tuple[str, str]] = []
    lines = 0
    for line in iter_lines(files, limit):
        lines += 1
        match = ACCESS_PATTERN.match(line)
        if match is None:
            bad.append((line, "no match"))
            continue
        fields = {key: (None if value in (None, "-") else value) for key, value in match.groupdict().items()}
        try:
            fields["timestamp"] = dt.datetime.strptime(match["timestamp"], TIMESTAMP_FORMAT)
            row = AccessRow(**{key: value for key, value in fields.items() if key != "ident"})
        except (ValueError, ValidationError) as error:
            bad.append((line, str(error)[:200]))
            continue
        good.append(row.model_dump())
        if len(good) >= 10_000:
            _insert_rows(connection, good)
            good.clear()
    if good:
        _insert_rows(connection, good)
    if bad:
        connection.executemany("INSERT INTO dlq VALUES (?, ?)", bad)
    connection.close()
    return lines


def _insert_rows(connection: duckdb.DuckDBPyConnection, rows: list[dict[str, object]]) -> None:
    # A batch of Python rows through Arrow: DuckDB's executemany is row-at-a-time and would
    # make this baseline a strawman.
    batch = pa.Table.from_pylist(rows)  # noqa: F841 - read by DuckDB by name
    connection.execute("INSERT INTO events BY NAME SELECT * FROM batch")


def pandas_pandera(files: list[Path], database: Path, limit: int) -> int:
    """(b) pandas `str.extract` + pandera (pandas backend) lazy validation + DuckDB load."""
    schema = pandera_pandas.DataFrameSchema(
        {
            "timestamp": pandera_pandas.Column("datetime64[ns, UTC]", nullable=False),
            "client": pandera_pandas.Column(str, nullable=False),
            "status": pandera_pandas.Column("Int64", pandera_pandas.Check.in_range(100, 599), nullable=False),
            "bytes": pandera_pandas.Column("Int64", pandera_pandas.Check.ge(0), nullable=True),
        },
        strict=False,
    )
    connection = duckdb.connect(str(database))
    lines = pd.Series(list(iter_lines(files, limit)), dtype="string")
    parsed = lines.str.extract(ACCESS_PATTERN.pattern)
    parsed["timestamp"] = pd.to_datetime(parsed["timestamp"], format=TIMESTAMP_FORMAT, errors="coerce", utc=True)
    parsed["status"] = pd.to_numeric(parsed["status"], errors="coerce").astype("Int64")
    parsed["bytes"] = pd.to_numeric(parsed["bytes"].replace("-", None), errors="coerce").astype("Int64")
    bad_positions: set[int] = set()
    try:
        schema.validate(parsed, lazy=True)
    except pandera_pandas.errors.SchemaErrors as errors:
        bad_positions = set(errors.failure_cases["index"].dropna().astype(int))
    mask = ~parsed.index.isin(sorted(bad_positions))
    good = parsed[mask]  # noqa: F841 - read by DuckDB by name
    quarantined = pd.DataFrame({"line": lines[~mask]})  # noqa: F841
    connection.execute("CREATE OR REPLACE TABLE events AS SELECT * FROM good")
    connection.execute("CREATE OR REPLACE TABLE dlq AS SELECT * FROM quarantined")
    connection.close()
    return len(lines)


def duckdb_read_floor(files: list[Path]) -> int:
    """(c) DuckDB reading every line as one VARCHAR column; returns the line count."""
    connection = duckdb.connect()
    paths = [str(path) for path in files]
    row = connection.execute(
        "SELECT count(*) FROM read_csv(?, columns = {'line': 'VARCHAR'}, delim = '\x1f', quote = '', "
        "escape = '', header = false, auto_detect = false, strict_mode = false)",
        [paths],
    ).fetchone()
    connection.close()
    return int(row[0]) if row else 0
