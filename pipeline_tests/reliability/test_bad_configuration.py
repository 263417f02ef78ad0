"""Bad configuration: each fails with a clear error naming what is wrong, before any data is written.

Fault per test: an unknown asset selection, malformed source definitions, an invalid partition
key, an unusable `PIPELINE_*` value, an unreachable PostgreSQL instance storage, an
unreachable S3 endpoint. Expected: a non-zero exit / an exception whose text names the
setting or input at fault, and no table (or no rows in it) afterwards.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
from dagster import DagsterInstance

from pipeline.settings import SettingsError
from pipeline.sources import SourceConfigError, load_sources
from pipeline_tests.conftest import PipelineEnv, materialize_range
from pipeline_tests.reliability.conftest import PROJECT_ROOT
from pipeline_tests.reliability.test_hostile_input import access_line, land

DAGSTER = str(PROJECT_ROOT / ".venv" / "bin" / "dagster")
SOURCES_YAML = (PROJECT_ROOT / "pipeline" / "sources" / "sources.yaml").read_text()


def closed_port() -> int:
    """A local TCP port with nothing listening on it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cli(env: PipelineEnv, *arguments: str, extra: dict[str, str] | None = None, home: Path | None = None,
        timeout: float = 180) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """`dagster asset materialize -m pipeline.definitions ...` against the isolated deployment."""
    environment = {
        **os.environ,
        "PIPELINE_LANDING_URL": str(env.landing),
        "PIPELINE_OUTPUT_URL": str(env.output),
        "PIPELINE_LAKE_URL": str(env.lake),
        **(extra or {}),
    }
    environment.pop("PIPELINE_SOURCES_FILE", None)
    environment.pop("PIPELINE_WAREHOUSE", None)
    environment.pop("DAGSTER_HOME", None)
    if home is not None:
        environment["DAGSTER_HOME"] = str(home)
    return subprocess.run(
        [DAGSTER, "asset", "materialize", "-m", "pipeline.definitions", *arguments],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def seed_day(env: PipelineEnv) -> None:
    land(env.landing, "access", 10, "web.log", f"{access_line(1)}\n".encode())


@pytest.mark.slow
def test_unknown_source_selection(pipeline_env: PipelineEnv) -> None:
    """Fault: `--select nosuch/events`. Expected: exit non-zero, the message names `nosuch/events`;
    no table is created."""
    seed_day(pipeline_env)
    result = cli(pipeline_env, "--select", "nosuch/events", "--partition", "2024-01-15")
    assert result.returncode != 0
    assert "nosuch/events" in result.stderr + result.stdout
    assert not pipeline_env.lake.exists()


@pytest.mark.slow
@pytest.mark.parametrize("partition", ["2024-13-45", "1999-01-01"])
def test_invalid_partition_key(pipeline_env: PipelineEnv, partition: str) -> None:
    """Fault: `--partition` that is not a day of the partition set (an impossible date, a
    day before the source's first_day 2024-01-01). Expected: exit non-zero naming the key; no
    table is created."""
    seed_day(pipeline_env)
    result = cli(pipeline_env, "--select", "access/events,access/dlq", "--partition", partition)
    assert result.returncode != 0
    assert partition in result.stderr + result.stdout
    assert not pipeline_env.lake.exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sources:\n  broken: [unclosed\n", "sources.yaml"),
        (SOURCES_YAML.replace("pattern: '^(?P<timestamp>", "pattern: '^(?P<timestamp(>", 1), "app"),
        (SOURCES_YAML.replace("status: {type: integer,", "status: {type: decimal,", 1), "access"),
        (SOURCES_YAML.replace("timezone: UTC", "timezone: Mars/Olympus", 1), "Mars/Olympus"),
        (SOURCES_YAML.replace("checks: {in_range: [100, 599]}", "checks: {in_range: [100]}", 1), "in_range"),
        (SOURCES_YAML.replace('first_day: "2024-01-01"', 'first_day: "someday"', 1), "access"),
        ("just a string\n", "sources.yaml"),
    ],
    ids=["yaml-syntax", "bad-regex", "unknown-type", "unknown-zone", "bad-check-args", "bad-first-day", "not-a-map"],
)
def test_malformed_source_definition(tmp_path: Path, text: str, expected: str) -> None:
    """Fault: a sources file that cannot work. Expected: `SourceConfigError` whose message names
    the file and the source / value at fault."""
    path = tmp_path / "sources.yaml"
    path.write_text(text)
    with pytest.raises(SourceConfigError) as raised:
        load_sources(path)
    message = str(raised.value)
    assert str(path) in message
    assert expected in message


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("PIPELINE_LANDING_URL", "ftp://x", "PIPELINE_LANDING_URL=ftp://x"),
        ("PIPELINE_OUTPUT_URL", "http://example.invalid/out", "PIPELINE_OUTPUT_URL=http://example.invalid/out"),
        ("PIPELINE_LANDING_URL", "s3://", "PIPELINE_LANDING_URL=s3://"),
        ("PIPELINE_LAKE_URL", "hdfs://namenode/lake", "PIPELINE_LAKE_URL=hdfs://namenode/lake"),
        ("PIPELINE_WAREHOUSE", "data/warehouse.duckdb", "PIPELINE_WAREHOUSE is no longer used: the single DuckDB file"),
        ("PIPELINE_STEP_EXECUTOR", "threads", "PIPELINE_STEP_EXECUTOR='threads'"),
    ],
)
def test_bad_setting_fails_before_any_write(
    pipeline_env: PipelineEnv, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch, variable: str, value: str,
    named: str,
) -> None:  # fmt: skip
    """Fault: an unusable setting. Expected: building the definitions or the run fails with a
    `SettingsError` naming the variable and its value; no table, no manifest."""
    seed_day(pipeline_env)
    monkeypatch.setenv(variable, value)
    try:
        result = materialize_range(
            pipeline_env.definitions(), instance, "2024-01-15", selection=["access/events", "access/dlq"],
            raise_on_error=False,
        )  # fmt: skip
    except SettingsError as error:  # raised while the definitions are built
        assert named in str(error)
    else:
        assert not result.success
        failures = [event for event in result.all_events if event.is_failure]
        text = " ".join(str(event.event_specific_data) for event in failures)
        assert named in text, text[:2000]
    assert not pipeline_env.lake.exists()
    assert not pipeline_env.output.exists()


