"""The lake in S3 (moto's server on loopback): concurrent writers, the S3 day lease, and
readers, with the same promises as a local lake. (Straight to moto, not through the fault
proxy: what these tests fault is processes, not the network.)

- Writers of different days at once both succeed (a Delta commit on S3 is a conditional PUT of
  the next log entry; no locking provider), over many trials.
- Writers of the same day take turns on the day's lease object (conditional PUT
  `If-None-Match`); a killed holder's lease is taken over once it expires.
- A reader sees a consistent snapshot, reading the data files with pyarrow's S3 client.
- A writer SIGKILLed between the commits of two tables never shows a half-replaced day.
- What the lake's clients report of a failed call names bucket and key, and whether a retry
  may help (the one test here that goes through the fault proxy).
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable

from pipeline.cli.generate import generate_landing_zone
from pipeline.engine.lake import Lake, LakeLocation, S3ClientSettings
from pipeline.engine.lake.datasets import files_dataset, table_files
from pipeline.engine.lake.errors import lake_storage_error
from pipeline.engine.lake.maintenance import maintain_source
from pipeline.engine.lake.snapshot import connect
from pipeline.orchestration.retries import is_transient
from pipeline.sources import load_sources
from pipeline_tests.reliability.conftest import kill, wait_for, worker
from pipeline_tests.storage.s3_server import FaultProxy, MotoServer

SOURCES = load_sources()
DAYS = [dt.date(2024, 2, 10), dt.date(2024, 2, 11)]
CHUNK = 32 * 1024
TRIALS = 10


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small days of access logs, landed locally (the lake is what lives in S3 here)."""
    root = tmp_path_factory.mktemp("s3-lake-landing")
    generate_landing_zone(root, DAYS, sources=["access"], lines_per_hour=100, bad_line_rate=0.004, seed=5)
    return root


