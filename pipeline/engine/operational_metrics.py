"""Operational metrics of the pipeline, pushed to a Prometheus Pushgateway (seed 004).

Batch jobs vanish before Prometheus could scrape them, so each partition attempt pushes its
figures at its end (`push_attempt_metrics`), and so does a run that failed before reaching
any day (`AttemptMetrics.run_failure`). Every figure is a **gauge** describing the *last*
attempt: a retry or a re-run replaces it instead of adding to it, which a counter would do
(a day loaded twice would count its rows twice).

Cardinality is bounded by construction: the only labels are the grouping key `job`, `source`
and the constant `pipeline` (plus `status`, three values). Run ids, partition dates and
error texts never become labels; they live in the `loads` table (execution history).

A Pushgateway PUT replaces the whole group, so the figures that must outlive an attempt (the
last success, the newest day loaded and its rows) are inputs computed by the caller from the
`loads` table (`SourceHistory.from_attempts`) and pushed again every time: a failed attempt or
a backfill of an old day cannot erase them. What is pushed is a pure function of
`AttemptMetrics` (`build_registry`); delivery is best effort and never raises.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from pipeline.engine.lake.loads import LoadRecord
from pipeline.engine.pushgateway import LABEL_VALUE, PushgatewayClient, PushgatewayConfig, PushgatewayError

logger = logging.getLogger(__name__)

STATUSES = ("loaded", "empty", "failed")
# Statuses that count as a success: the day's content is what this attempt left.
SUCCESS_STATUSES = ("loaded", "empty")

# name -> help. Every name here is pushed by `build_registry` (the dashboard and rule tests
# check their expressions against this table).
ATTEMPT_METRICS: dict[str, str] = {
    "pipeline_last_attempt_status": "Outcome of the last attempt: 1 for its status (loaded, empty, failed), else 0.",
    "pipeline_last_attempt_timestamp_seconds": "When the last attempt ended (Unix time).",
    "pipeline_last_attempt_duration_seconds": "How long the last attempt worked.",
    "pipeline_last_attempt_day_timestamp_seconds": "Data date of the last attempt, as its midnight UTC.",
    "pipeline_last_attempt_rows_loaded": "Rows the last attempt loaded (0 when it failed: its load was rolled back).",
    "pipeline_last_attempt_rows_quarantined": "Rows the last attempt quarantined.",
    "pipeline_last_attempt_rows_read": "Records the last attempt read (loaded + quarantined).",
    "pipeline_last_attempt_lines_read": "Lines the last attempt read.",
    "pipeline_last_attempt_quarantine_ratio": "Share of the last attempt's records that were quarantined.",
    "pipeline_last_attempt_lines_per_second": "Lines read per second of the last attempt's work.",
    "pipeline_last_attempt_missing_hours": "Hours of the last attempt's day without any file.",
    "pipeline_error_budget_ratio": "The source's error budget: the quarantine ratio above which a day fails its check.",
    "pipeline_last_success_timestamp_seconds": "When the newest loaded or empty attempt ended (Unix time).",
    "pipeline_newest_day_timestamp_seconds": "Newest data date successfully loaded, as its midnight UTC.",
    "pipeline_newest_day_rows_loaded": "Rows the newest successfully loaded day holds.",
    "pipeline_newest_day_missing_hours": "Hours of the newest successfully loaded day without any file.",
}
# The sweeper's own group (job = SWEEPER_JOB, no source in its grouping key).
SWEEPER_METRICS: dict[str, str] = {
    "pipeline_source_configured": "1 for every source the deployment declares (pushed by the sweeper).",
    "pipeline_sweep_timestamp_seconds": "When the sweeper last reconciled the gateway's groups (Unix time).",
}
PUSHED_METRIC_NAMES = frozenset(ATTEMPT_METRICS) | frozenset(SWEEPER_METRICS)
SWEEPER_JOB = "pushgateway_sweep"


def _utc(value: dt.datetime, name: str) -> dt.datetime:
    if value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {value.isoformat()}")
    return value.astimezone(dt.UTC)


def midnight_utc(day: dt.date) -> float:
    """A data date as Unix seconds of its midnight UTC."""
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()


@dataclass(frozen=True)
class SourceHistory:
    """What the `loads` table says about a source as a whole, pushed with every attempt.

    - `last_success_at`: `ended_at` of the newest attempt whose status is loaded or empty (any
      day); None if the source never succeeded.
    - `newest_day`: the newest `partition_date` with a successful attempt (a backfill of an
      older day does not move it); None if none.
    - `newest_day_rows_loaded`, `newest_day_missing_hours`: that day's figures from its latest
      successful attempt (what its tables hold now: a later failed attempt was rolled back).
    """

    last_success_at: dt.datetime | None = None
    newest_day: dt.date | None = None
    newest_day_rows_loaded: int | None = None
    newest_day_missing_hours: int | None = None

    @classmethod
    def from_attempts(cls, attempts: Iterable[Mapping[str, object]]) -> SourceHistory:
        """From rows of one source's `loads` table (mappings with `partition_date`, `status`,
        `ended_at`, `rows_loaded` and `missing_hours`, an int or a list of hours). The attempt
        being reported may be among them or not: pass the table as it is after writing it."""
        best: Mapping[str, object] | None = None
        last_success: dt.datetime | None = None
        for row in attempts:
            if row["status"] not in SUCCESS_STATUSES:
                continue
            ended = _utc(row["ended_at"], "ended_at")  # type: ignore[arg-type]
            last_success = ended if last_success is None else max(last_success, ended)
            key = (row["partition_date"], ended)
            if best is None or key > (best["partition_date"], _utc(best["ended_at"], "ended_at")):  # type: ignore[operator, arg-type]
                best = row
        if best is None:
            return cls(last_success_at=last_success)
        missing = best["missing_hours"]
        return cls(
            last_success_at=last_success,
            newest_day=best["partition_date"],  # type: ignore[arg-type]
            newest_day_rows_loaded=int(best["rows_loaded"]),  # type: ignore[call-overload]
            newest_day_missing_hours=len(missing) if isinstance(missing, list | tuple) else int(missing),  # type: ignore[call-overload]
        )


@dataclass(frozen=True)
class AttemptMetrics:
    """The figures of one partition attempt (or of a run that failed before any day), with the
    source's history; `build_registry` turns them into the pushed gauges.

    Identity (the grouping key; bounded values only):
    - `source`: the source name; `job`: the Dagster job of the run (`context.job_name`, e.g.
      `access_daily`, or `__ASSET_JOB` for a UI/CLI materialization).
    The attempt (one `loads` row):
    - `status`: loaded | empty | failed; `partition_date`: its data date, None for a run that
      failed before reaching any day (its day figures are then not pushed at all).
    - `attempt_started_at`, `attempt_ended_at`: UTC datetimes; `duration_s`: the seconds it worked.
    - `rows_loaded`, `rows_quarantined`, `rows_read` (= loaded + quarantined records),
      `lines_read`, `quarantine_rate` (= quarantined / read, 0 when nothing was read),
      `missing_hours`: hours of the day without any file; `error_budget`: the source's budget.
    The source's history (`SourceHistory`, from the `loads` table after this attempt):
    - `last_success_at`, `newest_day`, `newest_day_rows_loaded`, `newest_day_missing_hours`;
      each None is simply not pushed.
    """

    source: str
    job: str
    status: str
    attempt_started_at: dt.datetime
    attempt_ended_at: dt.datetime
    partition_date: dt.date | None = None
    rows_loaded: int = 0
    rows_quarantined: int = 0
    rows_read: int = 0
    lines_read: int = 0
    quarantine_rate: float = 0.0
    duration_s: float = 0.0
    missing_hours: int = 0
    error_budget: float = 0.01
    last_success_at: dt.datetime | None = None
    newest_day: dt.date | None = None
    newest_day_rows_loaded: int | None = None
    newest_day_missing_hours: int | None = None

    def __post_init__(self) -> None:
        for name in ("source", "job"):
            if not LABEL_VALUE.match(getattr(self, name)):
                raise ValueError(f"{name}={getattr(self, name)!r} is not a bounded label value ({LABEL_VALUE.pattern})")
        if self.status not in STATUSES:
            raise ValueError(f"status={self.status!r}: expected one of {STATUSES}")
        for name in ("attempt_started_at", "attempt_ended_at", "last_success_at"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _utc(value, name))
        for name in ("rows_loaded", "rows_quarantined", "rows_read", "lines_read", "missing_hours"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if not 0.0 <= self.quarantine_rate <= 1.0 or not 0.0 <= self.error_budget <= 1.0:
            raise ValueError("quarantine_rate and error_budget are shares between 0 and 1")

    @classmethod
    def run_failure(
        cls,
        *,
        source: str,
        job: str,
        started_at: dt.datetime,
        failed_at: dt.datetime,
        error_budget: float,
        history: SourceHistory,
    ) -> AttemptMetrics:
        """The metrics of a run that failed before reaching any day of `source` (bad config, a
        resource that would not start): status failed, no day figures, the history kept."""
        return cls(
            source=source,
            job=job,
            status="failed",
            attempt_started_at=started_at,
            attempt_ended_at=failed_at,
            duration_s=max(0.0, (_utc(failed_at, "failed_at") - _utc(started_at, "started_at")).total_seconds()),
            error_budget=error_budget,
            last_success_at=history.last_success_at,
            newest_day=history.newest_day,
            newest_day_rows_loaded=history.newest_day_rows_loaded,
            newest_day_missing_hours=history.newest_day_missing_hours,
        )

    @property
    def lines_per_second(self) -> float:
        """Lines read per second of work (0 for an attempt that took no measurable time)."""
        return self.lines_read / self.duration_s if self.duration_s > 0 else 0.0


def grouping_key(metrics: AttemptMetrics, config: PushgatewayConfig) -> dict[str, str]:
    """The group an attempt's metrics replace: one per (job, source) of this deployment."""
    return {"job": metrics.job, "pipeline": config.pipeline, "source": metrics.source}


