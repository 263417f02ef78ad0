"""Sensors: late and re-delivered files, completeness reports, notifications, backfill guard.

- `S_landing_sensor` (per source): a day already loaded whose files changed since (a late
  file, a re-delivered file with new content, a removed file) is re-run, exactly that
  partition. Cursor-based (round robin over the look-back window, the fingerprint last
  requested per day), bounded work per tick, idempotent run keys. A run that failed for a
  day's files is requested again, up to `landing_max_attempts` runs per fingerprint (counted
  in the run history); then the sensor says once, as a warning, that it gave up.
- `completeness_reporter`: completes the weekly missing-hours manifests once their re-runs
  have ended, and sends every completeness message.
- `notify_on_run_failure` / `notify_on_run_success`: the webhook messages for runs.
- `backfill_guard`: pauses the lake_writers pool (the pause switch) when a running backfill's
  share of failed runs or of quarantined rows rises above the configured level, and says so.
- `freshness_alert`: says when yesterday's partition is still missing at the deadline.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    DagsterLogManager,
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    EventLogRecord,
    RunFailureSensorContext,
    RunRequest,
    RunsFilter,
    RunStatusSensorContext,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_failure_sensor,
    run_status_sensor,
    sensor,
)

# The type `define_asset_job` returns (not exported at the top level).
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

# Backfill statuses are not exported at the top level; the instance API that takes them is.
from dagster._core.execution.backfill import BulkActionStatus

from pipeline.engine.completeness import (
    REQUESTED,
    RunOutcome,
    finish_window,
    read_report,
    report_objects,
    write_report,
)
from pipeline.engine.landing_state import landing_state
from pipeline.orchestration.assets import events_key, metrics_key
from pipeline.orchestration.jobs import daily_job_name
from pipeline.orchestration.notifications import Notifier, failure_text, success_text
from pipeline.orchestration.operations import (
    COMPLETENESS_TAG,
    DEFAULT_POOL_LIMIT,
    FINGERPRINT_TAG,
    FRESHNESS_DEADLINE,
    LAKE_WRITERS_POOL,
    PRIORITY_LANDING,
    OperationsSettings,
    day_tags,
    is_paused,
    list_pool,
    pool_limit,
    set_pool_limit,
)
from pipeline.orchestration.resources import PipelineResource
from pipeline.sources.spec import SourceSpec

logger = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]
BACKFILL_ID_TAG = "dagster/backfill"
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
ACTIVE_STATUSES = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]
# How long a completeness window waits for runs that were never launched (a "test
# schedule" evaluation in the UI writes the plan without launching its runs).
COMPLETENESS_LAUNCH_GRACE = dt.timedelta(minutes=30)
# Days of `loads` the backfill guard reads per tick, at most (it resumes where it stopped).
GUARD_DAYS_PER_TICK = 500


def utc_now() -> dt.datetime:
    """The wall clock, in UTC (sensors decide *when*; the data date always comes from partitions)."""
    return dt.datetime.now(dt.UTC)


def run_days(tags: dict[str, str] | Any) -> list[str]:
    """The partition keys (days) a run covers, from its tags: one day, a range, or none."""
    if PARTITION_TAG in tags:
        return [tags[PARTITION_TAG]]
    if RANGE_START_TAG in tags and RANGE_END_TAG in tags:
        first = dt.date.fromisoformat(tags[RANGE_START_TAG])
        last = dt.date.fromisoformat(tags[RANGE_END_TAG])
        return [(first + dt.timedelta(days=offset)).isoformat() for offset in range((last - first).days + 1)]
    return []


def run_sources(run: DagsterRun, specs: Sequence[SourceSpec]) -> list[SourceSpec]:
    """The sources whose `S/events` a run materializes (by its asset selection, or its job)."""
    if run.asset_selection:
        return [spec for spec in specs if events_key(spec) in run.asset_selection]
    return [spec for spec in specs if run.job_name == daily_job_name(spec)]


def latest_materialization(instance: DagsterInstance, key: AssetKey, partition: str) -> EventLogRecord | None:
    """The newest materialization of one partition of an asset, if any."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    ).records
    return records[0] if records else None


