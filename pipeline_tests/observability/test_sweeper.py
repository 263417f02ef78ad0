"""The Pushgateway sweeper against a real gateway, directly and through its Dagster schedule."""

from __future__ import annotations

import datetime as dt

import pytest
from dagster import DagsterInstance, RunRequest, build_schedule_context

from pipeline.engine.metrics_sweeper import stale_groups, sweep_pushgateway
from pipeline.engine.operational_metrics import AttemptMetrics, push_attempt_metrics
from pipeline.engine.pushgateway import PushgatewayConfig, PushgatewayError
from pipeline.orchestration.observability import SWEEP_CRON, build_pushgateway_sweeper
from pipeline.orchestration.operations import OperationsSettings
from pipeline.sources import configured_sources
from pipeline_tests.observability.conftest import Gateway
from pipeline_tests.ops.conftest import free_port

UTC = dt.UTC
NOW = dt.datetime(2024, 1, 18, 6, 40, tzinfo=UTC)


def push_group(config: PushgatewayConfig, job: str, source: str) -> None:
    ended = dt.datetime(2024, 1, 18, 1, 31, tzinfo=UTC)
    metrics = AttemptMetrics(
        source=source, job=job, status="empty", attempt_started_at=ended, attempt_ended_at=ended, last_success_at=ended
    )
    assert push_attempt_metrics(metrics, config)


@pytest.fixture
def populated(pushgateway: Gateway) -> PushgatewayConfig:
    """Groups of two configured sources, of a dropped one (two jobs), of another deployment
    and of another program."""
    config = PushgatewayConfig(url=pushgateway.url)
    push_group(config, "access_daily", "access")
    push_group(config, "__ASSET_JOB", "app")
    push_group(config, "legacy_daily", "legacy")
    push_group(config, "__ASSET_JOB", "legacy")
    push_group(PushgatewayConfig(url=pushgateway.url, pipeline="log_pipeline_staging"), "legacy_daily", "legacy")
    assert pushgateway.push_text("job/nightly_backup/source/legacy", "backup_ok 1\n").status_code == 200
    return config


def group_set(gateway: Gateway) -> set[tuple[tuple[str, str], ...]]:
    return {tuple(sorted(labels.items())) for labels in gateway.groups()}


