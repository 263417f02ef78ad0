"""Timestamp formats: which strftime directives a source may use, proven when definitions load.

polars parses timestamps with chrono, which silently does the wrong thing with some
directives rather than failing: `%f` reads a fraction as a count of *nanoseconds*
(`17:41:44,747` becomes 17:41:44.000000747, i.e. the milliseconds vanish), `%Z` reads a zone
name and ignores it, and an unknown directive makes every row fail. A format is therefore
checked against the directives known to parse correctly (see
`pipeline_tests/test_source_formats.py`, which parses an example of each), and a format without
a year is refused unless the source says the year comes from the partition.

Besides strftime formats, four epoch formats read a number: `epoch_s` (seconds, optionally
with a fraction: `1716723772.6014807`), `epoch_ms`, `epoch_us` and `epoch_ns` (integers).
"""

from __future__ import annotations

import re
import warnings

import polars as pl
from polars.exceptions import ChronoFormatWarning

# Epoch formats and the unit of the number they read.
EPOCH_FORMATS = {"epoch_s": "s", "epoch_ms": "ms", "epoch_us": "us", "epoch_ns": "ns"}
# One directive: `%%`, `%+`, a fraction (`%.f`, `%.3f`, `%3f`, ...), an offset (`%z`, `%:z`,
# `%::z`, `%#z`), or a letter with an optional padding flag (`%-d`, `%_d`, `%0d`).
_DIRECTIVE = re.compile(r"%(?:%|\+|\.?[0-9]*f|:{1,3}z|#z|[-_0]?[A-Za-z]|.?)", re.DOTALL)
# Directives chrono (through polars) parses correctly, without their padding flag.
SUPPORTED = {
    "Y", "C", "y", "m", "b", "B", "h", "d", "e", "j", "a", "A", "u", "w",
    "H", "k", "I", "l", "p", "P", "M", "S", "R", "T", "X", "r",
    "D", "x", "F", "v", "c", "s", "t", "n",
    "z", ":z", "#z", "+", "%",
    ".f", ".3f", ".6f", ".9f", "3f", "6f", "9f",
}  # fmt: skip
# Directives that carry a year (with `%s` and `%+`, which carry a whole timestamp).
YEAR_DIRECTIVES = {"Y", "y", "D", "x", "F", "v", "c", "s", "+"}
# Known to chrono but wrong or useless for parsing, each with what to write instead.
HINTS = {
    "f": "%f reads the digits as nanoseconds (',747' would become 747 ns and the milliseconds "
    "would be lost); use %3f for milliseconds, %6f for microseconds, %9f for nanoseconds, or %.f "
    "for a '.' followed by any number of digits",
    "Z": "%Z reads a zone name (CET, EST) and ignores it; use %z or %#z for a numeric offset, or set "
    "timestamp.timezone to the zone the times are written in",
    "::z": "%::z is not parsed by polars; use %z (+0100), %:z (+01:00) or %#z (+01:00, +0100 or Z)",
    ":::z": "%:::z is not parsed by polars; use %z (+0100), %:z (+01:00) or %#z (+01:00, +0100 or Z)",
    "U": "week numbers (%U %W %V %G %g) are not parsed reliably; write the date with %Y-%m-%d or %Y-%j",
    "W": "week numbers (%U %W %V %G %g) are not parsed reliably; write the date with %Y-%m-%d or %Y-%j",
    "V": "week numbers (%U %W %V %G %g) are not parsed reliably; write the date with %Y-%m-%d or %Y-%j",
    "G": "week numbers (%U %W %V %G %g) are not parsed reliably; write the date with %Y-%m-%d or %Y-%j",
    "g": "week numbers (%U %W %V %G %g) are not parsed reliably; write the date with %Y-%m-%d or %Y-%j",
}


def directives(fmt: str) -> list[str]:
    """The directives of a strftime format, without `%` and padding flags (`%-d` gives `d`)."""
    found = []
    for match in _DIRECTIVE.finditer(fmt):
        body = match.group()[1:]
        if len(body) == 2 and body[0] in "-_0" and body[1].isalpha():
            body = body[1]
        found.append(body)
    return found


def check_format(fmt: str) -> None:
    """Refuse a timestamp format polars cannot parse correctly; the message says what to write."""
    if fmt in EPOCH_FORMATS:
        return
    found = directives(fmt)
    if not found:
        raise ValueError(
            f"timestamp format {fmt!r} has no % directives; write a strftime format such as "
            f"'%Y-%m-%d %H:%M:%S' or one of {sorted(EPOCH_FORMATS)}"
        )
    for directive in found:
        if directive in HINTS:
            raise ValueError(f"timestamp format {fmt!r}: {HINTS[directive]}")
        if directive not in SUPPORTED:
            shown = f"directive %{directive}" if directive else "'%' at its end"
            raise ValueError(
                f"timestamp format {fmt!r}: unknown or unsupported {shown}; supported: "
                + " ".join(f"%{name}" for name in sorted(SUPPORTED))
                + " (write %% for a literal %)"
            )
    # Some combinations are refused by polars itself when it parses (e.g. an hour without
    # minutes): find out now, not on the first batch.
    with warnings.catch_warnings():
        # polars warns about any `%f` in the text, even a literal `%%f` (a real `%f` is refused
        # above, with a better hint); any other warning raised here is news.
        warnings.filterwarnings(
            "ignore", message=r"Detected the pattern `\.?%f` in the chrono format string", category=ChronoFormatWarning
        )
        try:
            pl.Series(["2000-01-01"]).str.strptime(pl.Datetime("us"), fmt, strict=False)
        except pl.exceptions.PolarsError as error:
            message = str(error).splitlines()[0]
            raise ValueError(f"timestamp format {fmt!r} is refused by polars: {message}") from None


def has_year(fmt: str) -> bool:
    """Whether timestamps in `fmt` say their year (epoch formats do)."""
    return fmt in EPOCH_FORMATS or any(directive in YEAR_DIRECTIVES for directive in directives(fmt))


def has_offset(fmt: str) -> bool:
    """Whether timestamps in `fmt` carry their UTC offset (then the zone setting is not used)."""
    return fmt in EPOCH_FORMATS or any(directive in {"z", ":z", "#z", "+", "s"} for directive in directives(fmt))
