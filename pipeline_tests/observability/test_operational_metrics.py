"""Operational metrics pushed to a real Pushgateway and read back from its `/metrics`.

Each test pushes what the pipeline pushes at the end of an attempt and asserts every sample
the gateway then serves: names, label sets and values, so that a renamed metric, an extra
label (the cardinality trap) or a figure lost by the group replacement all fail here.
"""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from pipeline.engine.operational_metrics import (
    PUSHED_METRIC_NAMES,
    AttemptMetrics,
    MetricsPusher,
    SourceHistory,
    midnight_utc,
    push_attempt_metrics,
    render,
)
from pipeline.engine.pushgateway import PushgatewayConfig
from pipeline_tests.observability.conftest import Gateway, Samples

UTC = dt.UTC
STARTED = dt.datetime(2024, 1, 18, 1, 30, 5, tzinfo=UTC)
ENDED = dt.datetime(2024, 1, 18, 1, 30, 9, 500000, tzinfo=UTC)
EARLIER_SUCCESS = dt.datetime(2024, 1, 17, 1, 31, tzinfo=UTC)


def labels(job: str, source: str, **extra: str) -> frozenset[tuple[str, str]]:
    """The labels the gateway serves a pushed sample with (it adds an empty `instance`)."""
    return frozenset({"instance": "", "job": job, "pipeline": "log_pipeline", "source": source, **extra}.items())


def status_samples(job: str, source: str, status: str) -> Samples:
    return {
        ("pipeline_last_attempt_status", labels(job, source, status=name)): 1.0 if name == status else 0.0
        for name in ("loaded", "empty", "failed")
    }


def loaded_day() -> AttemptMetrics:
    """access 2024-01-17, loaded by the daily job at 01:30: 4,577 rows, 23 quarantined, hour 04 missing."""
    return AttemptMetrics(
        source="access",
        job="access_daily",
        status="loaded",
        partition_date=dt.date(2024, 1, 17),
        attempt_started_at=STARTED,
        attempt_ended_at=ENDED,
        rows_loaded=4577,
        rows_quarantined=23,
        rows_read=4600,
        lines_read=4650,
        quarantine_rate=0.005,
        duration_s=2.5,
        missing_hours=1,
        error_budget=0.01,
        last_success_at=ENDED,
        newest_day=dt.date(2024, 1, 17),
        newest_day_rows_loaded=4577,
        newest_day_missing_hours=1,
    )


def test_a_loaded_day_is_pushed_as_gauges_with_job_pipeline_and_source_only(pushgateway: Gateway) -> None:
    config = PushgatewayConfig(url=pushgateway.url)
    assert push_attempt_metrics(loaded_day(), config) is True

    group = labels("access_daily", "access")
    assert pushgateway.samples() == {
        **status_samples("access_daily", "access", "loaded"),
        ("pipeline_last_attempt_timestamp_seconds", group): ENDED.timestamp(),
        ("pipeline_last_attempt_duration_seconds", group): 2.5,
        ("pipeline_last_attempt_day_timestamp_seconds", group): 1705449600.0,  # 2024-01-17T00:00Z
        ("pipeline_last_attempt_rows_loaded", group): 4577.0,
        ("pipeline_last_attempt_rows_quarantined", group): 23.0,
        ("pipeline_last_attempt_rows_read", group): 4600.0,
        ("pipeline_last_attempt_lines_read", group): 4650.0,
        ("pipeline_last_attempt_quarantine_ratio", group): 0.005,
        ("pipeline_last_attempt_lines_per_second", group): 1860.0,
        ("pipeline_last_attempt_missing_hours", group): 1.0,
        ("pipeline_error_budget_ratio", group): 0.01,
        ("pipeline_last_success_timestamp_seconds", group): ENDED.timestamp(),
        ("pipeline_newest_day_timestamp_seconds", group): 1705449600.0,
        ("pipeline_newest_day_rows_loaded", group): 4577.0,
        ("pipeline_newest_day_missing_hours", group): 1.0,
    }
    # Gauges, every one (a counter would add up the rows of a retried day).
    assert render(loaded_day()).count("# TYPE ") == 16
    assert all(line.endswith(" gauge") for line in render(loaded_day()).splitlines() if line.startswith("# TYPE"))
    assert pushgateway.groups() == [{"job": "access_daily", "pipeline": "log_pipeline", "source": "access"}]


