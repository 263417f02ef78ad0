"""The benchmark suite: `python -m benchmarks.run` (see `--help` for sizes).

Generates its own data deterministically, measures everything in one run so that ratios
hold on a noisy machine, prints a table against the targets and writes JSON:

- throughput of the ingest path of one partition (parse, validate, quarantine, load) for
  `access` and `app`, of `dagster asset materialize` of that partition, of the baselines
  (see `benchmarks.baselines`) and of the DuckDB read floor;
- the ingest's two largest costs alone (`benchmarks.components`: the regex extraction, the
  lake write) and the ceiling they put on any ingest built from them, and DuckDB alone
  splitting and inserting the same lines on every core (no validation: a reference, not an
  ingest);
- peak RSS of the ingest of a 1x and a 10x day, and of a 20-million-line day (700 MB target);
- a backfill of 30 partitions through `dagster asset materialize --partition-range` and
  through the daemon (`dagster-daemon run` + the UI's launchPartitionBackfill mutation),
  against the sum of the partitions' compute times (from their manifests).

`python -m benchmarks.profile_ingest` profiles the ingest (pyinstrument).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import yaml

from benchmarks import baselines, components, formats
from benchmarks.workload import BAD_LINE_RATE, DAY, generate_day, ingest_day
from pipeline.cli.generate import generate_landing_zone
from pipeline.engine.lake import Lake, LakeLocation
from pipeline.engine.landing import list_partition
from pipeline.engine.objects import LocalObjectStore
from pipeline.engine.parse import PartitionParser
from pipeline.settings import PROJECT_ROOT
from pipeline.sources import DEFAULT_SOURCES_FILE, load_sources
from pipeline.sources.spec import SourceSpec

RSS_TARGET_MB = 700
# `--quick`: every measurement at a tiny size (what the test suite runs); figures meaningless.
QUICK = {
    "lines": 4800,
    "seed_style_lines": 500,
    "pandas_lines": 2000,
    "backfill_days": 2,
    "backfill_lines": 240,
    "rss_lines": 9600,
    "repeat": 1,
}


def timed(action: Callable[[], Any]) -> tuple[Any, float]:
    """Run `action`; return its result and the wall time in seconds."""
    started = time.perf_counter()
    result = action()
    return result, time.perf_counter() - started


def partition_files(root: Path, source: str, day: dt.date) -> list[Path]:
    """The landed files of one partition, as paths."""
    listing = list_partition(LocalObjectStore(root / "landing"), source, day)
    return [root / "landing" / landed.key for landed in listing.files]


def lenient_sources(root: Path) -> Path:
    """The built-in sources with a 5% error budget: the benchmark's 1% bad lines sit right
    at the default budget, and a failed blocking check would stop the run it measures."""
    document = yaml.safe_load(DEFAULT_SOURCES_FILE.read_text())
    for body in document["sources"].values():
        body["error_budget"] = 0.05
        body["replaces"] = True  # PIPELINE_SOURCES_FILE adds to the built-in sources
    path = root / "sources.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def environment_for(root: Path, home: Path, landing: Path | None = None) -> dict[str, str]:
    """Environment of a Dagster subprocess working on `root` (reading `landing`, by default
    `root/landing`)."""
    return {
        **os.environ,
        "PIPELINE_SOURCES_FILE": str(lenient_sources(root)),
        "PIPELINE_LANDING_URL": str(landing or root / "landing"),
        "PIPELINE_OUTPUT_URL": str(root / "output"),
        "PIPELINE_LAKE_URL": str(root / "dagster-lake"),
        "DAGSTER_HOME": str(home),
    }


def summed_compute(root: Path, source: str, days: list[dt.date]) -> float:
    """Sum of the per-partition compute times recorded in the manifests (`duration_s`)."""
    return sum(
        json.loads((root / "output" / "manifests" / source / f"{day}.json").read_text())["duration_s"] for day in days
    )


def dagster_materialize(root: Path, selection: str, partition_args: list[str]) -> float:
    """Wall time of `dagster asset materialize` (a fresh process, as an operator runs it)."""
    home = root / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "pipeline.definitions"]
    command += ["--select", selection, *partition_args]
    environment = environment_for(root, home)
    completed, seconds = timed(
        lambda: subprocess.run(
            command, cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True, timeout=3600, check=False
        )
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stdout[-3000:]}{completed.stderr[-3000:]}")
    return seconds


# The asset backfill an operator launches from the UI ("Materialize" > "Launch backfill"): the
# same GraphQL mutation, run by `dagster-graphql` against the workspace (no webserver needed).
LAUNCH_BACKFILL = """
mutation LaunchBackfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on PartitionKeysNotFoundError { message }
    ... on InvalidSubsetError { message }
    ... on UnauthorizedError { message }
  }
}
"""
# Backfill statuses after which the daemon does nothing more with a backfill.
BACKFILL_DONE = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


def daemon_instance_yaml(home: Path) -> str:
    """The project's dagster.yaml (run queue, concurrency pools, monitoring, retries) with
    SQLite storage in `home`: the instance an operator's daemon runs with, minus PostgreSQL."""
    project = (PROJECT_ROOT / "dagster.yaml").read_text()
    return f"{project}\nstorage:\n  sqlite:\n    base_dir: {home / 'storage'}\n"


