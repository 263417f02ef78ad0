"""The assets through Dagster itself: exact counts, empty days, metadata, checks, idempotency."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
from dagster import AssetCheckKey, AssetKey, DagsterInstance

from pipeline.cli.generate import generate_landing_zone
from pipeline_tests.conftest import PipelineEnv, day, materialize_range

DAYS = [day("2024-01-15"), day("2024-01-16"), day("2024-01-17")]


def materializations(result, key: str) -> dict[str, dict[str, object]]:
    """Metadata (raw values) of each partition's materialization of `key` in a run."""
    found: dict[str, dict[str, object]] = {}
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        if materialization.asset_key == AssetKey.from_user_string(key):
            found[materialization.partition] = {name: value.value for name, value in materialization.metadata.items()}
    return found


def check_results(result) -> dict[str, object]:
    """Asset check evaluations of a run, by `asset:check:day`."""
    return {
        f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}:{evaluation.partition}": evaluation
        for evaluation in result.get_asset_check_evaluations()
    }


def test_week_loads_exact_counts_and_metadata(pipeline_env: PipelineEnv, instance: DagsterInstance) -> None:
    """Every generated record lands once: good ones in events, bad ones in the DLQ, per day."""
    generated = generate_landing_zone(pipeline_env.landing, DAYS, lines_per_hour=50, bad_line_rate=0.01)
    result = materialize_range(pipeline_env.definitions(), instance, "2024-01-15", "2024-01-17")
    assert result.success

    for partition in generated:
        key = partition.day.isoformat()
        expected_loaded = partition.records - partition.bad_records
        events = materializations(result, f"{partition.source}/events")[key]
        dlq = materializations(result, f"{partition.source}/dlq")[key]
        assert partition.bad_records > 0
        assert events["dagster/row_count"] == expected_loaded
        assert events["rows_quarantined"] == partition.bad_records
        assert events["rows_read"] == partition.records
        assert events["lines_read"] == partition.lines
        assert events["continuation_lines"] == partition.continuation_lines
        assert events["files"] == partition.files
        assert events["hours_present"] == len(partition.hours_present)
        assert events["quarantine_rate"] == pytest.approx(partition.bad_records / partition.records, abs=1e-6)
        assert dlq["dagster/row_count"] == partition.bad_records
        assert pipeline_env.query(
            f"SELECT count(*) FROM {partition.source}.events WHERE partition_date = ?", [partition.day]
        ) == [(expected_loaded,)]
        assert pipeline_env.query(
            f"SELECT count(*) FROM {partition.source}.dlq WHERE partition_date = ?", [partition.day]
        ) == [(partition.bad_records,)]
        manifest = pipeline_env.manifest(partition.source, key)
        assert manifest["status"] == "loaded"
        assert manifest["rows_loaded"] == expected_loaded
        assert manifest["rows_quarantined"] == partition.bad_records
        assert events["manifest"] == str(pipeline_env.output / "manifests" / partition.source / f"{key}.json")
        metrics = materializations(result, f"{partition.source}/daily_metrics")[key]
        assert metrics["dagster/row_count"] == 1
        assert metrics["day"] == key
        assert metrics["events_rows"] == expected_loaded
        # The day's audit row says the same.
        (attempt,) = pipeline_env.attempts(partition.source, key)
        assert (attempt["status"], attempt["rows_loaded"], attempt["rows_quarantined"]) == (
            "loaded",
            expected_loaded,
            partition.bad_records,
        )
        assert attempt["run_id"] == result.run_id
        assert attempt["definition_version"] == events["definition_version"]

    # The demo default removes hour 04 of the third access day: the operator is told.
    access_third = pipeline_env.manifest("access", "2024-01-17")
    assert access_third["missing_hours"] == [4]
    assert "23 of 24 hours present; missing: 04" in access_third["summary"]
    assert materializations(result, "access/events")["2024-01-17"]["missing_hours"] == "04"
    checks = check_results(result)
    # One result per check (quarantine_rate, hours_complete, volume_normal) and day, tied to its partition.
    assert len(checks) == 2 * 3 * 3
    volume = checks["access/events:volume_normal:2024-01-17"]
    assert volume.passed and volume.description == "2024-01-17: no previous Wednesdays loaded (3 needed); not judged"
    assert all(
        checks[f"{source}/events:quarantine_rate:{d.isoformat()}"].passed for source in ("access", "app") for d in DAYS
    )
    assert not checks["access/events:hours_complete:2024-01-17"].passed
    assert checks["access/events:hours_complete:2024-01-17"].metadata["missing_hours"].value == "04"
    assert checks["access/events:hours_complete:2024-01-16"].passed
    assert checks["app/events:hours_complete:2024-01-17"].passed


