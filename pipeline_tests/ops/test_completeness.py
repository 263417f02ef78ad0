"""The weekly missing-hours backfill: the schedule scans a window and re-runs exactly the days
whose missing hours have landed since; the reporter completes the backfill stats manifest when
those runs end and sends its sentence. Every exit path writes the manifest."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from dagster import DagsterInstance, build_schedule_context, build_sensor_context
from deltalake import DeltaTable, Field

from pipeline.cli.generate import generate_landing_zone
from pipeline.engine.completeness import COMPLETE, CompletenessReport, write_report
from pipeline.engine.objects import LocalObjectStore, ObjectStore
from pipeline.orchestration.operations import OperationsSettings
from pipeline.orchestration.resources import PipelineResource
from pipeline.orchestration.sensors import build_completeness_reporter
from pipeline.settings import Settings
from pipeline.sources import configured_sources
from pipeline_tests.conftest import PipelineEnv, day, materialize_range
from pipeline_tests.ops.conftest import Webhook, execute_request, pipeline_resource

WINDOW = [day("2024-01-20") + dt.timedelta(days=offset) for offset in range(7)]
TICK = dt.datetime(2024, 1, 27, 4, 0, tzinfo=dt.UTC)  # the window is the seven days before
REPORT = Path("backfills/access/2024-01-20..2024-01-26.json")
LINE = '203.0.113.{n} - - [{day}:{hour:02d}:15:00 +0000] "GET /recovered/{n} HTTP/1.1" 200 {n} "-" "agent/2.0"'


def land_and_load(env: PipelineEnv, instance: DagsterInstance, missing: dict[str, set[int]]) -> None:
    """Land the window with the given hours missing, and load it (hours missing as landed)."""
    generate_landing_zone(
        env.landing,
        WINDOW,
        sources=["access"],
        lines_per_hour=4,
        bad_line_rate=0.0,
        missing_hours={("access", day(key)): hours for key, hours in missing.items()},
    )
    assert materialize_range(
        env.definitions(), instance, "2024-01-20", "2024-01-26", ["access/events", "access/dlq"]
    ).success


def land_late(env: PipelineEnv, key: str, hour: int, lines: int = 2) -> None:
    """A file that lands after its day was loaded."""
    when = day(key)
    path = env.landing / f"access/dt={key}/hour={hour:02d}/late.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(LINE.format(n=n, day=when.strftime("%d/%b/%Y"), hour=hour) + "\n" for n in range(lines)))


def run_schedule(env: PipelineEnv, instance: DagsterInstance) -> Any:
    """Evaluate the access completeness schedule's tick for TICK."""
    defs = env.definitions()
    schedule = defs.resolve_schedule_def("access_completeness_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 4 * * 1", "UTC")
    with build_schedule_context(
        instance=instance,
        repository_def=defs.get_repository_def(),
        scheduled_execution_time=TICK,
        resources={"pipeline": pipeline_resource()},
    ) as context:
        return schedule.evaluate_tick(context)


def report(env: PipelineEnv) -> dict[str, Any]:
    return json.loads((env.output / REPORT).read_text())  # type: ignore[no-any-return]


def reporter_tick(instance: DagsterInstance, hook: Webhook, cursor: str | None, now: dt.datetime) -> Any:
    sensor = build_completeness_reporter(
        [configured_sources()["access"]], OperationsSettings(webhook_url=hook.url), clock=lambda: now
    )
    with build_sensor_context(instance=instance, cursor=cursor, resources={"pipeline": pipeline_resource()}) as context:
        return sensor(context)


