"""Reading a source's timestamps into UTC, vectorised, for one partition's data date.

A timestamp format is a strftime format (parsed by polars/chrono), an epoch format, or a
list of them tried in order. Times with an offset are normalised to UTC; times without one
are read in the source's zone, and a local time that zone skips or repeats at a clock change
is a failure (`exists_in_timezone(ZONE)`), never silently shifted. A format without a year
(`year: partition`) takes, among the partition's year and the years either side, the one that
puts the event nearest the partition's day: `Dec 31 23:59:59` read for 1 January belongs to
the previous year, and the day tolerance then decides whether it is kept.

The data date is a parameter: nothing here reads the clock.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from pipeline.sources.timeformat import EPOCH_FORMATS, directives, has_offset, has_year

UTC_TYPE = pl.Datetime("us", "UTC")
# chrono reads second 60 (a leap second) and polars moves it into the next minute (23:59:60
# into the next day): not the time the line says, so it does not parse. Directives that read
# seconds; no other part of a valid timestamp reads ":60".
_SECONDS_DIRECTIVES = {"S", "T", "X", "r", "c", "+"}
# Latest epoch values accepted per unit (9999-12-31T23:59:59Z): larger ones would overflow.
_EPOCH_LIMITS = {"s": 253_402_300_799, "ms": 253_402_300_799_999, "us": 253_402_300_799_999_999}
_EPOCH_LIMITS["ns"] = 2**63 - 1
Failures = list[tuple[pl.Expr, str]]


class TimestampReader:
    """Builds the expressions reading timestamps in `formats` (tried in order), written in
    `timezone` when they carry no offset, for the partition of `day`."""

    def __init__(self, formats: list[str], timezone: str, day: dt.date) -> None:
        self.formats = formats
        self.timezone = timezone
        self.day = day
        # The moment years are chosen around (naive, in the source's zone).
        self.midday = dt.datetime.combine(day, dt.time(12))

    def read(self, raw: pl.Expr, parse_check: str) -> tuple[pl.Expr, Failures]:
        """The UTC timestamp of `raw`, and its failures as (expression true where it failed,
        check name): `parse_check` where no format reads the text, `exists_in_timezone(ZONE)`
        where a local time does not exist (or is ambiguous) in the source's zone."""
        formats = self.formats
        if len(formats) == 1:
            parsed, typed = self._one(raw, formats[0])
            failures = [(raw.is_not_null() & parsed.is_null(), parse_check)]
            if not has_offset(formats[0]):
                failures.append((parsed.is_not_null() & typed.is_null(), f"exists_in_timezone({self.timezone})"))
            return typed, failures
        # Several formats: the first one that reads the text decides (its zone problem is
        # reported, rather than another format being tried).
        typed_any: pl.Expr = pl.lit(None, dtype=UTC_TYPE)
        read_by_one: pl.Expr = pl.lit(False)
        missing_zone: pl.Expr = pl.lit(False)
        for fmt in formats:
            parsed, typed = self._one(raw, fmt)
            takes = ~read_by_one & parsed.is_not_null()
            typed_any = pl.when(takes).then(typed).otherwise(typed_any)
            if not has_offset(fmt):
                missing_zone = missing_zone | (takes & typed.is_null())
            read_by_one = read_by_one | parsed.is_not_null()
        return typed_any, [
            (raw.is_not_null() & ~read_by_one, parse_check),
            (missing_zone, f"exists_in_timezone({self.timezone})"),
        ]

    def _one(self, raw: pl.Expr, fmt: str) -> tuple[pl.Expr, pl.Expr]:
        """(`parsed`, `typed`) for one format: `parsed` is null where the text is not in the
        format; `typed` is the UTC time, null also where the local time does not exist."""
        if fmt in EPOCH_FORMATS:
            typed = _epoch(raw, EPOCH_FORMATS[fmt])
            return typed, typed
        if has_year(fmt):
            parsed = self._strptime(raw, fmt)
        else:
            parsed = self._nearest_year(raw, fmt)
        if _aware(fmt):
            typed = parsed.dt.convert_time_zone("UTC")
            return typed, typed
        if has_offset(fmt):  # %s: seconds since the epoch, UTC by definition
            typed = parsed.dt.replace_time_zone("UTC")
            return typed, typed
        # Local times that do not exist or are ambiguous (DST changes) become null and are
        # quarantined rather than silently shifted.
        typed = parsed.dt.replace_time_zone(self.timezone, ambiguous="null", non_existent="null")
        return parsed, typed.dt.convert_time_zone("UTC")

    def _strptime(self, raw: pl.Expr, fmt: str) -> pl.Expr:
        # With an offset in the format polars returns UTC times whatever the dtype's zone.
        parsed = raw.str.strptime(pl.Datetime("us"), fmt, strict=False)
        if _SECONDS_DIRECTIVES & set(directives(fmt)):
            parsed = pl.when(raw.str.contains(":60", literal=True)).then(None).otherwise(parsed)
        return parsed

    def _nearest_year(self, raw: pl.Expr, fmt: str) -> pl.Expr:
        """`raw` read with each candidate year; the one nearest the partition's day wins (a
        29 February only exists in a leap year, so candidates can be null)."""
        candidates = [
            self._strptime(pl.concat_str([pl.lit(f"{year} "), raw]), f"%Y {fmt}")
            for year in (self.day.year - 1, self.day.year, self.day.year + 1)
        ]
        reference = self.midday.replace(tzinfo=dt.UTC) if _aware(fmt) else self.midday
        far = 10**12
        distance = [(candidate - pl.lit(reference)).dt.total_seconds().abs().fill_null(far) for candidate in candidates]
        earlier, same, later = candidates
        d_earlier, d_same, d_later = distance
        return (
            pl.when((d_same <= d_earlier) & (d_same <= d_later))
            .then(same)
            .when(d_earlier <= d_later)
            .then(earlier)
            .otherwise(later)
        )


def _aware(fmt: str) -> bool:
    """Whether polars reads `fmt` into UTC times (it carries a numeric offset)."""
    return bool({"z", ":z", "#z", "+"} & set(directives(fmt)))


def _epoch(raw: pl.Expr, unit: str) -> pl.Expr:
    """UTC time of a number of seconds (with an optional fraction) or of whole ms/us/ns since
    1970-01-01T00:00:00Z; null for anything else (negative, a sign, exponent notation)."""
    text = raw.str.strip_chars()
    if unit == "s":
        valid = text.str.contains(r"^\d{1,12}(?:\.\d+)?$")
        seconds = text.str.extract(r"^(\d+)").cast(pl.Int64, strict=False)
        # The fraction, to microseconds (digits beyond the sixth are dropped, not rounded).
        fraction = text.str.extract(r"\.(\d+)$").str.pad_end(6, "0").str.slice(0, 6).cast(pl.Int64).fill_null(0)
        within = seconds <= _EPOCH_LIMITS["s"]
        micros = pl.when(valid & within).then(seconds * 1_000_000 + fraction)
        return pl.from_epoch(micros, time_unit="us").dt.replace_time_zone("UTC")
    number = pl.when(text.str.contains(r"^\d{1,19}$")).then(text).cast(pl.Int64, strict=False)
    number = pl.when(number <= _EPOCH_LIMITS[unit]).then(number)
    if unit == "ns":
        number = number // 1000
        unit = "us"
    return pl.from_epoch(number, time_unit=unit).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")  # type: ignore[arg-type]
