"""Run notifications, evaluated directly (no daemon) against a real instance with real runs: a
failure names the error, the partitions and links built from PIPELINE_UI_BASE_URL; a success
is summarised from the stats manifests; nothing is sent without a webhook; and the webhook
URL (a secret) never shows in a log line, a message or an error."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    ExecuteInProcessResult,
    SkipReason,
    build_run_status_sensor_context,
)

from pipeline.cli.generate import generate_landing_zone
from pipeline.orchestration.notifications import Notifier, WebhookError
from pipeline.orchestration.operations import OperationsSettings
from pipeline.orchestration.sensors import build_failure_notifier, build_success_notifier
from pipeline.settings import SettingsError
from pipeline.sources import configured_sources
from pipeline_tests.conftest import PipelineEnv, day
from pipeline_tests.ops.conftest import Webhook, pipeline_resource

UI = "https://dagster.example.com/prod"
SECRET = "s3cr3t-token"
DAYS = [day("2024-03-04"), day("2024-03-05")]


def run_range(
    env: PipelineEnv, instance: DagsterInstance, tags: dict[str, str] | None = None
) -> ExecuteInProcessResult:
    """`access/events` + `access/dlq` for 2024-03-04..05 in one run, as a backfill launches it."""
    # Not `materialize_range`: a job subset does not record the asset selection on the run, and
    # the notifications name the run's assets from it, as for a UI or CLI launch.
    return (
        env.definitions()
        .resolve_implicit_global_asset_job_def()
        .execute_in_process(
            instance=instance,
            asset_selection=[AssetKey(["access", "events"]), AssetKey(["access", "dlq"])],
            tags={
                "dagster/asset_partition_range_start": "2024-03-04",
                "dagster/asset_partition_range_end": "2024-03-05",
                **(tags or {}),
            },
            raise_on_error=False,
        )
    )


def block_events_day(env: PipelineEnv) -> Path:
    """A real lake fault: the source's tables exist, but where the first day's data files of
    `access.events` go (its partition directory) there is a file (a bad copy, a damaged
    volume), so the load cannot write them. The Delta logs are intact, so the failed attempt
    is recorded in `access.loads` and the lake stays readable. Returns the blocking file."""
    pipeline_resource().lake().tables(configured_sources()["access"]).ensure()
    blocker = env.lake / "access" / "events" / f"partition_date={DAYS[0].isoformat()}"
    blocker.write_bytes(b"this is not a directory\n" * 100)
    return blocker


def failed_run(env: PipelineEnv, instance: DagsterInstance) -> ExecuteInProcessResult:
    """A run that fails for real: the first day's data files of `access.events` cannot be written."""
    generate_landing_zone(env.landing, DAYS, sources=["access"], lines_per_hour=5, bad_line_rate=0.0)
    block_events_day(env)
    result = run_range(env, instance, tags={"dagster/backfill": "bkfl0042"})
    assert not result.success
    return result


def evaluate(sensor: Any, result: ExecuteInProcessResult, instance: DagsterInstance, event: Any) -> Any:
    """Evaluate a run status sensor for `result`'s run, as the daemon does after the run ended."""
    with build_run_status_sensor_context(
        sensor_name=sensor.name,
        dagster_event=event,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),
        resources={"pipeline": pipeline_resource()},
    ) as context:
        if event.event_type_value == "RUN_FAILURE":
            return sensor(context.for_run_failure())
        return sensor(context)


def test_failure_message_names_error_partitions_and_links(
    pipeline_env: PipelineEnv, instance: DagsterInstance, webhook: Webhook
) -> None:
    result = failed_run(pipeline_env, instance)
    settings = OperationsSettings(webhook_url=webhook.url, ui_base_url=UI)
    assert evaluate(build_failure_notifier(settings), result, instance, result.get_run_failure_event()) is None

    [text] = webhook.texts()
    print(text)
    lines = text.splitlines()
    assert lines[0] == ":x: Run failed: asset run (access/dlq, access/events)"
    assert lines[1] == "Partitions: 2024-03-04..2024-03-05 (2 days)"
    # The step's own error, with the exception that caused it, naming what is broken.
    blocker = pipeline_env.lake / "access/events/partition_date=2024-03-04"
    # A failed day reads as the step's sentence: which day, the error, what stays loaded, what to do.
    error = (
        f"FileExistsError: [Errno 17] Cannot create directory '{blocker}': non-directory entry exists. "
        "Detail: [errno 17] File exists"
    )
    sentence = (
        f"Error: access_ingest: access 2024-03-04 failed: {error}. Nothing of 2024-03-04 changed (its tables keep "
        "the last complete load); 0 earlier day(s) of this run are loaded and stay materialized. Next: fix the cause"
    )
    assert lines[2].startswith(sentence), lines[2]
    assert lines[3:] == [f"Run: {UI}/runs/{result.run_id}", f"Backfill: {UI}/runs/b/bkfl0042"]
    assert SECRET not in text
    # The same error is on record for the operator: the failed attempt in `loads`, and the
    # failed day's manifest written from it. The range stopped there: no attempt at the 5th.
    [attempt] = pipeline_env.attempts("access")
    assert (attempt["partition_date"], attempt["status"], attempt["run_id"]) == (DAYS[0], "failed", result.run_id)
    assert attempt["error"] == error
    assert "FileExistsError" in attempt["error_traceback"]
    assert (attempt["rows_loaded"], attempt["events_version"]) == (0, None)
    manifest = pipeline_env.manifest("access", "2024-03-04")
    assert (manifest["status"], manifest["error"], manifest["run_id"]) == ("failed", attempt["error"], result.run_id)
    assert manifest["summary"] == attempt["summary"] and "FAILED" in manifest["summary"]
    assert not (pipeline_env.output / "manifests" / "access" / "2024-03-05.json").exists()