def _window(today: dt.date, lookback_days: int, first_day: dt.date) -> list[dt.date]:
    """Complete days of the look-back window, oldest first (today is not complete yet)."""
    days = [today - dt.timedelta(days=offset) for offset in range(lookback_days, 0, -1)]
    return [day for day in days if day >= first_day]


# -- landing sensor ------------------------------------------------------------------------
@dataclass
class LandingCursor:
    """Where the round robin over the window resumes, the landing fingerprint a run was last
    requested for, per day (so the same content is not requested twice while its run is on its
    way), and the fingerprint per day whose runs all failed and that was given up on (so that is
    said once, not on every tick)."""

    next_day: str | None = None
    requested: dict[str, str] = field(default_factory=dict)
    gave_up: dict[str, str] = field(default_factory=dict)

    @classmethod
    def loads(cls, text: str | None) -> LandingCursor:
        """Parse a cursor; a missing or unreadable one starts afresh (the scan is idempotent)."""
        try:
            document = json.loads(text) if text else {}
            return cls(
                next_day=document.get("next_day"),
                requested=dict(document.get("requested", {})),
                gave_up=dict(document.get("gave_up", {})),
            )
        except (ValueError, AttributeError, TypeError):
            return cls()

    def dumps(self) -> str:
        """Serialise."""
        return json.dumps(
            {"next_day": self.next_day, "requested": self.requested, "gave_up": self.gave_up}, sort_keys=True
        )

    def scan_order(self, window: list[dt.date]) -> list[dt.date]:
        """The window, starting at the day where the last tick stopped."""
        start = 0
        if self.next_day is not None:
            keys = [day.isoformat() for day in window]
            start = next((index for index, key in enumerate(keys) if key >= self.next_day), 0)
        return window[start:] + window[:start]


def active_days(instance: DagsterInstance, spec: SourceSpec) -> set[str]:
    """Days of `S/events` that a queued or running run is about to (re)load (another source's
    run of the same day does not count)."""
    days: set[str] = set()
    for run in instance.get_runs(RunsFilter(statuses=ACTIVE_STATUSES), limit=500):
        if run_sources(run, [spec]):
            days.update(run_days(run.tags))
    return days


def fingerprint_runs(instance: DagsterInstance, spec: SourceSpec, day: str, fingerprint: str) -> list[DagsterRun]:
    """The runs of a source's day requested for exactly these landing files, newest first (the
    run history, not the cursor, counts the attempts: it survives a reset cursor)."""
    runs = instance.get_runs(RunsFilter(tags={FINGERPRINT_TAG: fingerprint, PARTITION_TAG: day}))
    return [run for run in runs if run_sources(run, [spec])]


def landing_run_key(spec: SourceSpec, day: str, fingerprint: str, attempt: int) -> str:
    """The run key of the landing sensor's request for a day's files: one per attempt (Dagster
    launches a run key once; the first attempt keeps the key earlier versions used)."""
    key = f"landing:{spec.name}:{day}:{fingerprint}"
    return key if attempt == 1 else f"{key}:attempt{attempt}"


