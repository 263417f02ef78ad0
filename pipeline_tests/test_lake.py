"""The lake as its users meet it: schemas that evolve on purpose, migrations, time travel,
`pipeline query`, a retry that resumes where its run stopped, and weekly maintenance."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, DagsterInstance, RetryPolicy

from pipeline.cli.generate import generate_landing_zone
from pipeline.engine.lake import SchemaChangeError
from pipeline_tests.conftest import PROJECT_ROOT, PipelineEnv, day, materialize_range

# A minimal source of our own: `2024-01-15T10:00:00Z INFO 42` (the code is optional).
KV_PATTERN = r"^(?P<timestamp>\S+) (?P<level>[A-Z]+)(?: (?P<code>\S+))?$"


def kv_source(*, fields: dict[str, object], metrics: dict[str, str] | None = None) -> dict[str, object]:
    return {
        "description": "level and code per line",
        "first_day": "2024-01-01",
        "pattern": KV_PATTERN,
        "timestamp": {"field": "timestamp", "format": "%Y-%m-%dT%H:%M:%SZ"},
        "fields": fields,
        "daily_metrics": metrics or {"records": "count(*)"},
    }


def declare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: dict[str, object]) -> None:
    """Point PIPELINE_SOURCES_FILE at a file declaring only the `kv` source."""
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump({"sources": {"kv": body}}, sort_keys=False))
    monkeypatch.setenv("PIPELINE_SOURCES_FILE", str(path))


def land_kv(env: PipelineEnv, partition: str, lines: list[str]) -> None:
    folder = env.landing / "kv" / f"dt={partition}" / "hour=10"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kv.log").write_text("".join(f"{line}\n" for line in lines))


def run_kv(env: PipelineEnv, instance: DagsterInstance, partition: str, raise_on_error: bool = True):  # type: ignore[no-untyped-def]
    return materialize_range(
        env.definitions(), instance, partition, selection=["kv/events", "kv/dlq", "kv/daily_metrics"],
        raise_on_error=raise_on_error,
    )  # fmt: skip


def cli(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli.main", *arguments],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_adding_a_field_and_a_metric_extends_the_tables(
    pipeline_env: PipelineEnv, instance: DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A day loaded under the first definition; the definition then gains a field and a metric.
    Expected: the next load extends both tables with no manual step; the old day reads NULL in
    the new columns, the new day has values; the definition version changed and both are in
    `loads`."""
    declare(tmp_path, monkeypatch, kv_source(fields={"level": {"type": "string"}}))
    land_kv(pipeline_env, "2024-01-15", ["2024-01-15T10:00:00Z INFO 7", "2024-01-15T10:00:01Z WARN 8"])
    run_kv(pipeline_env, instance, "2024-01-15")
    declare(
        tmp_path,
        monkeypatch,
        kv_source(
            fields={"level": {"type": "string"}, "code": {"type": "integer", "nullable": True}},
            metrics={"records": "count(*)", "code_total": "sum(code)"},
        ),
    )
    land_kv(pipeline_env, "2024-01-16", ["2024-01-16T10:00:00Z INFO 40", "2024-01-16T10:00:02Z INFO 2"])
    run_kv(pipeline_env, instance, "2024-01-16")
    assert pipeline_env.query("SELECT partition_date::VARCHAR, level, code FROM kv.events ORDER BY 1, 2, 3") == [
        ("2024-01-15", "INFO", None),
        ("2024-01-15", "WARN", None),
        ("2024-01-16", "INFO", 2),
        ("2024-01-16", "INFO", 40),
    ]
    assert pipeline_env.query(
        "SELECT partition_date::VARCHAR, records, code_total FROM kv.daily_metrics ORDER BY 1"
    ) == [
        ("2024-01-15", 2, None),
        ("2024-01-16", 2, 42),
    ]
    versions = pipeline_env.query("SELECT DISTINCT definition_version FROM kv.loads")
    assert len(versions) == 2


