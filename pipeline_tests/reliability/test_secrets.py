"""Secrets never leak into logs, metadata, manifests, the lake or notifications.

Fault: recognisable secrets in the environment (`AWS_SECRET_ACCESS_KEY`, a webhook URL whose
path is a token, `DAGSTER_PG_PASSWORD`), then a successful local run, a run failing against an
unreachable S3 endpoint (an error path, where credentials are most likely to be echoed), and the
success/failure notifications of both runs.
Expected: none of the secrets appears anywhere that is kept or sent: the Dagster event log of
both runs (every event, its metadata, error texts and stack traces), the stored job snapshot
(resource defaults), the manifests, the lake's tables and Delta logs, the webhook messages, and every
Python log record emitted meanwhile (DEBUG included: urllib3, botocore).
"""

from __future__ import annotations

import logging

import pytest
from dagster import AssetKey, DagsterInstance, ExecuteInProcessResult, RetryPolicy, build_run_status_sensor_context
from dagster._serdes import serialize_value

from pipeline.orchestration.operations import OperationsSettings
from pipeline.orchestration.sensors import build_failure_notifier, build_success_notifier
from pipeline.sources import configured_sources
from pipeline_tests.conftest import PipelineEnv
from pipeline_tests.ops.conftest import Webhook, pipeline_resource, webhook  # noqa: F401 - the fixture
from pipeline_tests.reliability.test_bad_configuration import closed_port
from pipeline_tests.reliability.test_hostile_input import access_line, land

AWS_SECRET = "AwsSecret-9f3KqReliability"
PG_PASSWORD = "PgPassword-7731Reliability"
WEBHOOK_TOKEN = "s3cr3t-token"  # the token in the `webhook` fixture's URL path

pytestmark = pytest.mark.slow


def event_log_text(instance: DagsterInstance, run_id: str) -> str:
    """Everything the instance stores about a run: every event (serialised whole) and its job snapshot."""
    run = instance.get_run_by_id(run_id)
    assert run is not None
    parts = [serialize_value(entry) for entry in instance.all_logs(run_id)]
    parts.append(serialize_value(run))
    if run.job_snapshot_id:
        parts.append(serialize_value(instance.get_job_snapshot(run.job_snapshot_id)))
    return "\n".join(parts)


def run_partition(env: PipelineEnv, instance: DagsterInstance, partition: str) -> ExecuteInProcessResult:
    """`access/events` + `access/dlq` of one day, selected as the UI and CLI select them."""
    # Not `materialize_range`: a job subset does not record the asset selection on the run, and
    # the notifications name the run's assets from it, as for a UI or CLI launch.
    return (
        env.definitions()
        .resolve_implicit_global_asset_job_def()
        .execute_in_process(
            instance=instance,
            asset_selection=[AssetKey(["access", "events"]), AssetKey(["access", "dlq"])],
            tags={"dagster/asset_partition_range_start": partition, "dagster/asset_partition_range_end": partition},
            raise_on_error=False,
        )
    )


def notify(sensor: object, instance: DagsterInstance, run_id: str, event: object, failure: bool) -> None:
    with build_run_status_sensor_context(
        sensor_name=sensor.name,  # type: ignore[attr-defined]
        dagster_event=event,  # type: ignore[arg-type]
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(run_id),  # type: ignore[arg-type]
        resources={"pipeline": pipeline_resource()},
    ) as context:
        sensor(context.for_run_failure() if failure else context)  # type: ignore[operator]


def test_secrets_never_appear_in_logs_metadata_manifests_or_notifications(
    pipeline_env: PipelineEnv,
    instance: DagsterInstance,
    webhook: Webhook,  # noqa: F811 - the imported fixture
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Fault: secrets set in the environment; one good run, one run failing on S3; notifications.
    Expected: each secret is absent from every place listed in the module docstring, while the
    notifications were really sent (2 messages) and the failure names the endpoint."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIARELIABILITYTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", PG_PASSWORD)
    monkeypatch.setenv("PIPELINE_NOTIFY_WEBHOOK_URL", webhook.url)
    assert WEBHOOK_TOKEN in webhook.url
    lines = [access_line(n, status=200 if n % 100 else 999) for n in range(200)]
    land(pipeline_env.landing, "access", 10, "web.log", "".join(f"{line}\n" for line in lines).encode())

    settings = OperationsSettings.from_env()
    assert settings.webhook_url == webhook.url
    specs = list(configured_sources().values())
    good = run_partition(pipeline_env, instance, "2024-01-15")
    assert good.success
    notify(build_success_notifier(specs, settings), instance, good.run_id, good.get_run_success_event(), False)

    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("PIPELINE_LANDING_URL", "s3://landing/logs")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    from pipeline.orchestration import assets as assets_module

    monkeypatch.setattr(assets_module, "INGEST_RETRY_POLICY", RetryPolicy(max_retries=1, delay=0.1))
    bad = run_partition(pipeline_env, instance, "2024-01-16")
    assert not bad.success
    failure_event = bad.get_run_failure_event()
    notify(build_failure_notifier(settings), instance, bad.run_id, failure_event, True)

    texts = webhook.texts()
    assert len(texts) == 2
    assert "access 2024-01-15: 198 rows loaded, 2 quarantined" in texts[0]
    # The failure names the real error, not only "Exceeded max_retries" (fixed in sensors.py).
    assert (
        "Exceeded max_retries of 1; last error: access 2024-01-16 failed: ObjectStoreError: S3 ListObjectsV2"
        in texts[1]
    )
    assert "ObjectStoreError: S3 ListObjectsV2" in texts[1]
    assert endpoint in texts[1]

    haystacks = {
        "event log (good run)": event_log_text(instance, good.run_id),
        "event log (failed run)": event_log_text(instance, bad.run_id),
        "manifests": "\n".join(path.read_text() for path in sorted(pipeline_env.output.rglob("*.json"))),
        "lake": repr(pipeline_env.query("SELECT * FROM access.events"))
        + repr(pipeline_env.query("SELECT * FROM access.dlq"))
        + repr(pipeline_env.query("SELECT * FROM access.loads")),
        "delta logs": "\n".join(path.read_text() for path in sorted(pipeline_env.lake.rglob("_delta_log/*.json"))),
        "notifications": "\n".join(texts),
        "python logs": "\n".join(record.getMessage() for record in caplog.records)
        + "\n".join(str(record.exc_info) + str(record.exc_text) for record in caplog.records),
    }
    assert "2024-01-16" in haystacks["manifests"]  # the failed day has its manifest too
    for place, text in haystacks.items():
        assert text, place
        for secret in (AWS_SECRET, PG_PASSWORD, WEBHOOK_TOKEN, webhook.url):
            assert secret not in text, f"{secret!r} found in {place}"
