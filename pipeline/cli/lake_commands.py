"""The `pipeline` commands that read (and look after) the lake: query, summary, history, lake.

All of them read `loads` and the tables through the lake, so they work the same for a local
lake and for one in S3, and never block a writer.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import sys
from collections.abc import Sequence
from typing import Any

from pipeline.engine.completeness import format_hours
from pipeline.engine.lake import Lake, LoadRecord
from pipeline.settings import Settings
from pipeline.sources import configured_sources

FORMATS = ("table", "csv", "json")


def deployment_lake() -> Lake:
    """The lake of this deployment's settings (the same objects the Dagster resource builds)."""
    from pipeline.orchestration.resources import PipelineResource

    return PipelineResource.from_settings(Settings.from_env()).lake()


def render(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str) -> str:
    """Rows as an aligned text table, CSV or JSON (a list of objects)."""
    if fmt == "json":
        return json.dumps([dict(zip(columns, row, strict=True)) for row in rows], indent=2, default=str)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([["" if value is None else value for value in row] for row in rows])
        return buffer.getvalue().rstrip("\n")
    texts = [[_cell(value) for value in row] for row in rows]
    widths = [max([len(name), *(len(row[index]) for row in texts)]) for index, name in enumerate(columns)]
    numeric = [
        all(isinstance(row[index], int | float) for row in rows if row[index] is not None)
        for index in range(len(columns))
    ]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(cells, widths, numeric, strict=True)
        ).rstrip()

    out = [line(list(columns)), "  ".join("-" * width for width in widths)]
    out.extend(line(row) for row in texts)
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    return str(value).replace("\n", "\\n")


def render_query(sql: str, fmt: str = "table") -> str:
    """The result of one query over the current snapshot, rendered."""
    connection = deployment_lake().connect(configured_sources().values())
    cursor = connection.execute(sql)
    return render([column[0] for column in cursor.description], cursor.fetchall(), fmt)


def query(args: argparse.Namespace) -> int:
    """`pipeline query "SQL"`: DuckDB SQL over the current snapshot (or `--as-of`) of every table."""
    from pipeline.query import parse_as_of

    specs = configured_sources()
    as_of = parse_as_of(args.as_of) if args.as_of else None
    connection = deployment_lake().connect(specs.values(), as_of=as_of)
    cursor = connection.execute(args.sql)
    if cursor.description is None:
        return 0
    columns = [column[0] for column in cursor.description]
    print(render(columns, cursor.fetchall(), args.format))
    warnings = connection.execute("SELECT source, warning FROM pipeline_lake.warnings").fetchall()
    for source, warning in warnings:
        print(f"warning ({source}): {warning}", file=sys.stderr)
    return 0


def _days(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=offset) for offset in range((end - start).days + 1)]


def summary_lines(start: dt.date, end: dt.date, sources: Sequence[str] | None = None) -> list[str]:
    """A table of every source and day in [start, end], from each day's latest attempt in `loads`."""
    specs = configured_sources()
    lake = deployment_lake()
    header = (
        f"{'source':<8} {'day':<10} {'status':<7} {'rows loaded':>11} {'quarantined':>11} {'rate':>7}  missing hours"
    )
    lines = [header, "-" * len(header)]
    days = _days(start, end)
    for name in sources or list(specs):
        latest = lake.tables(specs[name]).latest_attempts(days)
        for day in days:
            record = latest.get(day.isoformat())
            if record is None:
                lines.append(f"{name:<8} {day.isoformat():<10} {'-':<7} {'never loaded':>31}")
                continue
            missing = "none" if not record.missing_hours else format_hours(record.missing_hours)
            if record.status == "failed":
                # Its attempt changed nothing: the tables hold what the last complete load left.
                figures = f"{'-':>11} {'-':>11} {'-':>7}"
            else:
                figures = f"{record.rows_loaded:>11,} {record.rows_quarantined:>11,} {record.quarantine_rate:>7.2%}"
            lines.append(f"{name:<8} {day.isoformat():<10} {record.status:<7} {figures}  {missing}")
    return lines


