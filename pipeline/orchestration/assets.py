"""The asset factory: every source gets `S/events`, `S/dlq`, `S/daily_metrics` and their checks.

One step (`S_ingest`) produces the three assets, because the day is the unit: for each day
of its partition range it replaces the day in the lake (events, DLQ, and the metrics when the
day is within its error budget), then records that day's materializations and check results
at once. So in a range run (`BackfillPolicy.single_run()`, which the CLI's
`--partition-range` requires) every committed day shows as materialized with its own
metadata even if a later day fails; a retry resumes at the first day not yet loaded; and a
day over its error budget blocks only its own `daily_metrics`. The step then fails with a
sentence naming the blocked days.

Selecting only `S/daily_metrics` recomputes the metrics from the events already loaded (no
landing file is read), e.g. after a metric was added to the definition.
"""

import datetime as dt
import os
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetsDefinition,
    AssetSpec,
    BackfillPolicy,
    Config,
    Failure,
    MetadataValue,
    PreviewWarning,
    multi_asset,
)
from pydantic import Field

from pipeline.engine.ingest import IngestOptions, RunInfo, ingest_partition, recompute_daily_metrics
from pipeline.engine.lake.errors import error_text
from pipeline.engine.lake.loads import LoadRecord
from pipeline.engine.lake.tables import SourceTables
from pipeline.engine.reader import DEFAULT_CHUNK_BYTES
from pipeline.engine.rejudge import rejudge_partition
from pipeline.engine.volume import judge_volume
from pipeline.orchestration.metadata import (
    CODE_VERSION_TAG,
    HOURS_COMPLETE_CHECK,
    QUARANTINE_RATE_CHECK,
    VOLUME_NORMAL_CHECK,
    blocked_days_table,
    check_evaluations,
    check_target,
    column_schema,
    dlq_column_schema,
    location,
    materializations,
    metrics_column_lineage,
    metrics_column_schema,
    metrics_metadata,
    metrics_removed,
    volume_evaluation,
)
from pipeline.orchestration.observability import report_attempt
from pipeline.orchestration.operations import DEFAULT_POOL_LIMIT, LAKE_WRITERS_POOL, is_paused, list_pool
from pipeline.orchestration.partitions import daily_partitions, days_in_range
from pipeline.orchestration.resources import PipelineResource
from pipeline.orchestration.retries import INGEST_RETRY_POLICY, is_transient, retry_transient_only
from pipeline.settings import env_number
from pipeline.sources.spec import SourceSpec
from pipeline.sources.version import definition_version

# How long a run waits before its next day while the pool is paused, by default: a pause of a
# working session (an operator looking into a backfill) passes; one forgotten overnight fails
# the step with a sentence instead of holding a run slot forever.
DEFAULT_PAUSE_TIMEOUT_S = 4 * 3600.0