def test_daily_metrics_match_events(pipeline_env: PipelineEnv, instance: DagsterInstance) -> None:
    """Metrics are computed from the loaded rows of the day and exposed as metadata."""
    generate_landing_zone(pipeline_env.landing, DAYS[:1], lines_per_hour=40)
    result = materialize_range(pipeline_env.definitions(), instance, "2024-01-15")
    (requests, server_errors, bytes_sent, clients) = pipeline_env.query(
        "SELECT count(*), count(*) FILTER (WHERE status >= 500), sum(bytes), count(DISTINCT client) "
        "FROM access.events WHERE partition_date = '2024-01-15'"
    )[0]
    metrics = pipeline_env.query(
        "SELECT requests, status_5xx, bytes_sent, distinct_clients, server_error_share FROM access.daily_metrics"
    )
    assert metrics == [(requests, server_errors, bytes_sent, clients, round(server_errors / requests, 6))]
    metadata = materializations(result, "access/daily_metrics")["2024-01-15"]
    assert metadata["requests"] == requests
    levels = pipeline_env.query("SELECT records, error + critical, records_per_logger FROM app.daily_metrics")
    records, errors, per_logger = levels[0]
    assert records == pipeline_env.query("SELECT count(*) FROM app.events")[0][0]
    assert errors == pipeline_env.query("SELECT count(*) FROM app.events WHERE level IN ('ERROR', 'CRITICAL')")[0][0]
    assert sum(per_logger.values()) == records


def test_empty_day_materializes_with_zero_counts(pipeline_env: PipelineEnv, instance: DagsterInstance) -> None:
    """A day with no folder at all still materializes every asset with row count 0 and a manifest."""
    generate_landing_zone(
        pipeline_env.landing, DAYS, lines_per_hour=10, empty_days=[("access", DAYS[1]), ("app", DAYS[1])]
    )
    result = materialize_range(pipeline_env.definitions(), instance, "2024-01-15", "2024-01-17")
    assert result.success
    for source in ("access", "app"):
        for asset in ("events", "dlq", "daily_metrics"):
            metadata = materializations(result, f"{source}/{asset}")
            assert metadata["2024-01-16"]["dagster/row_count"] == 0, (source, asset)
            assert metadata["2024-01-15"]["dagster/row_count"] > 0, (source, asset)
        events = materializations(result, f"{source}/events")["2024-01-16"]
        assert events["files"] == 0
        assert (events["missing_hours"], events["missing_hours_count"]) == ("all 24 hours", 24)
        manifest = pipeline_env.manifest(source, "2024-01-16")
        assert manifest["status"] == "empty"
        assert manifest["summary"] == f"{source} 2024-01-16: No log files found for 2024-01-16."
    assert pipeline_env.query("SELECT count(*) FROM access.daily_metrics WHERE partition_date = '2024-01-16'") == [(0,)]


