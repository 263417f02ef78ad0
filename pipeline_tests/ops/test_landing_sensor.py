"""The landing sensor, evaluated directly with a real instance and landing zone: late files and
re-delivered files of loaded days are re-run, exactly those days, once; the work per tick is
bounded and the cursor carries it on."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, build_sensor_context
from dagster._core.test_utils import create_run_for_test
from deltalake import DeltaTable, Field

from pipeline.cli.generate import generate_landing_zone
from pipeline.orchestration.jobs import daily_job, freshness_checks
from pipeline.orchestration.operations import OperationsSettings
from pipeline.orchestration.sensors import LandingCursor, build_landing_sensor
from pipeline.sources import configured_sources
from pipeline_tests.conftest import PipelineEnv, day, materialize_range
from pipeline_tests.ops.conftest import execute_request, materialized_partitions, pipeline_resource

NOW = dt.datetime(2024, 1, 20, 12, 0, tzinfo=dt.UTC)  # window: 2024-01-13..19
LINE = '198.51.100.{n} - - [{day}:{hour:02d}:30:00 +0000] "GET /late/{n} HTTP/1.1" 200 {n} "-" "late-agent/1.0"'


def landing_sensor(**overrides: int):  # type: ignore[no-untyped-def]
    """The access landing sensor with a fixed clock and the given limits."""
    spec = configured_sources()["access"]
    settings = OperationsSettings(**overrides)  # type: ignore[arg-type]
    return build_landing_sensor(spec, daily_job(spec, freshness_checks(spec)), settings, clock=lambda: NOW)


def tick(sensor, instance: DagsterInstance, cursor: str | None):  # type: ignore[no-untyped-def]
    """One evaluation, as the daemon does it: the sensor result (requests, skip reason, cursor)."""
    with build_sensor_context(instance=instance, cursor=cursor, resources={"pipeline": pipeline_resource()}) as context:
        return sensor(context)


def requested(result) -> list[str]:  # type: ignore[no-untyped-def]
    return [request.partition_key for request in result.run_requests or []]


def write_log(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def loaded_landing(env: PipelineEnv, instance: DagsterInstance) -> None:
    """Four days landed, three of them (16..18) loaded; the 18th lacks hour 23."""
    generate_landing_zone(
        env.landing,
        [day("2024-01-16"), day("2024-01-17"), day("2024-01-18"), day("2024-01-19")],
        sources=["access"],
        lines_per_hour=6,
        missing_hours={("access", day("2024-01-18")): {23}},
    )
    result = materialize_range(
        env.definitions(), instance, "2024-01-16", "2024-01-18", selection=["access/events", "access/dlq"]
    )
    assert result.success


def test_late_and_redelivered_files_rerun_exactly_their_day(
    pipeline_env: PipelineEnv, instance: DagsterInstance
) -> None:
    loaded_landing(pipeline_env, instance)
    sensor = landing_sensor()
    first = tick(sensor, instance, None)
    assert requested(first) == []
    assert first.skip_reason.skip_message == "access: no loaded day changed (scanned 2024-01-13..2024-01-19)"
    assert LandingCursor.loads(first.cursor) == LandingCursor(next_day="2024-01-13", requested={})

    before = dict(pipeline_env.query("SELECT partition_date, count(*) FROM access.events GROUP BY 1"))
    # A late file for hour 23 of the 18th; a re-delivered file of the 16th with new content of
    # the same size (GET -> PUT); a stray non-log file on the 17th (ignored by the ingest too).
    write_log(
        pipeline_env.landing / "access/dt=2024-01-18/hour=23/late.log",
        [LINE.format(n=n, day="18/Jan/2024", hour=23) for n in range(3)],
    )
    redelivered = pipeline_env.landing / "access/dt=2024-01-16/hour=05/web-01.log"
    content = redelivered.read_text()
    redelivered.write_text(content.replace('"GET ', '"PUT ', 1))
    assert len(redelivered.read_text()) == len(content)
    (pipeline_env.landing / "access/dt=2024-01-17/hour=02/notes.txt").write_text("operator notes")

    second = tick(sensor, instance, first.cursor)
    assert requested(second) == ["2024-01-16", "2024-01-18"]
    cursor = LandingCursor.loads(second.cursor)
    assert set(cursor.requested) == {"2024-01-16", "2024-01-18"}
    for request in second.run_requests:
        fingerprint = cursor.requested[request.partition_key]
        assert request.run_key == f"landing:access:{request.partition_key}:{fingerprint}"
        assert request.tags == {
            "pipeline/trigger": "landing_sensor",
            "dagster/priority": "5",
            "pipeline/landing_fingerprint": fingerprint,
        }

    # Evaluated again before the runs happened: nothing is requested twice.
    third = tick(sensor, instance, second.cursor)
    assert requested(third) == []
    assert "2024-01-16 changed; a run for exactly these files was already requested" in third.skip_reason.skip_message

    defs = pipeline_env.definitions()
    for request in second.run_requests:
        result = execute_request(defs, instance, request)
        assert result.success
        assert set(materialized_partitions(result, "access/events")) == {request.partition_key}
    after = dict(pipeline_env.query("SELECT partition_date, count(*) FROM access.events GROUP BY 1"))
    assert after[day("2024-01-18")] == before[day("2024-01-18")] + 3
    assert after[day("2024-01-16")] == before[day("2024-01-16")]
    assert after[day("2024-01-17")] == before[day("2024-01-17")]
    assert pipeline_env.query(
        "SELECT count(*) FROM access.events WHERE partition_date = '2024-01-16' AND method = 'PUT'"
    ) == [(1,)]

    fourth = tick(sensor, instance, third.cursor)
    assert requested(fourth) == []
    assert fourth.skip_reason.skip_message.startswith("access: no loaded day changed")


def test_work_per_tick_is_bounded_and_resumes_from_the_cursor(
    pipeline_env: PipelineEnv, instance: DagsterInstance
) -> None:
    loaded_landing(pipeline_env, instance)
    for day_text in ("16", "17", "18"):
        write_log(
            pipeline_env.landing / f"access/dt=2024-01-{day_text}/hour=23/late.log",
            [LINE.format(n=1, day=f"{day_text}/Jan/2024", hour=23)],
        )
    sensor = landing_sensor(landing_days_per_tick=2, landing_runs_per_tick=1)
    cursor = None
    per_tick = []
    for _ in range(5):
        result = tick(sensor, instance, cursor)
        per_tick.append((requested(result), LandingCursor.loads(result.cursor).next_day))
        cursor = result.cursor
    assert per_tick == [
        ([], "2024-01-15"),  # 13, 14: nothing loaded there
        (["2024-01-16"], "2024-01-17"),  # 15, 16
        (["2024-01-17"], "2024-01-18"),  # 17, then the one-run limit stops the tick
        (["2024-01-18"], "2024-01-19"),
        ([], "2024-01-14"),  # 19 (never loaded: the schedule's business), 13
    ]


def test_days_with_a_run_in_flight_are_left_alone(pipeline_env: PipelineEnv, instance: DagsterInstance) -> None:
    loaded_landing(pipeline_env, instance)
    write_log(
        pipeline_env.landing / "access/dt=2024-01-17/hour=23/late.log",
        [LINE.format(n=1, day="17/Jan/2024", hour=23)],
    )
    create_run_for_test(
        instance,
        job_name="access_daily",
        status=DagsterRunStatus.STARTED,
        tags={"dagster/partition": "2024-01-17"},
        asset_selection={AssetKey(["access", "events"]), AssetKey(["access", "dlq"])},
    )
    result = tick(landing_sensor(), instance, None)
    assert requested(result) == []
    assert "2024-01-17 changed but a run is already queued or running for it" in result.skip_reason.skip_message


def test_another_sources_run_of_the_day_does_not_hold_the_rerun_back(
    pipeline_env: PipelineEnv, instance: DagsterInstance
) -> None:
    """Fault: a late access file for 2024-01-17 while `app_daily` runs for that day (a schedule or
    sensor run of a job: no asset selection). Expected: the access day is re-run; an
    `access_daily` run of the day, also without an asset selection, does hold it back."""
    loaded_landing(pipeline_env, instance)
    write_log(
        pipeline_env.landing / "access/dt=2024-01-17/hour=23/late.log",
        [LINE.format(n=1, day="17/Jan/2024", hour=23)],
    )
    create_run_for_test(
        instance, job_name="app_daily", status=DagsterRunStatus.STARTED, tags={"dagster/partition": "2024-01-17"}
    )
    assert requested(tick(landing_sensor(), instance, None)) == ["2024-01-17"]
    create_run_for_test(
        instance, job_name="access_daily", status=DagsterRunStatus.STARTING, tags={"dagster/partition": "2024-01-17"}
    )
    result = tick(landing_sensor(), instance, None)
    assert requested(result) == []
    assert "2024-01-17 changed but a run is already queued or running for it" in result.skip_reason.skip_message


def test_days_loaded_before_fingerprints_compare_files_and_bytes(
    pipeline_env: PipelineEnv, instance: DagsterInstance
) -> None:
    """The sensor compares a day's files now with the landing fingerprint of its latest sealed
    attempt in `loads` (every load records one; nothing else is read, no Dagster
    materialization): the same files and bytes mean no run; another file, or more bytes in the
    same file, mean one; once that re-run has sealed the day, its fingerprint is the new one."""
    folder = pipeline_env.landing / "access/dt=2024-01-15/hour=07"
    write_log(folder / "a.log", [LINE.format(n=n, day="15/Jan/2024", hour=7) for n in range(4)])
    size = (folder / "a.log").stat().st_size
    defs = pipeline_env.definitions()
    assert materialize_range(defs, instance, "2024-01-15", None, ["access/events", "access/dlq"]).success
    [sealed] = pipeline_env.attempts("access", "2024-01-15")
    assert (sealed["status"], sealed["files"], sealed["bytes_read"], sealed["rows_loaded"]) == ("loaded", 1, size, 4)
    assert sealed["landing_fingerprint"]
    sensor = landing_sensor()
    unchanged = tick(sensor, instance, None)
    assert requested(unchanged) == []
    assert unchanged.skip_reason.skip_message == "access: no loaded day changed (scanned 2024-01-13..2024-01-19)"

    # One more file: two files now, against one recorded.
    write_log(folder / "b.log", [LINE.format(n=9, day="15/Jan/2024", hour=7)])
    assert requested(tick(sensor, instance, None)) == ["2024-01-15"]
    # The file removed again: the same files and bytes as loaded, nothing to do.
    (folder / "b.log").unlink()
    assert requested(tick(sensor, instance, None)) == []
    # More bytes in the same file (one file, as recorded).
    with (folder / "a.log").open("a") as stream:
        stream.write(LINE.format(n=5, day="15/Jan/2024", hour=7) + "\n")
    changed = tick(sensor, instance, None)
    assert requested(changed) == ["2024-01-15"]
    [request] = changed.run_requests
    assert request.tags["pipeline/landing_fingerprint"] != sealed["landing_fingerprint"]

    # The re-run seals the day with the new fingerprint (attempt 2): no further run.
    assert execute_request(defs, instance, request).success
    latest = pipeline_env.attempts("access", "2024-01-15")[-1]
    assert (latest["attempt"], latest["status"], latest["files"], latest["rows_loaded"]) == (2, "loaded", 1, 5)
    assert latest["bytes_read"] > size
    assert latest["landing_fingerprint"] == request.tags["pipeline/landing_fingerprint"]
    assert requested(tick(sensor, instance, changed.cursor)) == []
    assert requested(tick(sensor, instance, None)) == []


def test_a_failed_rerun_is_requested_again_up_to_the_attempt_limit(
    pipeline_env: PipelineEnv, instance: DagsterInstance, capfd: pytest.CaptureFixture[str]
) -> None:
    """Fault: the re-run of a day with a late file fails (someone added a column to the Delta
    table by hand). Expected: a later tick requests the day again, under a new run key, until
    `landing_max_attempts` runs for those files have failed; then the sensor says so (a warning
    once, a note on every tick) instead of forgetting the day silently."""
    loaded_landing(pipeline_env, instance)
    write_log(
        pipeline_env.landing / "access/dt=2024-01-17/hour=23/late.log",
        [LINE.format(n=1, day="17/Jan/2024", hour=23)],
    )
    DeltaTable(str(pipeline_env.lake / "access" / "events")).alter.add_columns(
        [Field("surprise", "integer", nullable=True)]
    )
    sensor = landing_sensor(landing_max_attempts=2)
    defs = pipeline_env.definitions()

    first = tick(sensor, instance, None)
    [request] = first.run_requests
    fingerprint = request.tags["pipeline/landing_fingerprint"]
    assert request.run_key == f"landing:access:2024-01-17:{fingerprint}"
    # Before its run exists, it is not requested twice.
    assert requested(tick(sensor, instance, first.cursor)) == []
    assert not execute_request(defs, instance, request).success

    second = tick(sensor, instance, first.cursor)
    [again] = second.run_requests
    assert (again.partition_key, again.run_key) == ("2024-01-17", f"landing:access:2024-01-17:{fingerprint}:attempt2")
    assert again.tags == request.tags
    failed = execute_request(defs, instance, again)
    assert not failed.success

    capfd.readouterr()
    third = tick(sensor, instance, second.cursor)
    assert requested(third) == []
    note = (
        "2024-01-17 changed; 2 run(s) for exactly these files failed (the last: "
        f"http://127.0.0.1:3000/runs/{failed.run_id}): not requested again (PIPELINE_LANDING_MAX_ATTEMPTS=2); "
        "fix the cause and re-run the day"
    )
    assert note in third.skip_reason.skip_message
    assert capfd.readouterr().err.count(f"WARNING - access {note}") == 1
    # Said once as a warning; every later tick still shows it in its skip reason.
    fourth = tick(sensor, instance, third.cursor)
    assert requested(fourth) == [] and note in fourth.skip_reason.skip_message
    assert "WARNING - access" not in capfd.readouterr().err
    # New files for the day are new work: requested at once (their own attempts).
    write_log(
        pipeline_env.landing / "access/dt=2024-01-17/hour=22/later.log",
        [LINE.format(n=2, day="17/Jan/2024", hour=22)],
    )
    [fresh] = tick(sensor, instance, fourth.cursor).run_requests
    assert fresh.tags["pipeline/landing_fingerprint"] != fingerprint
    assert fresh.run_key == f"landing:access:2024-01-17:{fresh.tags['pipeline/landing_fingerprint']}"