def test_an_empty_day_replaces_the_group_and_counts_as_the_last_success(pushgateway: Gateway) -> None:
    config = PushgatewayConfig(url=pushgateway.url)
    assert push_attempt_metrics(loaded_day(), config)
    empty = AttemptMetrics(
        source="access",
        job="access_daily",
        status="empty",
        partition_date=dt.date(2024, 1, 18),
        attempt_started_at=STARTED + dt.timedelta(days=1),
        attempt_ended_at=ENDED + dt.timedelta(days=1),
        duration_s=0.7,
        missing_hours=24,
        last_success_at=ENDED + dt.timedelta(days=1),
        newest_day=dt.date(2024, 1, 18),
        newest_day_rows_loaded=0,
        newest_day_missing_hours=24,
    )
    assert push_attempt_metrics(empty, config)

    group = labels("access_daily", "access")
    samples = pushgateway.samples()
    assert {key: value for key, value in samples.items() if key[0] == "pipeline_last_attempt_status"} == status_samples(
        "access_daily", "access", "empty"
    )
    assert samples[("pipeline_last_attempt_rows_loaded", group)] == 0.0
    assert samples[("pipeline_last_attempt_lines_per_second", group)] == 0.0
    assert samples[("pipeline_last_attempt_missing_hours", group)] == 24.0
    assert samples[("pipeline_last_attempt_day_timestamp_seconds", group)] == midnight_utc(dt.date(2024, 1, 18))
    assert samples[("pipeline_last_success_timestamp_seconds", group)] == (ENDED + dt.timedelta(days=1)).timestamp()
    assert samples[("pipeline_newest_day_rows_loaded", group)] == 0.0  # what the volume alert sees
    assert samples[("pipeline_newest_day_missing_hours", group)] == 24.0


def test_a_failed_day_keeps_the_last_success_and_newest_day_it_is_given(pushgateway: Gateway) -> None:
    """The PUT replaces the whole group: what survives a failure is what the caller passes again."""
    config = PushgatewayConfig(url=pushgateway.url)
    assert push_attempt_metrics(loaded_day(), config)
    failed = AttemptMetrics(
        source="access",
        job="access_daily",
        status="failed",
        partition_date=dt.date(2024, 1, 18),
        attempt_started_at=STARTED + dt.timedelta(days=1),
        attempt_ended_at=ENDED + dt.timedelta(days=1),
        rows_loaded=0,  # rolled back
        lines_read=1200,
        duration_s=4.0,
        missing_hours=3,
        last_success_at=ENDED,
        newest_day=dt.date(2024, 1, 17),
        newest_day_rows_loaded=4577,
        newest_day_missing_hours=1,
    )
    assert push_attempt_metrics(failed, config)

    group = labels("access_daily", "access")
    assert pushgateway.samples() == {
        **status_samples("access_daily", "access", "failed"),
        ("pipeline_last_attempt_timestamp_seconds", group): (ENDED + dt.timedelta(days=1)).timestamp(),
        ("pipeline_last_attempt_duration_seconds", group): 4.0,
        ("pipeline_last_attempt_day_timestamp_seconds", group): midnight_utc(dt.date(2024, 1, 18)),
        ("pipeline_last_attempt_rows_loaded", group): 0.0,
        ("pipeline_last_attempt_rows_quarantined", group): 0.0,
        ("pipeline_last_attempt_rows_read", group): 0.0,
        ("pipeline_last_attempt_lines_read", group): 1200.0,
        ("pipeline_last_attempt_quarantine_ratio", group): 0.0,
        ("pipeline_last_attempt_lines_per_second", group): 300.0,
        ("pipeline_last_attempt_missing_hours", group): 3.0,
        ("pipeline_error_budget_ratio", group): 0.01,
        ("pipeline_last_success_timestamp_seconds", group): ENDED.timestamp(),
        ("pipeline_newest_day_timestamp_seconds", group): midnight_utc(dt.date(2024, 1, 17)),
        ("pipeline_newest_day_rows_loaded", group): 4577.0,
        ("pipeline_newest_day_missing_hours", group): 1.0,
    }


def test_a_backfill_of_an_old_day_does_not_move_the_newest_day(pushgateway: Gateway) -> None:
    config = PushgatewayConfig(url=pushgateway.url)
    history = SourceHistory(
        last_success_at=ENDED, newest_day=dt.date(2024, 1, 17), newest_day_rows_loaded=4577, newest_day_missing_hours=1
    )
    old = AttemptMetrics(
        source="access",
        job="__ASSET_JOB",
        status="loaded",
        partition_date=dt.date(2019, 3, 2),
        attempt_started_at=STARTED,
        attempt_ended_at=ENDED,
        rows_loaded=12,
        rows_read=12,
        lines_read=12,
        duration_s=0.5,
        last_success_at=history.last_success_at,
        newest_day=history.newest_day,
        newest_day_rows_loaded=history.newest_day_rows_loaded,
        newest_day_missing_hours=history.newest_day_missing_hours,
    )
    assert push_attempt_metrics(loaded_day(), config) and push_attempt_metrics(old, config)

    samples = pushgateway.samples()
    backfill, daily = labels("__ASSET_JOB", "access"), labels("access_daily", "access")
    assert samples[("pipeline_last_attempt_rows_loaded", backfill)] == 12.0
    assert samples[("pipeline_last_attempt_day_timestamp_seconds", backfill)] == midnight_utc(dt.date(2019, 3, 2))
    assert samples[("pipeline_newest_day_timestamp_seconds", backfill)] == midnight_utc(dt.date(2024, 1, 17))
    assert samples[("pipeline_newest_day_rows_loaded", backfill)] == 4577.0
    # One group per (job, source): the daily job's group is untouched by the backfill's push.
    assert samples[("pipeline_last_attempt_rows_loaded", daily)] == 4577.0
    assert sorted(group["job"] for group in pushgateway.groups()) == ["__ASSET_JOB", "access_daily"]


