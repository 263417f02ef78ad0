"""`json`: JSON lines, one object per record; fields by dotted path or JSON pointer.

The batch is handed to DuckDB (in memory, one thread per parse thread, as Arrow: no copy per
row), whose JSON reader extracts every declared path in one pass over each valid line: about
5x faster than polars' JSON functions here (`benchmarks/formats.py`). A value is its text:
strings unquoted, numbers as written (integers beyond 2^53 keep every digit), objects and
arrays as JSON text, `null` and missing keys as NULL. A record that is not a JSON object (not
JSON, truncated, an array, a bare string) fails `json_object`.

Example (`docs/sources.md`): ECS logs, where `log.level` is a key with a dot beside a nested
`log` object: `level: {from: /log.level}`, `logger: {from: log.logger}`.
"""

from __future__ import annotations

import threading

import duckdb
import polars as pl

from pipeline.engine.formats import LINE_PROBLEM, RecordFormat, joined
from pipeline.engine.records import TEXT
from pipeline.sources.spec import SourceSpec

JSON_WHITESPACE = " \t\r\n"


def json_pointer(location: str) -> str:
    """`location` as a JSON pointer: a pointer as given (`/log.level`), a dotted path
    (`log.origin.file`) split at its dots."""
    if location.startswith("/"):
        return location
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in location.split("."))


class JsonRecords(RecordFormat):
    """Values at each column's locations; `json_object` for a record that is not an object."""

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        locations = spec.column_locations()
        self.pointers = list(dict.fromkeys(json_pointer(part) for parts in locations.values() for part in parts))
        self.positions = {
            column: [self.pointers.index(json_pointer(part)) for part in parts] for column, parts in locations.items()
        }
        paths = ", ".join("'" + pointer.replace("'", "''") + "'" for pointer in self.pointers)
        self.query = f"SELECT CASE WHEN json_valid(line) THEN json_extract_string(line, [{paths}]) END AS v FROM lines"
        self._lock = threading.Lock()
        self._database: duckdb.DuckDBPyConnection | None = None

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        # One in-memory database per parser, one cursor (connection) per call: parse threads
        # run their queries side by side. One DuckDB thread each: the parse threads already
        # use every core.
        with self._lock:
            if self._database is None:
                self._database = duckdb.connect(":memory:", config={"threads": 1})
            return self._database.cursor()

    def extract(self, records: pl.DataFrame) -> pl.DataFrame:
        text = records.get_column(TEXT)
        cursor = self._cursor()
        try:
            cursor.register("lines", pl.DataFrame({"line": text}).to_arrow())
            values = pl.from_arrow(cursor.sql(self.query).to_arrow_table()).get_column("v")  # type: ignore[union-attr]
        finally:
            cursor.close()
        # A valid JSON text whose first character is `{` is an object.
        is_object = values.is_not_null() & text.str.strip_chars_start(JSON_WHITESPACE).str.starts_with("{")
        frame = pl.DataFrame({"v": values, "ok": is_object})
        value = pl.col("v").list
        return frame.select(
            *(
                joined([value.get(index) for index in positions]).alias(column)
                for column, positions in self.positions.items()
            ),
            pl.when(~pl.col("ok")).then(pl.lit("json_object")).alias(LINE_PROBLEM),
        )
