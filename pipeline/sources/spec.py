"""What a log source is: a line format plus a schema, declared as data.

A `SourceSpec` is read from YAML (see `sources.yaml`, and `docs/sources.md` for every key)
and proven here, before any data is touched: its format can fill its fields, its timestamp
format parses correctly and says the year (or takes it from the partition), its checks fit
their fields and its metric SQL binds against its events columns. A definition that could
never work fails with a message naming the file, the source, the key and the fix.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.engine.volume import VolumeSpec
from pipeline.sources.formats import FormatSpec, RegexFormat
from pipeline.sources.metrics import check_metrics
from pipeline.sources.timeformat import check_format, has_year

FieldType = Literal["string", "integer", "float", "timestamp"]

SOURCE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# Field names become columns of the events table and names in metric SQL; they start with a
# letter, so they never clash with the parser's own `__` columns.
FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# Names a source may not take: DuckDB's own catalogs and schemas (`pipeline query` opens an
# in-memory database named `memory` with one schema per source), the lake's and the output
# store's own folders. Names starting with `_` are refused by `SOURCE_NAME`.
RESERVED_NAMES = {
    "main",
    "memory",
    "system",
    "temp",
    "information_schema",
    "pg_catalog",
    "lake",
    "loads",
    "manifests",
    "backfills",
}
# Checks a source may declare: the names of pandera's built-in checks, with their arguments.
# Each check says which field types it applies to and what its argument must be, so that a
# definition that could never load a row is refused when it is read, not when data arrives.
NUMERIC_TYPES = {"integer", "float"}
ALLOWED_CHECKS: dict[str, tuple[set[str], str]] = {
    "in_range": (NUMERIC_TYPES, "pair"),
    "greater_than_or_equal_to": (NUMERIC_TYPES, "number"),
    "less_than_or_equal_to": (NUMERIC_TYPES, "number"),
    "greater_than": (NUMERIC_TYPES, "number"),
    "less_than": (NUMERIC_TYPES, "number"),
    "isin": ({"string", "integer", "float"}, "list"),
    "notin": ({"string", "integer", "float"}, "list"),
    "str_length": ({"string"}, "pair"),
    "str_matches": ({"string"}, "regex"),
}
# Columns the pipeline adds to every events table; a source may not declare them.
RESERVED_COLUMNS = {"partition_date", "source_file", "line_number", "run_id"}
Location = str | list[str]
# Who answers for a source's assets in the catalog: an email address or `team:NAME` (the forms
# Dagster accepts as asset owners), and catalog tags (Dagster's strict asset tag syntax), so that
# a definition Dagster would refuse is refused here, naming the source and the key.
OWNER = re.compile(r"^(team:[A-Za-z0-9_.-]+|[^@\s]+@[^@\s]+\.[^@\s]+)$")
TAG_KEY = re.compile(r"^([A-Za-z0-9_.-]{1,63}/)?[A-Za-z0-9_.-]{1,63}$")
TAG_VALUE = re.compile(r"^[A-Za-z0-9_.-]{0,63}$")


class SourceConfigError(ValueError):
    """A source definition is malformed; the message names the source and what is wrong."""


def _check_location(value: Location | None) -> Location | None:
    if isinstance(value, list) and (not value or any(not part for part in value)):
        raise ValueError("`from` must be a location or a non-empty list of non-empty locations")
    if value == "":
        raise ValueError("`from` must not be empty")
    return value


class FieldSpec(BaseModel):
    """One parsed field: where it comes from, its type, how missing values look, its checks."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    type: FieldType = "string"
    from_: Location | None = Field(default=None, alias="from")
    # A timestamp field's own format(s); by default the source timestamp's.
    format: str | list[str] | None = None
    nullable: bool = False
    null_values: list[str] = Field(default_factory=list)
    replace: dict[str, str] = Field(default_factory=dict)
    checks: dict[str, Any] = Field(default_factory=dict)

    @field_validator("from_")
    @classmethod
    def _located(cls, value: Location | None) -> Location | None:
        return _check_location(value)

    @field_validator("format")
    @classmethod
    def _usable_format(cls, fmt: str | list[str] | None) -> str | list[str] | None:
        for one in [fmt] if isinstance(fmt, str) else fmt or []:
            check_format(one)
        if fmt == []:
            raise ValueError("give a timestamp format, or a non-empty list of them")
        return fmt

    @property
    def formats(self) -> list[str]:
        """This field's own timestamp formats (empty: the source timestamp's)."""
        return [] if self.format is None else [self.format] if isinstance(self.format, str) else list(self.format)

    @model_validator(mode="after")
    def _usable_checks(self) -> FieldSpec:
        if self.format is not None and self.type != "timestamp":
            raise ValueError(f"`format` applies to timestamp fields; this one is {self.type}")
        for name, args in self.checks.items():
            if name not in ALLOWED_CHECKS:
                raise ValueError(f"unknown check {name!r}; known: {sorted(ALLOWED_CHECKS)}")
            types, argument = ALLOWED_CHECKS[name]
            if self.type not in types:
                raise ValueError(f"check {name!r} does not apply to a {self.type} field")
            _check_argument(name, argument, args)
        return self


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_argument(name: str, kind: str, args: object) -> None:
    if kind == "pair" and not (isinstance(args, list) and len(args) == 2 and all(_is_number(a) for a in args)):
        raise ValueError(f"check {name!r} takes a list of two numbers, got {args!r}")
    if kind == "number" and not _is_number(args):
        raise ValueError(f"check {name!r} takes a number, got {args!r}")
    if kind == "list" and not (isinstance(args, list) and args):
        raise ValueError(f"check {name!r} takes a non-empty list of values, got {args!r}")
    if kind == "regex":
        if not isinstance(args, str):
            raise ValueError(f"check {name!r} takes a regular expression, got {args!r}")
        _compile_everywhere(args)


