"""What a log source is: a line format plus a schema, declared as data.

A `SourceSpec` is read from YAML (see `sources.yaml`) and validated here, before any data
is touched, so that a malformed source definition fails with a message naming the source
and the field at fault.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

FieldType = Literal["string", "integer", "float", "timestamp"]

SOURCE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
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


class SourceConfigError(ValueError):
    """A source definition is malformed; the message names the source and what is wrong."""


class FieldSpec(BaseModel):
    """One parsed field: its type, how missing values look, and the checks it must pass."""

    model_config = ConfigDict(extra="forbid")

    type: FieldType = "string"
    nullable: bool = False
    null_values: list[str] = Field(default_factory=list)
    replace: dict[str, str] = Field(default_factory=dict)
    checks: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _usable_checks(self) -> FieldSpec:
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
    """Which captured field holds the event time and how to read it."""

    model_config = ConfigDict(extra="forbid")

    field: str
    # strftime-style format understood by polars (chrono); `%z` offsets are normalised to UTC.
    format: str
    # Zone of timestamps written without an offset.
    timezone: str = "UTC"
    # Events may sit this far outside their landing day (clock skew, files that straddle
    # midnight) before they are quarantined as belonging to another day.
    tolerance_minutes: int = Field(default=60, ge=0, le=24 * 60)

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
    def _usable_format(cls, fmt: str) -> str:
        if "%" not in fmt:
            raise ValueError(f"timestamp format {fmt!r} has no % directives")
        return fmt


class SourceSpec(BaseModel):
    """A named log source: line pattern with named groups, timestamp, fields, budget, metrics."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    first_day: dt.date
    error_budget: float = Field(default=0.01, ge=0.0, le=1.0)
    pattern: str
    record_start: str | None = None
    timestamp: TimestampSpec
    fields: dict[str, FieldSpec]
    daily_metrics: dict[str, str]

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        # The name becomes a DuckDB schema, an asset key prefix and a path segment.
        if not SOURCE_NAME.match(name):
            raise ValueError(f"source name {name!r} must match {SOURCE_NAME.pattern}")
        return name

    @field_validator("pattern", "record_start")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            _compile_everywhere(pattern)
        return pattern

    @model_validator(mode="after")
    def _consistent(self) -> SourceSpec:
        groups = set(re.compile(self.pattern).groupindex)
        if self.timestamp.field not in groups:
            raise ValueError(f"timestamp field {self.timestamp.field!r} is not a named group of the pattern")
        declared = set(self.fields)
        missing = declared - groups
        if missing:
            raise ValueError(f"fields {sorted(missing)} are declared but not captured by the pattern")
        clash = (declared | {self.timestamp.field}) & RESERVED_COLUMNS
        if clash:
            raise ValueError(f"fields {sorted(clash)} clash with columns the pipeline adds")
        if self.timestamp.field in declared:
            raise ValueError(f"{self.timestamp.field!r} is the timestamp; do not declare it under fields")
        for name in self.daily_metrics:
            if not SOURCE_NAME.match(name):
                raise ValueError(f"daily metric name {name!r} must match {SOURCE_NAME.pattern}")
        if not self.daily_metrics:
            raise ValueError("declare at least one daily metric")
        return self

    @property
    def multiline(self) -> bool:
        """Whether lines that do not start a record continue the previous one."""
        return self.record_start is not None

    @property
    def columns(self) -> list[str]:
        """Parsed columns in table order: the timestamp first, then the declared fields."""
        return [self.timestamp.field, *self.fields]


DEFAULT_SOURCES_FILE = Path(__file__).with_name("sources.yaml")


def load_sources(path: Path = DEFAULT_SOURCES_FILE) -> dict[str, SourceSpec]:
    """Read and validate every source declared in `path`.

    Raises `SourceConfigError` naming the file, the source and the problem.
    """
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise SourceConfigError(f"cannot read source definitions from {path}: {error}") from error
    if not isinstance(document, dict) or not isinstance(document.get("sources"), dict):
        raise SourceConfigError(f"{path}: expected a mapping with a 'sources' key")
    specs: dict[str, SourceSpec] = {}
    for name, body in document["sources"].items():
        if not isinstance(body, dict):
            raise SourceConfigError(f"{path}: source {name!r} must be a mapping")
        try:
            specs[name] = SourceSpec(name=name, **body)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in issue['loc']) or 'source'}: {issue['msg']}"
                for issue in error.errors()
            )
            raise SourceConfigError(f"{path}: source {name!r} is invalid: {problems}") from None
    if not specs:
        raise SourceConfigError(f"{path}: no sources declared")
    return specs