def test_recovers_the_hours_that_arrived(
    pipeline_env: PipelineEnv, instance: DagsterInstance, webhook: Webhook
) -> None:
    land_and_load(pipeline_env, instance, {"2024-01-21": {4}, "2024-01-22": {5, 6}, "2024-01-23": {10, 11}})
    before = dict(pipeline_env.query("SELECT partition_date, count(*) FROM access.events GROUP BY 1"))
    land_late(pipeline_env, "2024-01-21", 4)
    land_late(pipeline_env, "2024-01-23", 10)
    land_late(pipeline_env, "2024-01-23", 11)

    tick = run_schedule(pipeline_env, instance)
    planned = (
        "access: Re-running 2 days of 2024-01-20..26 to recover 3 hours that arrived late "
        "(2024-01-21: 04; 2024-01-23: 10-11). Still missing: 2024-01-22: 05-06."
    )
    assert tick.skip_message is None
    assert [request.partition_key for request in tick.run_requests] == ["2024-01-21", "2024-01-23"]
    for request in tick.run_requests:
        assert request.run_key == f"completeness:access:2024-01-20..2024-01-26:{request.partition_key}"
        assert request.tags["pipeline/completeness"] == "access:2024-01-20..2024-01-26"
        assert request.tags["pipeline/trigger"] == "completeness"
    manifest = report(pipeline_env)
    assert (manifest["status"], manifest["message"], manifest["hours_to_recover"]) == ("requested", planned, 3)
    assert manifest["dates_to_process"] == ["2024-01-21", "2024-01-23"]

    # The runs are not there yet: the reporter waits and sends nothing.
    waiting = reporter_tick(instance, webhook, None, TICK + dt.timedelta(minutes=5))
    assert waiting.skip_reason is not None and webhook.messages == []

    defs = pipeline_env.definitions()
    run_ids = [execute_request(defs, instance, request).run_id for request in tick.run_requests]
    done = reporter_tick(instance, webhook, waiting.cursor, TICK + dt.timedelta(minutes=20))
    final = (
        "access: Recovered 3 hours for 2024-01-20..26 (2024-01-21: 04; 2024-01-23: 10-11). "
        "Still missing: 2024-01-22: 05-06."
    )
    assert webhook.texts() == [final]
    manifest = report(pipeline_env)
    assert manifest["status"] == "recovered"
    assert manifest["message"] == final
    assert (manifest["dates_processed"], manifest["hours_recovered"]) == (2, 3)
    assert manifest["still_missing"] == {"2024-01-22": [5, 6]}
    assert sorted(manifest["run_ids"]) == sorted(run_ids)
    assert manifest["notification"].startswith("sent 2024-01-27T04:20:00")
    after = dict(pipeline_env.query("SELECT partition_date, count(*) FROM access.events GROUP BY 1"))
    assert after[day("2024-01-21")] == before[day("2024-01-21")] + 2
    assert after[day("2024-01-23")] == before[day("2024-01-23")] + 4
    assert {key: value for key, value in after.items() if key not in (day("2024-01-21"), day("2024-01-23"))} == {
        key: value for key, value in before.items() if key not in (day("2024-01-21"), day("2024-01-23"))
    }
    # A further tick sends nothing more.
    assert reporter_tick(instance, webhook, done.cursor, TICK + dt.timedelta(minutes=30)).skip_reason is not None
    assert len(webhook.messages) == 1


def test_nothing_missing_and_nothing_arrived_are_reported_too(
    pipeline_env: PipelineEnv, instance: DagsterInstance, webhook: Webhook
) -> None:
    """The early exits write their manifest, and the notification says something meaningful."""
    land_and_load(pipeline_env, instance, {})
    tick = run_schedule(pipeline_env, instance)
    assert tick.run_requests == []
    assert tick.skip_message == "access: No missing hours in 2024-01-20..26."
    manifest = report(pipeline_env)
    assert (manifest["status"], manifest["dates_processed"], manifest["hours_recovered"]) == ("complete", 0, 0)
    assert manifest["still_missing"] == {}
    first = reporter_tick(instance, webhook, None, TICK)
    assert webhook.texts() == ["access: No missing hours in 2024-01-20..26."]
    assert report(pipeline_env)["notification"] == "sent 2024-01-27T04:00:00+00:00"

    # Hours go missing (a folder removed and the day re-loaded) and nothing lands since.
    for hour in (5, 6):
        for path in (pipeline_env.landing / f"access/dt=2024-01-22/hour={hour:02d}").iterdir():
            path.unlink()
    assert materialize_range(
        pipeline_env.definitions(), instance, "2024-01-22", None, ["access/events", "access/dlq"]
    ).success
    tick = run_schedule(pipeline_env, instance)
    still = "access: Still missing in 2024-01-20..26: 2024-01-22: 05-06. No late file has arrived for them."
    assert tick.run_requests == [] and tick.skip_message == still
    assert (report(pipeline_env)["status"], report(pipeline_env)["still_missing"]) == (
        "still_missing",
        {"2024-01-22": [5, 6]},
    )
    reporter_tick(instance, webhook, first.cursor, TICK)
    assert webhook.texts()[-1] == still