def test_success_summary_is_read_from_the_manifests(
    pipeline_env: PipelineEnv, instance: DagsterInstance, webhook: Webhook
) -> None:
    generated = generate_landing_zone(
        pipeline_env.landing,
        DAYS,
        sources=["access"],
        lines_per_hour=50,
        bad_line_rate=0.005,
        missing_hours={("access", DAYS[1]): {7}},
    )
    result = run_range(pipeline_env, instance)
    assert result.success
    settings = OperationsSettings(webhook_url=webhook.url, ui_base_url=UI)
    sensor = build_success_notifier(list(configured_sources().values()), settings)
    assert evaluate(sensor, result, instance, result.get_run_success_event()) is None

    [text] = webhook.texts()
    print(text)
    loaded = sum(p.records - p.bad_records for p in generated)
    quarantined = sum(p.bad_records for p in generated)
    manifests = [pipeline_env.manifest("access", d.isoformat()) for d in DAYS]
    assert text.splitlines() == [
        ":white_check_mark: Run succeeded: asset run for 2024-03-04..2024-03-05 (2 days)",
        f"access: {loaded:,} rows loaded, {quarantined:,} quarantined ({quarantined / (loaded + quarantined):.2%}); "
        "1 day(s) with missing hours, 0 empty",
        *(f"• {manifest['summary']}" for manifest in manifests),
        f"Run: {UI}/runs/{result.run_id}",
    ]
    assert "missing: 07" in text


def test_nothing_is_sent_when_the_webhook_is_unset(
    pipeline_env: PipelineEnv, instance: DagsterInstance, webhook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PIPELINE_NOTIFY_WEBHOOK_URL", raising=False)
    settings = OperationsSettings.from_env()
    assert settings.webhook_url is None
    result = failed_run(pipeline_env, instance)
    skipped = evaluate(build_failure_notifier(settings), result, instance, result.get_run_failure_event())
    assert isinstance(skipped, SkipReason)
    assert skipped.skip_message == "PIPELINE_NOTIFY_WEBHOOK_URL is unset"
    assert Notifier.from_settings(settings).send("hello") is False
    assert webhook.messages == []


def test_the_webhook_url_never_appears_in_logs_messages_or_errors(
    pipeline_env: PipelineEnv,
    instance: DagsterInstance,
    webhook: Webhook,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    result = failed_run(pipeline_env, instance)
    settings = OperationsSettings(webhook_url=webhook.url, ui_base_url=UI)
    assert evaluate(build_failure_notifier(settings), result, instance, result.get_run_failure_event()) is None
    assert len(webhook.messages) == 1

    # A receiver that refuses, then one that is unreachable: the error names the host only.
    webhook.responses = [500, 500]
    with pytest.raises(WebhookError) as refused:
        Notifier(url=webhook.url, timeout_s=2).send("refused")
    closed = webhook.url.replace(webhook.url.split("/")[2], "127.0.0.1:9")  # the discard port: refused
    with pytest.raises(WebhookError) as unreachable:
        Notifier(url=closed, timeout_s=2, attempts=1).send("unreachable")
    assert "HTTP 500" in str(refused.value) and "127.0.0.1" in str(unreachable.value)

    # An unusable value is refused without echoing it.
    monkeypatch.setenv("PIPELINE_NOTIFY_WEBHOOK_URL", f"hooks.slack.com/services/{SECRET}")
    with pytest.raises(SettingsError) as refused_setting:
        OperationsSettings.from_env()

    everything = [
        caplog.text,
        *webhook.texts(),
        str(refused.value),
        str(unreachable.value),
        str(refused_setting.value),
        *(event.message or "" for event in instance.all_logs(result.run_id)),
    ]
    assert "sent to http://127.0.0.1:" in caplog.text  # the notifier did log, with the host only
    assert not [text for text in everything if SECRET in text or "/services/T000" in text]