def build_landing_sensor(
    spec: SourceSpec, job: UnresolvedAssetJobDefinition, settings: OperationsSettings, clock: Clock = utc_now
) -> SensorDefinition:
    """`S_landing_sensor`: re-run a loaded day whose files changed since it was loaded."""

    @sensor(
        name=f"{spec.name}_landing_sensor",
        job=job,
        minimum_interval_seconds=settings.landing_interval_s,
        default_status=settings.sensor_status,
        description=f"Re-runs a day of `{spec.name}` (within the last {settings.landing_lookback_days} days) "
        "that was already loaded and whose files changed since: a late file, a re-delivered file with new "
        f"content, a removed file. At most {settings.landing_days_per_tick} days listed and "
        f"{settings.landing_runs_per_tick} runs requested per tick; a failed run is requested again, up to "
        f"{settings.landing_max_attempts} runs for the same files.",
    )
    def landing_sensor(context: SensorEvaluationContext, pipeline: PipelineResource) -> SensorResult:
        today = clock().astimezone(dt.UTC).date()
        window = _window(today, settings.landing_lookback_days, spec.first_day)
        cursor = LandingCursor.loads(context.cursor)
        order = cursor.scan_order(window)[: settings.landing_days_per_tick]
        busy = active_days(context.instance, spec)
        landing = pipeline.landing()
        # What each day was last loaded from, by the last load that replaced it (`loads`).
        sealed = pipeline.lake().tables(spec).sealed_attempts(order)
        requests: list[RunRequest] = []
        notes: list[str] = []
        scanned = 0
        for day in order:
            if len(requests) >= settings.landing_runs_per_tick:
                break
            scanned += 1
            key = day.isoformat()
            record = sealed.get(key)
            if record is None:
                continue  # never loaded: the daily schedule's (or the completeness scan's) business
            state = landing_state(landing, spec.name, day)
            if record.landing_fingerprint == state.fingerprint:
                continue
            if key in busy:
                notes.append(f"{key} changed but a run is already queued or running for it")
                continue
            attempt = 1
            history = fingerprint_runs(context.instance, spec, key, state.fingerprint)
            if history or cursor.requested.get(key) == state.fingerprint:
                latest = history[0] if history else None
                failed = (
                    latest is not None
                    and latest.status == DagsterRunStatus.FAILURE
                    and not latest.is_complete_and_waiting_to_retry
                )
                if not failed:
                    # Not launched yet, still going, succeeded or cancelled: nothing to retry.
                    notes.append(f"{key} changed; a run for exactly these files was already requested")
                    continue
                if len(history) >= settings.landing_max_attempts:
                    note = (
                        f"{key} changed; {len(history)} run(s) for exactly these files failed (the last: "
                        f"{settings.run_url(latest.run_id)}): not requested again (PIPELINE_LANDING_MAX_ATTEMPTS="
                        f"{settings.landing_max_attempts}); fix the cause and re-run the day"
                    )
                    notes.append(note)
                    if cursor.gave_up.get(key) != state.fingerprint:
                        context.log.warning("%s %s", spec.name, note)
                        cursor.gave_up[key] = state.fingerprint
                    continue
                attempt = len(history) + 1
                context.log.info(
                    "%s %s: the run for these files failed (%s): requesting it again (attempt %d of %d)",
                    spec.name,
                    key,
                    latest.run_id,
                    attempt,
                    settings.landing_max_attempts,
                )
            context.log.info(
                "%s %s changed since it was loaded (now %d files, %d bytes, hours %s): requesting a re-run",
                spec.name,
                key,
                state.files,
                state.bytes,
                state.hours_present,
            )
            requests.append(
                RunRequest(
                    run_key=landing_run_key(spec, key, state.fingerprint, attempt),
                    partition_key=key,
                    tags=day_tags("landing_sensor", PRIORITY_LANDING, **{FINGERPRINT_TAG: state.fingerprint}),
                )
            )
            cursor.requested[key] = state.fingerprint
        if scanned < len(order):
            cursor.next_day = order[scanned].isoformat()  # stopped early: resume with the first day not scanned
        elif scanned:
            cursor.next_day = window[(window.index(order[-1]) + 1) % len(window)].isoformat()
        else:
            cursor.next_day = None
        keys = {day.isoformat() for day in window}
        cursor.requested = {day: value for day, value in cursor.requested.items() if day in keys}
        cursor.gave_up = {day: value for day, value in cursor.gave_up.items() if day in keys}
        for note in notes:
            context.log.info("%s %s", spec.name, note)
        if requests:
            return SensorResult(run_requests=requests, cursor=cursor.dumps())
        scanned_text = f"{order[0]}..{order[scanned - 1]}" if scanned else "nothing"
        reason = f"{spec.name}: no loaded day changed (scanned {scanned_text})"
        return SensorResult(skip_reason=SkipReason("; ".join([reason, *notes])), cursor=cursor.dumps())

    return landing_sensor


