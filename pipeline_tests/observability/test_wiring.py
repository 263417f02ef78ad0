"""The operational metrics and the volume check as the ingest step produces them (through
Dagster, against a real Pushgateway and the lake's `loads` table)."""

from __future__ import annotations

import datetime as dt

import pytest
from dagster import DagsterInstance

from pipeline.cli.generate import generate_landing_zone
from pipeline_tests.conftest import PipelineEnv, day, materialize_range
from pipeline_tests.observability.conftest import Gateway

GROUP = {("instance", ""), ("job", "__ASSET_JOB"), ("pipeline", "log_pipeline"), ("source", "access")}


def value(gateway: Gateway, name: str, **labels: str) -> float:
    """One pushed sample of the `access` group."""
    samples = gateway.samples()
    return samples[(name, frozenset(GROUP | set(labels.items())))]


def test_each_attempt_pushes_its_figures_and_the_sources_history(
    pipeline_env: PipelineEnv, instance: DagsterInstance, pushgateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loaded day, then an older empty day (a backfill), then a failed day: after each, the
    gateway holds the last attempt's figures, while the newest day loaded and the last success
    stay those of the loaded day."""
    monkeypatch.setenv("PIPELINE_PUSHGATEWAY_URL", pushgateway.url)
    generated = generate_landing_zone(pipeline_env.landing, [day("2024-01-16")], sources=["access"], lines_per_hour=20)
    loaded_rows = generated[0].records - generated[0].bad_records
    defs = pipeline_env.definitions()
    selection = ["access/events", "access/dlq", "access/daily_metrics"]
    assert materialize_range(defs, instance, "2024-01-16", selection=selection).success
    assert value(pushgateway, "pipeline_last_attempt_status", status="loaded") == 1
    assert value(pushgateway, "pipeline_last_attempt_rows_loaded") == loaded_rows
    (attempt,) = pipeline_env.attempts("access", "2024-01-16")
    assert value(pushgateway, "pipeline_last_success_timestamp_seconds") == pytest.approx(
        attempt["ended_at"].timestamp()
    )
    newest = dt.datetime(2024, 1, 16, tzinfo=dt.UTC).timestamp()
    assert value(pushgateway, "pipeline_newest_day_timestamp_seconds") == newest

    assert materialize_range(defs, instance, "2024-01-10", selection=selection).success  # nothing landed: empty
    assert value(pushgateway, "pipeline_last_attempt_status", status="empty") == 1
    assert value(pushgateway, "pipeline_last_attempt_missing_hours") == 24
    assert value(pushgateway, "pipeline_newest_day_timestamp_seconds") == newest
    assert value(pushgateway, "pipeline_newest_day_rows_loaded") == loaded_rows

    (pipeline_env.landing / "access" / "dt=2024-01-17" / "hour=01").mkdir(parents=True)
    (pipeline_env.landing / "access" / "dt=2024-01-17" / "hour=01" / "web.log.gz").write_bytes(b"not gzip at all")
    from pipeline.engine import ingest

    monkeypatch.setattr(ingest, "compute_daily_metrics", lambda *_: (_ for _ in ()).throw(OSError("disk gone")))
    generate_landing_zone(pipeline_env.landing, [day("2024-01-17")], sources=["access"], lines_per_hour=5)
    result = materialize_range(defs, instance, "2024-01-17", selection=selection, raise_on_error=False)
    assert not result.success
    assert value(pushgateway, "pipeline_last_attempt_status", status="failed") == 1
    assert value(pushgateway, "pipeline_last_attempt_rows_loaded") == 0
    assert value(pushgateway, "pipeline_newest_day_timestamp_seconds") == newest
    # No run id, no partition: the labels are the bounded grouping key (and `status`).
    labels = {name for (_metric, pairs) in pushgateway.samples() for name, _value in pairs}
    assert labels == {"instance", "job", "pipeline", "source", "status"}


def test_an_unreachable_gateway_never_fails_the_run(
    pipeline_env: PipelineEnv, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault: PIPELINE_PUSHGATEWAY_URL on a closed port. Expected: the run succeeds."""
    from pipeline_tests.ops.conftest import free_port

    monkeypatch.setenv("PIPELINE_PUSHGATEWAY_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("PIPELINE_PUSHGATEWAY_TIMEOUT_S", "0.5")
    generate_landing_zone(pipeline_env.landing, [day("2024-01-16")], sources=["access"], lines_per_hour=5)
    assert materialize_range(
        pipeline_env.definitions(), instance, "2024-01-16", selection=["access/events", "access/dlq"]
    ).success


def test_volume_normal_warns_on_a_day_far_below_its_weekday(
    pipeline_env: PipelineEnv, instance: DagsterInstance
) -> None:
    """Four Wednesdays of ~960 rows, then a Wednesday with a file per hour but almost no lines:
    the first three are not judged (too little history), the fourth passes, the fifth warns with
    the figures in a sentence."""
    wednesdays = [day("2024-01-03") + dt.timedelta(weeks=n) for n in range(5)]
    generate_landing_zone(pipeline_env.landing, wednesdays[:4], sources=["access"], lines_per_hour=40)
    generate_landing_zone(pipeline_env.landing, wednesdays[4:], sources=["access"], lines_per_hour=1)
    defs = pipeline_env.definitions()
    verdicts = {}
    for wednesday in wednesdays:
        result = materialize_range(defs, instance, wednesday.isoformat(), selection=["access/events", "access/dlq"])
        (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "volume_normal"]
        verdicts[wednesday.isoformat()] = evaluation
    outcomes = [verdicts[key].metadata["outcome"].value for key in sorted(verdicts)]
    assert outcomes == ["insufficient_history"] * 3 + ["passed", "warned"]
    low = verdicts["2024-01-31"]
    assert not low.passed and low.severity.value == "WARN"
    assert low.description.startswith("2024-01-31: 24 rows, 0.03x the usual ")
    assert low.description.endswith(" for a Wednesday (outside 0.5x-2x)")
    # The weeks it was judged against, as a table; the band as text.
    assert [record.data for record in low.metadata["sample"].value.records] == [
        {"day": key, "rows": verdicts[key].metadata["rows_loaded"].value} for key in sorted(verdicts)[:4][::-1]
    ]
    assert low.metadata["ratio_band"].value == "0.5x-2x the median"


def test_a_run_failing_before_any_day_pushes_failed(
    pipeline_env: PipelineEnv, instance: DagsterInstance, pushgateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault: the run cannot start its resources (an unusable PIPELINE_LANDING_URL), so no day is
    ever attempted. Expected: the run-failure sensor pushes `failed` for the source, keeping the
    history pushed before (the last success of an earlier run)."""
    from dagster import build_run_status_sensor_context

    from pipeline.orchestration.observability import build_run_failure_metrics
    from pipeline.sources import configured_sources
    from pipeline_tests.ops.conftest import pipeline_resource

    monkeypatch.setenv("PIPELINE_PUSHGATEWAY_URL", pushgateway.url)
    generate_landing_zone(pipeline_env.landing, [day("2024-01-16")], sources=["access"], lines_per_hour=5)
    assert materialize_range(
        pipeline_env.definitions(), instance, "2024-01-16", selection=["access/events", "access/dlq"]
    ).success
    success = value(pushgateway, "pipeline_last_success_timestamp_seconds")
    monkeypatch.setenv("PIPELINE_LANDING_URL", "s3://")
    result = materialize_range(
        pipeline_env.definitions(),
        instance,
        "2024-01-17",
        selection=["access/events", "access/dlq"],
        raise_on_error=False,
    )
    assert not result.success
    assert pipeline_env.attempts("access", "2024-01-17") == []
    monkeypatch.setenv("PIPELINE_LANDING_URL", str(pipeline_env.landing))
    sensor = build_run_failure_metrics(list(configured_sources().values()))
    with build_run_status_sensor_context(
        sensor_name=sensor.name,
        dagster_event=result.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),
        resources={"pipeline": pipeline_resource()},
    ) as context:
        sensor(context.for_run_failure())
    assert value(pushgateway, "pipeline_last_attempt_status", status="failed") == 1
    assert value(pushgateway, "pipeline_last_success_timestamp_seconds") == success
    assert ("pipeline_last_attempt_rows_loaded", frozenset(GROUP)) not in pushgateway.samples()
