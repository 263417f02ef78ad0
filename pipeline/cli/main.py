"""The `pipeline` command: the demo, sample data, and reading the lake.

pipeline demo                      # sample landing zone + a week of both sources + summary
pipeline generate --start 2024-01-15 --days 7
pipeline summary --start 2024-01-15 --end 2024-01-21
pipeline query "SELECT partition_date, count(*) FROM access.events GROUP BY 1 ORDER BY 1"
pipeline history --source access --day 2024-01-17
pipeline lake maintain             # compact, vacuum, repair (what the weekly job does)
pipeline dlq rejudge --source app --start 2024-01-15 --end 2024-01-21   # after fixing a definition
pipeline sources list              # the loaded sources and where each is defined
pipeline sources check SOURCE FILE [FILE ...]   # try a definition on sample files (see --help)
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

from pipeline.cli import generate, lake_commands
from pipeline.cli import sources as sources_command
from pipeline.settings import PROJECT_ROOT, Settings, resolve_local
from pipeline.sources import configured_sources


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _local_dir(url: str, variable: str) -> Path:
    if "://" in url:
        raise SystemExit(f"{variable}={url}: the demo writes sample files locally only; unset it to use the default")
    return resolve_local(url)


def demo(args: argparse.Namespace) -> int:
    """Generate a week of sample logs, materialize it through Dagster's CLI, print the summary."""
    environment = dict(os.environ)
    # Keep run history between invocations: the project root holds the instance's dagster.yaml.
    environment.setdefault("DAGSTER_HOME", str(PROJECT_ROOT))
    settings = Settings.from_env()
    landing = _local_dir(settings.landing_url, "PIPELINE_LANDING_URL")
    # The demo reads the clock to choose its week (ending yesterday, UTC), so that what a newcomer
    # opens in the UI is recent; the pipeline's data logic never does (the partition is the date).
    days = generate.default_demo_days(dt.datetime.now(dt.UTC).date())
    bad_day = days[-1]
    print(
        f"1/3 Generating sample logs for {days[0]}..{days[-1]} in {landing} (access {bad_day}: "
        f"{generate.DEMO_OVER_BUDGET_RATE:.0%} bad lines and hour {generate.DEMO_MISSING_HOUR:02d} missing, on purpose)"
    )
    generate.generate_demo_landing_zone(landing, days, lines_per_hour=args.lines_per_hour)
    command = [
        sys.executable,
        "-m",
        "dagster",
        "asset",
        "materialize",
        "-m",
        "pipeline.definitions",
        "--select",
        "*",
        "--partition-range",
        f"{days[0].isoformat()}...{days[-1].isoformat()}",
    ]
    print(f"2/3 Materializing every asset for the week (DAGSTER_HOME={environment['DAGSTER_HOME']}):")
    print("    " + " ".join(command[1:]))
    completed = subprocess.run(
        command,
        cwd=PROJECT_ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    log_path = resolve_local("data/demo-run.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text(completed.stdout)
    print(f"    full Dagster log: {log_path}")
    print("3/3 Summary (from the loads table):")
    for line in lake_commands.summary_lines(days[0], days[-1]):
        print("    " + line)
    if completed.returncode != 0 and not _only_the_planned_day_failed(days, bad_day):
        print(f"The Dagster run failed (exit {completed.returncode}); see {log_path}", file=sys.stderr)
        return completed.returncode
    print(
        f"\nAs planned, access {bad_day} is over its 1.00% error budget: its quarantine_rate check failed, its "
        "daily_metrics are blocked and the run failed with a sentence saying so (the Dagster run exits non-zero "
        f"for it). Open access/events in the UI, partition {bad_day}, to read its verdict and access/dlq for the "
        "quarantined lines."
    )
    example = (
        "SELECT partition_date, count(*) AS rows, count(DISTINCT client) AS clients "
        "FROM access.events GROUP BY 1 ORDER BY 1"
    )
    print(f'\nQuery the tables with DuckDB SQL: pipeline query "{example}"')
    print(lake_commands.render_query(example))
    print(
        f"\nLake: {resolve_local(settings.lake_url)} (Delta tables per source: {', '.join(configured_sources())}).\n"
        f"Browse the runs: DAGSTER_HOME={environment['DAGSTER_HOME']} .venv/bin/dagster dev"
    )
    return 0


def _only_the_planned_day_failed(days: list[dt.date], bad_day: dt.date) -> bool:
    """Whether every demo day of every source was loaded and only access `bad_day` is over budget."""
    from pipeline.engine.lake.loads import EMPTY, LOADED

    specs = configured_sources()
    lake = lake_commands.deployment_lake()
    for name, spec in specs.items():
        latest = lake.tables(spec).latest_attempts(days)
        for day in days:
            record = latest.get(day.isoformat())
            if record is None or record.status not in (LOADED, EMPTY):
                return False
            if record.within_error_budget != (name != "access" or day != bad_day):
                return False
    return True


def _dlq(args: argparse.Namespace) -> int:
    from pipeline.cli import dlq

    return dlq.run(args)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `pipeline` console script."""
    parser = argparse.ArgumentParser(
        prog="pipeline", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="generate sample logs, materialize a week, print a summary")
    demo_parser.add_argument("--lines-per-hour", type=int, default=200, help="lines per source and hour (default 200)")
    commands.add_parser("generate", help="write a sample landing zone (see --help)", add_help=False)
    lake_commands.add_parsers(commands, _date)
    commands.add_parser("sources", help="list sources, or check one on sample files (see --help)", add_help=False)
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["generate"]:
        return generate.main(argv[1:])
    if argv[:1] == ["sources"]:
        return sources_command.main(argv[1:])
    args = parser.parse_args(argv)
    handlers = {
        "demo": demo,
        "query": lake_commands.query,
        "summary": lake_commands.summary,
        "history": lake_commands.history,
        "lake": lake_commands.lake,
        "dlq": _dlq,
    }
    return handlers[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