def _compile_everywhere(pattern: str) -> None:
    """Refuse a pattern that Python's `re` or polars' (Rust) regex engine cannot compile."""
    try:
        re.compile(pattern)
        pl.Series([""], dtype=pl.String).str.contains(pattern)
    except (re.error, pl.exceptions.ComputeError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"regular expression {pattern!r} does not compile: {message}") from None


class TimestampSpec(BaseModel):
    """Which field holds the event time and how to read it."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    field: str
    from_: Location | None = Field(default=None, alias="from")
    # strftime-style format understood by polars (chrono), an epoch format, or a list of them
    # tried in order; `%z` offsets are normalised to UTC.
    format: str | list[str]
    # Zone of timestamps written without an offset.
    timezone: str = "UTC"
    # Events may sit this far outside their landing day (clock skew, files that straddle
    # midnight) before they are quarantined as belonging to another day.
    tolerance_minutes: int = Field(default=60, ge=0, le=24 * 60)
    # `partition`: a format without a year (RFC 3164's `Dec 10 06:55:46`) takes the year that
    # puts the event nearest its partition's day (so a `Dec 31` line in January's first hour
    # belongs to the previous year).
    year: Literal["partition"] | None = None

    @field_validator("from_")
    @classmethod
    def _located(cls, value: Location | None) -> Location | None:
        return _check_location(value)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, timezone: str) -> str:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {timezone!r} (use an IANA name such as UTC or Europe/Paris)") from None
        return timezone

    @field_validator("format")
    @classmethod
    def _usable_format(cls, fmt: str | list[str]) -> str | list[str]:
        formats = [fmt] if isinstance(fmt, str) else fmt
        if not formats:
            raise ValueError("give a timestamp format, or a non-empty list of them")
        for one in formats:
            check_format(one)
        return fmt

    @model_validator(mode="after")
    def _year_known(self) -> TimestampSpec:
        yearless = [fmt for fmt in self.formats if not has_year(fmt)]
        if yearless and self.year is None:
            raise ValueError(
                f"timestamp format {yearless[0]!r} has no year (%Y, %y, ...): add the year to the format, "
                "or set `year: partition` to take it from the partition's data date"
            )
        if self.year == "partition" and not yearless:
            raise ValueError("`year: partition` applies to formats without a year; every format here has one")
        return self

    @property
    def formats(self) -> list[str]:
        """The formats, tried in order."""
        return [self.format] if isinstance(self.format, str) else list(self.format)

    @property
    def format_label(self) -> str:
        """The formats as written in check names: `parses_as_timestamp(<label>)`."""
        return " | ".join(self.formats)


class SourceSpec(BaseModel):
    """A named log source: line format, timestamp, fields, error budget, daily metrics."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    first_day: dt.date
    # Catalog only (the UI's Owners and Tags of the source's assets); they change no row.
    owners: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)
    error_budget: float = Field(default=0.01, ge=0.0, le=1.0)
    # The preset this source was built from (informational: `pipeline sources list`).
    preset: str | None = None
    # In a `PIPELINE_SOURCES_FILE`: this entry replaces the built-in source of the same name.
    replaces: bool = False
    format: FormatSpec = Field(default_factory=RegexFormat)
    pattern: str | None = None
    record_start: str | None = None
    timestamp: TimestampSpec
    fields: dict[str, FieldSpec]
    daily_metrics: dict[str, str]
    volume: VolumeSpec = VolumeSpec()

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        # The name becomes a schema, an asset key prefix and a path segment.
        if not SOURCE_NAME.match(name):
            raise ValueError(f"source name {name!r} must match {SOURCE_NAME.pattern}")
        if name in RESERVED_NAMES:
            raise ValueError(
                f"source name {name!r} is reserved (it names a DuckDB catalog or schema, or a folder of the "
                f"lake or output store: {', '.join(sorted(RESERVED_NAMES))}); choose another name"
            )
        return name

    @field_validator("owners")
    @classmethod
    def _valid_owners(cls, owners: list[str]) -> list[str]:
        for owner in owners:
            if not OWNER.match(owner):
                raise ValueError(f"owner {owner!r} must be an email address or a team name written `team:NAME`")
        return owners

    @field_validator("tags")
    @classmethod
    def _valid_tags(cls, tags: dict[str, str]) -> dict[str, str]:
        for key, value in tags.items():
            if not TAG_KEY.match(key) or key.startswith("dagster/"):
                raise ValueError(
                    f"tag key {key!r}: letters, digits, `_`, `-`, `.`, up to 63 of them, with an optional "
                    "`namespace/` prefix (not `dagster/`)"
                )
            if not TAG_VALUE.match(value):
                raise ValueError(f"tag {key}: value {value!r}: letters, digits, `_`, `-`, `.`, up to 63 of them")
        return tags

    @field_validator("format", mode="before")
    @classmethod
    def _format_shorthand(cls, value: object) -> object:
        # `format: json` is short for `format: {type: json}`.
        return {"type": value} if isinstance(value, str) else value

    @field_validator("pattern", "record_start")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            _compile_everywhere(pattern)
        return pattern

    @model_validator(mode="after")
    def _consistent(self) -> SourceSpec:
        if self.pattern is not None and self.format.type != "regex":
            raise ValueError(
                f"`pattern` applies to the regex format only; a {self.format.type} source reads fields with `from`"
            )
        self.format.check_source(self)
        for name in [self.timestamp.field, *self.fields]:
            if not FIELD_NAME.match(name):
                raise ValueError(
                    f"field name {name!r} must match {FIELD_NAME.pattern} (it becomes a column); rename it"
                    + ("" if self.format.type == "regex" else " and set `from` to the name in the record")
                )
        for name, field in self.fields.items():
            yearless = [fmt for fmt in field.formats if not has_year(fmt)]
            if yearless and self.timestamp.year is None:
                raise ValueError(
                    f"fields.{name}.format: {yearless[0]!r} has no year (%Y, %y, ...): add it, or set "
                    "`timestamp.year: partition` to take years from the partition's data date"
                )
        declared = set(self.fields)
        clash = (declared | {self.timestamp.field}) & RESERVED_COLUMNS
        if clash:
            raise ValueError(f"fields {sorted(clash)} clash with columns the pipeline adds")
        if self.timestamp.field in declared:
            raise ValueError(f"{self.timestamp.field!r} is the timestamp; do not declare it under fields")
        for name in self.daily_metrics:
            if not SOURCE_NAME.match(name) or name == "partition_date":
                raise ValueError(
                    f"daily metric name {name!r} must match {SOURCE_NAME.pattern} (and not be partition_date)"
                )
        if not self.daily_metrics:
            raise ValueError("declare at least one daily metric")
        check_metrics(
            self.timestamp.field, {name: field.type for name, field in self.fields.items()}, self.daily_metrics
        )
        return self

    @property
    def multiline(self) -> bool:
        """Whether lines that do not start a record continue the previous one."""
        return self.record_start is not None

    @property
    def columns(self) -> list[str]:
        """Parsed columns in table order: the timestamp first, then the declared fields."""
        return [self.timestamp.field, *self.fields]

    def locations(self) -> dict[str, list[str]]:
        """Where each column's value comes from, by key (`timestamp`, `fields.NAME`): the
        format's locations (`from`, as a list), by default the column's own name."""

        def listed(value: Location | None, default: str) -> list[str]:
            if value is None:
                return [default]
            return [value] if isinstance(value, str) else list(value)

        found = {"timestamp": listed(self.timestamp.from_, self.timestamp.field)}
        found |= {f"fields.{name}": listed(field.from_, name) for name, field in self.fields.items()}
        return found

    def column_locations(self) -> dict[str, list[str]]:
        """`locations()` keyed by column name (the timestamp field, then the fields)."""
        by_key = self.locations()
        return {self.timestamp.field: by_key["timestamp"], **{name: by_key[f"fields.{name}"] for name in self.fields}}

    def explicit_from(self) -> dict[str, bool]:
        """Which keys (`timestamp`, `fields.NAME`) set `from`."""
        found = {"timestamp": self.timestamp.from_ is not None}
        return found | {f"fields.{name}": field.from_ is not None for name, field in self.fields.items()}


DEFAULT_SOURCES_FILE = Path(__file__).with_name("sources.yaml")


def load_sources(path: Path = DEFAULT_SOURCES_FILE) -> dict[str, SourceSpec]:
    """Read and validate every source declared in one file (presets applied).

    Raises `SourceConfigError` naming the file, the source, the key and the problem. See
    `pipeline.sources.catalog` for the deployment's sources (built-in ones plus
    `PIPELINE_SOURCES_FILE`).
    """
    from pipeline.sources.catalog import read_source_file

    return read_source_file(path)
