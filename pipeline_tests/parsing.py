"""Helpers for the format tests: build a source from YAML, parse bytes with it, read real logs.

`parse` asserts the accounting identity on every call (each line read is loaded, quarantined,
folded into a record or ignored, exactly once), so no test can pass while losing a line.
"""

from __future__ import annotations

import datetime as dt
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from pipeline.engine.parse import PartitionParser, events_schema
from pipeline.engine.reader import iter_line_batches
from pipeline.sources.presets import apply_preset
from pipeline.sources.spec import SourceSpec

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The real samples live beside the project (`../shared/real-logs`); a git worktree elsewhere
# finds them at the shared machine location.
REAL_LOGS_CANDIDATES = (PROJECT_ROOT.parent / "shared" / "real-logs", Path("/work/shared/real-logs"))


def real_logs() -> Path:
    """The real log samples: skipped with the reason on a clone without them, a failure in CI."""
    for candidate in REAL_LOGS_CANDIDATES:
        if candidate.is_dir():
            return candidate
    message = (
        f"real log samples not found at {' or '.join(map(str, REAL_LOGS_CANDIDATES))} (they live beside the project)"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + "; CI=true, so they must be present")
    pytest.skip(message)


def real_log(relative: str) -> bytes:
    """The bytes of one real sample (see `real_logs`)."""
    path = real_logs() / relative
    if not path.is_file():
        message = f"real log file {path} not found"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + "; CI=true, so it must be present")
        pytest.skip(message)
    return path.read_bytes()


def source(definition: str | dict[str, Any], name: str = "sample") -> SourceSpec:
    """A source from a YAML (or dict) definition; `first_day` defaults to 2000-01-01."""
    body = yaml.safe_load(definition) if isinstance(definition, str) else dict(definition)
    body.setdefault("first_day", "2000-01-01")
    return SourceSpec(name=name, **apply_preset(body))


@dataclass
class Parsed:
    """Everything parsing one file gave, batches concatenated."""

    events: pl.DataFrame
    quarantined: pl.DataFrame
    lines_read: int
    lines_ignored: int
    continuation_lines: int

    def reasons(self) -> dict[int, list[str]]:
        """{line_number: ["field: check", ...]} for every quarantined row."""
        if not self.quarantined.height:
            return {}
        return {
            row["line_number"]: [f"{reason['field']}: {reason['check']}" for reason in row["reasons"]]
            for row in self.quarantined.iter_rows(named=True)
        }

    def reason_texts(self) -> dict[int, str]:
        """{line_number: reason text} for every quarantined row."""
        if not self.quarantined.height:
            return {}
        return dict(zip(self.quarantined["line_number"].to_list(), self.quarantined["reason"].to_list(), strict=True))

    def rows(self, *columns: str) -> list[tuple[Any, ...]]:
        """The events' chosen columns, by line number."""
        return self.events.sort("line_number").select("line_number", *columns).rows()


def count_lines(data: bytes) -> int:
    """Lines as an editor counts them (independent of the reader); a BOM is not text."""
    data = data.removeprefix(b"\xef\xbb\xbf")
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def parse(spec: SourceSpec, data: bytes, day: dt.date, chunk_bytes: int = 1 << 20, name: str = "f.log") -> Parsed:
    """Parse `data` as one file of `day` and check that every line is accounted for."""
    parser = PartitionParser(spec, day)
    batches = list(parser.parse_file(iter_line_batches(io.BytesIO(data), chunk_bytes=chunk_bytes), name))
    events = pl.concat([b.events for b in batches]) if batches else pl.DataFrame(schema=events_schema(spec))
    quarantined = pl.concat([b.quarantined for b in batches]) if batches else pl.DataFrame()
    result = Parsed(
        events.sort("line_number"),
        quarantined.sort("line_number") if quarantined.height else quarantined,
        sum(b.lines_read for b in batches),
        sum(b.lines_ignored for b in batches),
        sum(b.continuation_lines for b in batches),
    )
    assert result.lines_read == count_lines(data)
    accounted = result.events.height + result.quarantined.height + result.lines_ignored + result.continuation_lines
    assert result.lines_read == accounted, "a line was lost or counted twice"
    if result.quarantined.height:
        assert result.quarantined["reasons"].list.len().min() >= 1  # type: ignore[operator]
    return result


def utc(*parts: int) -> dt.datetime:
    """A UTC datetime."""
    return dt.datetime(*parts, tzinfo=dt.UTC)


def parse_by_day(spec: SourceSpec, data: bytes, day_of_line: dict[int, dt.date]) -> Parsed:
    """Parse each line in the partition of its own day (as hourly files would arrive): the
    lines of one day form one file; line numbers are those of `data`. Every line needs a day."""
    lines = data.removeprefix(b"\xef\xbb\xbf").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    assert sorted(day_of_line) == list(range(1, len(lines) + 1)), "give every line a day"
    parts: list[Parsed] = []
    for day in sorted(set(day_of_line.values())):
        numbers = [number for number, of in sorted(day_of_line.items()) if of == day]
        original = pl.DataFrame({"line_number": range(1, len(numbers) + 1), "original": numbers})
        result = parse(spec, b"\n".join(lines[number - 1] for number in numbers) + b"\n", day)

        def renumber(frame: pl.DataFrame, original: pl.DataFrame = original) -> pl.DataFrame:
            if not frame.height:
                return frame
            joined = frame.join(original, on="line_number", how="left")
            return joined.with_columns(pl.col("original").alias("line_number")).drop("original")

        parts.append(Parsed(renumber(result.events), renumber(result.quarantined), result.lines_read,
                            result.lines_ignored, result.continuation_lines))  # fmt: skip
    quarantined = [part.quarantined for part in parts if part.quarantined.height]
    return Parsed(
        pl.concat([part.events for part in parts]).sort("line_number"),
        pl.concat(quarantined).sort("line_number") if quarantined else pl.DataFrame(),
        sum(part.lines_read for part in parts),
        sum(part.lines_ignored for part in parts),
        sum(part.continuation_lines for part in parts),
    )
