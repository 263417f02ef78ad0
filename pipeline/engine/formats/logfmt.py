"""`logfmt`: `key=value` pairs separated by spaces; values bare or double-quoted.

A record is a sequence of pairs and nothing else (`time="..." level=info msg="a b"`);
anything else (a JSON line, a `panic:` trace) fails `matches_format`. Quoted values decode
`\\"`, `\\\\`, `\\n`, `\\r` and `\\t`; other backslash sequences (`\\x00`, `\\u00e9`) are kept as
written. `key=` is an empty value; a key that is absent is NULL; when a key repeats, its first
value counts. Pairs are found left to right in one regex pass, so `msg="level=debug"` never
supplies a `level`.

Example (`docs/sources.md`): Grafana's `logger=settings t=2025-04-24T19:51:48.52Z level=info msg="..."`.
"""

from __future__ import annotations

import polars as pl

from pipeline.engine.formats import LINE_PROBLEM, RecordFormat, joined, unescape
from pipeline.engine.records import TEXT
from pipeline.engine.validation import ROW
from pipeline.sources.spec import SourceSpec

_VALUE = r'(?:"(?:[^"\\]|\\.)*"|[^\s"]*)'
PAIR = r'[^\s="]+=' + _VALUE
# The whole record: pairs separated by spaces or tabs, optionally surrounded by them.
RECORD = rf"^[ \t]*(?:{PAIR}(?:[ \t]+|$))+$"
ESCAPES = {'"': '"', "n": "\n", "r": "\r", "t": "\t"}


class LogfmtRecords(RecordFormat):
    """Values of each column's keys; `matches_format` for a record that is not all pairs."""

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self.locations = spec.column_locations()
        self.keys = list(dict.fromkeys(part for parts in self.locations.values() for part in parts))

    def extract(self, records: pl.DataFrame) -> pl.DataFrame:
        rows = records.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias(ROW), pl.col(TEXT))
        pairs = (
            rows.select(ROW, pl.col(TEXT).str.extract_all(PAIR).alias("pair"))
            .explode("pair")
            .drop_nulls("pair")
            .select(
                ROW,
                pl.col("pair").str.extract(r"^([^=]+)=").alias("key"),
                pl.col("pair").str.extract(r"(?s)^[^=]+=(.*)$").alias("value"),
            )
            .filter(pl.col("key").is_in(self.keys))
        )
        # The first value of each wanted key, per record.
        values = pairs.group_by(ROW, maintain_order=True).agg(
            pl.col("value").filter(pl.col("key") == key).first().alias(f"key_{index}")
            for index, key in enumerate(self.keys)
        )
        decoded = [_decoded(pl.col(f"key_{index}")).alias(f"key_{index}") for index in range(len(self.keys))]
        aligned = rows.join(values.with_columns(decoded), on=ROW, how="left", maintain_order="left")
        return aligned.select(
            *(
                joined([pl.col(f"key_{self.keys.index(part)}") for part in parts]).alias(column)
                for column, parts in self.locations.items()
            ),
            pl.when(~pl.col(TEXT).str.contains(RECORD)).then(pl.lit("matches_format")).alias(LINE_PROBLEM),
        )


def _decoded(raw: pl.Expr) -> pl.Expr:
    """A value as written after `key=`: a quoted one without its quotes and escapes."""
    quoted = raw.str.starts_with('"')
    inner = raw.str.slice(1, raw.str.len_chars() - 2)
    return pl.when(quoted).then(unescape(inner, ESCAPES)).otherwise(raw)
