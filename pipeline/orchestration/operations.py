"""Operational settings and controls: when things run, how runs are tagged, the pause switch.

Everything an operator may want to tune without a code change is read from environment
variables here, with documented defaults (see docs/runbook.md). The pause switch is the
limit of the `lake_writers` concurrency pool, stored in the Dagster instance: an operator sets
it to 0 from the UI (Deployment > Concurrency) or with
`dagster instance concurrency set lake_writers 0`, without touching any process.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass

from dagster import (
    DagsterInstance,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    ExecutorDefinition,
    in_process_executor,
    multiprocess_executor,
)

from pipeline.settings import SettingsError, env_number

# Every run that writes to the lake runs in this pool (granularity `run` in dagster.yaml): its
# limit is how many writing runs go at once, and the pause switch (0 = paused).
LAKE_WRITERS_POOL = "lake_writers"
# The limit the pool has when it is not paused (dagster.yaml `pools.default_limit`): one writer
# per core of the reference machine (measured: README, "Benchmarks").
DEFAULT_POOL_LIMIT = 2

# Run tags set by this code location (`dagster/*` tags are Dagster's own).
TRIGGER_TAG = "pipeline/trigger"  # schedule | landing_sensor | completeness
COMPLETENESS_TAG = "pipeline/completeness"  # the window a completeness re-run belongs to
FINGERPRINT_TAG = "pipeline/landing_fingerprint"  # the landing state a sensor run was requested for
PRIORITY_TAG = "dagster/priority"
# Higher runs first when the queue has a free slot: yesterday's scheduled run goes before
# anything a backfill has queued; late-file re-runs next; backfills have the default 0.
PRIORITY_SCHEDULED = "10"
PRIORITY_LANDING = "5"
PRIORITY_COMPLETENESS = "1"

# Times are UTC. The daily run waits 90 minutes after midnight for hour 23's files; the
# freshness deadline leaves it time to finish (or be re-run) before anyone reads the tables.
DAILY_CRON = "30 1 * * *"
FRESHNESS_DEADLINE = dt.time(6, 0)
FRESHNESS_DEADLINE_CRON = f"{FRESHNESS_DEADLINE.minute} {FRESHNESS_DEADLINE.hour} * * *"
STEP_EXECUTORS: dict[str, ExecutorDefinition] = {
    "in_process": in_process_executor,
    "multiprocess": multiprocess_executor,
}
COMPLETENESS_CRON = "0 4 * * 1"  # Mondays 04:00: the previous seven days
MAINTENANCE_CRON = "0 3 * * 0"  # Sundays 03:00: compact, vacuum, repair


@dataclass(frozen=True)
class OperationsSettings:
    """Notification target and operational limits, from `PIPELINE_*` environment variables."""

    # Slack-compatible incoming webhook; None: nothing is sent.
    webhook_url: str | None = None
    # Base URL of the Dagster UI, for links in notifications.
    ui_base_url: str = "http://127.0.0.1:3000"
    notify_timeout_s: float = 10.0
    # Whether schedules and the launching sensors start switched on in a fresh instance.
    automation_running: bool = True
    # Landing sensor: how far back late files are looked for, and the work allowed per tick.
    landing_lookback_days: int = 7
    landing_days_per_tick: int = 7
    landing_runs_per_tick: int = 3
    landing_interval_s: int = 120
    # Runs the landing sensor requests, at most, for the same files of a day (the first and its
    # re-requests after a failure); then it says so once and leaves the day to an operator.
    landing_max_attempts: int = 3
    # Completeness: the window scanned by the weekly schedule.
    completeness_window_days: int = 7
    # Auto-pause of a running backfill: share of its finished runs that failed (once at
    # least `autopause_min_runs` have finished) or share of its rows quarantined (once at
    # least `autopause_min_rows` rows were read) above which the lake_writers pool is paused.
    autopause_failed_run_share: float = 0.5
    autopause_min_runs: int = 4
    autopause_quarantine_rate: float = 0.05
    autopause_min_rows: int = 1000
    guard_interval_s: int = 30
    # Where a run's steps execute: `in_process` (in the run worker) or `multiprocess` (a child
    # process per step). A run is one step, so a process per step buys no parallelism and
    # costs ~3 s of start-up (measured).
    step_executor: str = "in_process"
    # Lake maintenance: keep the files any snapshot of the last N hours needs (time travel, a
    # reader's open snapshot); never below the longest query expected to run, nor below the age
    # of the oldest run in progress (a backfill still writing from an old snapshot).
    lake_retention_hours: int = 168
    lake_longest_read_hours: int = 24

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperationsSettings:
        """Read the settings; a present but unusable value is an error naming the variable."""
        env = os.environ if environ is None else environ
        automation = env.get("PIPELINE_AUTOMATION", "running").strip().lower() or "running"
        if automation not in ("running", "stopped"):
            raise SettingsError(f"PIPELINE_AUTOMATION={automation!r}: expected 'running' or 'stopped'")
        step_executor = env.get("PIPELINE_STEP_EXECUTOR", "").strip().lower() or cls.step_executor
        if step_executor not in STEP_EXECUTORS:
            raise SettingsError(f"PIPELINE_STEP_EXECUTOR={step_executor!r}: expected 'in_process' or 'multiprocess'")
        webhook = env.get("PIPELINE_NOTIFY_WEBHOOK_URL", "").strip() or None
        if webhook is not None and not webhook.startswith(("http://", "https://")):
            # Do not echo the value: a webhook URL is a secret.
            raise SettingsError("PIPELINE_NOTIFY_WEBHOOK_URL: expected an http:// or https:// URL")
        return cls(
            webhook_url=webhook,
            ui_base_url=(env.get("PIPELINE_UI_BASE_URL", "").strip() or cls.ui_base_url).rstrip("/"),
            notify_timeout_s=env_number(env, "PIPELINE_NOTIFY_TIMEOUT_S", cls.notify_timeout_s, 0.1, 120),
            automation_running=automation == "running",
            landing_lookback_days=int(env_number(env, "PIPELINE_LANDING_LOOKBACK_DAYS", 7, 1, 366)),
            landing_days_per_tick=int(env_number(env, "PIPELINE_LANDING_DAYS_PER_TICK", 7, 1, 366)),
            landing_runs_per_tick=int(env_number(env, "PIPELINE_LANDING_RUNS_PER_TICK", 3, 1, 100)),
            landing_interval_s=int(env_number(env, "PIPELINE_LANDING_INTERVAL_S", 120, 5, 86400)),
            landing_max_attempts=int(env_number(env, "PIPELINE_LANDING_MAX_ATTEMPTS", 3, 1, 100)),
            completeness_window_days=int(env_number(env, "PIPELINE_COMPLETENESS_WINDOW_DAYS", 7, 1, 93)),
            autopause_failed_run_share=env_number(env, "PIPELINE_AUTOPAUSE_FAILED_RUN_SHARE", 0.5, 0, 1),
            autopause_min_runs=int(env_number(env, "PIPELINE_AUTOPAUSE_MIN_RUNS", 4, 1, 10000)),
            autopause_quarantine_rate=env_number(env, "PIPELINE_AUTOPAUSE_QUARANTINE_RATE", 0.05, 0, 1),
            autopause_min_rows=int(env_number(env, "PIPELINE_AUTOPAUSE_MIN_ROWS", 1000, 1, 10**12)),
            guard_interval_s=int(env_number(env, "PIPELINE_GUARD_INTERVAL_S", 30, 5, 3600)),
            step_executor=step_executor,
            lake_retention_hours=int(env_number(env, "PIPELINE_LAKE_RETENTION_HOURS", 168, 1, 24 * 365)),
            lake_longest_read_hours=int(env_number(env, "PIPELINE_LAKE_LONGEST_READ_HOURS", 24, 1, 24 * 365)),
        )

    @property
    def executor(self) -> ExecutorDefinition:
        """The executor of every job of the code location."""
        return STEP_EXECUTORS[self.step_executor]

    @property
    def schedule_status(self) -> DefaultScheduleStatus:
        """Default status of the schedules in an instance that has never toggled them."""
        return DefaultScheduleStatus.RUNNING if self.automation_running else DefaultScheduleStatus.STOPPED

    @property
    def sensor_status(self) -> DefaultSensorStatus:
        """Default status of the sensors that launch runs."""
        return DefaultSensorStatus.RUNNING if self.automation_running else DefaultSensorStatus.STOPPED

    def run_url(self, run_id: str) -> str:
        """Link to a run in the UI."""
        return f"{self.ui_base_url}/runs/{run_id}"

    def backfill_url(self, backfill_id: str) -> str:
        """Link to a backfill in the UI."""
        return f"{self.ui_base_url}/runs/b/{backfill_id}"

    def asset_url(self, asset_key_path: list[str]) -> str:
        """Link to an asset in the UI."""
        return f"{self.ui_base_url}/assets/{'/'.join(asset_key_path)}"


# -- the pause switch ----------------------------------------------------------------------
def pool_limit(instance: DagsterInstance, pool: str = LAKE_WRITERS_POOL) -> int | None:
    """The pool's current limit: the one set by an operator, else dagster.yaml's default
    (None when neither limits it)."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return None
    for limit in storage.get_pool_limits():
        if limit.name == pool:
            return limit.limit
    return instance.global_op_concurrency_default_limit