def _stop_process_group(process: subprocess.Popen[bytes], grace_s: float = 30.0) -> None:
    """Stop a process started in its own session, and everything it started: SIGTERM to its
    group (the daemon then stops its code server), SIGKILL if it does not exit in time."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # leftovers (a code server or run worker), if any
    except ProcessLookupError:
        pass
    if process.poll() is None:
        process.wait(timeout=10)


def _wait_for(condition: Callable[[], Any], timeout_s: float, what: str, log: Path) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}; daemon log:\n{tail}")


def _backfill_id(graphql_output: str) -> str | None:
    """The backfill id in `dagster-graphql`'s output (a JSON line among log lines), if launched."""
    for line in reversed(graphql_output.splitlines()):
        if line.startswith('{"data"'):
            outcome = json.loads(line)["data"]["launchPartitionBackfill"]
            return outcome.get("backfillId") if outcome else None
    return None


def daemon_backfill(
    root: Path, landing: Path, selection: list[str], ranges: list[list[dt.date]], *, launch_first: bool = False
) -> dict[str, Any]:
    """A daemon-driven asset backfill of `ranges`, as in production: `dagster-daemon run` is up
    (run queue, backfill daemon, concurrency pools from dagster.yaml), one backfill per range
    (disjoint ranges of one long backfill, as the runbook fans one out) is launched with the
    UI's GraphQL mutation, and the daemon does the rest. Each backfill is one run (single-run
    backfill policy); the `lake_writers` pool (limit 2) lets two of them write at once.
    Returns the timings of them all, from the first launch to the last end.

    The clock starts when the first backfill is stored (its `backfill_timestamp`) and stops
    when the daemon marks the last one done (`backfill_end_timestamp`); the runs' timings split the wall
    time into pickup, queue, run and completion lag. The backfill daemon looks for new
    backfills every 30 s (fixed in Dagster), so the pickup is 0-30 s depending on when the
    launch falls; launched as here, right after the daemon came up, it is near the worst case.
    `launch_first` (the quick mode) stores the backfill before the daemon starts, so that its
    first tick picks it up at once. The daemon and everything it started are always stopped.
    """
    from dagster import DagsterInstance, RunsFilter

    home = root / "daemon_home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(daemon_instance_yaml(home))
    # Schedules and the landing sensor stay off: only the backfill under test launches runs.
    environment = {**environment_for(root, home, landing), "PIPELINE_AUTOMATION": "stopped"}
    workspace = str(PROJECT_ROOT / "workspace.yaml")
    bin_dir = Path(sys.executable).parent
    log = root / "daemon.log"
    # The instance (and its SQLite schema) exists before the daemon starts: two processes
    # creating the same SQLite storage at once race on its migrations.
    with DagsterInstance.from_config(str(home)) as instance, log.open("wb") as log_stream:
        instance.get_daemon_heartbeats()
        instance.get_backfills(limit=1)

        def launch(days: list[dt.date]) -> str:
            params = {
                "partitionNames": [day.isoformat() for day in days],
                "assetSelection": [{"path": key.split("/")} for key in selection],
                "title": "benchmark",
            }
            completed = subprocess.run(
                [str(bin_dir / "dagster-graphql"), "-w", workspace, "-t", LAUNCH_BACKFILL]
                + ["-v", json.dumps({"params": params})],
                cwd=PROJECT_ROOT,
                env=environment,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            backfill_id = _backfill_id(completed.stdout)
            if backfill_id is None:
                raise RuntimeError(
                    f"launching the backfill failed:\n{completed.stdout[-3000:]}{completed.stderr[-3000:]}"
                )
            return backfill_id

        backfill_ids = [launch(days) for days in ranges] if launch_first else []
        started = time.perf_counter()
        daemon = subprocess.Popen(
            [str(bin_dir / "dagster-daemon"), "run", "-w", workspace],
            cwd=PROJECT_ROOT,
            env=environment,
            stdout=log_stream,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:

            def daemons_up() -> bool:
                if daemon.poll() is not None:
                    raise RuntimeError(f"dagster-daemon exited with {daemon.returncode}: {log.read_text()[-3000:]}")
                return {"BACKFILL", "QUEUED_RUN_COORDINATOR"} <= set(instance.get_daemon_heartbeats())

            _wait_for(daemons_up, 300, "the daemon's first heartbeats", log)
            daemon_start_s = time.perf_counter() - started
            if not backfill_ids:
                backfill_ids = [launch(days) for days in ranges]

            def finished() -> Any:
                backfills = [instance.get_backfill(backfill_id) for backfill_id in backfill_ids]
                done = all(backfill is not None and backfill.status.value in BACKFILL_DONE for backfill in backfills)
                return backfills if done else None

            backfills = _wait_for(finished, 3600, f"backfills {backfill_ids}", log)
            records = [
                record
                for backfill_id in backfill_ids
                for record in instance.get_run_records(filters=RunsFilter.for_backfill(backfill_id))
            ]
        finally:
            _stop_process_group(daemon)
    run_statuses = sorted({record.dagster_run.status.value for record in records})
    launched_at = min(backfill.backfill_timestamp for backfill in backfills)
    ended_at = max(backfill.backfill_end_timestamp or time.time() for backfill in backfills)
    first_created = min((record.create_timestamp.timestamp() for record in records), default=ended_at)
    first_start = min((record.start_time for record in records if record.start_time), default=ended_at)
    last_end = max((record.end_time for record in records if record.end_time), default=ended_at)
    for backfill in backfills:
        if backfill.status.value not in ("COMPLETED", "COMPLETED_SUCCESS"):
            raise RuntimeError(
                f"backfill {backfill.backfill_id} ended {backfill.status.value}; runs {run_statuses}; see {log}"
            )
    days = [day for days in ranges for day in days]
    compute = summed_compute(root, selection[0].split("/")[0], days)
    return {
        "partitions": len(days),
        "ranges": len(ranges),
        "launched_before_daemon_start": launch_first,
        "runs": len(records),
        "most_runs_at_once": most_at_once(records),
        "run_statuses": run_statuses,
        "daemon_start_s": daemon_start_s,
        "wall_s": ended_at - launched_at,
        "pickup_s": first_created - launched_at,
        "queued_s": first_start - first_created,
        "runs_s": last_end - first_start,
        "completion_lag_s": ended_at - last_end,
        "data_loaded_s": last_end - launched_at,
        "summed_compute_s": compute,
        "target_s": 1.3 * compute + 20,
    }


def probe_memory(root: Path, source: str) -> dict[str, float]:
    """Peak RSS of ingesting the benchmark day in a fresh process."""
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.probe", str(root), source],
        cwd=PROJECT_ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def probe_generated_day(root: Path, lines_per_hour: int, label: str) -> dict[str, float]:
    """Generate an access day of `lines_per_hour` per hour under `root`, probe its peak RSS,
    and remove it again (large days take gigabytes)."""
    print(f"generating the {label} ({lines_per_hour * 24:,} access lines) in {root}")
    generate_day(root, lines_per_hour, ["access"])
    try:
        return probe_memory(root, "access")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def ingest_once(root: Path, source: str) -> int:
    """The pipeline's ingest of one partition, in this process (into a fresh lake); returns
    the lines read."""
    lake = root / f"ingest-{source}-lake"
    shutil.rmtree(lake, ignore_errors=True)
    return ingest_day(root, source, lake).lines_read


def lake_write_once(spec: SourceSpec, rows: list[pl.DataFrame], lake: Path) -> int:
    """`components.lake_write` into a fresh lake; returns the rows written."""
    shutil.rmtree(lake, ignore_errors=True)
    return components.lake_write(spec, rows, lake, DAY)


READER_QUERY = "SELECT status, count(*), sum(bytes) FROM {events} GROUP BY status"


def reader_snapshot(lake: Path) -> int:
    """A reader's query the documented way: a DuckDB connection over the lake's consistent,
    `loads`-driven snapshot (`pipeline.query.connect`, here on `lake`); returns rows counted."""
    connection = Lake(LakeLocation.local(lake)).connect([load_sources()["access"]])
    with connection:
        rows = connection.execute(READER_QUERY.format(events="access.events")).fetchall()
    return sum(int(row[1]) for row in rows)


def reader_parquet_direct(lake: Path) -> int:
    """The same query by DuckDB straight over the events table's Parquet files (no snapshot,
    no Delta log: the floor a reader of these files cannot beat); returns rows counted."""
    files = sorted(str(path) for path in (lake / "access" / "events").rglob("*.parquet"))
    with duckdb.connect() as connection:
        rows = connection.execute(READER_QUERY.format(events="read_parquet(?)"), [files]).fetchall()
    return sum(int(row[1]) for row in rows)


def most_at_once(records: list[Any]) -> int:
    """The most runs of `records` that were running at the same moment (from start/end times)."""
    edges = sorted(
        edge
        for record in records
        if record.start_time and record.end_time
        for edge in ((record.start_time, 1), (record.end_time, -1))
    )
    running = most = 0
    for _, change in edges:  # an end sorts before a start at the same instant (-1 < 1)
        running += change
        most = max(most, running)
    return most


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every measurement; return the results document."""
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    day_root = work / "1x"
    per_hour = max(1, args.lines // 24)
    print(f"generating {per_hour * 24:,} lines per source for {DAY} ({BAD_LINE_RATE:.0%} bad) in {day_root}")
    generate_day(day_root, per_hour)
    access_files = partition_files(day_root, "access", DAY)
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_average_at_start": os.getloadavg(),
        "lines_per_partition": per_hour * 24,
        "bad_line_rate": BAD_LINE_RATE,
        "throughput_rounds": args.repeat,
    }
    figures: dict[str, dict[str, Any]] = {}

    access = load_sources()["access"]
    print("preparing the component measures: the access lines in memory, the parsed rows")
    access_lines = components.decoded_lines(access_files)
    access_rows = components.parsed_events(access, DAY, LocalObjectStore(day_root / "landing"))
    access_pattern = PartitionParser(access, DAY).record_pattern
    seed_lines = min(args.seed_style_lines, per_hour * 24)
    pandas_lines = min(args.pandas_lines, per_hour * 24)
    measures: dict[str, Callable[[], int]] = {
        "floor_duckdb_read_lines": lambda: baselines.duckdb_read_floor(access_files),
        "pipeline_ingest_access": lambda: ingest_once(day_root, "access"),
        "pipeline_ingest_app": lambda: ingest_once(day_root, "app"),
        "baseline_seed_style": lambda: baselines.seed_style(access_files, work / "seed.duckdb", seed_lines),
        "baseline_pandas_pandera": lambda: baselines.pandas_pandera(access_files, work / "pandas.duckdb", pandas_lines),
        "component_regex_extract": lambda: components.regex_extract(access_pattern, access_lines),
        "component_lake_write": lambda: lake_write_once(access, access_rows, work / "write-lake"),
        "component_duckdb_native_load": lambda: components.duckdb_native_load(
            access_files, work / "native.duckdb", DAY, os.cpu_count() or 1
        ),
        "reader_snapshot_query": lambda: reader_snapshot(day_root / "ingest-access-lake"),
        "reader_parquet_direct": lambda: reader_parquet_direct(day_root / "ingest-access-lake"),
    }
    # Rounds interleave the measures so that a burst of load from elsewhere hits them alike;
    # each figure is its best round (what the code can do when the machine lets it).
    for round_number in range(args.repeat):
        print(f"throughput round {round_number + 1} of {args.repeat}")
        for name, action in measures.items():
            lines, seconds = timed(action)
            figure = figures.setdefault(name, {"lines": lines, "seconds": seconds, "rounds_s": []})
            figure["rounds_s"].append(seconds)  # type: ignore[union-attr]
            figure["seconds"] = min(figure["seconds"], seconds)
    # Through Dagster once (a fresh process per run, as an operator runs it).
    seconds = dagster_materialize(day_root, "access/events,access/dlq", ["--partition", DAY.isoformat()])
    figures["dagster_cli_access"] = {"lines": figures["pipeline_ingest_access"]["lines"], "seconds": seconds}
    for figure in figures.values():
        figure["lines_per_s"] = figure["lines"] / figure["seconds"] if figure["seconds"] else 0.0
    # The write, the native load and the readers count rows (lines that became rows), not lines.
    for name in (
        "component_lake_write",
        "component_duckdb_native_load",
        "reader_snapshot_query",
        "reader_parquet_direct",
    ):
        figures[name]["unit"] = "rows"
    results["throughput"] = figures
    results["ingest_ceiling"] = ingest_ceiling(figures, os.cpu_count() or 1)
    if not args.skip_formats:
        results["formats"] = formats.measure(work / "formats", per_hour * 24, args.repeat)

    if not args.skip_memory:
        memory: dict[str, Any] = {"1x": probe_memory(day_root, "access")}
        memory["10x"] = probe_generated_day(work / "10x", per_hour * 10, "10x day")
        results["memory"] = memory

    if args.rss_lines > 0:
        # The absolute memory target: peak RSS of a day of `--rss-lines` access lines (20
        # million by default). At the default size that day is the 10x day: not run twice.
        rss_per_hour = max(1, args.rss_lines // 24)
        ten_x = results.get("memory", {}).get("10x")
        if ten_x is not None and abs(ten_x["lines"] - rss_per_hour * 24) <= 0.01 * rss_per_hour * 24:
            results["memory_target"] = {**ten_x, "reused": "10x"}
        else:
            results["memory_target"] = probe_generated_day(work / "rss", rss_per_hour, "memory-target day")
        results["memory_target"]["target_mb"] = RSS_TARGET_MB

    if not args.skip_backfill:
        backfill_root = work / "backfill"
        days = [DAY + dt.timedelta(days=offset) for offset in range(args.backfill_days)]
        backfill_per_hour = max(1, args.backfill_lines // 24)
        print(f"generating {len(days)} days of {backfill_per_hour * 24:,} access lines in {backfill_root}")
        generate_landing_zone(
            backfill_root / "landing",
            days,
            sources=["access"],
            lines_per_hour=backfill_per_hour,
            bad_line_rate=BAD_LINE_RATE / 2,
            missing_hours={},
        )
        selection = ["access/events", "access/dlq"]
        wall = dagster_materialize(backfill_root, ",".join(selection), ["--partition-range", f"{days[0]}...{days[-1]}"])
        compute = summed_compute(backfill_root, "access", days)
        results["backfill_cli_range"] = {
            "partitions": len(days),
            "lines_per_partition": backfill_per_hour * 24,
            "wall_s": wall,
            "summed_compute_s": compute,
            "target_s": 1.3 * compute + 20,
        }
        if not args.skip_daemon:
            # The same days as one backfill, then as two disjoint ranges side by side (each in
            # a fresh instance and lake): what fanning a backfill out gains on this machine.
            half = (len(days) + 1) // 2
            for key, ranges in (("backfill_daemon", [days]), ("backfill_daemon_2_ranges", [days[:half], days[half:]])):
                ranges = [days for days in ranges if days]
                print(
                    f"daemon-driven backfill of {len(days)} partitions in {len(ranges)} concurrent range(s)"
                    " (dagster-daemon + launchPartitionBackfill)"
                )
                daemon = daemon_backfill(
                    work / key, backfill_root / "landing", selection, ranges, launch_first=args.quick
                )
                results[key] = {"lines_per_partition": backfill_per_hour * 24, **daemon}
    return results


def ingest_ceiling(figures: dict[str, dict[str, Any]], cores: int) -> dict[str, float]:
    """The fastest any ingest could be that extracts fields with the source's regex and writes
    the rows to the lake, if nothing else cost anything: both spread over `cores` (at best),
    and the write no faster than its one writing thread."""
    regex, append = figures["component_regex_extract"], figures["component_lake_write"]
    # Both per line read: the write's time is spread over the lines its rows came from.
    regex_s_per_line = regex["seconds"] / regex["lines"]
    append_s_per_line = append["seconds"] / regex["lines"]
    lines_per_s = min(cores / (regex_s_per_line + append_s_per_line), 1 / append_s_per_line)
    return {"cores": cores, "rows_per_line": append["lines"] / regex["lines"], "lines_per_s": lines_per_s}


def report(results: dict[str, Any]) -> list[str]:
    """The human table: each figure, its target, and whether it is met."""
    throughput = results["throughput"]
    rate = {name: figure["lines_per_s"] for name, figure in throughput.items()}
    lines = [f"{'measure':<44} {'value':>16} {'target':>14}  met", "-" * 82]

    def row(name: str, value: str, target: str = "", met: bool | None = None) -> None:
        verdict = "" if met is None else ("yes" if met else "NO")
        lines.append(f"{name:<44} {value:>16} {target:>14}  {verdict}")

    for name, figure in throughput.items():
        row(f"{name} ({figure.get('unit', 'lines')}/s)", f"{figure['lines_per_s']:,.0f}")
    access = rate["pipeline_ingest_access"]
    row("ingest access, lines/s", f"{access:,.0f}", ">= 1,000,000", access >= 1_000_000)
    ceiling = results["ingest_ceiling"]
    row(f"  ceiling: regex + lake write alone, {ceiling['cores']} cores", f"{ceiling['lines_per_s']:,.0f}")
    row("  ingest / that ceiling", f"{access / ceiling['lines_per_s']:.0%}")
    # Per line read, like the ingest: both went through the same files.
    native = throughput["pipeline_ingest_access"]["lines"] / throughput["component_duckdb_native_load"]["seconds"]
    row(f"  DuckDB alone: split + insert, {ceiling['cores']} cores", f"{native:,.0f}")
    row("  ingest / DuckDB alone", f"{access / native:.0%}")
    reader = rate["reader_snapshot_query"] / rate["reader_parquet_direct"]
    row("reader: snapshot query / Parquet direct", f"{reader:.0%}")
    seed_ratio = access / rate["baseline_seed_style"]
    row("ratio to seed-style baseline (a)", f"{seed_ratio:.1f}x", ">= 30x", seed_ratio >= 30)
    pandas_ratio = access / rate["baseline_pandas_pandera"]
    row("ratio to pandas+pandera baseline (b)", f"{pandas_ratio:.1f}x", ">= 4x", pandas_ratio >= 4)
    floor_ratio = rate["floor_duckdb_read_lines"] / access
    row("DuckDB read floor (c) / ingest", f"{floor_ratio:.1f}x", "<= 6x", floor_ratio <= 6)
    overhead = throughput["dagster_cli_access"]["seconds"] - throughput["pipeline_ingest_access"]["seconds"]
    row("dagster CLI overhead over ingest (s)", f"{overhead:.1f}")
    if "memory" in results:
        one, ten = results["memory"]["1x"], results["memory"]["10x"]
        for label, figures in (("1x", one), ("10x", ten)):
            row(f"peak RSS {label} ({figures['lines']:,} lines), MB", f"{figures['peak_rss_mb']:.0f}")
            if "anonymous_at_peak_mb" in figures:
                row(
                    "  of it private (anonymous) / file-backed (library code), MB",
                    f"{figures['anonymous_at_peak_mb']:.0f} / {figures['file_backed_at_peak_mb']:.0f}",
                )
        growth = ten["peak_rss_mb"] / one["peak_rss_mb"]
        row("peak RSS 10x / 1x", f"{growth:.2f}", "<= 1.15", growth <= 1.15)
    if "memory_target" in results:
        target = results["memory_target"]
        row(
            f"peak RSS {target['lines']:,} lines, MB",
            f"{target['peak_rss_mb']:.0f}",
            f"< {target['target_mb']}",
            target["peak_rss_mb"] < target["target_mb"],
        )
    if "backfill_cli_range" in results:
        backfill = results["backfill_cli_range"]
        row(
            f"backfill {backfill['partitions']} partitions, CLI range (s)",
            f"{backfill['wall_s']:.1f}",
            f"<= {backfill['target_s']:.1f}",
            backfill["wall_s"] <= backfill["target_s"],
        )
        row("  summed per-partition compute (s)", f"{backfill['summed_compute_s']:.1f}")
    for key in ("backfill_daemon", "backfill_daemon_2_ranges"):
        if key not in results:
            continue
        daemon = results[key]
        row(
            f"backfill {daemon['partitions']} partitions, daemon, {daemon.get('ranges', 1)} range(s) (s)",
            f"{daemon['wall_s']:.1f}",
            f"<= {daemon['target_s']:.1f}",
            daemon["wall_s"] <= daemon["target_s"],
        )
        row(
            "  launch to data loaded (last run end) (s)",
            f"{daemon['data_loaded_s']:.1f}",
            f"<= {daemon['target_s']:.1f}",
            daemon["data_loaded_s"] <= daemon["target_s"],
        )
        row("  summed per-partition compute (s)", f"{daemon['summed_compute_s']:.1f}")
        row(
            f"  pickup/queue/{daemon['runs']} run(s)/completion lag (s)",
            f"{daemon['pickup_s']:.0f}/{daemon['queued_s']:.0f}/{daemon['runs_s']:.0f}/{daemon['completion_lag_s']:.0f}",
        )
        row("  most runs writing at once", str(daemon.get("most_runs_at_once", 1)))
    if "backfill_daemon" in results and "backfill_daemon_2_ranges" in results:
        one, two = results["backfill_daemon"], results["backfill_daemon_2_ranges"]
        row("  2 ranges / 1 range: runs' span", f"{two['runs_s'] / one['runs_s']:.2f}" if one["runs_s"] else "-")
    for name, value, target, met in formats.report_rows(results.get("formats", {})):
        row(name, value, target, met)
    machine = results["machine"]
    start, end = results.get("load_average_at_start"), results.get("load_average_at_end")
    lines.append("-" * 82)
    lines.append(
        f"{results['lines_per_partition']:,} lines per partition, {results['bad_line_rate']:.0%} bad; throughput: "
        f"best of {results['throughput_rounds']} interleaved rounds (dagster CLI: one run)"
    )
    lines.append(f"{machine['cpus']} CPUs, Python {machine['python']}, {machine['platform']}")
    if start and end:
        lines.append(
            f"started {results['started_at']}; load average (1/5/15 min) at start "
            + "/".join(f"{value:.2f}" for value in start)
            + ", at end "
            + "/".join(f"{value:.2f}" for value in end)
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run the suite and print/write its results."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--lines", type=int, default=2_000_000, help="lines per partition (1x); default 2,000,000")
    parser.add_argument("--seed-style-lines", type=int, default=200_000, help="lines for baseline (a)")
    parser.add_argument("--pandas-lines", type=int, default=1_000_000, help="lines for baseline (b)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="rounds of the throughput measures; each keeps its best (default 3)"
    )
    parser.add_argument("--backfill-days", type=int, default=30)
    parser.add_argument("--backfill-lines", type=int, default=100_000, help="lines per backfilled partition")
    parser.add_argument(
        "--rss-lines",
        type=int,
        default=20_000_000,
        help=f"access lines of the day measured against the {RSS_TARGET_MB} MB peak-RSS target (default "
        "20,000,000: the 10x day at the default size, measured once); 0 skips it",
    )
    parser.add_argument("--skip-rss-target", action="store_true", help="skip the 20M-line peak-RSS day")
    parser.add_argument("--skip-memory", action="store_true", help="skip the 1x/10x peak-memory probes")
    parser.add_argument("--skip-backfill", action="store_true", help="skip both 30-partition backfills")
    parser.add_argument("--skip-daemon", action="store_true", help="skip the daemon-driven backfill only")
    parser.add_argument("--skip-formats", action="store_true", help="skip the parse of each line format (formats.py)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="every measurement at a tiny size (" + ", ".join(f"{k}={v:,}" for k, v in QUICK.items()) + "): "
        "checks the suite works, in about a minute; the figures mean nothing",
    )
    parser.add_argument("--workdir", default=str(PROJECT_ROOT / "benchmarks" / "output" / "work"))
    parser.add_argument("--output", default=str(PROJECT_ROOT / "benchmarks" / "output" / "results.json"))
    args = parser.parse_args(argv)
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    if args.skip_rss_target:
        args.rss_lines = 0
    results = run(args)
    results["load_average_at_end"] = os.getloadavg()
    table = report(results)
    results["table"] = table
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2))
    print("\n".join(table))
    print(f"\nresults: {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