__all__ = [
    "HOURS_COMPLETE_CHECK",
    "QUARANTINE_RATE_CHECK",
    "IngestConfig",
    "build_source_assets",
    "dlq_key",
    "events_key",
    "metrics_key",
]


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
        description="Pause after each parsed batch, to throttle a backfill "
        "(default: PIPELINE_INGEST_SLEEP_BETWEEN_BATCHES_S or 0).",
    )
    skip_unchanged_days: bool = Field(
        default=False,
        description="Skip a day already loaded (by any run) from the same landing files under the same "
        "definition. Retries and re-executions of a run always skip the days it loaded.",
    )
    allow_emptying_loaded_days: bool = Field(
        default=False,
        description="Replace a loaded day whose landing folder is now empty with an empty day. Without it such "
        "a day is kept and its attempt fails (the files expired: its rows are not lost to a re-run).",
    )
    rejudge_dlq: bool = Field(
        default=False,
        description="Re-judge the days' quarantined rows through the current definition instead of reading the "
        "landing files (after fixing a definition, when the files have expired): rows that pass move to events.",
    )
    progress_interval_s: float = Field(
        default=10.0, ge=0.0, description="At most one progress log line per partition per this many seconds."
    )
    pause_poll_s: float = Field(
        default=5.0,
        gt=0.0,
        description="While the lake_writers pool is paused (limit 0), how often to look whether it was resumed.",
    )
    pause_timeout_s: float = Field(
        default=env_number(os.environ, "PIPELINE_PAUSE_TIMEOUT_S", DEFAULT_PAUSE_TIMEOUT_S, 0.0),
        ge=0.0,
        description="How long a run waits before its next day while the lake_writers pool is paused; then the step "
        "fails (re-run it once resumed) instead of holding its run slot forever "
        "(default: PIPELINE_PAUSE_TIMEOUT_S or 4 hours).",
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


def paused_too_long(before: str, waited_s: float, timeout_s: float) -> Failure:
    """The failure that ends a step that waited `timeout_s` for the pause switch: which day it
    stopped before and how to go on. Not retried: a retry would only wait again."""
    resume = (
        f"set the pool's limit back (`dagster instance concurrency set {LAKE_WRITERS_POOL} {DEFAULT_POOL_LIMIT}` or "
        "UI > Deployment > Concurrency), then re-execute this run from failure or re-run the remaining days "
        "(the days already loaded are kept)"
    )
    return Failure(
        description=(
            f"Paused too long: the {LAKE_WRITERS_POOL!r} pool is still paused (limit 0) after {waited_s:,.1f} s "
            f"(pause_timeout_s={timeout_s:g}); stopped before {before}, the days before it are loaded. "
            f"To resume: {resume}."
        ),
        metadata={
            "pool": LAKE_WRITERS_POOL,
            "stopped_before": before,
            "waited_s": MetadataValue.float(waited_s),
            "next_step": resume,
        },
        allow_retries=False,
    )


def wait_while_paused(
    context: AssetExecutionContext, poll_s: float, before: str, timeout_s: float = DEFAULT_PAUSE_TIMEOUT_S
) -> float:
    """Block while the lake_writers pool's limit is 0 (the pause switch); returns the seconds waited.

    Called between days, so a paused run finishes the day it is in and resumes exactly where
    it stopped. After `timeout_s` still paused it raises `paused_too_long`: a run waiting
    forever would hold its run slot (and its place in a backfill) with nobody noticing."""
    if not is_paused(context.instance, LAKE_WRITERS_POOL):
        return 0.0
    started = last_log = time.monotonic()
    context.log.warning(
        "paused: pool %r has limit 0 (set by an operator or the backfill guard); waiting before %s. "
        "Resume with `dagster instance concurrency set %s %d` or in the UI (Deployment > Concurrency).",
        LAKE_WRITERS_POOL,
        before,
        LAKE_WRITERS_POOL,
        DEFAULT_POOL_LIMIT,
    )
    while is_paused(context.instance, LAKE_WRITERS_POOL):
        elapsed = time.monotonic() - started
        if elapsed >= timeout_s:
            raise paused_too_long(before, elapsed, timeout_s)
        time.sleep(min(poll_s, timeout_s - elapsed))
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
                "commit (nothing of the day is committed yet; a retry of the run reloads it)"
            )

    return check


def _no_check() -> None:
    """Nothing to watch: the step runs in the run worker's own process."""


def progress_logger(
    context: AssetExecutionContext, spec: SourceSpec, day: dt.date, position: int, total: int, interval_s: float
) -> Callable[[LoadRecord], None]:
    """An `on_progress` callback logging a long day's progress at most every `interval_s`."""
    started = last = time.monotonic()

    def report(record: LoadRecord) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last < interval_s:
            return
        last = now
        context.log.info(
            "progress %s %s (day %d of %d): %s lines read, %s rows loaded, %s quarantined, %s bytes in finished "
            "files, %.1f s",
            spec.name,
            day,
            position,
            total,
            f"{record.lines_read:,}",
            f"{record.rows_loaded:,}",
            f"{record.rows_quarantined:,}",
            f"{record.bytes_read:,}",
            now - started,
        )

    return report


def _watched(check: Callable[[], None], report: Callable[[LoadRecord], None]) -> Callable[[LoadRecord], None]:
    def on_progress(record: LoadRecord) -> None:
        check()
        report(record)

    return on_progress


