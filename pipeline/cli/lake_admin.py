"""`pipeline lake maintain|migrate`: looking after the tables by hand.

`maintain` does what the weekly `lake_maintenance` job does (repair half-replaced days,
compact, vacuum), for one source or all; `migrate` moves a source's tables to a definition
whose column types or names changed (see `pipeline.engine.lake.migrate`).
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from pipeline.engine.lake.maintenance import DEFAULT_RETENTION_HOURS, maintain_source, write_report
from pipeline.engine.lake.migrate import MigrationError, apply_migration, plan_migration
from pipeline.settings import Settings
from pipeline.sources import configured_sources


def _resource() -> Any:
    from pipeline.orchestration.resources import PipelineResource

    return PipelineResource.from_settings(Settings.from_env())


def _rename(text: str) -> tuple[str, str]:
    old, separator, new = text.partition("=")
    if not separator or not old or not new:
        raise argparse.ArgumentTypeError(f"{text!r}: expected OLD=NEW")
    return old, new


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register `pipeline lake ...`."""
    lake_parser = commands.add_parser("lake", help="look after the lake's tables (maintain, migrate)")
    actions = lake_parser.add_subparsers(dest="lake_command", required=True)
    maintain = actions.add_parser("maintain", help="repair half-replaced days, compact small files, vacuum old ones")
    maintain.add_argument("--source", action="append", help="only this source (repeatable)")
    maintain.add_argument(
        "--retention-hours",
        type=int,
        default=DEFAULT_RETENTION_HOURS,
        help=f"keep files any snapshot of the last N hours needs (default {DEFAULT_RETENTION_HOURS}); never set it "
        "below the longest query or backfill still running",
    )
    maintain.add_argument("--dry-run", action="store_true", help="say what would be repaired and vacuumed")
    migrate = actions.add_parser("migrate", help="rewrite a source's tables under its changed definition")
    migrate.add_argument("--source", required=True)
    migrate.add_argument("--rename", action="append", type=_rename, default=[], help="keep OLD's data as NEW")
    migrate.add_argument("--apply", action="store_true", help="rewrite the tables (default: only show the plan)")


def run(args: argparse.Namespace) -> int:
    """Dispatch `pipeline lake ...`."""
    resource = _resource()
    lake = resource.lake()
    specs = configured_sources()
    if args.lake_command == "maintain":
        status = 0
        for name in args.source or list(specs):
            report = maintain_source(lake, specs[name], retention_hours=args.retention_hours, dry_run=args.dry_run)
            if not args.dry_run:
                write_report(resource.output(), report, dt.datetime.now(dt.UTC).date())
            print(report.sentence())
            status = status or (1 if report.problems else 0)
        return status
    if args.source not in specs:
        raise SystemExit(f"unknown source {args.source!r}; configured: {', '.join(specs)}")
    tables = lake.tables(specs[args.source])
    try:
        plans = plan_migration(tables, dict(args.rename))
        for plan in plans:
            print(f"{args.source}.{plan.describe()} ({plan.rows:,} rows)")
        if not any(plan.needed for plan in plans):
            print("nothing to migrate: new columns are added by the next load")
            return 0
        if not args.apply:
            print("dry run: add --apply to rewrite the tables (pause the writers first)")
            return 0
        versions = apply_migration(tables, plans)
    except MigrationError as error:
        print(f"migration refused: {error}")
        return 2
    for table, version in versions.items():
        print(f"{args.source}.{table}: rewritten, now version {version}")
    return 0