def summary(args: argparse.Namespace) -> int:
    """`pipeline summary --start A --end B`."""
    for line in summary_lines(args.start, args.end, args.source):
        print(line)
    return 0


HISTORY_COLUMNS = (
    "day",
    "attempt",
    "run",
    "status",
    "started_at",
    "duration_s",
    "rows_loaded",
    "rows_quarantined",
    "files",
    "definition",
    "error",
)


def history_rows(records: Sequence[LoadRecord]) -> list[list[Any]]:
    """Attempts as rows of `HISTORY_COLUMNS`."""
    rows = []
    for record in records:
        error = (record.error or "").splitlines()[0][:80] if record.error else ""
        started = record.started_at.strftime("%Y-%m-%d %H:%M:%S") if record.started_at else ""
        rows.append(
            [
                record.partition_date,
                record.attempt,
                record.run_id[:8],
                record.status,
                started,
                record.duration_s,
                record.rows_loaded,
                record.rows_quarantined,
                record.files,
                record.definition_version,
                error,
            ]
        )
    return rows


def history(args: argparse.Namespace) -> int:
    """`pipeline history --source S [--day D | --run RUN_ID]`: every attempt, readably."""
    specs = configured_sources()
    if args.source not in specs:
        raise SystemExit(f"unknown source {args.source!r}; configured: {', '.join(specs)}")
    tables = deployment_lake().tables(specs[args.source])
    records = tables.read_loads([args.day] if args.day else None)
    if args.run:
        records = [record for record in records if record.run_id == args.run or record.run_id.startswith(args.run)]
    records = sorted(records, key=lambda record: (record.partition_date, record.attempt))[-args.limit :]
    print(render(HISTORY_COLUMNS, history_rows(records), args.format))
    if args.run and records:
        loaded = sum(record.rows_loaded for record in records if record.seals)
        quarantined = sum(record.rows_quarantined for record in records if record.seals)
        failed = [record.partition_date for record in records if record.status == "failed"]
        print(
            f"run {args.run}: {len(records)} attempt(s), {loaded:,} rows loaded, {quarantined:,} quarantined"
            + (f"; failed: {', '.join(failed)}" if failed else "")
        )
    if args.day and records and records[-1].error_traceback:
        print(f"\nlatest attempt's error:\n{records[-1].error}\n{records[-1].error_traceback}")
    return 0


def lake(args: argparse.Namespace) -> int:
    """`pipeline lake maintain|migrate`."""
    from pipeline.cli import lake_admin

    return lake_admin.run(args)


def add_parsers(commands: argparse._SubParsersAction, date_type: Any) -> None:  # type: ignore[type-arg]
    """Register `query`, `summary`, `history` on the `pipeline` parser."""
    query_parser = commands.add_parser("query", help="run DuckDB SQL over the lake's tables (S.events, S.loads, ...)")
    query_parser.add_argument("sql", help='e.g. "SELECT partition_date, count(*) FROM access.events GROUP BY 1"')
    query_parser.add_argument("--format", choices=FORMATS, default="table")
    query_parser.add_argument("--as-of", help="read the lake as it was at this UTC time (ISO 8601)")
    summary_parser = commands.add_parser("summary", help="per-day figures of every source, from the loads table")
    summary_parser.add_argument("--start", type=date_type, required=True)
    summary_parser.add_argument("--end", type=date_type, required=True)
    summary_parser.add_argument("--source", action="append", help="only this source (repeatable)")
    history_parser = commands.add_parser("history", help="every attempt of a source's days, from the loads table")
    history_parser.add_argument("--source", required=True)
    which = history_parser.add_mutually_exclusive_group()
    which.add_argument("--day", type=date_type, help="only this day (and show its latest error)")
    which.add_argument("--run", help="only this run's attempts (a run id or its first characters)")
    history_parser.add_argument("--limit", type=int, default=100, help="at most this many attempts (newest)")
    history_parser.add_argument("--format", choices=FORMATS, default="table")
    from pipeline.cli import dlq, lake_admin

    lake_admin.add_parser(commands)
    dlq.add_parser(commands, date_type)