def test_a_failed_or_unlaunched_rerun_is_reported(
    pipeline_env: PipelineEnv, instance: DagsterInstance, webhook: Webhook
) -> None:
    land_and_load(pipeline_env, instance, {"2024-01-21": {4}, "2024-01-23": {10, 11}, "2024-01-25": {0}})
    for key, hour in (("2024-01-21", 4), ("2024-01-23", 10), ("2024-01-23", 11), ("2024-01-25", 0)):
        land_late(pipeline_env, key, hour)
    tick = run_schedule(pipeline_env, instance)
    by_day = {request.partition_key: request for request in tick.run_requests}
    assert list(by_day) == ["2024-01-21", "2024-01-23", "2024-01-25"]
    defs = pipeline_env.definitions()
    assert execute_request(defs, instance, by_day["2024-01-21"]).success
    # The re-run of the 23rd fails (the table no longer has the declared columns: someone added
    # one to the Delta table by hand); the 25th's run is never launched.
    before = dict(pipeline_env.query("SELECT partition_date, count(*) FROM access.events GROUP BY 1"))
    events = DeltaTable(str(pipeline_env.lake / "access" / "events"))
    events.alter.add_columns([Field("surprise", "integer", nullable=True)])
    failed = execute_request(defs, instance, by_day["2024-01-23"])
    assert not failed.success
    # The failed re-run is on record: its attempt in `loads` and the manifest written from it say
    # why; the day still shows what its last complete load left.
    latest = pipeline_env.attempts("access", "2024-01-23")[-1]
    assert (latest["status"], latest["run_id"], latest["attempt"]) == ("failed", failed.run_id, 2)
    assert latest["error"].startswith("SchemaChangeError: source 'access': the definition no longer matches")
    assert "access.events: field 'surprise' (integer) is in the table but no longer declared" in latest["error"]
    manifest = pipeline_env.manifest("access", "2024-01-23")
    assert (manifest["status"], manifest["error"]) == ("failed", latest["error"])
    after = dict(pipeline_env.query("SELECT partition_date, count(*) FROM access.events GROUP BY 1"))
    assert after[day("2024-01-23")] == before[day("2024-01-23")]

    # Within the launch grace period, the window waits for the 25th.
    assert reporter_tick(instance, webhook, None, TICK + dt.timedelta(minutes=10)).skip_reason is not None
    assert webhook.messages == []
    reporter_tick(instance, webhook, None, TICK + dt.timedelta(minutes=45))
    final = (
        "access: Recovered 1 hour for 2024-01-20..26 (2024-01-21: 04). Re-run did not finish for "
        f"2024-01-23 (run {failed.run_id[:8]} failed); 2024-01-25 (no run was launched). "
        "Still missing: 2024-01-23: 10-11; 2024-01-25: 00."
    )
    assert webhook.texts() == [final]
    manifest = report(pipeline_env)
    assert (manifest["status"], manifest["hours_recovered"]) == ("incomplete", 1)
    outcomes = {entry["day"]: entry["outcome"] for entry in manifest["days"] if entry["rerun"]}
    assert outcomes == {"2024-01-21": "loaded", "2024-01-23": "failed", "2024-01-25": "not_run"}


class ReadCountingStore(LocalObjectStore):
    """The output folder, counting the manifests opened (what the reporter reads per tick)."""

    opened: ClassVar[list[str]] = []

    def open(self, key: str) -> BinaryIO:
        ReadCountingStore.opened.append(key)
        return super().open(key)


class ReadCountingPipeline(PipelineResource):
    """The `pipeline` resource with its output store counting reads."""

    def output(self) -> ObjectStore:
        return ReadCountingStore(Path(self.output_url))


def counted_tick(hook: Webhook, instance: DagsterInstance, cursor: str | None) -> tuple[Any, list[str]]:
    """One reporter tick; its result and the manifests it read."""
    ReadCountingStore.opened.clear()
    sensor = build_completeness_reporter(
        [configured_sources()["access"]], OperationsSettings(webhook_url=hook.url), clock=lambda: TICK
    )
    resources = {"pipeline": ReadCountingPipeline.from_settings(Settings.from_env())}
    with build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
        result = sensor(context)
    return result, list(ReadCountingStore.opened)


def test_a_tick_reads_only_manifests_new_or_changed_since_its_cursor(
    pipeline_env: PipelineEnv, instance: DagsterInstance, webhook: Webhook
) -> None:
    """Finished manifests pile up (one per source and week, forever): a tick must not read them
    all again; a new manifest, or one a rescan rewrote, is still read and sent."""
    output = LocalObjectStore(pipeline_env.output)
    weeks = [day("2023-01-02") + dt.timedelta(weeks=week) for week in range(10)]

    def scanned(start: dt.date) -> CompletenessReport:
        end = start + dt.timedelta(days=6)
        return CompletenessReport("access", start.isoformat(), end.isoformat(), COMPLETE, [], TICK.isoformat())

    keys = [write_report(output, scanned(start)).removeprefix(f"{pipeline_env.output}/") for start in weeks]

    first, read = counted_tick(webhook, instance, None)
    assert sorted(read) == keys and len(webhook.messages) == 10
    # The manifests it just wrote (notification recorded) are read once more, found finished.
    second, read = counted_tick(webhook, instance, first.cursor)
    assert sorted(read) == keys and len(webhook.messages) == 10
    third, read = counted_tick(webhook, instance, second.cursor)
    assert read == [] and third.skip_reason is not None

    # A new week, and a rescan of an old one (rewritten with no notification): exactly those are read and sent.
    new = write_report(output, scanned(day("2023-03-13"))).removeprefix(f"{pipeline_env.output}/")
    write_report(output, scanned(weeks[3]))
    fourth, read = counted_tick(webhook, instance, third.cursor)
    assert sorted(read) == sorted([new, keys[3]])
    assert webhook.texts()[10:] == [
        "access: No missing hours in 2023-01-23..29.",
        "access: No missing hours in 2023-03-13..19.",
    ]
    fifth, read = counted_tick(webhook, instance, fourth.cursor)
    assert sorted(read) == sorted([new, keys[3]])
    assert counted_tick(webhook, instance, fifth.cursor)[1] == []
    assert len(webhook.messages) == 12
