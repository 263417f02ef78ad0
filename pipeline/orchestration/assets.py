"""The asset factory: every source gets `S/events`, `S/dlq`, `S/daily_metrics` and their checks.

`S/events` and `S/dlq` come out of one step (one pass over the files splits good and bad
rows). Partition ranges run as one run (`BackfillPolicy.single_run()`, which the CLI's
`--partition-range` requires), and metadata is attached per partition, so that every day of
a range gets its own row counts, an empty day 0.
"""

import datetime as dt
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetObservation,
    AssetsDefinition,
    AssetSpec,
    BackfillPolicy,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
    multi_asset,
)
from pydantic import Field

from pipeline.engine.ingest import PartitionStats, ingest_partition, write_failed_manifest
from pipeline.engine.landing_state import landing_state
from pipeline.engine.reader import DEFAULT_CHUNK_BYTES
from pipeline.orchestration.operations import WAREHOUSE_POOL, is_paused
from pipeline.orchestration.partitions import daily_partitions, days_in_range
from pipeline.orchestration.resources import PipelineResource
from pipeline.orchestration.retries import INGEST_RETRY_POLICY, retry_transient_only
from pipeline.settings import env_number
from pipeline.sources.spec import SourceSpec

QUARANTINE_RATE_CHECK = "quarantine_rate"
HOURS_COMPLETE_CHECK = "hours_complete"
# Metadata key of the landing state a partition was loaded from (see landing_state.py).
FINGERPRINT_METADATA = "landing_fingerprint"


class IngestConfig(Config):
    """Run configuration of the ingest step (the launchpad shows these with their defaults)."""

    chunk_bytes: int = Field(
        default=int(env_number(os.environ, "PIPELINE_INGEST_CHUNK_BYTES", DEFAULT_CHUNK_BYTES, 4096)),
        ge=4096,
        description="Bytes read per batch: bounds the memory used per file, whatever the day's size "
        "(default: PIPELINE_INGEST_CHUNK_BYTES or 4 MiB).",
    )
    sleep_between_batches_s: float = Field(
        default=env_number(os.environ, "PIPELINE_INGEST_SLEEP_BETWEEN_BATCHES_S", 0.0, 0.0),
        ge=0.0,
        description="Pause after each loaded batch, to throttle a backfill "
        "(default: PIPELINE_INGEST_SLEEP_BETWEEN_BATCHES_S or 0).",
    )
    progress_interval_s: float = Field(
        default=10.0,
        ge=0.0,
        description="At most one progress log line and observation per partition per this many seconds.",
    )
    pause_poll_s: float = Field(
        default=5.0,
        gt=0.0,
        description="While the warehouse pool is paused (limit 0), how often to look whether it was resumed.",
    )


def events_key(spec: SourceSpec) -> AssetKey:
    """Asset key of a source's valid rows."""
    return AssetKey([spec.name, "events"])


def dlq_key(spec: SourceSpec) -> AssetKey:
    """Asset key of a source's quarantined rows."""
    return AssetKey([spec.name, "dlq"])


def metrics_key(spec: SourceSpec) -> AssetKey:
    """Asset key of a source's daily metrics."""
    return AssetKey([spec.name, "daily_metrics"])


def events_metadata(stats: PartitionStats) -> dict[str, Any]:
    """Materialization metadata of one `S/events` partition."""
    return {
        "dagster/row_count": stats.rows_loaded,
        "status": stats.status,
        "summary": stats.summary,
        "rows_read": stats.rows_read,
        "rows_loaded": stats.rows_loaded,
        "rows_quarantined": stats.rows_quarantined,
        "quarantine_rate": MetadataValue.float(stats.quarantine_rate),
        "lines_read": stats.lines_read,
        "lines_ignored": stats.lines_ignored,
        "continuation_lines": stats.continuation_lines,
        "files": stats.files,
        "bytes_read": stats.bytes_read,
        "hours_present": MetadataValue.json(stats.hours_present),
        "missing_hours": MetadataValue.json(stats.missing_hours),
        "duration_s": MetadataValue.float(stats.duration_s),
        "manifest": MetadataValue.path(stats.manifest or ""),
    }


def dlq_metadata(stats: PartitionStats) -> dict[str, Any]:
    """Materialization metadata of one `S/dlq` partition."""
    return {
        "dagster/row_count": stats.rows_quarantined,
        "rows_quarantined": stats.rows_quarantined,
        "failed_checks": MetadataValue.json(stats.failed_checks),
        "manifest": MetadataValue.path(stats.manifest or ""),
    }