# -- completeness reports ------------------------------------------------------------------
def window_outcomes(
    instance: DagsterInstance, window_id: str, days: Iterable[str]
) -> tuple[dict[str, RunOutcome], list[str], list[str]]:
    """For each re-run day of a completeness window: its final outcome, or whether its run is
    still pending (queued, running, or failed and about to be retried) or missing."""
    runs = instance.get_runs(RunsFilter(tags={COMPLETENESS_TAG: window_id}))  # newest first
    outcomes: dict[str, RunOutcome] = {}
    pending: list[str] = []
    missing: list[str] = []
    for day in days:
        for_day = [run for run in runs if run.tags.get(PARTITION_TAG) == day]
        if not for_day:
            missing.append(day)
            continue
        latest = for_day[0]
        if not latest.is_finished or latest.is_complete_and_waiting_to_retry:
            pending.append(day)
            continue
        outcomes[day] = RunOutcome(latest.run_id, latest.status == DagsterRunStatus.SUCCESS)
    return outcomes, pending, missing


def read_map_cursor(
    text: str | None, sensor: str, consequence: str, log: logging.Logger | DagsterLogManager = logger
) -> dict[str, str]:
    """A sensor's cursor that is a JSON map of strings. One that cannot be read (not JSON, not a
    map of strings) is logged as a warning saying `consequence`, and treated as empty: the tick
    goes on, never crashes."""
    if not text:
        return {}
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    if not isinstance(document, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in document.items()
    ):
        log.warning("%s: unreadable cursor %r; %s", sensor, text[:200], consequence)
        return {}
    return document


def build_completeness_reporter(
    specs: Sequence[SourceSpec], settings: OperationsSettings, clock: Clock = utc_now
) -> SensorDefinition:
    """`completeness_reporter`: finish requested windows when their runs are over, and send
    each window's message once (the manifest records that it was sent)."""

    @sensor(
        name="completeness_reporter",
        minimum_interval_seconds=60,
        default_status=DefaultSensorStatus.RUNNING,
        description="Completes the weekly missing-hours manifests (backfills/S/START..END.json) once their "
        "re-runs have ended, and sends their message to the webhook.",
    )
    def completeness_reporter(context: SensorEvaluationContext, pipeline: PipelineResource) -> SensorResult:
        output = pipeline.output()
        notifier = Notifier.from_settings(settings)
        # The manifest itself is the state: a report is finished once its status is final and
        # its notification is recorded. A rescan of the same window rewrites the manifest with no
        # notification, so it is reported again. (One small manifest per source and week.)
        # The cursor remembers the version of each manifest last seen finished, so a tick reads
        # only manifests that are new, rewritten, or still waiting: not every one ever written.
        # manifest key -> the version last seen finished; unreadable: every manifest is read once
        # more (a finished one is not sent again: its notification is recorded in it).
        finished = read_map_cursor(context.cursor, "completeness_reporter", "reading every manifest once", context.log)
        seen: dict[str, str] = {}
        done: list[str] = []
        for spec in specs:
            for info in report_objects(output, spec.name):
                if info.version and finished.get(info.key) == info.version:
                    seen[info.key] = info.version
                    continue
                report = read_report(output, info.key)
                if report is None:
                    continue
                if report.status != REQUESTED and report.notification is not None:
                    if info.version:
                        seen[info.key] = info.version
                    continue
                if report.status == REQUESTED:
                    outcomes, pending, missing = window_outcomes(context.instance, report.window_id, report.rerun_days)
                    scanned_at = dt.datetime.fromisoformat(report.scanned_at)
                    if pending or (missing and clock() - scanned_at < COMPLETENESS_LAUNCH_GRACE):
                        context.log.info("%s: waiting for %d re-run(s)", report.window_id, len(pending) + len(missing))
                        continue
                    days = [dt.date.fromisoformat(day) for day in report.rerun_days]
                    attempts = pipeline.lake().tables(spec).latest_attempts(days)
                    finish_window(report, outcomes, attempts=attempts, finished_at=clock())
                    write_report(output, report)
                sent = notifier.send(report.message)
                stamp = clock().isoformat()
                report.notification = f"sent {stamp}" if sent else "disabled: PIPELINE_NOTIFY_WEBHOOK_URL unset"
                write_report(output, report)
                done.append(report.message)
        # Manifests written by this tick get a new version: the next tick reads each once more,
        # sees it finished and records it (a rescan racing this tick is never taken for ours).
        cursor = json.dumps(seen, sort_keys=True)
        if not done:
            return SensorResult(skip_reason=SkipReason("no completeness manifest to finish or send"), cursor=cursor)
        for message in done:
            context.log.info(message)
        return SensorResult(cursor=cursor)

    return completeness_reporter