def write_lines(path: Path, lines: list[str], newline: str = "\n", gzipped: bool = False) -> None:
    """Write a landing file with the given line ending, optionally gzip-compressed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = newline.join(lines).encode() + newline.encode()
    path.write_bytes(gzip.compress(data) if gzipped else data)


ACCESS_LINE = '192.0.2.{n} - - [15/Jan/2024:{hour:02d}:10:00 +0000] "GET /p{n} HTTP/1.1" 200 {n} "-" "agent/1.0"'


def test_crlf_and_gzip_files_are_read_transparently(pipeline_env: PipelineEnv, instance: DagsterInstance) -> None:
    """CRLF line endings and .log.gz files give the same rows as plain files."""
    base = pipeline_env.landing / "access" / "dt=2024-01-15"
    write_lines(base / "hour=06" / "crlf.log", [ACCESS_LINE.format(n=n, hour=6) for n in range(50)], newline="\r\n")
    write_lines(base / "hour=12" / "zipped.log.gz", [ACCESS_LINE.format(n=n, hour=12) for n in range(70)], gzipped=True)
    # 1 bad line in 151 rows stays within the 1% error budget.
    write_lines(base / "hour=13" / "plain.log", [ACCESS_LINE.format(n=n, hour=13) for n in range(30)] + ["", "garbage"])
    (base / "hour=13" / "notes.txt").write_text("not a log file")
    result = materialize_range(
        pipeline_env.definitions(), instance, "2024-01-15", selection=["access/events", "access/dlq"]
    )
    events = materializations(result, "access/events")["2024-01-15"]
    assert (events["dagster/row_count"], events["rows_quarantined"], events["lines_ignored"]) == (150, 1, 1)
    assert events["lines_read"] == 152
    per_file = pipeline_env.query("SELECT source_file, count(*) FROM access.events GROUP BY ALL ORDER BY 1")
    assert per_file == [
        ("access/dt=2024-01-15/hour=06/crlf.log", 50),
        ("access/dt=2024-01-15/hour=12/zipped.log.gz", 70),
        ("access/dt=2024-01-15/hour=13/plain.log", 30),
    ]
    assert pipeline_env.query("SELECT count(*) FROM access.events WHERE user_agent LIKE '%\r%'") == [(0,)]
    assert pipeline_env.query("SELECT line_number, raw_line, reason FROM access.dlq") == [
        (32, "garbage", "line: matches_format (got garbage)")
    ]
    manifest = pipeline_env.manifest("access", "2024-01-15")
    assert manifest["ignored_objects"] == ["access/dt=2024-01-15/hour=13/notes.txt"]


def table_snapshot(env: PipelineEnv, source: str) -> dict[str, list[tuple[object, ...]]]:
    """Everything in a source's tables except the columns that name the run."""
    return {
        "events": env.query(f"SELECT * EXCLUDE (run_id) FROM {source}.events ORDER BY ALL"),
        "dlq": env.query(f"SELECT * EXCLUDE (run_id, quarantined_at) FROM {source}.dlq ORDER BY ALL"),
        "daily_metrics": env.query(f"SELECT * EXCLUDE (run_id) FROM {source}.daily_metrics ORDER BY ALL"),
    }


def test_reruns_and_overlapping_ranges_are_idempotent(pipeline_env: PipelineEnv, instance: DagsterInstance) -> None:
    """Re-running a day or an overlapping range leaves exactly the rows of one clean run."""
    generate_landing_zone(pipeline_env.landing, DAYS, lines_per_hour=50, bad_line_rate=0.003)
    defs = pipeline_env.definitions()
    materialize_range(defs, instance, "2024-01-15", "2024-01-17")
    assert pipeline_env.query("SELECT count(*) FROM access.dlq") != [(0,)]
    clean = {source: table_snapshot(pipeline_env, source) for source in ("access", "app")}
    materialize_range(defs, instance, "2024-01-16")
    materialize_range(defs, instance, "2024-01-16", "2024-01-17")
    materialize_range(defs, instance, "2024-01-15", "2024-01-16")
    for source in ("access", "app"):
        assert table_snapshot(pipeline_env, source) == clean[source]
    run_ids = pipeline_env.query(
        "SELECT partition_date, count(DISTINCT run_id) FROM access.events GROUP BY 1 ORDER BY 1"
    )
    assert [count for _day, count in run_ids] == [1, 1, 1]