def quarantine_rate_result(spec: SourceSpec, days: Sequence[PartitionStats]) -> AssetCheckResult:
    """Blocking check: every day of the run is within the source's error budget."""
    over_budget = [stats.partition_date for stats in days if not stats.within_error_budget]
    rows_read = sum(stats.rows_read for stats in days)
    rows_quarantined = sum(stats.rows_quarantined for stats in days)
    failed_checks: dict[str, int] = {}
    samples: list[dict[str, object]] = []
    for stats in days:
        for rule, count in stats.failed_checks.items():
            failed_checks[rule] = failed_checks.get(rule, 0) + count
        samples.extend(stats.sample_quarantined[: max(0, 5 - len(samples))])
    worst = max(days, key=lambda stats: stats.quarantine_rate)
    return AssetCheckResult(
        asset_key=events_key(spec),
        check_name=QUARANTINE_RATE_CHECK,
        passed=not over_budget,
        severity=AssetCheckSeverity.ERROR,
        description=(
            f"{len(over_budget)} day(s) above the {spec.error_budget:.2%} error budget: {', '.join(over_budget)}"
            if over_budget
            else f"All {len(days)} day(s) within the {spec.error_budget:.2%} error budget"
        ),
        metadata={
            "quarantine_rate": MetadataValue.float(worst.quarantine_rate),
            "worst_day": worst.partition_date,
            "error_budget": MetadataValue.float(spec.error_budget),
            "rows_read": rows_read,
            "rows_quarantined": rows_quarantined,
            "quarantine_rate_per_day": MetadataValue.json(
                {stats.partition_date: stats.quarantine_rate for stats in days}
            ),
            "days_over_budget": MetadataValue.json(over_budget),
            "failed_checks": MetadataValue.json(failed_checks),
            "sample_quarantined": MetadataValue.json(samples),
        },
    )


def hours_complete_result(spec: SourceSpec, days: Sequence[PartitionStats]) -> AssetCheckResult:
    """Warning check: every hour of every day has at least one file."""
    missing = {stats.partition_date: stats.missing_hours for stats in days if stats.missing_hours}
    return AssetCheckResult(
        asset_key=events_key(spec),
        check_name=HOURS_COMPLETE_CHECK,
        passed=not missing,
        severity=AssetCheckSeverity.WARN,
        description=(
            "Missing hours: " + "; ".join(f"{day}: {len(hours)} missing" for day, hours in missing.items())
            if missing
            else f"All 24 hours present on {len(days)} day(s)"
        ),
        metadata={"missing_hours": MetadataValue.json(missing)},
    )


def wait_while_paused(context: AssetExecutionContext, poll_s: float, before: str) -> float:
    """Block while the warehouse pool's limit is 0 (the pause switch); returns the seconds waited.

    Called between partitions, so a paused run finishes the partition it is in (or, if it is
    killed, that partition's transaction rolls back) and resumes exactly where it stopped.
    """
    if not is_paused(context.instance, WAREHOUSE_POOL):
        return 0.0
    started = last_log = time.monotonic()
    context.log.warning(
        "paused: pool %r has limit 0 (set by an operator or the backfill guard); waiting before %s. "
        "Resume with `dagster instance concurrency set %s 1` or in the UI (Deployment > Concurrency).",
        WAREHOUSE_POOL,
        before,
        WAREHOUSE_POOL,
    )
    while is_paused(context.instance, WAREHOUSE_POOL):
        time.sleep(poll_s)
        if time.monotonic() - last_log >= 60:
            last_log = time.monotonic()
            context.log.info("still paused before %s (%.0f s)", before, last_log - started)
    waited = time.monotonic() - started
    context.log.info("resumed after %.1f s paused; continuing with %s", waited, before)
    return waited


class RunWorkerLost(RuntimeError):
    """The process that started this step (the run worker) is gone: the run is failed or retried."""


def run_worker_watch() -> Callable[[], None]:
    """A check that raises `RunWorkerLost` once this process's parent has changed (the run worker
    died and the step was re-parented). Cheap: one system call, no storage query."""
    parent = os.getppid()

    def check() -> None:
        if os.getppid() != parent:
            raise RunWorkerLost(
                f"the run worker (pid {parent}) that started this step is gone; stopping before the next "
                "write (the day's transaction rolls back; a retry of the run reloads it)"
            )

    return check


def _no_check() -> None:
    """Nothing to watch: the step runs in the run worker's own process."""


def watched(check: Callable[[], None], report: Callable[[PartitionStats], None]) -> Callable[[PartitionStats], None]:
    """A progress callback that first runs `check` (after each loaded batch)."""

    def on_progress(stats: PartitionStats) -> None:
        check()
        report(stats)

    return on_progress