# -- run notifications ---------------------------------------------------------------------
def _job_label(run: DagsterRun) -> str:
    return "asset run" if run.job_name.startswith("__ASSET_JOB") else run.job_name


def build_failure_notifier(settings: OperationsSettings) -> SensorDefinition:
    """`notify_on_run_failure`: the error, the failed partitions and a link to the run."""

    @run_failure_sensor(
        name="notify_on_run_failure",
        minimum_interval_seconds=15,
        default_status=DefaultSensorStatus.RUNNING,
        description="Posts every failed run of this code location to PIPELINE_NOTIFY_WEBHOOK_URL: the error, "
        "the partitions and a link to the run.",
    )
    def notify_on_run_failure(context: RunFailureSensorContext) -> SkipReason | None:
        notifier = Notifier.from_settings(settings)
        if not notifier.enabled:
            return SkipReason("PIPELINE_NOTIFY_WEBHOOK_URL is unset")
        run = context.dagster_run
        errors: list[str] = []
        for event in context.get_step_failure_events():
            error = event.step_failure_data.error
            failure = event.step_failure_data.user_failure_data
            if failure is not None and failure.description:
                # A `Failure` (a failed or blocked day) is its own sentence, without the class path.
                message = failure.description.strip()
                if error is not None and error.cls_name == "RetryRequestedFromPolicy":
                    message = f"{error.message.strip()}; last error: {message}"
                errors.append(f"{event.step_key}: {message}")
            elif error is not None:
                message = error.message.strip()
                if error.cls_name == "RetryRequestedFromPolicy" and error.cause is not None:
                    # Retries exhausted: Dagster's message says only that; the cause is the real error.
                    message = f"{message}; last error: {error.cause.message.strip()}"
                errors.append(f"{event.step_key}: {message}")
        if not errors and context.failure_event.message:
            errors.append(context.failure_event.message.strip())
        notifier.send(
            failure_text(
                job_name=_job_label(run),
                run_id=run.run_id,
                assets=sorted(key.to_user_string() for key in run.asset_selection or ()),
                days=run_days(run.tags),
                errors=errors,
                settings=settings,
                backfill_id=run.tags.get(BACKFILL_ID_TAG),
            )
        )
        return None

    return notify_on_run_failure


def build_success_notifier(specs: Sequence[SourceSpec], settings: OperationsSettings) -> SensorDefinition:
    """`notify_on_run_success`: a summary of each successful load, read from its manifests."""

    @run_status_sensor(
        run_status=DagsterRunStatus.SUCCESS,
        name="notify_on_run_success",
        minimum_interval_seconds=15,
        default_status=DefaultSensorStatus.RUNNING,
        description="Posts a summary of every successful load to PIPELINE_NOTIFY_WEBHOOK_URL, read from the "
        "stats manifests of its days.",
    )
    def notify_on_run_success(context: RunStatusSensorContext, pipeline: PipelineResource) -> SkipReason | None:
        notifier = Notifier.from_settings(settings)
        if not notifier.enabled:
            return SkipReason("PIPELINE_NOTIFY_WEBHOOK_URL is unset")
        run = context.dagster_run
        sources = run_sources(run, specs)
        days = run_days(run.tags)
        if not sources or not days:
            return SkipReason(f"run {run.run_id} loaded no partition of any source")
        lake = pipeline.lake()
        dates = [dt.date.fromisoformat(day) for day in days]
        attempts = {}
        for spec in sources:
            latest = lake.tables(spec).latest_attempts(dates)
            attempts[spec.name] = [latest.get(day) for day in days]
        notifier.send(
            success_text(job_name=_job_label(run), run_id=run.run_id, days=days, attempts=attempts, settings=settings)
        )
        return None

    return notify_on_run_success


# -- backfill guard (automatic pause) ------------------------------------------------------
@dataclass
class GuardState:
    """What the guard has counted of one backfill: per (run, source), the index of the next
    day to read and the rows read and quarantined so far; and whether it paused the backfill."""

    progress: dict[str, list[int]] = field(default_factory=dict)  # "run:source" -> [next, read, quarantined]
    paused: str | None = None


