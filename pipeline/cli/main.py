"""The `pipeline` command: run the demo, generate sample data, summarise manifests.

pipeline demo                      # sample landing zone + a week of both sources + summary
pipeline generate --start 2024-01-15 --days 7
pipeline summary --start 2024-01-15 --end 2024-01-21
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

from pipeline.cli import generate
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


def summarise(start: dt.date, end: dt.date) -> list[str]:
    """Lines of a table built from the manifests of every source and day in [start, end]."""
    output = _local_dir(Settings.from_env().output_url, "PIPELINE_OUTPUT_URL")
    header = (
        f"{'source':<8} {'day':<10} {'status':<7} {'rows loaded':>11} {'quarantined':>11} {'rate':>7}  missing hours"
    )
    lines = [header, "-" * len(header)]
    for source in configured_sources():
        day = start
        while day <= end:
            path = output / "manifests" / source / f"{day.isoformat()}.json"
            if not path.exists():
                lines.append(f"{source:<8} {day.isoformat():<10} {'-':<7} {'no manifest: not run yet':>31}")
            else:
                manifest = json.loads(path.read_text())
                missing = manifest["missing_hours"]
                missing_text = (
                    "none"
                    if not missing
                    else "all 24"
                    if len(missing) == 24
                    else ", ".join(f"{h:02d}" for h in missing)
                )
                if manifest["status"] == "failed":
                    # Its load was rolled back: the warehouse holds what an earlier run left.
                    figures = f"{'-':>11} {'-':>11} {'-':>7}"
                else:
                    figures = (
                        f"{manifest['rows_loaded']:>11,} {manifest['rows_quarantined']:>11,} "
                        f"{manifest['quarantine_rate']:>7.2%}"
                    )
                lines.append(f"{source:<8} {day.isoformat():<10} {manifest['status']:<7} {figures}  {missing_text}")
            day += dt.timedelta(days=1)
    return lines


def demo(args: argparse.Namespace) -> int:
    """Generate a week of sample logs, materialize it through Dagster's CLI, print the summary."""
    environment = dict(os.environ)
    # Keep run history between invocations: the project root holds the instance's dagster.yaml.
    environment.setdefault("DAGSTER_HOME", str(PROJECT_ROOT))
    settings = Settings.from_env()
    landing = _local_dir(settings.landing_url, "PIPELINE_LANDING_URL")
    days = generate.default_demo_days()
    print(f"1/3 Generating sample logs for {days[0]}..{days[-1]} in {landing}")
    generate.generate_landing_zone(landing, days, lines_per_hour=args.lines_per_hour)
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
    print("3/3 Summary (from the manifests):")
    for line in summarise(days[0], days[-1]):
        print("    " + line)
    if completed.returncode != 0:
        print(f"The Dagster run failed (exit {completed.returncode}); see {log_path}", file=sys.stderr)
        return completed.returncode
    print(
        f"\nWarehouse: {resolve_local(settings.warehouse)} (schemas: {', '.join(configured_sources())}).\n"
        f"Browse the runs: DAGSTER_HOME={environment['DAGSTER_HOME']} .venv/bin/dagster dev"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `pipeline` console script."""
    parser = argparse.ArgumentParser(
        prog="pipeline", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="generate sample logs, materialize a week, print a summary")
    demo_parser.add_argument("--lines-per-hour", type=int, default=200, help="lines per source and hour (default 200)")
    commands.add_parser("generate", help="write a sample landing zone (see --help)", add_help=False)
    summary_parser = commands.add_parser("summary", help="print per-day figures from the manifests")
    summary_parser.add_argument("--start", type=_date, required=True)
    summary_parser.add_argument("--end", type=_date, required=True)
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["generate"]:
        return generate.main(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args)
    for line in summarise(args.start, args.end):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