class DayFailed(Failure):
    """A day of a range could not be loaded: the step fails with a sentence (which day, what
    went wrong, what stays loaded, what to do) and the day's figures as metadata; the original
    error, with its traceback, is its cause. The days before it are committed and materialized.
    Retried by the step's retry policy only when the error is transient."""

    def __init__(
        self,
        spec: SourceSpec,
        day: dt.date,
        loaded: int,
        error: BaseException,
        attempt: LoadRecord | None,
        *,
        retries_left: int,
    ) -> None:
        transient = is_transient(error)
        reason = error_text(error)
        if transient and retries_left > 0:
            next_step = (
                f"nothing yet: the error is transient, the step is retried automatically ({retries_left} retry(ies) "
                f"left) and resumes at {day}"
            )
        elif transient:
            next_step = (
                "the error is transient but the step's retries are spent: re-run the day once the store is "
                f"reachable (runbook, *Re-running failed partitions*); a re-run resumes at {day}"
            )
        else:
            next_step = (
                f"fix the cause named above (its traceback is in the run's log and in `pipeline history "
                f"--source {spec.name} --day {day}`), then re-run the day (runbook, *Re-running failed "
                f"partitions*); a re-run resumes at {day}"
            )
        metadata: dict[str, Any] = {
            "day": day.isoformat(),
            "source": spec.name,
            "error": reason,
            "retryable": MetadataValue.bool(transient),
            "earlier_days_loaded": loaded,
            "next_step": next_step,
        }
        if attempt is not None:
            metadata |= {
                "attempt": attempt.attempt,
                "lines_read_before_failure": attempt.lines_read,
                "files": attempt.files,
                "manifest": location(attempt.manifest),
            }
        super().__init__(
            description=(
                f"{spec.name} {day} failed: {reason}. Nothing of {day} changed (its tables keep the last complete "
                f"load); {loaded} earlier day(s) of this run are loaded and stay materialized. Next: {next_step}."
            ),
            metadata=metadata,
            allow_retries=transient,
        )


def volume_verdict(spec: SourceSpec, tables: SourceTables, record: LoadRecord) -> Any:
    """`volume_normal`'s judgement of a loaded day against the same weekdays before it (`loads`)."""
    day = record.day
    previous = [day - dt.timedelta(weeks=weeks) for weeks in range(1, spec.volume.weeks + 1)]
    history = {dt.date.fromisoformat(key): item.rows_loaded for key, item in tables.sealed_attempts(previous).items()}
    return judge_volume(day, record.rows_loaded, history, spec.volume, had_files=record.files > 0)


def blocked_failure(spec: SourceSpec, blocked: list[LoadRecord], total: int) -> Failure:
    """The failure that ends a step whose range had days over their error budget: which days,
    which check, their figures, the next step."""
    days = ", ".join(f"{record.partition_date} ({record.quarantine_rate:.2%})" for record in blocked)
    query = (
        f'pipeline query "SELECT reason, count(*) FROM {spec.name}.dlq WHERE partition_date = '
        f"'{blocked[0].partition_date}' GROUP BY 1 ORDER BY 2 DESC\""
    )
    next_step = (
        f"read the DLQ of those days (`{query}`, or the failed_checks and sample_quarantined tables of "
        f"{spec.name}/dlq for the day), fix the source or its definition, then re-run the days (runbook, *Reading "
        "the DLQ*)"
    )
    return Failure(
        description=(
            f"{len(blocked)} of {total} day(s) of {spec.name} above the {spec.error_budget:.2%} error budget: {days}. "
            f"Check `{QUARANTINE_RATE_CHECK}` failed for them: their events and DLQ are loaded, their daily_metrics "
            f"are blocked. Next: {next_step}."
        ),
        metadata={
            "check": QUARANTINE_RATE_CHECK,
            "days_over_budget": days,
            "error_budget": MetadataValue.float(spec.error_budget),
            "days": blocked_days_table(blocked),
            "next_step": next_step,
        },
        allow_retries=False,
    )


def check_specs_of(spec: SourceSpec, partitions: Any) -> list[AssetCheckSpec]:
    """The checks of a source's `S/events`, one result per day."""
    return [
        AssetCheckSpec(
            QUARANTINE_RATE_CHECK,
            asset=events_key(spec),
            blocking=True,
            partitions_def=partitions,
            description=f"Fails (ERROR) when more than {spec.error_budget:.2%} of a day's rows are quarantined; "
            "that day's daily_metrics are then not computed.",
        ),
        AssetCheckSpec(
            HOURS_COMPLETE_CHECK,
            asset=events_key(spec),
            partitions_def=partitions,
            description="Warns when an hour of the day has no file.",
        ),
        AssetCheckSpec(
            VOLUME_NORMAL_CHECK,
            asset=events_key(spec),
            partitions_def=partitions,
            description=f"{spec.volume.severity.upper()} when a day's rows fall outside "
            f"{spec.volume.ratio_band[0]:g}x-{spec.volume.ratio_band[1]:g}x the median of the same weekday over the "
            f"previous {spec.volume.weeks} weeks (judged once {spec.volume.min_weeks} of them were loaded).",
        ),
    ]