def _load_guard_cursor(text: str | None) -> dict[str, GuardState]:
    try:
        document = json.loads(text) if text else {}
        return {
            backfill_id: GuardState(progress=dict(state["progress"]), paused=state.get("paused"))
            for backfill_id, state in document.items()
        }
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}


def guard_breaches(
    settings: OperationsSettings, finished: int, failed: int, rows_read: int, rows_quarantined: int
) -> list[str]:
    """Why a backfill should be paused (empty: it may go on)."""
    reasons = []
    if finished >= settings.autopause_min_runs and failed / finished > settings.autopause_failed_run_share:
        reasons.append(
            f"{failed} of {finished} finished runs failed ({failed / finished:.0%} > "
            f"{settings.autopause_failed_run_share:.0%})"
        )
    if rows_read >= settings.autopause_min_rows and rows_quarantined / rows_read > settings.autopause_quarantine_rate:
        reasons.append(
            f"{rows_quarantined:,} of {rows_read:,} rows quarantined ({rows_quarantined / rows_read:.2%} > "
            f"{settings.autopause_quarantine_rate:.2%})"
        )
    return reasons


def build_backfill_guard(specs: Sequence[SourceSpec], settings: OperationsSettings) -> SensorDefinition:
    """`backfill_guard`: the automatic pause of a backfill that is going wrong."""

    @sensor(
        name="backfill_guard",
        minimum_interval_seconds=settings.guard_interval_s,
        default_status=DefaultSensorStatus.RUNNING,
        description="Pauses the lake_writers pool (limit 0) and notifies when a running backfill's share of failed "
        f"runs exceeds {settings.autopause_failed_run_share:.0%} (after {settings.autopause_min_runs} runs) or "
        f"its quarantine rate exceeds {settings.autopause_quarantine_rate:.2%} (after "
        f"{settings.autopause_min_rows:,} rows).",
    )
    def backfill_guard(context: SensorEvaluationContext, pipeline: PipelineResource) -> SensorResult:
        instance = context.instance
        # The guard's switch is listed in the UI from the daemon's first tick, before any run.
        list_pool(instance)
        lake = pipeline.lake()
        states = _load_guard_cursor(context.cursor)
        active = instance.get_backfills(status=BulkActionStatus.REQUESTED, limit=50)
        budget = GUARD_DAYS_PER_TICK
        paused_now: list[str] = []
        summaries: list[str] = []
        for backfill in active:
            state = states.setdefault(backfill.backfill_id, GuardState())
            runs = instance.get_runs(RunsFilter(tags={BACKFILL_ID_TAG: backfill.backfill_id}))
            finished = [run for run in runs if run.is_finished]
            failed = [run for run in finished if run.status == DagsterRunStatus.FAILURE]
            for run in runs:
                days = run_days(run.tags)
                for spec in run_sources(run, specs):
                    entry = state.progress.setdefault(f"{run.run_id}:{spec.name}", [0, 0, 0])
                    # A range run loads its days in order: read on from the first not yet counted,
                    # and stop at the first day this run has not finished. A failed attempt does
                    # not finish a day while the run goes on: its retry of the day may follow.
                    pending = days[entry[0] : entry[0] + budget]
                    if not pending:
                        continue
                    attempts = {
                        attempt.partition_date: attempt
                        for attempt in lake.tables(spec).read_loads([dt.date.fromisoformat(day) for day in pending])
                        if attempt.run_id == run.run_id
                    }
                    for day in pending:
                        budget -= 1
                        attempt = attempts.get(day)
                        if attempt is None or (not attempt.seals and not run.is_finished):
                            break
                        if attempt.seals:
                            entry[1] += attempt.rows_read
                            entry[2] += attempt.rows_quarantined
                        entry[0] += 1
            rows_read = sum(entry[1] for entry in state.progress.values())
            rows_quarantined = sum(entry[2] for entry in state.progress.values())
            summaries.append(
                f"{backfill.backfill_id}: {len(failed)}/{len(finished)} runs failed, "
                f"{rows_quarantined:,}/{rows_read:,} rows quarantined"
            )
            reasons = guard_breaches(settings, len(finished), len(failed), rows_read, rows_quarantined)
            if not reasons or state.paused is not None:
                continue
            previous = pool_limit(instance)
            if not is_paused(instance):
                set_pool_limit(instance, 0)
            state.paused = "; ".join(reasons)
            paused_now.append(backfill.backfill_id)
            context.log.warning(
                "backfill %s: %s; pool %r paused", backfill.backfill_id, state.paused, LAKE_WRITERS_POOL
            )
            Notifier.from_settings(settings).send(
                f":double_vertical_bar: Backfill {backfill.backfill_id} auto-paused: {state.paused}.\n"
                f"New work stopped: the pool {LAKE_WRITERS_POOL!r} is now 0 (was {previous}), so queued runs stay "
                "queued and a running range stops before its next day.\n"
                f"Resume: `dagster instance concurrency set {LAKE_WRITERS_POOL} {previous or DEFAULT_POOL_LIMIT}` "
                "(or UI > Deployment > "
                "Concurrency); the guard will not pause this backfill again.\n"
                f"Backfill: {settings.backfill_url(backfill.backfill_id)}"
            )
        active_ids = {backfill.backfill_id for backfill in active}
        cursor = json.dumps(
            {
                backfill_id: {"progress": state.progress, "paused": state.paused}
                for backfill_id, state in states.items()
                if backfill_id in active_ids
            },
            sort_keys=True,
        )
        if paused_now:
            return SensorResult(cursor=cursor)
        return SensorResult(
            skip_reason=SkipReason("; ".join(summaries) if summaries else "no backfill in progress"), cursor=cursor
        )

    return backfill_guard