@pytest.mark.slow
def test_unreachable_postgres_instance(pipeline_env: PipelineEnv, tmp_path: Path) -> None:
    """Fault: the Dagster instance's PostgreSQL storage points at a closed port.
    Expected: the CLI fails within seconds, saying it could not connect (naming host and port),
    never starting the run: no table, no manifest; the password is not in the output."""
    seed_day(pipeline_env)
    port = closed_port()
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        "storage:\n  postgres:\n    postgres_db:\n      hostname: 127.0.0.1\n"
        f"      port: {port}\n      username: dagster\n      password: {{env: DAGSTER_PG_PASSWORD}}\n"
        "      db_name: dagster\n      scheme: postgresql+psycopg2\n      params: {connect_timeout: 2}\n"
    )
    started = time.monotonic()
    result = cli(pipeline_env, "--select", "access/events,access/dlq", "--partition", "2024-01-15",
                 extra={"DAGSTER_PG_PASSWORD": "pg-Secret-4711"}, home=home)  # fmt: skip
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Connection refused" in output or "could not connect" in output.lower(), output[-2000:]
    assert str(port) in output
    assert "pg-Secret-4711" not in output
    assert elapsed < 120
    assert not pipeline_env.lake.exists()
    assert not pipeline_env.output.exists()


@pytest.mark.slow
def test_unreachable_s3_endpoint(
    pipeline_env: PipelineEnv, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault: `PIPELINE_LANDING_URL=s3://landing/logs` with `AWS_ENDPOINT_URL` on a closed local
    port (short timeouts, one attempt). Expected: the run fails (after the step's retry policy)
    with an error naming the endpoint; no row is written but the failed attempts, in `loads`; the day's manifest says
    `failed` (written on every exit path, even this one, where the landing zone cannot be listed)
    and names the bucket and the endpoint."""
    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("PIPELINE_LANDING_URL", "s3://landing/logs")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    # The step's own retry policy (10 s, 20 s) is what makes this slow; shorten it for the test.
    from dagster import RetryPolicy

    from pipeline.orchestration import assets as assets_module

    monkeypatch.setattr(assets_module, "INGEST_RETRY_POLICY", RetryPolicy(max_retries=1, delay=0.1))
    started = time.monotonic()
    result = materialize_range(pipeline_env.definitions(), instance, "2024-01-15",
                               selection=["access/events", "access/dlq"], raise_on_error=False)  # fmt: skip
    assert not result.success
    assert time.monotonic() - started < 90
    failures = [event for event in result.all_events if event.is_step_failure]
    text = " ".join(str(event.event_specific_data) for event in failures)
    assert "127.0.0.1" in text, text[:2000]
    # The tables exist (created before the listing, so that the attempt could be recorded) and
    # hold no row; `loads` records the failed attempts (the step and its one retry).
    assert pipeline_env.query("SELECT count(*) FROM access.events") == [(0,)]
    attempts = pipeline_env.attempts("access", "2024-01-15")
    assert [attempt["status"] for attempt in attempts] == ["failed", "failed"]
    assert "ListObjectsV2" in str(attempts[-1]["error"])
    manifest = pipeline_env.manifest("access", "2024-01-15")
    assert (manifest["status"], manifest["files"], manifest["rows_read"]) == ("failed", 0, 0)
    assert str(manifest["error"]).startswith("ObjectStoreError: S3 ListObjectsV2 failed for bucket 'landing'")
    assert endpoint in str(manifest["error"])
    assert str(manifest["summary"]).startswith("access 2024-01-15: FAILED after reading 0 lines from 0 files")