@pytest.fixture
def direct(moto_server: MotoServer, aws_env: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """The standard AWS variables of `aws_env`, with the endpoint set to moto itself."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint)
    return moto_server


def query(url: str, sql: str) -> list[tuple[object, ...]]:
    with connect(LakeLocation.s3(url, S3ClientSettings()), SOURCES.values()) as connection:
        return connection.execute(sql).fetchall()


def finish(process: Any) -> str:
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr.decode()[-3000:]
    return stdout.decode().strip()


def test_writers_of_different_days_at_once_on_s3(
    landing: Path, tmp_path: Path, bucket: str, direct: MotoServer, admin_s3: Any
) -> None:
    """Fault: two processes commit access days 2024-02-10 and -11 to one S3 lake at the same
    moment, ten trials (each in a new lake, so the first commits also race to create the
    tables). Expected: every run succeeds; each lake holds both days, each from its run, with
    the exact counts of the first trial."""
    counts = None
    for trial in range(TRIALS):
        url = f"s3://{bucket}/lake-{trial}"
        processes = [
            worker(
                landing,
                tmp_path / f"out-{trial}",
                url,
                "access",
                day.isoformat(),
                run_id=f"run-{trial}-{n}",
                chunk_bytes=CHUNK,
            )  # fmt: skip
            for n, day in enumerate(DAYS)
        ]
        assert all(finish(process).startswith("loaded ") for process in processes), trial
        rows = query(url, "SELECT partition_date::VARCHAR, min(run_id), max(run_id), count(*) FROM access.events "
                          "GROUP BY 1 ORDER BY 1")  # fmt: skip
        assert [(day, low, high) for day, low, high, _ in rows] == [
            (DAYS[0].isoformat(), f"run-{trial}-0", f"run-{trial}-0"),
            (DAYS[1].isoformat(), f"run-{trial}-1", f"run-{trial}-1"),
        ]
        counts = counts or [count for *_, count in rows]
        assert [count for *_, count in rows] == counts
    assert counts and all(count > 2000 for count in counts)
    # The commits (log entries) and the data files are objects of the bucket.
    keys = [entry["Key"] for entry in admin_s3.list_objects_v2(Bucket=bucket, Prefix="lake-0/access/")["Contents"]]
    assert any("/events/_delta_log/00000000000000000001.json" in key for key in keys)
    assert any("/events/partition_date=2024-02-10/part-" in key for key in keys)


def test_the_same_day_twice_at_once_on_s3_takes_turns(
    landing: Path, tmp_path: Path, bucket: str, direct: MotoServer
) -> None:
    """Fault: two processes load access/2024-02-10 into one S3 lake at once. Expected: both
    succeed, the second after the first released the day's lease; the day holds one run's rows
    (the last), `loads` numbers both attempts."""
    url = f"s3://{bucket}/lake"
    processes = [
        worker(landing, tmp_path / "out", url, "access", DAYS[0].isoformat(), run_id=f"run-{n}") for n in (1, 2)
    ]
    outcomes = [finish(process) for process in processes]
    assert outcomes[0] == outcomes[1]
    attempts = query(url, "SELECT attempt, run_id FROM access.loads ORDER BY attempt")
    assert [attempt for attempt, _ in attempts] == [1, 2]
    assert query(url, "SELECT DISTINCT run_id FROM access.events") == [(attempts[-1][1],)]


def test_a_killed_holders_lease_is_taken_over_when_it_expires(
    landing: Path, tmp_path: Path, bucket: str, admin_s3: Any, direct: MotoServer
) -> None:
    """Fault: process A holds the day's S3 lease (stopped while writing) and is SIGKILLed, so it
    never releases it; B waits for the same day. Expected: B takes the lease over once it is
    older than its duration (3 s here), says so, and loads the day; A's uncommitted files are
    not part of the day."""
    url = f"s3://{bucket}/lake"
    marker = tmp_path / "reached"
    holder = worker(landing, tmp_path / "out", url, "access", DAYS[0].isoformat(), hook="mid_write", marker=marker,
                    run_id="run-a", chunk_bytes=CHUNK, lease_s=3.0)  # fmt: skip
    wait_for(marker, holder)
    lease_key = f"lake/access/_locks/{DAYS[0].isoformat()}.json"
    assert b'"owner": "run-a"' in admin_s3.get_object(Bucket=bucket, Key=lease_key)["Body"].read()
    kill(holder)
    started = time.monotonic()
    waiter = worker(landing, tmp_path / "out", url, "access", DAYS[0].isoformat(), run_id="run-b", chunk_bytes=CHUNK,
                    lease_s=3.0)  # fmt: skip
    stdout, stderr = waiter.communicate(timeout=300)
    assert waiter.returncode == 0, stderr.decode()[-3000:]
    assert "took over the lease of run run-a" in stderr.decode()
    assert time.monotonic() - started >= 1.0
    assert query(url, "SELECT DISTINCT run_id FROM access.events") == [("run-b",)]
    assert query(url, "SELECT run_id, status FROM access.loads") == [("run-b", "loaded")]
    # Released on success: the next writer of the day does not wait.
    assert "Contents" not in admin_s3.list_objects_v2(Bucket=bucket, Prefix=lease_key)


def test_a_reader_keeps_its_snapshot_while_a_writer_replaces_the_day(
    landing: Path, tmp_path: Path, bucket: str, direct: MotoServer
) -> None:
    """A connection opened on a loaded day keeps answering from it while another process
    replaces the day; a new connection sees the new load."""
    url = f"s3://{bucket}/lake"
    finish(worker(landing, tmp_path / "out", url, "access", DAYS[0].isoformat(), run_id="run-old"))
    reader = connect(LakeLocation.s3(url, S3ClientSettings()), SOURCES.values())
    sql = "SELECT run_id, count(*) FROM access.events GROUP BY 1"
    before = reader.execute(sql).fetchall()
    finish(worker(landing, tmp_path / "out", url, "access", DAYS[0].isoformat(), run_id="run-new"))
    assert reader.execute(sql).fetchall() == before == [("run-old", before[0][1])]
    assert query(url, sql) == [("run-new", before[0][1])]


def test_lake_settings_reach_delta_rs_and_pyarrow_without_leaking(aws_env: FaultProxy) -> None:
    """The same endpoint, region, timeouts and retries are handed to delta-rs and pyarrow; the
    secret key is never in what a location shows of itself."""
    settings = S3ClientSettings(
        access_key_id="AKIAEXAMPLE",
        secret_access_key="super-secret",
        connect_timeout_s=3,
        read_timeout_s=7,
        max_attempts=4,
    )
    options = settings.storage_options()
    assert options["AWS_ENDPOINT_URL"] == aws_env.endpoint and options["AWS_ALLOW_HTTP"] == "true"
    assert (options["connect_timeout"], options["timeout"], options["max_retries"]) == ("3s", "7s", "3")
    location = LakeLocation.s3("s3://bucket/lake", settings)
    assert "super-secret" not in repr(location) and "super-secret" not in location.describe()
    assert "AKIAEXAMPLE" not in location.describe()
    filesystem = settings.pyarrow_filesystem()
    assert filesystem.region == "us-east-1"
    assert Lake(location, s3_client=object()).location.is_s3


def s3_lake(url: str, admin_s3: Any) -> Lake:
    """The S3 lake at `url` for maintenance and raw reads, its day locks through `admin_s3`."""
    return Lake(LakeLocation.s3(url, S3ClientSettings()), s3_client=admin_s3, lock_wait_s=60.0, lease_s=3.0)


def raw_runs(lake: Lake, table: str) -> list[str]:
    """The run ids in the current files of an access table, read raw (without the `loads`-driven
    snapshot, as Spark or Trino would)."""
    tables = lake.tables(SOURCES["access"])
    dataset = files_dataset(tables.location, tables.uri(table), tables.schemas[table], table_files(tables.open(table)))
    return sorted(set(dataset.to_table(columns=["run_id"]).column("run_id").to_pylist()))


def test_a_writer_killed_between_commits_on_s3_never_shows_a_half_replaced_day(
    landing: Path, tmp_path: Path, bucket: str, admin_s3: Any, direct: MotoServer
) -> None:
    """Fault: a re-run of access/2024-02-10 in an S3 lake is SIGKILLed after it committed the
    day's events and DLQ, before the metrics and the `loads` row that seals the day. Expected:
    the documented reader shows exactly the previous load in every table, although the raw
    events and DLQ files already are the killed run's (asserted, so the day really is torn);
    `lake maintain` puts those back once the killed run's lease expired; the next run loads the
    day with the same rows, and `loads` numbers the two sealed attempts."""
    url = f"s3://{bucket}/lake"
    day = DAYS[0].isoformat()
    finish(worker(landing, tmp_path / "out", url, "access", day, run_id="run-before", chunk_bytes=CHUNK))
    counts_sql = (
        "SELECT (SELECT count(*) FROM access.events), (SELECT count(*) FROM access.dlq), "
        "(SELECT count(*) FROM access.daily_metrics)"
    )
    before = query(url, counts_sql)
    assert before[0][0] > 2000 and before[0][1] > 0 and before[0][2] == 1
    marker = tmp_path / "reached"
    killed = worker(landing, tmp_path / "out", url, "access", day, hook="after_dlq_commit", marker=marker,
                    run_id="run-killed", chunk_bytes=CHUNK, lease_s=3.0)  # fmt: skip
    wait_for(marker, killed)
    kill(killed)

    lake = s3_lake(url, admin_s3)
    assert [raw_runs(lake, table) for table in ("events", "dlq", "daily_metrics")] == [
        ["run-killed"],
        ["run-killed"],
        ["run-before"],
    ]
    union = "SELECT DISTINCT run_id FROM access.{} UNION SELECT DISTINCT run_id FROM access.{}"
    assert query(url, union.format("events", "dlq")) == [("run-before",)]
    assert query(url, "SELECT DISTINCT run_id FROM access.daily_metrics") == [("run-before",)]
    assert query(url, counts_sql) == before
    assert query(url, "SELECT run_id, status FROM access.loads") == [("run-before", "loaded")]

    report = maintain_source(lake, SOURCES["access"])  # takes the killed run's lease over (3 s)
    assert report.busy_days == [] and sorted(report.repaired_days[day]) == ["dlq", "events"]
    assert [raw_runs(lake, table) for table in ("events", "dlq", "daily_metrics")] == [["run-before"]] * 3
    assert query(url, counts_sql) == before

    finish(worker(landing, tmp_path / "out", url, "access", day, run_id="run-rerun", chunk_bytes=CHUNK))
    assert query(url, counts_sql) == before
    assert query(url, union.format("events", "dlq")) == [("run-rerun",)]
    assert query(url, "SELECT attempt, run_id, status FROM access.loads ORDER BY attempt") == [
        (1, "run-before", "loaded"),
        (2, "run-rerun", "loaded"),
    ]


def test_lake_client_failures_say_where_and_whether_a_retry_may_help(bucket: str, aws_env: FaultProxy) -> None:
    """Fault: throttling that outlasts pyarrow's attempts, resets that outlast delta-rs's, and a
    403 to delta-rs (through the fault proxy). Expected: each error, as `lake_storage_error`
    reads it, names the client, the operation, the bucket and the key; the throttling and the
    resets may pass (a step retry is worth it), the 403 cannot."""
    settings = S3ClientSettings(connect_timeout_s=2, read_timeout_s=5, max_attempts=2)
    aws_env.inject("PUT", r"/lake/throttled\.parquet\?partNumber=1&", "503", times=10)
    aws_env.inject("GET", "lake/reset/_delta_log/", "reset", times=10)
    aws_env.inject("GET", "lake/denied/_delta_log/", "403", times=10)
    with pytest.raises(OSError) as throttled:
        with settings.pyarrow_filesystem().open_output_stream(f"{bucket}/lake/throttled.parquet") as stream:
            stream.write(b"x" * 1024)
    with pytest.raises(OSError) as reset:
        DeltaTable(f"s3://{bucket}/lake/reset", storage_options=settings.storage_options())
    with pytest.raises(OSError) as denied:
        DeltaTable(f"s3://{bucket}/lake/denied", storage_options=settings.storage_options())

    for raised, head, code, retryable in (
        (throttled, f"S3 UploadPart by pyarrow failed for bucket {bucket!r}, key 'lake/throttled.parquet'", "SlowDown",
         True),
        (reset, f"S3 GetObject by delta-rs failed for bucket {bucket!r}, key 'lake/reset/_delta_log/", "NetworkError",
         True),
        (denied, f"by delta-rs failed for bucket {bucket!r}, key 'lake/denied/_delta_log/", "AccessDenied", False),
    ):  # fmt: skip
        failure = lake_storage_error(raised.value)
        assert failure is not None, raised.value
        assert head in str(failure) and (failure.code, failure.retryable) == (code, retryable), failure
        assert is_transient(raised.value) is retryable
    assert lake_storage_error(ValueError("not a storage error")) is None
