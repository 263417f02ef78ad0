"""Line formats: each turns the text of a batch of records into string columns, vectorised.

A format's only job is to find each source column's text in each record (`extract`) and to
say which records are not in the format at all (the `LINE_PROBLEM` column: null for a record
in the format, else the name of the check it fails, e.g. `matches_format`). Everything after
that - null values, aliases, casting, timestamps, checks, pandera, the quarantine split - is
shared (`pipeline.engine.parse`), so it behaves the same for every format.

A format may also drop lines that are not records before records are formed (`prepare`):
the `#Fields:` header and comment lines of W3C logs are counted as ignored. Formats with
per-file state (the header seen last) get a fresh `RecordFormat` per file (`for_file`);
`parse_file` hands it the file's batches in order.
"""

from __future__ import annotations

import polars as pl

from pipeline.sources.spec import SourceSpec

LINE_PROBLEM = "__line_problem"
# Optional: the value of a record's line problem when its text is not the evidence to show
# (e.g. "no header line before it in its file"); null or absent means the record's text.
LINE_DETAIL = "__line_detail"


class RecordFormat:
    """Base of every format: stateless unless `for_file` says otherwise."""

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec

    def for_file(self) -> RecordFormat:
        """The format object for one file (itself, unless the format keeps per-file state)."""
        return self

    def prepare(self, lines: pl.DataFrame) -> tuple[pl.DataFrame, int]:
        """The lines of a batch that can be records, and how many others were ignored."""
        return lines, 0

    def take_header_lines(self) -> tuple[tuple[int, str], ...]:
        """The header lines `prepare` met since the last call, as (line number, text): the
        lines that set how the lines after them are read (none for most formats)."""
        return ()

    def extract(self, records: pl.DataFrame) -> pl.DataFrame:
        """A frame aligned with `records` (same rows, same order): one String column per
        column of the source (`spec.columns`, null where the record has no value) and
        `LINE_PROBLEM`."""
        raise NotImplementedError


def joined(parts: list[pl.Expr]) -> pl.Expr:
    """One location's value, or several joined by a space (null when any is missing)."""
    return parts[0] if len(parts) == 1 else pl.concat_str(parts, separator=" ")


def unescape(quoted: pl.Expr, escapes: dict[str, str]) -> pl.Expr:
    """Decode backslash escapes in one pass per escape: `\\\\` is a backslash, and `\\X` for
    each X of `escapes` is `escapes[X]`; any other backslash sequence stays as written.

    Splitting on `\\\\` first keeps every replacement from reading half of an escaped
    backslash (`\\\\n` is a backslash and an `n`, not a newline)."""
    pieces = pl.element()
    for escaped, meaning in escapes.items():
        pieces = pieces.str.replace_all("\\" + escaped, meaning, literal=True)
    decoded = quoted.str.split("\\\\").list.eval(pieces).list.join("\\")
    return pl.when(quoted.str.contains("\\", literal=True)).then(decoded).otherwise(quoted)


def record_format(spec: SourceSpec) -> RecordFormat:
    """The parser of the source's declared format."""
    from pipeline.engine.formats.delimited import DelimitedRecords
    from pipeline.engine.formats.json import JsonRecords
    from pipeline.engine.formats.logfmt import LogfmtRecords
    from pipeline.engine.formats.regex import RegexRecords
    from pipeline.engine.formats.syslog import SyslogRecords

    formats: dict[str, type[RecordFormat]] = {
        "regex": RegexRecords,
        "json": JsonRecords,
        "logfmt": LogfmtRecords,
        "syslog": SyslogRecords,
        "delimited": DelimitedRecords,
    }
    return formats[spec.format.type](spec)
