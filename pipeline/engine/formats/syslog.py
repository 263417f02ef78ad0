"""`syslog`: RFC 3164 (BSD) and RFC 5424 messages as written to files, one per record.

Parts (`from` values): `priority` (the <PRI> number), `facility` (priority // 8), `severity`
(priority % 8), `timestamp`, `hostname`, `app_name` (the 3164 tag), `procid`, `message`; RFC
5424 adds `version`, `msgid` and `structured_data` (the SD elements exactly as written, e.g.
`[origin ip="10.0.0.1"][meta sequence="14"]`). A priority above 191 (facility 23, severity 7)
is not syslog: `matches_format`.

RFC 3164, as real files have it: the <PRI> is optional (files written by syslogd have none;
`<34> Nov` with a space is accepted), the time is `Mmm dd hh:mm:ss` without a year, with a year
(`Jan 18 2024 11:50:03`, Cisco) or RFC 3339 (rsyslog's file format); the host is optional and
cannot start with `-` (`--- last message repeated 1 time ---` has none); the tag `app[pid]:` is
optional (a line without one is all message).

RFC 5424: `<PRI>VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD [MSG]`, strictly: the
RFC's length limits (host 255, app 48, procid 128, msgid 32 characters) hold, NILVALUE `-` is
NULL, a UTF-8 byte-order mark opening the message is dropped, and an RFC 6587 octet count
before the message (`215 <86>1 ...`, TCP captures) is accepted and dropped (with
`record_start`, a counted frame spanning lines is one record).

Example (`docs/sources.md`): `preset: syslog_rfc3164` or `preset: syslog_rfc5424`.
"""

from __future__ import annotations

import polars as pl

from pipeline.engine.formats import LINE_PROBLEM, RecordFormat, joined
from pipeline.engine.records import TEXT
from pipeline.sources.spec import SourceSpec

_RFC3339 = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?"
RFC3164 = (
    r"^(?:<(?P<priority>\d{1,3})> ?)?"
    rf"(?P<timestamp>[A-Z][a-z]{{2}} +\d{{1,2}}(?: \d{{4}})? \d{{2}}:\d{{2}}:\d{{2}}|{_RFC3339})"
    r"(?: (?P<hostname>[^\s\-]\S*))?"
    r"(?: (?:(?P<app_name>[^\s:\[\]]+)(?:\[(?P<procid>[^\]\s]*)\])?:)?(?: ?(?P<message>(?s:.*)))?)?$"
)
_SD_ELEMENT = r'\[[^\s\]="]{1,32}(?: [^\s\]="]{1,32}="(?:[^"\\]|\\.)*")*\]'
RFC5424 = (
    r"^(?:\d{1,9} )?<(?P<priority>\d{1,3})>(?P<version>[1-9]\d{0,2}) (?P<timestamp>-|\S+) "
    r"(?P<hostname>-|\S{1,255}) (?P<app_name>-|\S{1,48}) (?P<procid>-|\S{1,128}) (?P<msgid>-|\S{1,32}) "
    rf"(?P<structured_data>-|(?:{_SD_ELEMENT})+)(?: (?P<message>(?s:.*)))?$"
)
_NILLABLE = ("timestamp", "hostname", "app_name", "procid", "msgid", "structured_data")
_BYTE_ORDER_MARK = "\ufeff"


class SyslogRecords(RecordFormat):
    """Parts of each record by the RFC's layout; `matches_format` for a record off it."""

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self.rfc = spec.format.rfc  # type: ignore[union-attr]
        self.pattern = RFC5424 if self.rfc == 5424 else RFC3164
        self.locations = spec.column_locations()

    def extract(self, records: pl.DataFrame) -> pl.DataFrame:
        parts = records.select(pl.col(TEXT).str.extract_groups(self.pattern).alias("parts")).unnest("parts")
        priority = pl.col("priority").cast(pl.Int64, strict=False)
        derived = [
            (priority // 8).cast(pl.String).alias("facility"),
            (priority % 8).cast(pl.String).alias("severity"),
        ]
        if self.rfc == 5424:
            derived += [pl.when(pl.col(part) != "-").then(pl.col(part)).alias(part) for part in _NILLABLE]
            derived.append(pl.col("message").str.strip_prefix(_BYTE_ORDER_MARK).alias("message"))
        parts = parts.with_columns(derived)
        # The regex matched when a part it always captures did; a PRI above 191 is not syslog.
        matched = pl.col("version" if self.rfc == 5424 else "timestamp").is_not_null()
        in_format = matched & (priority.is_null() | (priority <= 191))
        return parts.select(
            *(joined([pl.col(part) for part in locs]).alias(column) for column, locs in self.locations.items()),
            pl.when(~in_format).then(pl.lit("matches_format")).alias(LINE_PROBLEM),
        )
