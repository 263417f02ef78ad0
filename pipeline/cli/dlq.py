"""`pipeline dlq rejudge --source S --start A --end B`: re-judge days' quarantined rows.

Runs the `S_ingest` step with `rejudge_dlq: true` through `dagster asset materialize`, so the
re-judge is a Dagster run like any load (materializations, checks, notifications) and an
attempt in `loads`. The landing files are not read: while they exist, re-running the days is
the normal way (it also picks up what the files have that the DLQ never saw).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

from pipeline.settings import PROJECT_ROOT
from pipeline.sources import configured_sources


def add_parser(commands: argparse._SubParsersAction, date_type: Any) -> None:  # type: ignore[type-arg]
    """Register `pipeline dlq ...`."""
    parser = commands.add_parser("dlq", help="work with the dead-letter queue (rejudge)")
    actions = parser.add_subparsers(dest="dlq_command", required=True)
    rejudge = actions.add_parser("rejudge", help="re-judge days' quarantined rows through the current definition")
    rejudge.add_argument("--source", required=True)
    rejudge.add_argument("--start", type=date_type, required=True)
    rejudge.add_argument("--end", type=date_type, help="last day (default: --start)")


def run(args: argparse.Namespace) -> int:
    """Launch the re-judge run and relay its outcome."""
    specs = configured_sources()
    if args.source not in specs:
        raise SystemExit(f"unknown source {args.source!r}; configured: {', '.join(specs)}")
    end = args.end or args.start
    if end < args.start:
        raise SystemExit(f"--end {end} is before --start {args.start}")
    name = args.source
    config = {"ops": {f"{name}_ingest": {"config": {"rejudge_dlq": True}}}}
    partition = (
        ["--partition", args.start.isoformat()] if end == args.start else ["--partition-range", f"{args.start}...{end}"]
    )
    command = [
        sys.executable, "-m", "dagster", "asset", "materialize", "-m", "pipeline.definitions",
        "--select", f"{name}/events,{name}/dlq,{name}/daily_metrics", *partition, "--config-json", json.dumps(config),
    ]  # fmt: skip
    print("re-judging through Dagster: " + " ".join(command[1:]))
    completed = subprocess.run(command, cwd=PROJECT_ROOT, check=False)
    return completed.returncode