def list_pool(instance: DagsterInstance, pool: str = LAKE_WRITERS_POOL) -> bool:
    """Record the pool with dagster.yaml's default limit when the instance has no limit for it yet,
    so that UI > Deployment > Concurrency lists the pause switch before anyone set it (Dagster
    records a default-limited pool only once the daemon dequeues a run of it; a CLI-only instance
    never would). A limit already set, 0 included, is left alone. Returns whether it was recorded."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits or instance.global_op_concurrency_default_limit is None:
        return False
    if pool in storage.get_concurrency_keys():
        return False
    return bool(storage.initialize_concurrency_limit_to_default(pool))


def is_paused(instance: DagsterInstance, pool: str = LAKE_WRITERS_POOL) -> bool:
    """Whether the operator (or the backfill guard) has paused the pool by setting its limit to 0."""
    return pool_limit(instance, pool) == 0


def set_pool_limit(instance: DagsterInstance, limit: int, pool: str = LAKE_WRITERS_POOL) -> None:
    """Set the pool's limit: 0 pauses, `DEFAULT_POOL_LIMIT` resumes."""
    instance.event_log_storage.set_concurrency_slots(pool, limit)


def day_tags(trigger: str, priority: str, **extra: str) -> dict[str, str]:
    """Tags of a run launched by this code location's automation."""
    return {TRIGGER_TAG: trigger, PRIORITY_TAG: priority, **extra}