def build_source_assets(spec: SourceSpec, *, watch_run_worker: bool = False) -> list[AssetsDefinition]:
    """Build the assets and checks of one source from its definition. `watch_run_worker`: the
    step runs in a child process of the run worker (multiprocess executor) and must stop if it
    dies."""
    partitions = daily_partitions(spec)
    version = definition_version(spec)
    group = spec.name
    common: dict[str, Any] = {
        "group_name": group,
        "partitions_def": partitions,
        "kinds": {"delta", "duckdb"},
        "code_version": version,
        "skippable": True,
        # Declared per source in the sources file (catalog only).
        "owners": spec.owners,
        "tags": spec.tags,
    }
    specs = [
        AssetSpec(
            events_key(spec),
            description=f"Validated rows of `{spec.name}` ({spec.description}), one partition per UTC day. "
            f"Delta table `{spec.name}/events` under PIPELINE_LAKE_URL; query it as `{spec.name}.events`.",
            metadata={"dagster/column_schema": column_schema(spec), "dagster/table_name": f"{spec.name}.events"},
            **common,
        ),
        AssetSpec(
            dlq_key(spec),
            description=f"Quarantined lines of `{spec.name}` with the raw line and every failed check. "
            f"Delta table `{spec.name}/dlq`; query it as `{spec.name}.dlq`.",
            metadata={"dagster/column_schema": dlq_column_schema(), "dagster/table_name": f"{spec.name}.dlq"},
            **common,
        ),
        AssetSpec(
            metrics_key(spec),
            deps=[events_key(spec)],
            description=f"Daily figures of `{spec.name}` for on-call: {', '.join(spec.daily_metrics)}. One row per "
            "day within its error budget (a day over it has none). Delta table "
            f"`{spec.name}/daily_metrics`; query it as `{spec.name}.daily_metrics`.",
            metadata={
                "dagster/column_schema": metrics_column_schema(spec),
                "dagster/column_lineage": metrics_column_lineage(spec, events_key(spec)),
                "dagster/table_name": f"{spec.name}.daily_metrics",
            },
            **common,
        ),
    ]
    # Partitioned checks (a result per day, never replaced by another day's) are a Dagster preview
    # feature: its warning is silenced here, for this use only.
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=PreviewWarning
        )
        check_specs = check_specs_of(spec, partitions)

    @multi_asset(
        name=f"{spec.name}_ingest",
        specs=specs,
        check_specs=check_specs,
        can_subset=True,
        backfill_policy=BackfillPolicy.single_run(),
        # Re-runs the step after a transient fault (S3 throttling that outlasted the client's own
        # retries, another run holding the day); `retry_transient_only` fails every other error at
        # once. A retry resumes at the first day this run did not load.
        retry_policy=INGEST_RETRY_POLICY,
        # One pool for every lake writer: how many run at once, and the pause switch.
        pool=LAKE_WRITERS_POOL,
        description=f"Parse, validate and load `{spec.name}` log files, a day at a time.",
    )
    @retry_transient_only
    def ingest(context: AssetExecutionContext, config: IngestConfig, pipeline: PipelineResource) -> Iterator[Any]:
        days = days_in_range(context.partition_key_range)
        selected = context.selected_asset_keys
        reload = bool(selected & {events_key(spec), dlq_key(spec)})
        context.log.info(
            "run %s: source=%s days=%s..%s (%d) %s definition=%s chunk_bytes=%d sleep_between_batches_s=%g%s",
            context.run_id,
            spec.name,
            days[0],
            days[-1],
            len(days),
            pipeline.describe(),
            version,
            config.chunk_bytes,
            config.sleep_between_batches_s,
            "" if reload else " (metrics only: recomputed from the loaded events)",
        )
        if list_pool(context.instance):
            context.log.info(
                "pool %r recorded with its default limit %d: it is listed on UI > Deployment > Concurrency",
                LAKE_WRITERS_POOL,
                context.instance.global_op_concurrency_default_limit,
            )
        landing, output, lake = pipeline.landing(), pipeline.output(), pipeline.lake()
        run = RunInfo(
            run_id=context.run_id,
            # An audit stamp for the DLQ, not data logic: the data date is the partition key.
            quarantined_at=dt.datetime.now(dt.UTC),
            root_run_id=context.run.root_run_id or context.run_id,
            job_name=context.run.job_name,
        )
        options = IngestOptions(
            chunk_bytes=config.chunk_bytes,
            sleep_between_batches_s=config.sleep_between_batches_s,
            skip_unchanged_days=config.skip_unchanged_days,
            allow_emptying_loaded_days=config.allow_emptying_loaded_days,
        )
        # With the multiprocess executor, if the run worker dies (SIGKILL, OOM) this step's process
        # lives on, orphaned, while the run is marked failed and retried: stop at the next batch.
        check_run_worker = run_worker_watch() if watch_run_worker else _no_check
        blocked: list[LoadRecord] = []
        skipped: list[str] = []
        for position, day in enumerate(days, start=1):
            check_run_worker()
            wait_while_paused(
                context,
                config.pause_poll_s,
                f"{spec.name} {day} (day {position} of {len(days)})",
                timeout_s=config.pause_timeout_s,
            )
            if not reload:
                sealed, figures = recompute_daily_metrics(spec, day, lake=lake, run=run, log=context.log)
                if sealed is not None and sealed.within_error_budget:
                    yield AssetMaterialization(
                        metrics_key(spec),
                        partition=day.isoformat(),
                        metadata=metrics_metadata(sealed, figures),
                        tags={CODE_VERSION_TAG: version},
                    )
                elif sealed is not None:
                    blocked.append(sealed)
                continue
            try:
                if config.rejudge_dlq:
                    result = rejudge_partition(spec, day, output=output, lake=lake, run=run, log=context.log)
                else:
                    result = ingest_partition(
                        spec,
                        day,
                        landing=landing,
                        output=output,
                        lake=lake,
                        run=run,
                        options=options,
                        on_progress=_watched(
                            check_run_worker,
                            progress_logger(context, spec, day, position, len(days), config.progress_interval_s),
                        ),
                        log=context.log,
                    )
            except Exception as error:
                try:
                    failed = lake.tables(spec).latest_attempts([day]).get(day.isoformat())
                except Exception as unreadable:  # the lake itself may be what failed: keep the day's error
                    context.log.warning("failed attempt of %s %s not read back: %s", spec.name, day, unreadable)
                    failed = None
                if failed is not None and failed.run_id == context.run_id and failed.status == "failed":
                    report_attempt(failed, lake.tables(spec), context.run.job_name, context.log)
                ours = failed if failed is not None and failed.run_id == context.run_id else None
                retries_left = max(INGEST_RETRY_POLICY.max_retries - context.retry_number, 0)
                raise DayFailed(spec, day, position - 1, error, ours, retries_left=retries_left) from error
            record = result.record
            if result.skipped:
                skipped.append(day.isoformat())
            if not result.skipped or record.root_run_id != run.root_run_id:
                # A day skipped as loaded by this run's family was materialized by it already; one
                # loaded by another run is materialized here too, or a backfill would count it
                # as never done.
                # Yielded (not logged): Dagster records what a step yields at once, so a later
                # failure of the step cannot lose this day's results.
                yield from materializations(
                    record, result.metrics, events=events_key(spec), dlq=dlq_key(spec), metrics=metrics_key(spec)
                )
                if not record.within_error_budget and record.status != "failed":
                    yield metrics_removed(record, metrics_key(spec))
                # The day's events materialization is stored by now (Dagster records what a step
                # yields before asking for more): the checks name it as their target.
                target = check_target(context.instance, events_key(spec), day.isoformat(), context.run_id)
                yield from check_evaluations(record, events_key(spec), target)
                yield volume_evaluation(volume_verdict(spec, lake.tables(spec), record), events_key(spec), target)
                report_attempt(record, lake.tables(spec), context.run.job_name, context.log)
            if not record.within_error_budget:
                blocked.append(record)
        if skipped:
            context.log.info(
                "skipped %d day(s) already loaded from the same files under the same definition: %s",
                len(skipped),
                ", ".join(skipped),
            )
        if blocked:
            raise blocked_failure(spec, blocked, len(days))

    return [ingest]