def build_registry(metrics: AttemptMetrics) -> CollectorRegistry:
    """The gauges of one attempt, in a registry of their own (nothing of the process leaks in)."""
    registry = CollectorRegistry(auto_describe=True)

    def gauge(name: str, value: float | None) -> None:
        if value is not None:
            Gauge(name, ATTEMPT_METRICS[name], registry=registry).set(value)

    status = Gauge(
        "pipeline_last_attempt_status", ATTEMPT_METRICS["pipeline_last_attempt_status"], ["status"], registry=registry
    )
    for name in STATUSES:
        # Every value is present (0 or 1), so `== 1` and `== 0` both mean something.
        status.labels(status=name).set(1 if metrics.status == name else 0)
    gauge("pipeline_last_attempt_timestamp_seconds", metrics.attempt_ended_at.timestamp())
    gauge("pipeline_last_attempt_duration_seconds", metrics.duration_s)
    gauge("pipeline_error_budget_ratio", metrics.error_budget)
    if metrics.partition_date is not None:
        gauge("pipeline_last_attempt_day_timestamp_seconds", midnight_utc(metrics.partition_date))
        gauge("pipeline_last_attempt_rows_loaded", metrics.rows_loaded)
        gauge("pipeline_last_attempt_rows_quarantined", metrics.rows_quarantined)
        gauge("pipeline_last_attempt_rows_read", metrics.rows_read)
        gauge("pipeline_last_attempt_lines_read", metrics.lines_read)
        gauge("pipeline_last_attempt_quarantine_ratio", metrics.quarantine_rate)
        gauge("pipeline_last_attempt_lines_per_second", metrics.lines_per_second)
        gauge("pipeline_last_attempt_missing_hours", metrics.missing_hours)
    if metrics.last_success_at is not None:
        gauge("pipeline_last_success_timestamp_seconds", metrics.last_success_at.timestamp())
    if metrics.newest_day is not None:
        gauge("pipeline_newest_day_timestamp_seconds", midnight_utc(metrics.newest_day))
        gauge("pipeline_newest_day_rows_loaded", metrics.newest_day_rows_loaded)
        gauge("pipeline_newest_day_missing_hours", metrics.newest_day_missing_hours)
    return registry