# -- "it did not run at all" ---------------------------------------------------------------
def expected_day(now: dt.datetime) -> dt.date:
    """The newest day that must be loaded by now: yesterday once today's deadline has passed,
    else the day before (the same rule as the freshness checks)."""
    now = now.astimezone(dt.UTC)
    return now.date() - dt.timedelta(days=1 if now.time() >= FRESHNESS_DEADLINE else 2)


def build_freshness_alert(
    specs: Sequence[SourceSpec], settings: OperationsSettings, clock: Clock = utc_now
) -> SensorDefinition:
    """`freshness_alert`: one message per source and day when the expected day is missing."""

    @sensor(
        name="freshness_alert",
        minimum_interval_seconds=300,
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Posts to the webhook when yesterday's partition of a source's events or daily metrics is "
        f"still missing at {FRESHNESS_DEADLINE:%H:%M} UTC (the daily run did not run, failed, or was blocked).",
    )
    def freshness_alert(context: SensorEvaluationContext) -> SensorResult:
        notifier = Notifier.from_settings(settings)
        # source -> the last day alerted; unreadable: at worst a day is alerted once more.
        alerted = read_map_cursor(context.cursor, "freshness_alert", "starting afresh", context.log)
        if not notifier.enabled:
            return SensorResult(skip_reason=SkipReason("PIPELINE_NOTIFY_WEBHOOK_URL is unset"), cursor=context.cursor)
        day = expected_day(clock())
        sent: list[str] = []
        for spec in specs:
            key = day.isoformat()
            if day < spec.first_day or alerted.get(spec.name) == key:
                continue
            missing = [
                asset.to_user_string()
                for asset in (events_key(spec), metrics_key(spec))
                if latest_materialization(context.instance, asset, key) is None
            ]
            if not missing:
                continue
            notifier.send(
                f":warning: {spec.name} {key} is missing at the {FRESHNESS_DEADLINE:%H:%M} UTC deadline: "
                f"{', '.join(missing)} not materialized. The daily run did not run, failed, or its quarantine "
                f"check blocked the metrics.\nAsset: {settings.asset_url([spec.name, 'events'])}"
            )
            alerted[spec.name] = key
            sent.append(spec.name)
        cursor = json.dumps(alerted, sort_keys=True)
        if sent:
            return SensorResult(cursor=cursor)
        return SensorResult(skip_reason=SkipReason(f"{day.isoformat()}: nothing missing"), cursor=cursor)

    return freshness_alert