def test_rerun_drops_rows_of_removed_files(pipeline_env: PipelineEnv, instance: DagsterInstance) -> None:
    """A file removed (or re-delivered) since the last run leaves nothing of its old content behind."""
    generate_landing_zone(pipeline_env.landing, DAYS[:1], sources=["access"], lines_per_hour=20)
    defs = pipeline_env.definitions()
    materialize_range(defs, instance, "2024-01-15", selection=["access/events", "access/dlq"])
    before = pipeline_env.query("SELECT count(*) FROM access.events")[0][0]
    hour_folder = pipeline_env.landing / "access" / "dt=2024-01-15" / "hour=03"
    removed = pipeline_env.query(
        "SELECT count(*) FROM access.events WHERE source_file LIKE 'access/dt=2024-01-15/hour=03/%'"
    )[0][0]
    shutil.rmtree(hour_folder)
    result = materialize_range(defs, instance, "2024-01-15", selection=["access/events", "access/dlq"])
    assert pipeline_env.query("SELECT count(*) FROM access.events")[0][0] == before - removed
    assert materializations(result, "access/events")["2024-01-15"]["missing_hours"] == "03"


def test_day_over_error_budget_blocks_daily_metrics(pipeline_env: PipelineEnv, instance: DagsterInstance) -> None:
    """A day with more bad lines than the 1% budget fails its blocking check; its metrics are not
    computed, and the step fails with a sentence naming the day."""
    generate_landing_zone(pipeline_env.landing, DAYS[:1], sources=["access"], lines_per_hour=50, bad_line_rate=0.05)
    result = materialize_range(
        pipeline_env.definitions(),
        instance,
        "2024-01-15",
        selection=["access/events", "access/dlq", "access/daily_metrics"],
        raise_on_error=False,
    )
    assert not result.success
    check = check_results(result)["access/events:quarantine_rate:2024-01-15"]
    assert not check.passed
    rate = check.metadata["quarantine_rate"].value
    assert rate > 0.01
    failed_checks = pipeline_env.manifest("access", "2024-01-15")["failed_checks"]
    assert sum(failed_checks.values()) >= pipeline_env.manifest("access", "2024-01-15")["rows_quarantined"]
    # Tables, not JSON: the count per rule and five sample rows (file, line, reason, raw line) of this day.
    assert [record.data for record in check.metadata["failed_checks"].value.records] == [
        {"rule": rule, "rows": rows, "share": f"{rows / check.metadata['rows_read'].value:.2%}"}
        for rule, rows in failed_checks.items()
    ]
    samples = check.metadata["sample_quarantined"].value
    assert [column.name for column in samples.schema.columns] == ["file", "line", "reason", "raw_line"]
    assert len(samples.records) == 5
    assert all(record.data["file"].startswith("access/dt=2024-01-15/hour=") for record in samples.records)
    assert not [name for name, value in check.metadata.items() if type(value).__name__ == "JsonMetadataValue"]
    assert materializations(result, "access/daily_metrics") == {}
    # The rows are still loaded and quarantined: the check stops what is built on them.
    assert materializations(result, "access/events")["2024-01-15"]["rows_quarantined"] > 0
    assert pipeline_env.query("SELECT count(*) FROM access.daily_metrics") == [(0,)]
    # What an operator reads first: the verdict, and the reasons as a table, not JSON.
    verdict = materializations(result, "access/events")["2024-01-15"]["verdict"]
    assert verdict.startswith(f"✗ {rate:.2%} quarantined > 1.00% budget; top rule `")
    assert "daily_metrics blocked" in verdict and "runbook, *Reading the DLQ*" in verdict
    by_rule = materializations(result, "access/dlq")["2024-01-15"]["failed_checks"]
    assert sum(record.data["rows"] for record in by_rule.records) == sum(failed_checks.values())
    assert [column.name for column in by_rule.schema.columns] == ["rule", "rows", "share"]
    (failure,) = [event for event in result.all_events if event.event_type_value == "STEP_FAILURE"]
    description = failure.step_failure_data.user_failure_data.description
    assert description.startswith("1 of 1 day(s) of access above the 1.00% error budget: 2024-01-15 (")
    assert "Check `quarantine_rate` failed for them" in description
    assert description.endswith("then re-run the days (runbook, *Reading the DLQ*).")
    metadata = {name: value.value for name, value in failure.step_failure_data.user_failure_data.metadata.items()}
    assert metadata["check"] == "quarantine_rate"
    assert metadata["days_over_budget"] == f"2024-01-15 ({rate:.2%})"
    assert metadata["error_budget"] == 0.01
    (row,) = [record.data for record in metadata["days"].records]
    top_rule, top_rows = next(iter(failed_checks.items()))
    assert row == {
        "day": "2024-01-15",
        "quarantined": f"{rate:.2%}",
        "rows_read": check.metadata["rows_read"].value,
        "rows_quarantined": check.metadata["rows_quarantined"].value,
        "top_rule": f"{top_rule} ({top_rows:,})",
        "missing_hours": "none",
    }
    assert metadata["next_step"].startswith("read the DLQ of those days (`pipeline query")