def key(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def test_the_sweeper_deletes_only_this_pipelines_groups_of_dropped_sources(
    pushgateway: Gateway, populated: PushgatewayConfig
) -> None:
    result = sweep_pushgateway(populated, ["access", "app"], now=lambda: NOW)

    assert [(group["job"], group["source"]) for group in result.deleted] == [
        ("__ASSET_JOB", "legacy"),
        ("legacy_daily", "legacy"),
    ]
    assert result.sentence() == "deleted 2 stale group(s) (__ASSET_JOB/legacy, legacy_daily/legacy); kept 2"
    assert group_set(pushgateway) == {
        key(job="access_daily", pipeline="log_pipeline", source="access"),
        key(job="__ASSET_JOB", pipeline="log_pipeline", source="app"),
        # another deployment's and another program's groups are not ours to delete
        key(job="legacy_daily", pipeline="log_pipeline_staging", source="legacy"),
        key(job="nightly_backup", source="legacy"),
        # the inventory
        key(job="pushgateway_sweep", pipeline="log_pipeline"),
    }
    inventory = {
        (name, tuple(sorted(labels))): value
        for (name, labels), value in pushgateway.samples().items()
        if ("job", "pushgateway_sweep") in labels
    }
    group = (("instance", ""), ("job", "pushgateway_sweep"), ("pipeline", "log_pipeline"))
    assert inventory == {
        ("pipeline_source_configured", tuple(sorted((*group, ("source", "access"))))): 1.0,
        ("pipeline_source_configured", tuple(sorted((*group, ("source", "app"))))): 1.0,
        ("pipeline_sweep_timestamp_seconds", group): NOW.timestamp(),
    }


def test_a_second_sweep_finds_nothing_and_keeps_its_inventory(
    pushgateway: Gateway, populated: PushgatewayConfig
) -> None:
    sweep_pushgateway(populated, ["access", "app"], now=lambda: NOW)
    again = sweep_pushgateway(populated, ["access", "app"], now=lambda: NOW)
    assert again.deleted == []
    assert again.sentence() == "no stale group: 2 group(s) of access, app kept"
    assert key(job="pushgateway_sweep", pipeline="log_pipeline") in group_set(pushgateway)


def test_a_sweep_with_no_configured_source_deletes_nothing(pushgateway: Gateway, populated: PushgatewayConfig) -> None:
    before = group_set(pushgateway)
    with pytest.raises(ValueError, match="no configured source"):
        sweep_pushgateway(populated, [])
    assert group_set(pushgateway) == before


def test_stale_groups_ignores_groups_without_source_or_of_others() -> None:
    groups = [
        {"job": "pushgateway_sweep", "pipeline": "p"},
        {"job": "a_daily", "pipeline": "p", "source": "a"},
        {"job": "b_daily", "pipeline": "p", "source": "b"},
        {"job": "b_daily", "pipeline": "q", "source": "b"},
        {"job": "b_daily", "source": "b"},
    ]
    assert stale_groups(groups, "p", ["a"]) == (
        [{"job": "b_daily", "pipeline": "p", "source": "b"}],
        [{"job": "a_daily", "pipeline": "p", "source": "a"}],
    )


def test_an_unreachable_gateway_fails_the_sweep_loudly() -> None:
    config = PushgatewayConfig(url=f"http://127.0.0.1:{free_port()}", timeout_s=0.2, retries=0)
    with pytest.raises(PushgatewayError, match="list groups to"):
        sweep_pushgateway(config, ["access"])


def test_the_schedule_skips_without_a_gateway_and_its_run_sweeps(
    pushgateway: Gateway, populated: PushgatewayConfig, instance: DagsterInstance
) -> None:
    specs = list(configured_sources().values())
    idle = build_pushgateway_sweeper(specs, OperationsSettings(), PushgatewayConfig(url=None))
    tick = build_schedule_context(instance=instance, scheduled_execution_time=NOW)
    skipped = idle.evaluate_tick(tick)
    assert not skipped.run_requests
    assert skipped.skip_message == "PIPELINE_PUSHGATEWAY_URL is unset: nothing is pushed, nothing to sweep"

    schedule = build_pushgateway_sweeper(specs, OperationsSettings(), populated)
    assert (schedule.name, schedule.cron_schedule, schedule.execution_timezone, schedule.job_name) == (
        "pushgateway_sweep_schedule",
        SWEEP_CRON,
        "UTC",
        "pushgateway_sweep",
    )
    [request] = schedule.evaluate_tick(tick).run_requests or []
    assert isinstance(request, RunRequest)
    assert request.run_key == "sweep:2024-01-18T06:40:00+00:00"

    result = schedule.job.execute_in_process(instance=instance, tags=request.tags)  # type: ignore[union-attr]
    assert result.success
    assert result.dagster_run.tags["pipeline/trigger"] == "pushgateway_sweep"
    sources = {labels.get("source") for labels in pushgateway.groups() if labels.get("pipeline") == "log_pipeline"}
    assert sources == {"access", "app", None}  # legacy's groups are gone; None: the inventory
    logs = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any("pushgateway sweep: deleted 2 stale group(s)" in message for message in logs)


def test_the_code_location_registers_the_sweeper(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.definitions import build_definitions

    monkeypatch.setenv("PIPELINE_AUTOMATION", "stopped")
    defs = build_definitions()
    schedule = defs.resolve_schedule_def("pushgateway_sweep_schedule")
    assert schedule.job_name == "pushgateway_sweep"
    assert schedule.default_status.value == "STOPPED"  # like every schedule under PIPELINE_AUTOMATION=stopped
    assert defs.resolve_job_def("pushgateway_sweep").name == "pushgateway_sweep"


def test_the_sweeper_needs_sources() -> None:
    with pytest.raises(ValueError, match="needs the configured sources"):
        build_pushgateway_sweeper([], OperationsSettings(), PushgatewayConfig(url="http://127.0.0.1:9"))
