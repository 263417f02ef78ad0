"""The whole pipeline through Dagster with `PIPELINE_LANDING_URL`, `PIPELINE_OUTPUT_URL` and
`PIPELINE_LAKE_URL` in S3.

Against moto's S3-compatible server, behind a proxy that counts requests and injects faults
into the traffic of every client: boto3 (landing, output, day locks), delta-rs (the lake's
commits) and pyarrow (its data files). What a user relies on: S3 gives exactly the rows,
quarantine, metadata and manifests that the same files give from local folders; faults the
clients can ride out leave no trace but a log line; a fault that outlasts them is retried by
Dagster; errors that retrying cannot fix fail the run at once, saying which bucket and key;
local mode never creates an S3 client. (What the tests read to check the lake goes straight
to the server, never through the proxy.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest
from dagster import DagsterEventType, DagsterInstance, ExecuteInProcessResult, PathMetadataValue, UrlMetadataValue

from pipeline.cli.generate import GeneratedPartition, generate_landing_zone
from pipeline.definitions import build_definitions
from pipeline_tests.conftest import PipelineEnv, day, materialize_range
from pipeline_tests.storage.conftest import LAKE_PREFIX, OUTPUT_PREFIX, S3PipelineEnv

DAYS = [day("2024-01-15"), day("2024-01-16")]
INGEST_ONLY = ["access/events", "access/dlq"]
# Metadata that says where, how long or which object versions, not what was loaded: allowed to
# differ between local and S3 (the landing fingerprint covers versions: mtimes locally, ETags in S3).
PLACE_AND_TIME = {"manifest", "duration_s", "landing_fingerprint"}


def events_metadata(result: ExecuteInProcessResult, source: str) -> dict[str, dict[str, Any]]:
    """`S/events` materialization metadata per partition (raw values)."""
    found: dict[str, dict[str, Any]] = {}
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        if materialization.asset_key.to_user_string() == f"{source}/events":
            found[materialization.partition] = {name: value.value for name, value in materialization.metadata.items()}
    return found


def log_messages(instance: DagsterInstance, run_id: str) -> list[str]:
    """Every message the run logged."""
    return [entry.user_message for entry in instance.all_logs(run_id)]


def step_events(result: ExecuteInProcessResult, event_type: DagsterEventType) -> list[Any]:
    """The run's events of one type (e.g. STEP_UP_FOR_RETRY)."""
    return [event for event in result.all_events if event.event_type == event_type]


def failure_text(result: ExecuteInProcessResult) -> str:
    """What the run's step and resource-setup failures say, as an operator sees it in the UI."""
    texts: list[str] = []
    for event in step_events(result, DagsterEventType.STEP_FAILURE):
        data = event.step_failure_data
        texts.append(data.error.to_string() if data.error else "")
        if data.user_failure_data is not None:
            texts.append(data.user_failure_data.description or "")
    for event in step_events(result, DagsterEventType.RESOURCE_INIT_FAILURE):
        error = event.engine_event_data.error
        texts.append(error.to_string() if error else event.message or "")
    return "\n".join(texts)


def lake_rows(query: Any, source: str) -> dict[str, list[tuple[object, ...]]]:
    """Every row of the source's events and DLQ, without the columns that name the run."""
    return {
        "events": query(f"SELECT * EXCLUDE (run_id) FROM {source}.events ORDER BY source_file, line_number"),
        "dlq": query(
            f"SELECT * EXCLUDE (run_id, quarantined_at) FROM {source}.dlq ORDER BY source_file, line_number, reason"
        ),
    }


def assert_exact_counts(result: ExecuteInProcessResult, generated: list[GeneratedPartition]) -> None:
    """Every generated record was read once: good ones loaded, bad ones quarantined, per day."""
    for partition in generated:
        metadata = events_metadata(result, partition.source)[partition.day.isoformat()]
        assert metadata["rows_read"] == partition.records, partition
        assert metadata["rows_quarantined"] == partition.bad_records, partition
        assert metadata["dagster/row_count"] == partition.records - partition.bad_records, partition
        assert metadata["lines_read"] == partition.lines, partition
        assert metadata["files"] == partition.files, partition
        assert metadata["hours_present"] == len(partition.hours_present), partition