def test_a_bad_day_blocks_only_its_own_metrics(pipeline_env: PipelineEnv, instance: DagsterInstance) -> None:
    """In a range run, the days within budget get their metrics; the bad one does not, and its
    check failure stays tied to its own partition."""
    generate_landing_zone(
        pipeline_env.landing, [DAYS[0], DAYS[2]], sources=["access"], lines_per_hour=50, bad_line_rate=0.002
    )
    generate_landing_zone(pipeline_env.landing, [DAYS[1]], sources=["access"], lines_per_hour=50, bad_line_rate=0.05)
    result = materialize_range(
        pipeline_env.definitions(),
        instance,
        "2024-01-15",
        "2024-01-17",
        selection=["access/events", "access/dlq", "access/daily_metrics"],
        raise_on_error=False,
    )
    assert not result.success
    assert sorted(materializations(result, "access/daily_metrics")) == ["2024-01-15", "2024-01-17"]
    assert sorted(materializations(result, "access/events")) == ["2024-01-15", "2024-01-16", "2024-01-17"]
    assert pipeline_env.query("SELECT partition_date::VARCHAR FROM access.daily_metrics ORDER BY 1") == [
        ("2024-01-15",),
        ("2024-01-17",),
    ]
    key = AssetCheckKey(AssetKey(["access", "events"]), "quarantine_rate")
    history = instance.event_log_storage.get_asset_check_execution_history(key, limit=10)
    verdicts = {record.partition: record.status.value for record in history}
    assert verdicts == {"2024-01-15": "SUCCEEDED", "2024-01-16": "FAILED", "2024-01-17": "SUCCEEDED"}