def render(metrics: AttemptMetrics) -> str:
    """The text exposition format of what `push_attempt_metrics` sends (for logs and tests)."""
    return generate_latest(build_registry(metrics)).decode("utf-8")


class MetricsPusher:
    """Delivers attempt metrics to one gateway, best effort.

    `push` never raises: a push that fails all its attempts is logged as a WARNING, and the
    pushes that follow within `config.cooldown_s` are skipped with a warning rather than each
    waiting for the same dead gateway. `clock` and `sleep` are injectable for tests.
    """

    def __init__(
        self,
        config: PushgatewayConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self._clock = clock
        self._client = PushgatewayClient(config, sleep=sleep) if config.url else None
        self._failed_at: float | None = None

    def push(self, metrics: AttemptMetrics) -> bool:
        """Replace the (job, source) group with `metrics`; True when the gateway accepted them."""
        key = grouping_key(metrics, self.config)
        if self._client is None:
            logger.debug("operational metrics not pushed (PIPELINE_PUSHGATEWAY_URL is unset): %s", key)
            return False
        if self._failed_at is not None and self._clock() - self._failed_at < self.config.cooldown_s:
            logger.warning(
                "operational metrics of %s %s not pushed: %s failed %.0f s ago (retrying after %.0f s)",
                metrics.source,
                metrics.status,
                self.config.target,
                self._clock() - self._failed_at,
                self.config.cooldown_s,
            )
            return False
        try:
            self._client.put(key, build_registry(metrics))
        except PushgatewayError as error:
            self._failed_at = self._clock()
            logger.warning("operational metrics of %s %s not pushed: %s", metrics.source, metrics.status, error)
            return False
        except Exception as error:  # noqa: BLE001 - monitoring must never fail the run
            self._failed_at = self._clock()
            logger.warning(
                "operational metrics of %s %s not pushed: unexpected %s",
                metrics.source,
                metrics.status,
                type(error).__name__,
            )
            return False
        self._failed_at = None
        logger.info(
            "operational metrics of %s %s pushed to %s (job=%s)",
            metrics.source,
            metrics.status,
            self.config.target,
            metrics.job,
        )
        return True


@functools.lru_cache(maxsize=8)
def _pusher_for(config: PushgatewayConfig) -> MetricsPusher:
    # One pusher per configuration and process, so the cool-down spans a whole backfill run.
    return MetricsPusher(config)


def push_attempt_metrics(metrics: AttemptMetrics, config: PushgatewayConfig | None = None) -> bool:
    """Push the metrics of a partition attempt (or of `AttemptMetrics.run_failure`) to the
    gateway of `config` (default: `PushgatewayConfig.from_env()`). Never raises; returns
    whether the gateway accepted them (False also when no gateway is configured)."""
    try:
        config = config or PushgatewayConfig.from_env()
    except ValueError as error:
        logger.warning("operational metrics not pushed: %s", error)
        return False
    return _pusher_for(config).push(metrics)


def attempt_metrics(
    record: LoadRecord,
    job: str,
    *,
    last_success_at: dt.datetime | None,
    newest: LoadRecord | None,
) -> AttemptMetrics:
    """The metrics of one `loads` row, with the source's history (`SourceTables.success_summary`,
    read after the row was appended)."""
    started = record.started_at or record.ended_at or dt.datetime.now(dt.UTC)
    return AttemptMetrics(
        source=record.source,
        job=job,
        status=record.status,
        attempt_started_at=started,
        attempt_ended_at=record.ended_at or started,
        partition_date=record.day,
        rows_loaded=record.rows_loaded,
        rows_quarantined=record.rows_quarantined,
        rows_read=record.rows_read,
        lines_read=record.lines_read,
        quarantine_rate=record.quarantine_rate,
        duration_s=record.duration_s,
        missing_hours=len(record.missing_hours),
        error_budget=record.error_budget,
        last_success_at=last_success_at,
        newest_day=newest.day if newest is not None else None,
        newest_day_rows_loaded=newest.rows_loaded if newest is not None else None,
        newest_day_missing_hours=len(newest.missing_hours) if newest is not None else None,
    )