def test_s3_partition_flow_equals_the_same_files_from_a_local_folder(
    s3_pipeline: S3PipelineEnv, instance: DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two days of both sources (with `.log.gz` and CRLF hours, a missing hour, bad lines) give the
    same rows, quarantine, metadata and checks from S3 as from local folders; the manifests are
    in S3 at `{prefix}/manifests/{source}/{day}.json`, the Delta tables under the lake's prefix;
    the run log says `mode=s3` and names the three locations."""
    generated = generate_landing_zone(s3_pipeline.local_landing, DAYS, lines_per_hour=40)
    assert all(partition.bad_records > 0 for partition in generated)
    local = PipelineEnv(s3_pipeline.local_landing, tmp_path / "local-output", tmp_path / "local-lake")
    with monkeypatch.context() as local_settings:
        local_settings.setenv("PIPELINE_LANDING_URL", str(local.landing))
        local_settings.setenv("PIPELINE_OUTPUT_URL", str(local.output))
        local_settings.setenv("PIPELINE_LAKE_URL", str(local.lake))
        local_result = materialize_range(build_definitions(), instance, "2024-01-15", "2024-01-16")
        local_rows = {source: lake_rows(local.query, source) for source in ("access", "app")}
    uploaded = s3_pipeline.upload_landing()
    assert any(key.endswith(".log.gz") for key in uploaded)

    s3_result = materialize_range(s3_pipeline.definitions(), instance, "2024-01-15", "2024-01-16")

    assert local_result.success and s3_result.success
    assert_exact_counts(s3_result, generated)
    for source in ("access", "app"):
        from_s3, from_local = events_metadata(s3_result, source), events_metadata(local_result, source)
        for key in ("2024-01-15", "2024-01-16"):
            assert {k: v for k, v in from_s3[key].items() if k not in PLACE_AND_TIME} == {
                k: v for k, v in from_local[key].items() if k not in PLACE_AND_TIME
            }
            assert from_s3[key]["manifest"] == f"{s3_pipeline.output_url}/manifests/{source}/{key}.json"
            manifest = s3_pipeline.manifest(source, key)
            assert manifest["status"] == "loaded"
            assert manifest["rows_loaded"] == from_s3[key]["dagster/row_count"]
            assert manifest["summary"] == local.manifest(source, key)["summary"]
        assert lake_rows(s3_pipeline.query, source) == local_rows[source]
        assert [(row["partition_date"].isoformat(), row["status"]) for row in s3_pipeline.attempts(source)] == [
            ("2024-01-15", "loaded"),
            ("2024-01-16", "loaded"),
        ]
    # The UI links the manifest: a URL in S3 mode, a local path otherwise.
    manifest_types = [
        {
            type(event.materialization.metadata["manifest"])
            for event in result.get_asset_materialization_events()
            if "manifest" in event.materialization.metadata
        }
        for result in (s3_result, local_result)
    ]
    assert manifest_types == [{UrlMetadataValue}, {PathMetadataValue}]
    gz_rows = s3_pipeline.query("SELECT count(*) FROM access.events WHERE source_file LIKE '%.log.gz'")[0][0]
    assert gz_rows > 0
    lake_keys = s3_pipeline.keys(f"{LAKE_PREFIX}/")
    for source in ("access", "app"):
        for table in ("events", "dlq", "daily_metrics", "loads"):
            assert f"{LAKE_PREFIX}/{source}/{table}/_delta_log/00000000000000000000.json" in lake_keys
        day_files = f"{LAKE_PREFIX}/{source}/events/partition_date=2024-01-16/part-"
        assert any(key.startswith(day_files) for key in lake_keys)
    assert s3_pipeline.keys(f"{OUTPUT_PREFIX}/") == [
        f"{OUTPUT_PREFIX}/manifests/{source}/{key}.json"
        for source in ("access", "app")
        for key in ("2024-01-15", "2024-01-16")
    ]
    s3_log = "\n".join(log_messages(instance, s3_result.run_id))
    assert (
        f"mode=s3 landing={s3_pipeline.landing_url} output={s3_pipeline.output_url} lake={s3_pipeline.lake_url}"
        in s3_log
    )
    assert f"s3_endpoint={s3_pipeline.proxy.endpoint}" in s3_log
    assert "mode=local" in "\n".join(log_messages(instance, local_result.run_id))


def test_rerun_replaces_rows_and_manifests_in_place(s3_pipeline: S3PipelineEnv, instance: DagsterInstance) -> None:
    """Running a day again leaves one copy of its rows (the second run's) and one manifest
    object, never two; `loads` keeps both attempts."""
    generate_landing_zone(s3_pipeline.local_landing, DAYS[:1], sources=["access"], lines_per_hour=20)
    s3_pipeline.upload_landing()
    defs = s3_pipeline.definitions()
    first = materialize_range(defs, instance, "2024-01-15", selection=INGEST_ONLY)
    before = lake_rows(s3_pipeline.query, "access")
    second = materialize_range(defs, instance, "2024-01-15", selection=INGEST_ONLY)
    assert first.success and second.success
    assert lake_rows(s3_pipeline.query, "access") == before
    assert s3_pipeline.query("SELECT DISTINCT run_id FROM access.events") == [(second.run_id,)]
    assert s3_pipeline.query("SELECT DISTINCT run_id FROM access.dlq") == [(second.run_id,)]
    assert [(row["attempt"], row["run_id"], row["status"]) for row in s3_pipeline.attempts("access", "2024-01-15")] == [
        (1, first.run_id, "loaded"),
        (2, second.run_id, "loaded"),
    ]
    assert s3_pipeline.keys(f"{OUTPUT_PREFIX}/") == [f"{OUTPUT_PREFIX}/manifests/access/2024-01-15.json"]
    assert s3_pipeline.manifest("access", "2024-01-15")["run_id"] == second.run_id


def test_transient_faults_are_survived_within_the_step(s3_pipeline: S3PipelineEnv, instance: DagsterInstance) -> None:
    """Faults in the traffic of every client, each once or twice: the run succeeds on its first
    step attempt with exact counts.

    - boto3: throttled landing listings, a reset connection, a `.log.gz` body cut half-way (the
      read resumes with a ranged GET), a 500 on the manifest write and on taking the day lock;
    - delta-rs: throttled listings of a table's log, a 500 on the day's commit, a reset and a
      body cut half-way while reading commits, a 503 on the `loads` data file;
    - pyarrow: a 503 on starting a data file's upload, a 500 on uploading its part, a reset and
      a body cut half-way while reading the events back for the daily metrics."""
    generated = generate_landing_zone(s3_pipeline.local_landing, DAYS[:1], sources=["access"], lines_per_hour=40)
    s3_pipeline.upload_landing()
    proxy = s3_pipeline.proxy
    table = "/lake/access/{}/".format
    data_file = r"partition_date=2024-01-15/part-[^/]*\.parquet"
    faults = [
        # boto3
        proxy.inject("GET", "list-type=2&prefix=landing/access/", "503", times=2),
        proxy.inject("GET", r"/hour=03/web-01\.log$", "reset"),
        proxy.inject("GET", r"/hour=12/web-01\.log\.gz$", "truncate"),
        proxy.inject("PUT", r"/manifests/access/2024-01-15\.json$", "500"),
        proxy.inject("PUT", r"/lake/access/_locks/2024-01-15\.json$", "500"),
        # delta-rs
        proxy.inject("GET", "list-type=2&prefix=lake/access/events/_delta_log/", "503", times=2),
        proxy.inject("PUT", table("events") + r"_delta_log/00000000000000000001\.json$", "500"),
        proxy.inject("GET", table("dlq") + r"_delta_log/00000000000000000001\.json$", "reset"),
        proxy.inject("PUT", table("loads") + data_file + "$", "503"),
        # pyarrow
        proxy.inject("POST", table("events") + data_file + r"\?uploads$", "503"),
        proxy.inject("PUT", table("dlq") + data_file + r"\?partNumber=1&", "500"),
        proxy.inject("GET", table("events") + data_file + "$", "reset"),
        proxy.inject("GET", table("loads") + r"_delta_log/00000000000000000000\.json$", "truncate"),
        proxy.inject("GET", table("events") + data_file + "$", "truncate"),
    ]

    result = materialize_range(s3_pipeline.definitions(), instance, "2024-01-15", selection=INGEST_ONLY)

    assert result.success
    assert_exact_counts(result, generated)
    assert [fault.hits for fault in faults] == [fault.fault.times for fault in faults]
    assert step_events(result, DagsterEventType.STEP_UP_FOR_RETRY) == []
    resumed = proxy.requests("GET", r"/hour=12/web-01\.log\.gz$")
    assert [seen.outcome for seen in resumed] == ["truncate", "forwarded"]
    assert resumed[1].range is not None and resumed[1].range.startswith("bytes=")
    assert s3_pipeline.manifest("access", "2024-01-15")["status"] == "loaded"
    assert [(row["attempt"], row["status"]) for row in s3_pipeline.attempts("access", "2024-01-15")] == [(1, "loaded")]
    loaded = generated[0].records - generated[0].bad_records
    assert s3_pipeline.query("SELECT count(*) FROM access.events") == [(loaded,)]
    assert s3_pipeline.query("SELECT count(*) FROM access.daily_metrics") == [(1,)]


def test_fault_outlasting_the_client_is_retried_by_dagster(
    s3_pipeline: S3PipelineEnv, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With two attempts per call, two throttled landing listings in a row (boto3) fail the first
    step attempt and two throttled commits of the day's events (delta-rs) fail the second; the
    step's RetryPolicy runs it again each time (10 s, then 30 s later) and the third loads the
    day. Each failed attempt is in `loads`, naming the bucket and key. Slow on purpose: it
    waits out the real policy delays."""
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    generated = generate_landing_zone(s3_pipeline.local_landing, DAYS[:1], sources=["access"], lines_per_hour=20)
    s3_pipeline.upload_landing()
    listing = s3_pipeline.proxy.inject("GET", r"list-type=2&prefix=landing/access/", "503", times=2)
    commit_key = f"{LAKE_PREFIX}/access/events/_delta_log/00000000000000000001.json"
    commit = s3_pipeline.proxy.inject("PUT", f"/{commit_key}$", "503", times=2)

    result = materialize_range(s3_pipeline.definitions(), instance, "2024-01-15", selection=INGEST_ONLY)

    assert result.success
    assert (listing.hits, commit.hits) == (2, 2)
    retries = step_events(result, DagsterEventType.STEP_UP_FOR_RETRY)
    assert [event.step_key for event in retries] == ["access_ingest", "access_ingest"]
    assert_exact_counts(result, generated)
    assert s3_pipeline.manifest("access", "2024-01-15")["status"] == "loaded"
    attempts = s3_pipeline.attempts("access", "2024-01-15")
    assert [(row["attempt"], row["status"]) for row in attempts] == [(1, "failed"), (2, "failed"), (3, "loaded")]
    bucket = s3_pipeline.bucket
    assert f"S3 ListObjectsV2 failed for bucket {bucket!r}, key 'landing/access/dt=2024-01-15/'" in attempts[0]["error"]
    assert f"S3 PutObject by delta-rs failed for bucket {bucket!r}, key {commit_key!r}" in attempts[1]["error"]
    assert all("SlowDown" in row["error"] and "a later retry may succeed" in row["error"] for row in attempts[:2])


def test_access_denied_fails_the_run_at_once_naming_bucket_and_key(
    s3_pipeline: S3PipelineEnv, instance: DagsterInstance
) -> None:
    """A 403 on one file: one request for it, no step retry, and the failure and the manifest
    name the bucket and the key."""
    generate_landing_zone(s3_pipeline.local_landing, DAYS[:1], sources=["access"], lines_per_hour=10)
    s3_pipeline.upload_landing()
    denied = "landing/access/dt=2024-01-15/hour=07/web-01.log"
    s3_pipeline.proxy.inject("GET", f"/{denied}$", "403", times=100)

    result = materialize_range(
        s3_pipeline.definitions(), instance, "2024-01-15", selection=INGEST_ONLY, raise_on_error=False
    )

    assert not result.success
    assert step_events(result, DagsterEventType.STEP_UP_FOR_RETRY) == []
    assert len(s3_pipeline.proxy.requests("GET", f"/{denied}$")) == 1
    message = failure_text(result)
    assert f"bucket {s3_pipeline.bucket!r}, key {denied!r}" in message and "AccessDenied" in message
    manifest = s3_pipeline.manifest("access", "2024-01-15")
    assert manifest["status"] == "failed"
    assert denied in manifest["error"] and "AccessDenied" in manifest["error"]


@pytest.mark.parametrize(
    ("client", "method", "pattern", "operation"),
    [
        ("delta-rs", "PUT", r"/lake/access/events/_delta_log/00000000000000000001\.json$", "PutObject"),
        ("pyarrow", "POST", r"/lake/access/dlq/partition_date=.*\.parquet\?uploads$", "CreateMultipartUpload"),
    ],
    ids=["commit", "data-file"],
)
def test_access_denied_in_the_lake_fails_the_run_at_once_naming_bucket_and_key(
    s3_pipeline: S3PipelineEnv, instance: DagsterInstance, client: str, method: str, pattern: str, operation: str
) -> None:
    """A 403 on the lake's own clients, on the day's commit (delta-rs) or on a data file
    (pyarrow): one request, no step retry, and the failure, the manifest and the failed
    attempt in `loads` name the bucket, the key and the client."""
    generate_landing_zone(s3_pipeline.local_landing, DAYS[:1], sources=["access"], lines_per_hour=10)
    s3_pipeline.upload_landing()
    denied = s3_pipeline.proxy.inject(method, pattern, "403", times=100)

    result = materialize_range(
        s3_pipeline.definitions(), instance, "2024-01-15", selection=INGEST_ONLY, raise_on_error=False
    )

    assert not result.success
    assert step_events(result, DagsterEventType.STEP_UP_FOR_RETRY) == []
    assert denied.hits == 1
    (request,) = s3_pipeline.proxy.requests(method, pattern)
    key = request.target.partition("?")[0].removeprefix(f"/{s3_pipeline.bucket}/")
    expected = f"S3 {operation} by {client} failed for bucket {s3_pipeline.bucket!r}, key {key!r}"
    message = failure_text(result)
    assert expected in message and "AccessDenied" in message and "check the IAM and bucket policies" in message
    manifest = s3_pipeline.manifest("access", "2024-01-15")
    assert manifest["status"] == "failed"
    assert expected in manifest["error"] and "AccessDenied" in manifest["error"]
    (attempt,) = s3_pipeline.attempts("access", "2024-01-15")
    assert attempt["status"] == "failed" and expected in attempt["error"]


def test_missing_bucket_fails_the_run_at_once_naming_it(
    s3_pipeline: S3PipelineEnv, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A landing URL naming a bucket that does not exist: one listing request, no retry, and the
    failure says which bucket and prefix; so does the day's manifest, though nothing was read."""
    monkeypatch.setenv("PIPELINE_LANDING_URL", "s3://no-such-landing-bucket/landing")

    result = materialize_range(
        s3_pipeline.definitions(), instance, "2024-01-15", selection=INGEST_ONLY, raise_on_error=False
    )

    assert not result.success
    assert step_events(result, DagsterEventType.STEP_UP_FOR_RETRY) == []
    assert len(s3_pipeline.proxy.requests("GET", "/no-such-landing-bucket")) == 1
    message = failure_text(result)
    expected = "bucket 'no-such-landing-bucket', key 'landing/access/dt=2024-01-15/'"
    assert expected in message and "NoSuchBucket" in message
    manifest = s3_pipeline.manifest("access", "2024-01-15")
    assert (manifest["status"], manifest["lines_read"]) == ("failed", 0)
    assert expected in manifest["error"] and "NoSuchBucket" in manifest["error"]


def test_missing_lake_bucket_fails_the_run_at_once_naming_it(
    s3_pipeline: S3PipelineEnv, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lake URL naming a bucket that does not exist: no retry, nothing read from the landing
    zone, and the failure says which bucket and prefix delta-rs could not list; so does the
    day's manifest (in the output store, which exists)."""
    monkeypatch.setenv("PIPELINE_LAKE_URL", "s3://no-such-lake-bucket/lake")

    result = materialize_range(
        s3_pipeline.definitions(), instance, "2024-01-15", selection=INGEST_ONLY, raise_on_error=False
    )

    assert not result.success
    assert step_events(result, DagsterEventType.STEP_UP_FOR_RETRY) == []
    assert s3_pipeline.proxy.requests("GET", "prefix=landing/") == []
    message = failure_text(result)
    expected = "S3 ListObjectsV2 by delta-rs failed for bucket 'no-such-lake-bucket', key 'lake/access/"
    assert expected in message and "NoSuchBucket" in message and "the bucket does not exist" in message
    manifest = s3_pipeline.manifest("access", "2024-01-15")
    assert (manifest["status"], manifest["lines_read"]) == ("failed", 0)
    assert expected in manifest["error"] and "NoSuchBucket" in manifest["error"]


def test_prefix_leaving_its_folder_is_refused_before_any_request(
    s3_pipeline: S3PipelineEnv, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`..` in an S3 URL, of the output store or of the lake, fails the run at resource setup
    (so no retry policy waits on it), naming the variable; nothing is sent to S3."""
    for variable in ("PIPELINE_OUTPUT_URL", "PIPELINE_LAKE_URL"):
        url = f"s3://{s3_pipeline.bucket}/landing/../other-team"
        with monkeypatch.context() as settings:
            settings.setenv(variable, url)
            result = materialize_range(
                s3_pipeline.definitions(), instance, "2024-01-15", selection=INGEST_ONLY, raise_on_error=False
            )

        assert not result.success
        assert step_events(result, DagsterEventType.STEP_UP_FOR_RETRY) == []
        message = failure_text(result)
        assert f"{variable}={url}" in message
        assert "must stay inside the store's root" in message
    assert s3_pipeline.proxy.seen == []


def test_local_mode_never_creates_an_s3_client(
    pipeline_env: PipelineEnv, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With local folders nothing builds a boto3 client, so nothing can reach S3; the run log
    says `mode=local` with the folders used."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("local mode must not create an AWS client")

    monkeypatch.setattr(boto3.session.Session, "client", refuse)
    monkeypatch.setattr(boto3.session.Session, "resource", refuse)
    generate_landing_zone(pipeline_env.landing, DAYS[:1], sources=["access"], lines_per_hour=10)

    result = materialize_range(pipeline_env.definitions(), instance, "2024-01-15")

    assert result.success
    expected = f"pipeline storage: mode=local landing={pipeline_env.landing} output={pipeline_env.output}"
    assert any(message.startswith(expected) for message in log_messages(instance, result.run_id))
    assert pipeline_env.manifest("access", "2024-01-15")["status"] == "loaded"