class ProgressReporter:
    """Reports a long partition's progress while it loads: a log line and an `AssetObservation`
    on `S/events` (visible on the asset's page during the run), at most every `interval_s`."""

    def __init__(self, context: AssetExecutionContext, spec: SourceSpec, interval_s: float) -> None:
        self.context = context
        self.spec = spec
        self.interval_s = interval_s

    def for_day(self, day: dt.date, position: int, total: int, total_bytes: int) -> Callable[[PartitionStats], None]:
        """The `on_progress` callback of one partition (called after each loaded batch)."""
        started = time.monotonic()
        last = started

        def report(stats: PartitionStats) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last < self.interval_s:
                return
            last = now
            done = stats.bytes_read / total_bytes if total_bytes else 0.0
            self.context.log.info(
                "progress %s %s (day %d of %d): %s lines read, %s rows loaded, %s quarantined, "
                "%.0f%% of %s bytes in finished files, %.1f s",
                self.spec.name,
                day,
                position,
                total,
                f"{stats.lines_read:,}",
                f"{stats.rows_loaded:,}",
                f"{stats.rows_quarantined:,}",
                100 * done,
                f"{total_bytes:,}",
                now - started,
            )
            self.context.log_event(
                AssetObservation(
                    asset_key=events_key(self.spec),
                    partition=day.isoformat(),
                    metadata={
                        "progress/status": "running",
                        "progress/lines_read": stats.lines_read,
                        "progress/rows_loaded": stats.rows_loaded,
                        "progress/rows_quarantined": stats.rows_quarantined,
                        "progress/share_of_bytes": MetadataValue.float(round(done, 4)),
                        "progress/elapsed_s": MetadataValue.float(round(now - started, 1)),
                        "progress/day": f"{position} of {total}",
                    },
                )
            )

        return report

    def day_done(self, stats: PartitionStats, position: int, total: int) -> None:
        """One observation per finished partition, so a long range run shows its days as they end."""
        self.context.log_event(
            AssetObservation(
                asset_key=events_key(self.spec),
                partition=stats.partition_date,
                metadata={
                    "progress/status": stats.status,
                    "progress/rows_loaded": stats.rows_loaded,
                    "progress/rows_quarantined": stats.rows_quarantined,
                    "progress/day": f"{position} of {total}",
                    "progress/summary": stats.summary,
                },
            )
        )