def test_failure_writes_a_failed_manifest_and_changes_nothing(
    pipeline_env: PipelineEnv, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When a partition fails mid-load, its manifest and its `loads` row say so, and the tables
    keep the previous load's rows."""
    from pipeline.engine import ingest

    generate_landing_zone(pipeline_env.landing, DAYS[:1], sources=["access"], lines_per_hour=10)
    defs = pipeline_env.definitions()
    materialize_range(defs, instance, "2024-01-15", selection=["access/events", "access/dlq"])
    before = table_snapshot(pipeline_env, "access")
    original = ingest.file_batches

    def breaks_on_the_third_hour(landed, *args, **kwargs):  # type: ignore[no-untyped-def]
        if landed.hour == 2:
            raise OSError("disk on fire")
        yield from original(landed, *args, **kwargs)

    monkeypatch.setattr(ingest, "file_batches", breaks_on_the_third_hour)
    result = materialize_range(
        defs, instance, "2024-01-15", selection=["access/events", "access/dlq"], raise_on_error=False
    )
    assert not result.success
    manifest = pipeline_env.manifest("access", "2024-01-15")
    assert manifest["status"] == "failed"
    assert manifest["error"] == "OSError: disk on fire"
    assert manifest["summary"].startswith("access 2024-01-15: FAILED")
    assert table_snapshot(pipeline_env, "access") == before
    first, second = pipeline_env.attempts("access", "2024-01-15")
    assert (first["status"], second["status"], second["attempt"]) == ("loaded", "failed", 2)
    assert "disk on fire" in second["error_traceback"]
    assert second["rows_loaded"] == 0
    # The step fails with a sentence and the day's figures, not a bare traceback; the error,
    # with its traceback, stays attached as the cause (a code error keeps its stack).
    (failure,) = [event for event in result.all_events if event.event_type_value == "STEP_FAILURE"]
    data = failure.step_failure_data
    assert data.error.cls_name == "DayFailed"
    assert data.error.cause is not None and data.error.cause.cls_name == "OSError"
    assert data.user_failure_data.description == (
        "access 2024-01-15 failed: OSError: disk on fire. Nothing of 2024-01-15 changed (its tables keep the last "
        "complete load); 0 earlier day(s) of this run are loaded and stay materialized. Next: fix the cause named "
        "above (its traceback is in the run's log and in `pipeline history --source access --day 2024-01-15`), then "
        "re-run the day (runbook, *Re-running failed partitions*); a re-run resumes at 2024-01-15."
    )
    metadata = {name: value.value for name, value in data.user_failure_data.metadata.items()}
    assert metadata == {
        "day": "2024-01-15",
        "source": "access",
        "error": "OSError: disk on fire",
        "retryable": False,
        "earlier_days_loaded": 0,
        "next_step": metadata["next_step"],
        "attempt": 2,
        "lines_read_before_failure": second["lines_read"],
        "files": second["files"],
        "manifest": str(pipeline_env.output / "manifests" / "access" / "2024-01-15.json"),
    }
    # Not retried: an unknown error is not transient.
    assert [event.event_type_value for event in result.all_events].count("STEP_UP_FOR_RETRY") == 0


def test_range_run_records_each_days_own_metadata(pipeline_env: PipelineEnv, instance: DagsterInstance) -> None:
    """One run over a range gives every day its own counts (an empty day 0), not the last day's."""
    generate_landing_zone(pipeline_env.landing, [DAYS[0], DAYS[2]], sources=["app"], lines_per_hour=30)
    result = materialize_range(
        pipeline_env.definitions(), instance, "2024-01-15", "2024-01-17", selection=["app/events", "app/dlq"]
    )
    counts = {key: meta["dagster/row_count"] for key, meta in materializations(result, "app/events").items()}
    assert counts["2024-01-16"] == 0
    assert counts["2024-01-15"] > 0 and counts["2024-01-17"] > 0
    assert counts["2024-01-15"] != counts["2024-01-17"]
    # The instance's latest materialization per partition carries the same figures.
    records = instance.fetch_materializations(AssetKey(["app", "events"]), limit=10).records
    latest = {
        record.partition_key: record.asset_materialization.metadata["dagster/row_count"].value for record in records
    }
    assert latest == counts


def test_each_day_is_listed_once_and_loaded_as_listed(
    pipeline_env: PipelineEnv, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One listing per day serves the fingerprint and the read: a file landing in between is
    not loaded, and the recorded fingerprint (what the landing sensor compares) describes
    exactly the files that were."""
    from pipeline.engine import ingest as ingest_module
    from pipeline.engine import landing_state as landing_state_module
    from pipeline.engine.objects import LocalObjectStore

    generate_landing_zone(pipeline_env.landing, DAYS[:2], sources=["access"], lines_per_hour=20)
    listed: list[str] = []
    original_list = LocalObjectStore.list

    def counting_list(self: LocalObjectStore, prefix: str):  # type: ignore[no-untyped-def]
        listed.append(prefix)
        return original_list(self, prefix)

    late = pipeline_env.landing / "access" / "dt=2024-01-16" / "hour=05" / "late.log"
    late_line = '10.0.0.1 - - [16/Jan/2024:05:00:00 +0000] "GET / HTTP/1.1" 200 1 "-" "x"\n'

    def state_then_a_file_lands(store, source, partition_day):  # type: ignore[no-untyped-def]
        state = landing_state_module.landing_state(store, source, partition_day)
        if partition_day == DAYS[1]:
            late.write_text(late_line)
        return state

    monkeypatch.setattr(LocalObjectStore, "list", counting_list)
    monkeypatch.setattr(ingest_module, "landing_state", state_then_a_file_lands)
    result = materialize_range(
        pipeline_env.definitions(), instance, "2024-01-15", "2024-01-16", selection=["access/events", "access/dlq"]
    )
    assert result.success
    day_prefixes = [prefix for prefix in listed if prefix.startswith("access/dt=")]
    assert sorted(day_prefixes) == ["access/dt=2024-01-15/", "access/dt=2024-01-16/"]
    assert pipeline_env.query("SELECT count(*) FROM access.events WHERE source_file LIKE '%late.log'") == [(0,)]
    recorded = materializations(result, "access/events")["2024-01-16"]["landing_fingerprint"]
    assert pipeline_env.attempts("access", "2024-01-16")[0]["landing_fingerprint"] == recorded
    monkeypatch.undo()
    now = landing_state_module.landing_state(LocalObjectStore(pipeline_env.landing), "access", DAYS[1])
    late.unlink()
    as_loaded = landing_state_module.landing_state(LocalObjectStore(pipeline_env.landing), "access", DAYS[1])
    assert recorded == as_loaded.fingerprint != now.fingerprint


@pytest.mark.parametrize(
    ("retries_left", "next_step"),
    [
        (
            2,
            "nothing yet: the error is transient, the step is retried automatically (2 retry(ies) left) and resumes "
            "at 2024-01-15",
        ),
        (
            0,
            "the error is transient but the step's retries are spent: re-run the day once the store is reachable "
            "(runbook, *Re-running failed partitions*); a re-run resumes at 2024-01-15",
        ),
    ],
)
def test_a_transient_day_failure_is_retried_and_says_so(retries_left: int, next_step: str) -> None:
    from pipeline.orchestration.assets import DayFailed
    from pipeline.sources import configured_sources

    failure = DayFailed(
        configured_sources()["access"], DAYS[0], 3, ConnectionError("reset by peer"), None, retries_left=retries_left
    )
    assert failure.allow_retries is True
    assert failure.description == (
        "access 2024-01-15 failed: ConnectionError: reset by peer. Nothing of 2024-01-15 changed (its tables keep the "
        f"last complete load); 3 earlier day(s) of this run are loaded and stay materialized. Next: {next_step}."
    )
    assert failure.metadata["retryable"].value is True
    assert failure.metadata["earlier_days_loaded"].value == 3


def test_the_loads_row_of_a_failed_day_keeps_the_python_frames_not_the_rust_backtrace(
    pipeline_env: PipelineEnv, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With RUST_BACKTRACE set, a delta-rs error carries ~40 frame lines: `loads.error` and the
    manifest's `error` are the sentence, and `error_traceback` keeps the Python frames where
    it failed (the backtrace would have pushed them out of its kept tail)."""
    from deltalake.exceptions import DeltaError

    from pipeline.engine import ingest

    generate_landing_zone(pipeline_env.landing, DAYS[:1], sources=["access"], lines_per_hour=10)
    frames = "".join(
        f"\n  {number}: deltalake::frame_{number}\n             at src/frame.rs:{number}:5" for number in range(60)
    )

    def fails_in_delta_rs(landed, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise DeltaError("Kernel error: Json error: unexpected 't'\n   0: <unknown>" + frames)
        yield

    monkeypatch.setattr(ingest, "file_batches", fails_in_delta_rs)
    result = materialize_range(
        pipeline_env.definitions(), instance, "2024-01-15", selection=["access/events", "access/dlq"],
        raise_on_error=False,
    )  # fmt: skip
    assert not result.success
    (attempt,) = pipeline_env.attempts("access", "2024-01-15")
    assert attempt["error"] == "DeltaError: Kernel error: Json error: unexpected 't'"
    assert pipeline_env.manifest("access", "2024-01-15")["error"] == attempt["error"]
    assert "in fails_in_delta_rs" in attempt["error_traceback"]
    assert "deltalake::frame" not in attempt["error_traceback"] and "src/frame.rs" not in attempt["error_traceback"]
    assert attempt["error_traceback"].rstrip().endswith("DeltaError: Kernel error: Json error: unexpected 't'")


def test_a_day_failure_sentence_leaves_out_the_rust_backtrace_of_a_delta_error() -> None:
    """delta-rs appends a Rust backtrace to its errors when RUST_BACKTRACE is set (it is on this
    machine): the sentence an operator reads names the error, not 40 lines of frames."""
    from deltalake.exceptions import DeltaError

    from pipeline.orchestration.assets import DayFailed
    from pipeline.sources import configured_sources

    error = DeltaError("Kernel error: Json error: unexpected 't'\n   0: <unknown>\n   1: deltalake::table::load\n")
    failure = DayFailed(configured_sources()["access"], DAYS[0], 0, error, None, retries_left=0)
    assert failure.description is not None
    assert failure.description.startswith(
        "access 2024-01-15 failed: DeltaError: Kernel error: Json error: unexpected 't'. Nothing of 2024-01-15 changed"
    )
    assert failure.metadata["error"].value == "DeltaError: Kernel error: Json error: unexpected 't'"


def test_rerun_over_budget_marks_the_days_metrics_removed(pipeline_env: PipelineEnv, instance: DagsterInstance) -> None:
    """The runbook's UI path re-runs `S/events` + `S/dlq` only: when the re-delivered day is over
    budget its metrics row is removed, and `S/daily_metrics` of that day says so (an observation
    newer than the materialization of the replaced load), never only the old figures."""
    generate_landing_zone(pipeline_env.landing, DAYS[:1], sources=["access"], lines_per_hour=50, bad_line_rate=0.002)
    defs = pipeline_env.definitions()
    first = materialize_range(defs, instance, "2024-01-15", selection=["access/events", "access/dlq"])
    assert sorted(materializations(first, "access/daily_metrics")) == ["2024-01-15"]
    generate_landing_zone(pipeline_env.landing, DAYS[:1], sources=["access"], lines_per_hour=50, bad_line_rate=0.05)
    second = materialize_range(
        defs, instance, "2024-01-15", selection=["access/events", "access/dlq"], raise_on_error=False
    )
    assert not second.success
    assert pipeline_env.query("SELECT count(*) FROM access.daily_metrics") == [(0,)]
    assert materializations(second, "access/daily_metrics") == {}
    (observation,) = [
        event.asset_observation_data.asset_observation
        for event in second.all_events
        if event.event_type_value == "ASSET_OBSERVATION"
    ]
    assert (observation.asset_key, observation.partition) == (AssetKey(["access", "daily_metrics"]), "2024-01-15")
    metadata = {name: value.value for name, value in observation.metadata.items()}
    (attempt,) = [row for row in pipeline_env.attempts("access", "2024-01-15") if row["run_id"] == second.run_id]
    assert (metadata["day"], metadata["status"], metadata["rows"], metadata["from_run"]) == (
        "2024-01-15",
        "removed",
        0,
        second.run_id,
    )
    assert metadata["reason"].startswith(
        f"2024-01-15: metrics row removed by run `{second.run_id}`: the day's events are over the error budget "
        f"({attempt['quarantine_rate']:.2%} quarantined > 1.00%)."
    )
    key = AssetKey(["access", "daily_metrics"])
    latest_observation = instance.fetch_observations(key, limit=1).records[0]
    latest_materialization = instance.fetch_materializations(key, limit=1).records[0]
    assert latest_observation.partition_key == "2024-01-15" and latest_observation.run_id == second.run_id
    assert latest_observation.storage_id > latest_materialization.storage_id