@pytest.mark.parametrize(
    ("changed", "problem"),
    [
        (
            {"level": {"type": "string"}, "code": {"type": "string", "nullable": True}},
            "kv.events: field 'code' changed type from integer to string",
        ),
        ({"level": {"type": "string"}}, "kv.events: field 'code' (integer) is in the table but no longer declared"),
    ],
    ids=["type-changed", "field-removed"],
)
def test_a_changed_type_or_a_removed_field_is_refused_before_any_write(
    pipeline_env: PipelineEnv,
    instance: DagsterInstance,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    changed: dict[str, object],
    problem: str,
) -> None:
    """Expected: the load fails naming the source, the table, the field, the old and new type and
    the way out; the day keeps its rows; then `pipeline lake migrate` shows the plan, `--apply`
    rewrites the table, and the day loads under the new definition."""
    declare(
        tmp_path,
        monkeypatch,
        kv_source(fields={"level": {"type": "string"}, "code": {"type": "integer", "nullable": True}}),
    )
    land_kv(pipeline_env, "2024-01-15", ["2024-01-15T10:00:00Z INFO 7"])
    run_kv(pipeline_env, instance, "2024-01-15")
    declare(tmp_path, monkeypatch, kv_source(fields=changed))
    result = run_kv(pipeline_env, instance, "2024-01-15", raise_on_error=False)
    assert not result.success
    (failure,) = [event for event in result.all_events if event.is_step_failure]
    message = str(failure.step_failure_data.error.message)
    assert "SchemaChangeError: source 'kv': the definition no longer matches its tables" in message
    assert problem in message
    assert "pipeline lake migrate --source kv" in message
    assert pipeline_env.query("SELECT level FROM kv.events") == [("INFO",)]

    plan = cli("lake", "migrate", "--source", "kv")
    assert plan.returncode == 0, plan.stderr
    assert "dry run" in plan.stdout
    applied = cli("lake", "migrate", "--source", "kv", "--apply")
    assert applied.returncode == 0, applied.stderr
    assert "kv.events: rewritten, now version" in applied.stdout
    assert run_kv(pipeline_env, instance, "2024-01-15").success
    expected = [("INFO", "7")] if "code" in changed else [("INFO",)]
    columns = "level, code" if "code" in changed else "level"
    assert pipeline_env.query(f"SELECT {columns} FROM kv.events") == expected