def build_source_assets(spec: SourceSpec, *, watch_run_worker: bool = False) -> list[AssetsDefinition]:
    """Build the assets and checks of one source from its definition. `watch_run_worker`: the
    steps run in child processes of the run worker (multiprocess executor) and must stop if it
    dies."""
    partitions = daily_partitions(spec)
    group = spec.name
    ingest_specs = [
        AssetSpec(
            events_key(spec),
            description=f"Validated rows of `{spec.name}` ({spec.description}), one partition per UTC day. "
            f"Table `{spec.name}.events` in the warehouse.",
            group_name=group,
            partitions_def=partitions,
            kinds={"duckdb"},
        ),
        AssetSpec(
            dlq_key(spec),
            description=f"Quarantined lines of `{spec.name}` with the raw line and every failed check. "
            f"Table `{spec.name}.dlq`.",
            group_name=group,
            partitions_def=partitions,
            kinds={"duckdb"},
        ),
    ]
    check_specs = [
        AssetCheckSpec(
            QUARANTINE_RATE_CHECK,
            asset=events_key(spec),
            blocking=True,
            description=f"Fails (ERROR) when more than {spec.error_budget:.2%} of a day's rows are quarantined; "
            "blocks downstream assets.",
        ),
        AssetCheckSpec(
            HOURS_COMPLETE_CHECK,
            asset=events_key(spec),
            description="Warns when an hour of the day has no file.",
        ),
    ]

    @multi_asset(
        name=f"{spec.name}_ingest",
        specs=ingest_specs,
        check_specs=check_specs,
        backfill_policy=BackfillPolicy.single_run(),
        # Re-runs the step after a transient fault (e.g. S3 throttling that outlasted the client's
        # own retries); `retry_transient_only` fails every other error at once (see retries.py).
        retry_policy=INGEST_RETRY_POLICY,
        # One pool for every warehouse writer: throttles runs and is the pause switch.
        pool=WAREHOUSE_POOL,
        description=f"Parse, validate and load `{spec.name}` log files of each day.",
    )
    @retry_transient_only
    def ingest(context: AssetExecutionContext, config: IngestConfig, pipeline: PipelineResource) -> Iterator[Any]:
        days = days_in_range(context.partition_key_range)
        context.log.info(
            "run %s: source=%s days=%s..%s (%d) %s chunk_bytes=%d sleep_between_batches_s=%g",
            context.run_id,
            spec.name,
            days[0],
            days[-1],
            len(days),
            pipeline.describe(),
            config.chunk_bytes,
            config.sleep_between_batches_s,
        )
        landing, output, warehouse = pipeline.landing(), pipeline.output(), pipeline.warehouse()
        # An audit stamp for the DLQ, not data logic: the data date is the partition key.
        quarantined_at = dt.datetime.now(dt.UTC)
        progress = ProgressReporter(context, spec, config.progress_interval_s)
        # With the multiprocess executor, if the run worker dies (SIGKILL, OOM) this step's process
        # lives on, orphaned, while the run is marked failed and retried: stop at the next batch so
        # there is never a second writer. (In process, the step dies with the run worker.)
        check_run_worker = run_worker_watch() if watch_run_worker else _no_check
        results: list[PartitionStats] = []
        for position, day in enumerate(days, start=1):
            check_run_worker()
            wait_while_paused(context, config.pause_poll_s, f"{spec.name} {day} (day {position} of {len(days)})")
            # List and fingerprint what has landed *before* reading it; the ingest reads exactly
            # these files. A file that lands during the load is not read and makes the recorded
            # fingerprint stale, so the landing sensor re-runs the day.
            try:
                state = landing_state(landing, spec.name, day)
            except Exception as error:
                # The landing zone could not even be listed: the manifest still says so.
                write_failed_manifest(spec, day, output=output, run_id=context.run_id, error=error, log=context.log)
                raise
            stats = ingest_partition(
                spec,
                day,
                landing=landing,
                output=output,
                warehouse=warehouse,
                run_id=context.run_id,
                quarantined_at=quarantined_at,
                listing=state.listing,
                chunk_bytes=config.chunk_bytes,
                sleep_between_batches_s=config.sleep_between_batches_s,
                on_progress=watched(check_run_worker, progress.for_day(day, position, len(days), state.bytes)),
                log=context.log,
            )
            key = day.isoformat()
            metadata = events_metadata(stats)
            metadata[FINGERPRINT_METADATA] = state.fingerprint
            context.add_asset_metadata(metadata, asset_key=events_key(spec), partition_key=key)
            context.add_asset_metadata(dlq_metadata(stats), asset_key=dlq_key(spec), partition_key=key)
            if len(days) > 1:
                progress.day_done(stats, position, len(days))
            results.append(stats)
        yield MaterializeResult(asset_key=events_key(spec))
        yield MaterializeResult(asset_key=dlq_key(spec))
        yield quarantine_rate_result(spec, results)
        yield hours_complete_result(spec, results)

    @asset(
        key=metrics_key(spec),
        deps=[events_key(spec)],
        partitions_def=partitions,
        backfill_policy=BackfillPolicy.single_run(),
        pool=WAREHOUSE_POOL,
        group_name=group,
        kinds={"duckdb"},
        description=f"Daily figures of `{spec.name}` for on-call: {', '.join(spec.daily_metrics)}. "
        f"Table `{spec.name}.daily_metrics`, one row per day with events.",
    )
    def daily_metrics(context: AssetExecutionContext, pipeline: PipelineResource) -> MaterializeResult:
        warehouse = pipeline.warehouse()
        days = days_in_range(context.partition_key_range)
        for position, day in enumerate(days, start=1):
            # Each day in its own connection, so that a pause (or another writer) can come between days.
            wait_while_paused(context, 5.0, f"daily_metrics {spec.name} {day} (day {position} of {len(days)})")
            with warehouse.connect(log=context.log) as connection:
                warehouse.ensure_tables(connection, spec)
                rows = warehouse.replace_daily_metrics(connection, spec, day)
                figures = warehouse.daily_metrics(connection, spec, day)
                context.log.info("daily_metrics %s %s: %d row(s) %s", spec.name, day, rows, figures)
                metadata: dict[str, Any] = {"dagster/row_count": rows}
                metadata.update(
                    {name: _metadata_value(value) for name, value in figures.items() if name != "partition_date"}
                )
                context.add_asset_metadata(metadata, partition_key=day.isoformat())
        return MaterializeResult()

    return [ingest, daily_metrics]


def _metadata_value(value: object) -> Any:
    if isinstance(value, bool) or value is None:
        return MetadataValue.text(str(value))
    if isinstance(value, int):
        return MetadataValue.int(value)
    if isinstance(value, float):
        return MetadataValue.float(value)
    if isinstance(value, dict):
        return MetadataValue.json({str(key): item for key, item in value.items()})
    return MetadataValue.text(str(value))
