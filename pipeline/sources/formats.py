"""Line formats a source may declare under `format:`, and what each accepts in a definition.

A format says how a record's text becomes named values; everything after that (types, null
values, checks, the timestamp) is declared the same way for every format. Every field of a
non-regex format may say where its value comes from with `from` (default: the field's own
name): a JSON path, a logfmt key, a delimited column, a syslog part. A list of locations
joins their values with one space (W3C logs split the time into `date` and `time`).

The parsers themselves live in `pipeline.engine.formats`; this module only validates
definitions, so that one which could never load a row is refused when it is read.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from pipeline.sources.spec import SourceSpec

# Parts of a syslog message, per RFC, and the field types each can be read as.
SYSLOG_PARTS: dict[int, tuple[str, ...]] = {
    3164: ("priority", "facility", "severity", "timestamp", "hostname", "app_name", "procid", "message"),
    5424: (
        "priority",
        "facility",
        "severity",
        "version",
        "timestamp",
        "hostname",
        "app_name",
        "procid",
        "msgid",
        "structured_data",
        "message",
    ),
}
_NUMERIC_PARTS = {"priority", "facility", "severity", "version"}
_LOGFMT_KEY = re.compile(r'^[^\s="]+$')
# The most columns a delimited layout (fixed or read from a `#Fields:` line) may have.
MAX_COLUMNS = 1000


class _Format(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def check_source(self, spec: SourceSpec) -> None:
        """Refuse a source whose fields this format cannot fill (raises `ValueError`)."""
        for key, location in spec.locations().items():
            for part in location:
                self.check_location(key, part)
        for name, field in spec.fields.items():
            for part in spec.locations()[f"fields.{name}"]:
                allowed = self.types_of(part)
                if field.type not in allowed:
                    raise ValueError(
                        f"fields.{name}.type: {part!r} of a {self.type} format "  # type: ignore[attr-defined]
                        f"can be read as {' or '.join(sorted(allowed))}, not {field.type}; change the type "
                        "or read the field from another part"
                    )

    def check_location(self, key: str, location: str) -> None:
        """Refuse a `from` value that can never name a value of this format."""

    def types_of(self, location: str) -> set[str]:
        """Field types a value at `location` can be cast to."""
        return {"string", "integer", "float", "timestamp"}


class RegexFormat(_Format):
    """A regular expression with named groups (`pattern`), one group per field."""

    type: Literal["regex"] = "regex"

    def check_source(self, spec: SourceSpec) -> None:
        if spec.pattern is None:
            raise ValueError("a regex source needs `pattern`, a regular expression with a named group per field")
        located = [key for key, has_from in spec.explicit_from().items() if has_from]
        if located:
            raise ValueError(
                f"{located[0]}.from: a regex source reads each field from the named group of the same name; "
                "remove `from` and name the group after the field"
            )
        groups = set(re.compile(spec.pattern).groupindex)
        internal = sorted(group for group in groups if group.startswith("__"))
        if internal:
            raise ValueError(f"pattern: group names starting with '__' are the parser's own; rename {internal[0]!r}")
        if spec.timestamp.field not in groups:
            raise ValueError(f"timestamp field {spec.timestamp.field!r} is not a named group of the pattern")
        missing = set(spec.fields) - groups
        if missing:
            raise ValueError(f"fields {sorted(missing)} are declared but not captured by the pattern")


class JsonFormat(_Format):
    """JSON lines: one JSON object per record. `from` is a dotted path (`log.origin.file`) or a
    JSON pointer (`/log.level`: a key that itself contains dots)."""

    type: Literal["json"] = "json"

    def check_location(self, key: str, location: str) -> None:
        if location.startswith("/"):
            if re.search(r"~(?![01])", location):
                raise ValueError(
                    f"{key}.from: JSON pointer {location!r} has a '~' not followed by 0 or 1; write ~0 for '~' "
                    "and ~1 for '/' inside a key"
                )
            return
        if not location or any(part == "" for part in location.split(".")):
            raise ValueError(
                f"{key}.from: {location!r} is not a dotted path (empty part); write a.b.c, or a JSON pointer "
                "such as /log.level for a key that contains dots"
            )


class LogfmtFormat(_Format):
    """logfmt: `key=value` pairs, values bare or double-quoted with backslash escapes."""

    type: Literal["logfmt"] = "logfmt"

    def check_location(self, key: str, location: str) -> None:
        if not _LOGFMT_KEY.match(location):
            raise ValueError(f"{key}.from: {location!r} cannot be a logfmt key (no spaces, '=' or '\"')")


class SyslogFormat(_Format):
    """Syslog messages as written to files: RFC 3164 (BSD) or RFC 5424 (with or without an
    RFC 6587 octet count). `from` names a part of the message (see `SYSLOG_PARTS`)."""

    type: Literal["syslog"] = "syslog"
    rfc: Literal[3164, 5424]

    def check_location(self, key: str, location: str) -> None:
        parts = SYSLOG_PARTS[self.rfc]
        if location not in parts:
            raise ValueError(f"{key}.from: RFC {self.rfc} syslog has no part {location!r}; parts: {', '.join(parts)}")

    def types_of(self, location: str) -> set[str]:
        if location in _NUMERIC_PARTS:
            return {"string", "integer", "float"}
        if location == "timestamp":
            return {"string", "timestamp"}
        return {"string"}


class DelimitedFormat(_Format):
    """Columns split by a separator, with optional quoted and bracketed columns; the column
    names are fixed (`columns`) or read from a header line of each file (`header`, e.g.
    `#Fields:` in W3C logs: CloudFront, IIS). `from` names a column."""

    type: Literal["delimited"] = "delimited"
    separator: str = " "
    quote: str | None = '"'
    # Inside quotes, `escape` followed by the quote or by itself stands for that character
    # (`\"`, `\\`); an escape equal to the quote means a doubled quote (`""`). Any other
    # backslash sequence (ALB's `\x5C`) is kept as written.
    escape: str | None = "\\"
    brackets: str | None = None
    columns: list[str] | None = None
    header: str | None = None
    comment: str | None = None
    min_columns: int | None = Field(default=None, ge=1)
    extra_columns: Literal["ignore", "quarantine"] = "ignore"

    @model_validator(mode="after")
    def _usable(self) -> DelimitedFormat:
        if len(self.separator) != 1 or self.separator in "\r\n":
            raise ValueError(f"separator must be one character other than a line break, got {self.separator!r}")
        specials = {"quote": self.quote, "escape": self.escape}
        for name, value in specials.items():
            if value is not None and len(value) != 1:
                raise ValueError(f"{name} must be one character, got {value!r}")
        if self.brackets is not None and (len(self.brackets) != 2 or self.brackets[0] == self.brackets[1]):
            raise ValueError(
                f"brackets must be two different characters (open, close), e.g. '[]', got {self.brackets!r}"
            )
        used = [self.quote, *(self.brackets or "")]
        if self.separator in used or (self.escape == self.separator):
            raise ValueError("the separator must differ from the quote, escape and bracket characters")
        if self.escape is not None and self.quote is None:
            raise ValueError("escape applies inside quotes: set `quote` too, or remove `escape`")
        if (self.columns is None) == (self.header is None):
            raise ValueError(
                "declare either `columns` (the column names, in order) or `header` (the prefix of the line "
                "naming them in each file, e.g. '#Fields:'), not both"
            )
        if self.columns is not None:
            if not self.columns or len(self.columns) > MAX_COLUMNS:
                raise ValueError(f"columns must list 1 to {MAX_COLUMNS} names")
            duplicates = sorted({name for name in self.columns if self.columns.count(name) > 1})
            if duplicates:
                raise ValueError(f"columns {duplicates} are listed more than once")
            if self.min_columns is not None and self.min_columns > len(self.columns):
                raise ValueError(f"min_columns {self.min_columns} exceeds the {len(self.columns)} columns listed")
        if self.header is not None and not self.header.strip():
            raise ValueError("header must be a non-blank prefix such as '#Fields:'")
        if self.header is not None and self.comment is None:
            # W3C: every directive line (#Version:, #Date:, ...) starts with '#'.
            self.comment = self.header[0]
        return self

    def check_location(self, key: str, location: str) -> None:
        if self.columns is not None and location not in self.columns:
            raise ValueError(f"{key}.from: {location!r} is not one of the columns {self.columns}")


FormatSpec = Annotated[
    RegexFormat | JsonFormat | LogfmtFormat | SyslogFormat | DelimitedFormat, Field(discriminator="type")
]
FORMAT_TYPES = ("regex", "json", "logfmt", "syslog", "delimited")


def format_keys(format_type: str) -> set[str]:
    """The keys a `format:` mapping of this type accepts (for "did you mean" hints)."""
    classes = {"regex": RegexFormat, "json": JsonFormat, "logfmt": LogfmtFormat}
    classes |= {"syslog": SyslogFormat, "delimited": DelimitedFormat}
    model = classes.get(format_type)
    return set(model.model_fields) if model else {"type"}


__all__ = [
    "FORMAT_TYPES",
    "MAX_COLUMNS",
    "SYSLOG_PARTS",
    "DelimitedFormat",
    "FormatSpec",
    "JsonFormat",
    "LogfmtFormat",
    "RegexFormat",
    "SyslogFormat",
    "format_keys",
]