def test_a_migration_that_would_lose_values_is_refused(
    pipeline_env: PipelineEnv, instance: DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault: `code` was a string holding text; the definition now says integer. Expected: the
    migration refuses, naming the count and an example; nothing is written."""
    declare(
        tmp_path,
        monkeypatch,
        kv_source(fields={"level": {"type": "string"}, "code": {"type": "string", "nullable": True}}),
    )
    land_kv(pipeline_env, "2024-01-15", ["2024-01-15T10:00:00Z INFO 7", "2024-01-15T10:00:01Z INFO seven"])
    run_kv(pipeline_env, instance, "2024-01-15")
    declare(
        tmp_path,
        monkeypatch,
        kv_source(fields={"level": {"type": "string"}, "code": {"type": "integer", "nullable": True}}),
    )
    refused = cli("lake", "migrate", "--source", "kv", "--apply")
    assert refused.returncode == 2
    assert "migration refused: events.code: 1 value(s) do not convert" in refused.stdout
    assert "'seven'" in refused.stdout
    assert sorted(pipeline_env.query("SELECT code FROM kv.events")) == [("7",), ("seven",)]


def test_schema_change_error_is_raised_by_ensure_itself(pipeline_env: PipelineEnv, tmp_path: Path) -> None:
    """The refusal comes from the tables, before any file is written (not from a failed write)."""
    from pipeline.engine.lake import Lake, LakeLocation
    from pipeline.sources.spec import SourceSpec

    first = SourceSpec(name="kv", **kv_source(fields={"level": {"type": "string"}, "code": {"type": "integer"}}))
    second = SourceSpec(name="kv", **kv_source(fields={"level": {"type": "string"}, "code": {"type": "float"}}))
    lake = Lake(LakeLocation.local(pipeline_env.lake))
    lake.tables(first).ensure()
    with pytest.raises(SchemaChangeError, match="field 'code' changed type from integer to float"):
        lake.tables(second).ensure()
    assert not list(pipeline_env.lake.rglob("*.parquet"))


def test_query_formats_and_time_travel_before_a_rerun(
    pipeline_env: PipelineEnv, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A day loaded, then re-delivered with one hour removed and re-run. Expected: `pipeline
    query` prints table, CSV and JSON; `--as-of` a moment between the runs shows the day as the
    first run left it, in every table."""
    generate_landing_zone(pipeline_env.landing, [day("2024-01-15")], sources=["access"], lines_per_hour=10)
    defs = pipeline_env.definitions()
    materialize_range(defs, instance, "2024-01-15", selection=["access/events", "access/dlq", "access/daily_metrics"])
    (first_count,) = pipeline_env.query("SELECT count(*) FROM access.events")[0]
    time.sleep(1.1)
    between = dt.datetime.now(dt.UTC)
    time.sleep(1.1)
    for path in (pipeline_env.landing / "access" / "dt=2024-01-15" / "hour=03").iterdir():
        path.unlink()
    materialize_range(defs, instance, "2024-01-15", selection=["access/events", "access/dlq", "access/daily_metrics"])
    (second_count,) = pipeline_env.query("SELECT count(*) FROM access.events")[0]
    assert second_count < first_count

    sql = "SELECT count(*) AS events, (SELECT requests FROM access.daily_metrics) AS requests FROM access.events"
    table = cli("query", sql)
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split() == ["events", "requests"]
    assert table.stdout.splitlines()[2].split() == [str(second_count), str(second_count)]
    assert cli("query", sql, "--format", "csv").stdout.splitlines() == [
        "events,requests",
        f"{second_count},{second_count}",
    ]
    assert json.loads(cli("query", sql, "--format", "json").stdout) == [
        {"events": second_count, "requests": second_count}
    ]
    before = json.loads(cli("query", sql, "--format", "json", "--as-of", between.isoformat()).stdout)
    assert before == [{"events": first_count, "requests": first_count}]


def test_a_retried_step_resumes_at_the_first_day_not_loaded(
    pipeline_env: PipelineEnv, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault: a 4-day range run whose third day fails with a transient error on the first try.
    Expected: days 1-2 are committed and materialized before the failure; the step's retry
    (same run) skips them, saying so, and loads days 3-4; `loads` holds one attempt for days 1,
    2 and 4 and two (failed, loaded) for day 3."""
    from pipeline.engine import ingest
    from pipeline.orchestration import assets as assets_module

    monkeypatch.setattr(assets_module, "INGEST_RETRY_POLICY", RetryPolicy(max_retries=1, delay=0.1))
    days = [day("2024-01-15") + dt.timedelta(days=n) for n in range(4)]
    generate_landing_zone(pipeline_env.landing, days, sources=["access"], lines_per_hour=5)
    original, failures = ingest.file_batches, []

    def flaky(landed, *args, **kwargs):  # type: ignore[no-untyped-def]
        if "dt=2024-01-17" in landed.key and not failures:
            failures.append(landed.key)
            raise ConnectionResetError("connection reset by peer (simulated)")
        yield from original(landed, *args, **kwargs)

    monkeypatch.setattr(ingest, "file_batches", flaky)
    result = materialize_range(
        pipeline_env.definitions(), instance, "2024-01-15", "2024-01-18", selection=["access/events", "access/dlq"]
    )
    assert result.success and failures
    statuses = pipeline_env.query(
        "SELECT partition_date::VARCHAR, list(status ORDER BY attempt) FROM access.loads GROUP BY 1 ORDER BY 1"
    )
    assert statuses == [
        ("2024-01-15", ["loaded"]),
        ("2024-01-16", ["loaded"]),
        ("2024-01-17", ["failed", "loaded"]),
        ("2024-01-18", ["loaded"]),
    ]
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any(
        "skipped 2 day(s) already loaded from the same files under the same definition: 2024-01-15, 2024-01-16" in m
        for m in messages
    )
    events = [
        e.materialization.partition
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key.path[-1] == "events"
    ]
    assert sorted(events) == [
        d.isoformat() for d in days
    ]  # each day once: the skipped ones were not materialized twice


def test_a_later_failure_never_hides_the_days_that_were_loaded(
    pipeline_env: PipelineEnv, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault: day 3 of a 3-day range fails for good. Expected: the run fails saying which day and
    why; days 1-2 are materialized (with their own metadata) and committed."""
    from pipeline.engine import ingest

    days = [day("2024-01-15") + dt.timedelta(days=n) for n in range(3)]
    generate_landing_zone(pipeline_env.landing, days, sources=["app"], lines_per_hour=5)
    original = ingest.file_batches

    def broken(landed, *args, **kwargs):  # type: ignore[no-untyped-def]
        if "dt=2024-01-17" in landed.key:
            raise PermissionError("permission denied (simulated)")
        yield from original(landed, *args, **kwargs)

    monkeypatch.setattr(ingest, "file_batches", broken)
    result = materialize_range(
        pipeline_env.definitions(),
        instance,
        "2024-01-15",
        "2024-01-17",
        selection=["app/events", "app/dlq"],
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = [event for event in result.all_events if event.is_step_failure]
    text = failure.step_failure_data.user_failure_data.description
    assert text.startswith("app 2024-01-17 failed: PermissionError: permission denied (simulated). Nothing of ")
    assert "2 earlier day(s) of this run are loaded and stay materialized" in text
    assert text.endswith("a re-run resumes at 2024-01-17.")
    materialized = {e.materialization.partition for e in result.get_asset_materialization_events()}
    assert materialized == {"2024-01-15", "2024-01-16"}
    assert instance.get_materialized_partitions(__import__("dagster").AssetKey(["app", "events"])) == {
        "2024-01-15",
        "2024-01-16",
    }
    assert pipeline_env.query("SELECT count(DISTINCT partition_date) FROM app.events") == [(2,)]


def test_a_loaded_day_whose_landing_files_expired_is_kept_unless_emptying_is_asked_for(
    pipeline_env: PipelineEnv, instance: DagsterInstance
) -> None:
    """Fault: app/2024-01-15 was loaded, then its landing files were removed (expired), and the day
    is re-run. Expected: the run fails naming the day, its rows and what to do; the lake still
    shows the day's rows; the failed attempt is in `loads`. Re-run with
    `allow_emptying_loaded_days`, the day becomes an empty load."""
    import shutil

    generate_landing_zone(pipeline_env.landing, [day("2024-01-15")], sources=["app"], lines_per_hour=5)
    selection = ["app/events", "app/dlq", "app/daily_metrics"]
    materialize_range(pipeline_env.definitions(), instance, "2024-01-15", selection=selection)
    (loaded,) = pipeline_env.attempts("app", "2024-01-15")
    events = pipeline_env.query("SELECT count(*) FROM app.events")
    assert events[0][0] == loaded["rows_loaded"] > 0
    shutil.rmtree(pipeline_env.landing / "app" / "dt=2024-01-15")

    result = materialize_range(
        pipeline_env.definitions(), instance, "2024-01-15", selection=selection, raise_on_error=False
    )
    assert not result.success
    (failure,) = [event for event in result.all_events if event.is_step_failure]
    text = str(failure.step_failure_data.error.message)
    assert (
        f"app 2024-01-15: its landing folder has no files now, but the lake holds the {loaded['rows_read']:,} rows of "
        f"run {loaded['run_id']} (attempt 1, {loaded['files']} files); the day is kept as it is." in text
    )
    assert "re-run it with allow_emptying_loaded_days: true" in text
    assert pipeline_env.query("SELECT count(*) FROM app.events") == events
    statuses = [(row["attempt"], row["status"]) for row in pipeline_env.attempts("app", "2024-01-15")]
    assert statuses == [(1, "loaded"), (2, "failed")]

    job = pipeline_env.definitions().resolve_implicit_global_asset_job_def()
    emptied = job.execute_in_process(
        instance=instance,
        asset_selection=[AssetKey.from_user_string(key) for key in selection],
        partition_key="2024-01-15",
        run_config={"ops": {"app_ingest": {"config": {"allow_emptying_loaded_days": True}}}},
    )
    assert emptied.success
    assert pipeline_env.query("SELECT count(*) FROM app.events") == [(0,)]
    assert pipeline_env.attempts("app", "2024-01-15")[-1]["status"] == "empty"


def test_weekly_maintenance_compacts_vacuums_and_reports(pipeline_env: PipelineEnv, instance: DagsterInstance) -> None:
    """A day loaded three times (three attempts: three small `loads` files, old data files),
    then the `lake_maintenance` job. Expected: the reader's rows are unchanged, the day's
    `loads` files are compacted, the report manifest says what was done."""
    generate_landing_zone(pipeline_env.landing, [day("2024-01-15")], sources=["access"], lines_per_hour=5)
    defs = pipeline_env.definitions()
    for _ in range(3):
        materialize_range(defs, instance, "2024-01-15", selection=["access/events", "access/dlq"])
    before = pipeline_env.query("SELECT * EXCLUDE (run_id) FROM access.events ORDER BY source_file, line_number")
    loads_files = lambda: len(list((pipeline_env.lake / "access" / "loads").rglob("*.parquet")))  # noqa: E731
    result = defs.resolve_job_def("lake_maintenance").execute_in_process(instance=instance)
    assert result.success
    assert (
        pipeline_env.query("SELECT * EXCLUDE (run_id) FROM access.events ORDER BY source_file, line_number") == before
    )
    assert pipeline_env.query("SELECT count(*) FROM access.loads") == [(3,)]
    from deltalake import DeltaTable

    assert len(DeltaTable(str(pipeline_env.lake / "access" / "loads")).file_uris()) == 1
    assert loads_files() >= 1
    today = dt.datetime.now(dt.UTC).date().isoformat()
    report = json.loads((pipeline_env.output / "maintenance" / "access" / f"{today}.json").read_text())
    assert report["status"] == "ok" and report["retention_hours"] == 168
    assert report["summary"].startswith("access: 4 tables, ")


def test_retention_is_never_shorter_than_the_oldest_run_in_progress() -> None:
    """A backfill started 30 hours ago still holds its snapshot: the retention rises to 31 hours
    when configured lower; the longest read is a floor too."""
    from pipeline.orchestration.maintenance import retention_hours
    from pipeline.orchestration.operations import OperationsSettings

    now = dt.datetime(2024, 2, 1, 12, tzinfo=dt.UTC)
    settings = OperationsSettings(lake_retention_hours=6, lake_longest_read_hours=12)
    assert retention_hours(settings, None, now) == 12
    assert retention_hours(settings, now - dt.timedelta(hours=30), now) == 31
    assert retention_hours(OperationsSettings(), now - dt.timedelta(hours=2), now) == 168


@pytest.mark.parametrize("table", ["events", "loads"])
def test_a_corrupt_table_log_leaves_the_other_tables_readable_and_says_what_is_wrong(
    pipeline_env: PipelineEnv, instance: DagsterInstance, table: str
) -> None:
    """Fault: the newest Delta log entry of one table of `app` is overwritten with junk (a
    broken disk, a bad manual edit). Expected: every other source still reads; `app`'s
    tables, when queried, fail with a sentence naming the table and the error; the warning is
    in `pipeline_lake.warnings`."""
    generate_landing_zone(pipeline_env.landing, [day("2024-01-15")], lines_per_hour=10)
    materialize_range(pipeline_env.definitions(), instance, "2024-01-15")
    (access_rows,) = pipeline_env.query("SELECT count(*) FROM access.events")[0]
    log = sorted((pipeline_env.lake / "app" / table / "_delta_log").glob("*.json"))[-1]
    log.write_text("{ this is not a delta log entry\n")

    assert pipeline_env.query("SELECT count(*) FROM access.events") == [(access_rows,)]
    with pytest.raises(Exception, match=rf"app is unreadable: app.{table}: .*; re-run after repairing"):
        pipeline_env.query("SELECT count(*) FROM app.events")
    with pytest.raises(Exception, match="app is unreadable"):
        pipeline_env.query("SELECT count(*) FROM app.loads")
    [(source, warning)] = pipeline_env.query("SELECT source, warning FROM pipeline_lake.warnings")
    assert source == "app" and warning.startswith(f"app is unreadable: app.{table}: ")
