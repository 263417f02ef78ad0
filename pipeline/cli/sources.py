"""`pipeline sources`: what sources are loaded, and how one parses a sample, before deploying it.

pipeline sources list
pipeline sources check SOURCE FILE [FILE ...] [--day YYYY-MM-DD] [--rows N] [--quarantined N]

A FILE is a local path, `landing:KEY` (a key of the landing store, `PIPELINE_LANDING_URL`) or
an `s3://bucket/key` URL (read with the pipeline's S3 client settings). Files ending in `.gz`
are decompressed. Nothing is written anywhere.

The data date of a file (which day its events must belong to) is `--day`, else the
`dt=YYYY-MM-DD` folder in its path, else today's date (this command only: the pipeline never
takes the date from the clock).

Exit status: 0 when the sample is within the source's error budget, 1 when it is not (a day
like it would fail the blocking `quarantine_rate` check), 2 for a usage or definition error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, BinaryIO

import polars as pl

from pipeline.engine.objects import ObjectStore, ObjectStoreError
from pipeline.engine.records import rules_by_rows
from pipeline.engine.sample import SampleFile, SampleReport, check_sample
from pipeline.sources import Catalog, SourceConfigError, configured_catalog

# `dt=YYYY-MM-DD` as a whole folder name of a path, a landing key or an s3:// URL.
_PARTITION_FOLDER = re.compile(r"(?:^|[/:])dt=(\d{4}-\d{2}-\d{2})(?:/|$)")
_SHOWN_CHARS = 80


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeline sources", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the loaded sources and the file each comes from")
    check = commands.add_parser("check", help="parse and validate sample files with a source's definition")
    check.add_argument("source", help="the source's name (see `pipeline sources list`)")
    check.add_argument("files", nargs="+", metavar="FILE", help="a path, landing:KEY or s3://bucket/key")
    check.add_argument("--day", type=_date, help="the data date of every file (default: dt= in its path, else today)")
    check.add_argument("--rows", type=int, default=10, help="parsed rows to show (default 10)")
    check.add_argument("--quarantined", type=int, default=20, help="quarantined lines to show (default 20)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `pipeline sources ...`."""
    args = _parser().parse_args(sys.argv[2:] if argv is None else argv)
    try:
        catalog = configured_catalog()
    except SourceConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.command == "list":
        print("\n".join(list_lines(catalog)))
        return 0
    spec = catalog.specs.get(args.source)
    if spec is None:
        print(f"error: no source {args.source!r}; loaded: {', '.join(sorted(catalog.specs))}", file=sys.stderr)
        return 2
    try:
        files = [sample_file(argument, args.day, dt.date.today()) for argument in args.files]
        report = check_sample(spec, files, keep_rows=args.rows, keep_quarantined=args.quarantined)
    except (OSError, ObjectStoreError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    origin = catalog.origins[args.source]
    print("\n".join(report_lines(report, files, origin, args.day is not None)))
    return 0 if report.within_error_budget else 1


def list_lines(catalog: Catalog) -> list[str]:
    """A table of the loaded sources: name, format, first day, budget, fields, file."""
    rows = [("source", "format", "first_day", "budget", "fields", "defined in")]
    for name, spec in sorted(catalog.specs.items()):
        kind = spec.format.type + (f" (preset {spec.preset})" if spec.preset else "")
        kind += ", multi-line" if spec.multiline else ""
        rows.append((name, kind, spec.first_day.isoformat(), f"{spec.error_budget:.2%}", str(len(spec.fields)),
                     str(catalog.origins[name])))  # fmt: skip
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    return ["  ".join(value.ljust(width) for value, width in zip(row, widths, strict=False)) + "  " + row[-1]
            for row in rows]  # fmt: skip


def sample_file(argument: str, day: dt.date | None, today: dt.date) -> SampleFile:
    """The file an argument names, with its data date (`day`, else its `dt=` folder, else `today`)."""
    found = _PARTITION_FOLDER.search(argument)
    chosen = day or today
    if day is None and found:
        try:
            chosen = dt.date.fromisoformat(found.group(1))
        except ValueError:
            raise ValueError(f"{argument}: its folder dt={found.group(1)} is not a date; set --day") from None
    gzipped = argument.endswith(".gz")
    if argument.startswith("landing:"):
        store, key = _landing_store(), argument[len("landing:") :]
        return SampleFile(argument, chosen, _opener(store, key), gzipped)
    if argument.startswith("s3://"):
        from pipeline.engine.objects import parse_s3_url
        from pipeline.engine.s3 import S3ObjectStore

        bucket, key = parse_s3_url(argument)
        store = S3ObjectStore(_s3_client(), bucket)
        return SampleFile(argument, chosen, _opener(store, key), gzipped)
    path = Path(argument)
    if not path.is_file():
        raise FileNotFoundError(f"{argument}: no such file (use landing:KEY for the landing store, or s3://...)")
    return SampleFile(argument, chosen, lambda: path.open("rb"), gzipped)


def _opener(store: ObjectStore, key: str) -> Any:
    def open_object() -> AbstractContextManager[BinaryIO]:
        return store.open(key)  # type: ignore[return-value]

    return open_object


def _landing_store() -> ObjectStore:
    """The landing store of the deployment's settings (S3 client only for an s3:// URL)."""
    from pipeline.orchestration.resources import PipelineResource
    from pipeline.settings import Settings

    return PipelineResource.from_settings(Settings.from_env()).landing()


def _s3_client() -> Any:
    """An S3 client with the pipeline's timeouts and retries (AWS_* settings apply)."""
    from pipeline.orchestration.resources import PipelineResource
    from pipeline.settings import Settings

    return PipelineResource.from_settings(Settings.from_env()).s3_client()


def report_lines(report: SampleReport, files: list[SampleFile], origin: Path, day_given: bool) -> list[str]:
    """The readable report: files, parsed rows, quarantined lines, counts and rate."""
    spec = report.source
    lines = [f"source {spec.name} ({spec.format.type} format) from {origin}; error budget {spec.error_budget:.2%}"]
    for sample in files:
        if day_given:
            how = "--day"
        elif _PARTITION_FOLDER.search(sample.name):
            how = "from its dt= folder"
        else:
            how = "today: no dt=YYYY-MM-DD in its path; set --day"
        lines.append(f"  {sample.name}: day {sample.day} ({how}), {report.per_file[sample.name]['lines_read']:,} lines")
    with pl.Config(tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=40, tbl_width_chars=200, tbl_hide_dataframe_shape=True):
        lines.append(f"\nParsed rows: {report.rows_loaded:,}" + _shown(report.events.height, report.rows_loaded))
        if report.events.height:
            lines.append(str(report.events.drop("source_file") if len(files) == 1 else report.events))
        lines.append(
            f"\nQuarantined rows: {report.rows_quarantined:,}"
            + _shown(report.quarantined.height, report.rows_quarantined)
        )
        for row in report.quarantined.iter_rows(named=True):
            where = f"{row['source_file']}:{row['line_number']}" if len(files) > 1 else f"line {row['line_number']}"
            lines.append(f"  {where}: {_cut(row['reason'])}")
            lines.append(f"      {_cut(row['raw_line'])}")
    if report.failed_checks:
        lines.append("\nFailed checks:")
        lines += [f"  {count:>8,}  {rule}" for rule, count in rules_by_rows(report.failed_checks).items()]
    lines.append(
        f"\nLines read {report.lines_read:,} = {report.rows_loaded:,} loaded + {report.rows_quarantined:,} quarantined"
        f" + {report.continuation_lines:,} continuation + {report.lines_ignored:,} ignored"
    )
    verdict = "within" if report.within_error_budget else "ABOVE"
    lines.append(
        f"Quarantine rate {report.quarantine_rate:.2%} of {report.rows_read:,} rows: {verdict} the error budget of "
        f"{spec.error_budget:.2%}"
        + ("" if report.within_error_budget else " (a day like this fails the blocking quarantine_rate check)")
    )
    return lines


def _shown(shown: int, total: int) -> str:
    return f" (first {shown} shown)" if 0 < shown < total else ""


def _cut(text: str) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= _SHOWN_CHARS * 2 else text[: _SHOWN_CHARS * 2] + "…"


if __name__ == "__main__":
    raise SystemExit(main())