def test_a_run_that_failed_before_any_day_pushes_status_and_history_but_no_day_figures(pushgateway: Gateway) -> None:
    config = PushgatewayConfig(url=pushgateway.url)
    history = SourceHistory(
        last_success_at=EARLIER_SUCCESS,
        newest_day=dt.date(2024, 1, 16),
        newest_day_rows_loaded=4400,
        newest_day_missing_hours=0,
    )
    metrics = AttemptMetrics.run_failure(
        source="app", job="app_daily", started_at=STARTED, failed_at=ENDED, error_budget=0.02, history=history
    )
    assert push_attempt_metrics(metrics, config)

    group = labels("app_daily", "app")
    assert pushgateway.samples() == {
        **status_samples("app_daily", "app", "failed"),
        ("pipeline_last_attempt_timestamp_seconds", group): ENDED.timestamp(),
        ("pipeline_last_attempt_duration_seconds", group): 4.5,
        ("pipeline_error_budget_ratio", group): 0.02,
        ("pipeline_last_success_timestamp_seconds", group): EARLIER_SUCCESS.timestamp(),
        ("pipeline_newest_day_timestamp_seconds", group): midnight_utc(dt.date(2024, 1, 16)),
        ("pipeline_newest_day_rows_loaded", group): 4400.0,
        ("pipeline_newest_day_missing_hours", group): 0.0,
    }


def test_a_source_that_never_succeeded_pushes_no_success_timestamp(pushgateway: Gateway) -> None:
    """No made-up 0: the alert rules see the series missing (LogPipelineSourceWithoutSuccess)."""
    metrics = AttemptMetrics.run_failure(
        source="fresh",
        job="fresh_daily",
        started_at=STARTED,
        failed_at=ENDED,
        error_budget=0.01,
        history=SourceHistory(),
    )
    assert push_attempt_metrics(metrics, PushgatewayConfig(url=pushgateway.url))
    names = {name for name, _ in pushgateway.samples()}
    assert names == {
        "pipeline_last_attempt_status",
        "pipeline_last_attempt_timestamp_seconds",
        "pipeline_last_attempt_duration_seconds",
        "pipeline_error_budget_ratio",
    }


def test_every_pushed_name_is_in_the_published_table(pushgateway: Gateway) -> None:
    """The dashboard and rule tests check expressions against PUSHED_METRIC_NAMES: it must be true."""
    assert push_attempt_metrics(loaded_day(), PushgatewayConfig(url=pushgateway.url))
    pushed = {name for name, _ in pushgateway.samples()}
    assert pushed <= PUSHED_METRIC_NAMES
    assert PUSHED_METRIC_NAMES - pushed == {"pipeline_source_configured", "pipeline_sweep_timestamp_seconds"}


def test_nothing_is_sent_without_a_url(pushgateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIPELINE_PUSHGATEWAY_URL", raising=False)
    assert push_attempt_metrics(loaded_day()) is False
    assert MetricsPusher(PushgatewayConfig(url=None)).push(loaded_day()) is False
    assert pushgateway.samples() == {}


def test_the_url_is_read_from_the_environment(pushgateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_PUSHGATEWAY_URL", pushgateway.url)
    monkeypatch.setenv("PIPELINE_PUSHGATEWAY_PIPELINE_LABEL", "log_pipeline_staging")
    assert push_attempt_metrics(loaded_day()) is True
    assert pushgateway.groups() == [{"job": "access_daily", "pipeline": "log_pipeline_staging", "source": "access"}]


def test_a_push_the_gateway_refuses_is_a_warning_not_an_error(
    pushgateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    """Another program pushed a *counter* of one of our names: the gateway refuses our gauge
    (HTTP 400, inconsistent type). The push gives up at once (another try cannot help)."""
    other = pushgateway.push_text(
        "job/other_batch", "# TYPE pipeline_last_attempt_rows_loaded counter\npipeline_last_attempt_rows_loaded 5\n"
    )
    assert other.status_code == 200
    sleeps: list[float] = []
    pusher = MetricsPusher(PushgatewayConfig(url=pushgateway.url, retries=3), sleep=sleeps.append)
    with caplog.at_level(logging.WARNING, logger="pipeline.engine.operational_metrics"):
        assert pusher.push(loaded_day()) is False
    assert sleeps == []
    [warning] = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert warning.getMessage().startswith(
        f"operational metrics of access loaded not pushed: push refused by {pushgateway.url}/…: HTTP 400"
    )
