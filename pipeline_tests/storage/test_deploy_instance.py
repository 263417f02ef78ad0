"""The production instance config (`deploy/dagster.yaml`) loaded into a real `DagsterInstance`.

Storage is a fresh PostgreSQL database (the ops harness's `postgres_database`), compute logs go
to moto's S3 server, and the pipeline's landing zone and output store are in S3 too. The one
substitution: ECS cannot run here (no AWS account, no ECS agent), so the instance that executes
runs has the default run launcher instead of `EcsRunLauncher`; everything else is the file as
deployed. The ECS launcher itself is built from the unmodified file, which validates its config
against the launcher's schema and makes no AWS call.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import yaml
from dagster import DagsterEventType, DagsterInstance, EventLogEntry, deserialize_value
from dagster._core.errors import DagsterInvalidConfigError

from pipeline.cli.generate import generate_landing_zone
from pipeline_tests.conftest import PROJECT_ROOT, day
from pipeline_tests.ops.conftest import BIN, PostgresDatabase, postgres_database  # noqa: F401 - the fixture
from pipeline_tests.storage.conftest import OUTPUT_PREFIX, S3PipelineEnv
from pipeline_tests.storage.test_s3_pipeline import assert_exact_counts

DEPLOY = PROJECT_ROOT / "deploy"
DEPLOY_YAML = DEPLOY / "dagster.yaml"
COMPUTE_LOG_PREFIX = "dagster-compute-logs"
ACCESS_ASSETS = ["access/events", "access/dlq", "access/daily_metrics"]
# ECS cannot run here: the instance that executes the run gets Dagster's default launcher.
DEFAULT_LAUNCHER = {"module": "dagster._core.launcher", "class": "DefaultRunLauncher"}


def dagster_home(tmp_path: Path, name: str, run_launcher: dict[str, Any] | None = None) -> Path:
    """A DAGSTER_HOME holding deploy/dagster.yaml, with only the run launcher replaced if asked."""
    config = yaml.safe_load(DEPLOY_YAML.read_text())
    if run_launcher is not None:
        config["run_launcher"] = run_launcher
    home = tmp_path / name
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return home


@pytest.fixture
def deploy_env(
    monkeypatch: pytest.MonkeyPatch,
    postgres_database: PostgresDatabase,  # noqa: F811 - the imported fixture
    s3_pipeline: S3PipelineEnv,
) -> S3PipelineEnv:
    """The variables deploy/README.md lists, pointing at the test's PostgreSQL database and
    bucket (AWS_* and PIPELINE_* come from the storage fixtures)."""
    for name, value in postgres_database.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_COMPUTE_LOG_BUCKET", s3_pipeline.bucket)
    monkeypatch.setenv("DAGSTER_COMPUTE_LOG_PREFIX", COMPUTE_LOG_PREFIX)
    return s3_pipeline


@pytest.fixture
def deployed_instance(tmp_path: Path, deploy_env: S3PipelineEnv) -> Iterator[DagsterInstance]:
    """The deployed instance config with the default run launcher."""
    instance = DagsterInstance.from_config(str(dagster_home(tmp_path, "home", DEFAULT_LAUNCHER)))
    try:
        yield instance
    finally:
        instance.dispose()


def postgres_rows(database: PostgresDatabase, sql: str, parameters: tuple[object, ...]) -> list[tuple[Any, ...]]:
    """Rows of a query run straight against the instance's PostgreSQL database."""
    connection = psycopg2.connect(
        host=database.host,
        port=database.port,
        user=database.user,
        password=database.password,
        dbname=database.name,
        connect_timeout=5,
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, parameters)
            return cursor.fetchall()
    finally:
        connection.close()


def test_deployed_instance_runs_a_partition_from_s3_with_history_in_postgres_and_logs_in_s3(
    deployed_instance: DagsterInstance,
    deploy_env: S3PipelineEnv,
    postgres_database: PostgresDatabase,  # noqa: F811 - the imported fixture
) -> None:
    """One day of `access` (the daily job, as the schedule launches it) from an S3 landing zone,
    through the instance deploy/dagster.yaml describes: exact rows in the lake (in S3), the run
    and each materialization's metadata in PostgreSQL's own tables, the manifest and the run's
    captured stdout/stderr in S3."""
    instance = deployed_instance
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    assert type(instance.compute_log_manager).__name__ == "S3ComputeLogManager"
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    assert type(instance.run_launcher).__name__ == "DefaultRunLauncher"
    assert instance.run_monitoring_enabled and instance.run_retries_enabled
    [generated] = generate_landing_zone(
        deploy_env.local_landing, [day("2024-01-15")], sources=["access"], lines_per_hour=20
    )
    assert generated.bad_records > 0
    deploy_env.upload_landing()

    # The job the daily schedule and the landing sensor launch, for one partition.
    job = deploy_env.definitions().resolve_job_def("access_daily")
    result = job.execute_in_process(instance=instance, partition_key="2024-01-15")

    assert result.success
    assert_exact_counts(result, [generated])
    loaded = generated.records - generated.bad_records
    assert deploy_env.query("SELECT count(*) FROM access.events WHERE partition_date = '2024-01-15'") == [(loaded,)]
    assert deploy_env.query("SELECT count(*) FROM access.dlq WHERE partition_date = '2024-01-15'") == [
        (generated.bad_records,)
    ]

    # The run and its materializations, read from PostgreSQL directly (not through Dagster).
    runs = postgres_rows(postgres_database, "SELECT run_id, status FROM runs", ())
    assert runs == [(result.run_id, "SUCCESS")]
    stored = postgres_rows(
        postgres_database,
        "SELECT asset_key, partition, event FROM event_logs WHERE run_id = %s AND dagster_event_type = %s "
        "ORDER BY asset_key",
        (result.run_id, DagsterEventType.ASSET_MATERIALIZATION.value),
    )
    metadata: dict[str, dict[str, Any]] = {}
    for asset_key, partition, event in stored:
        assert partition == "2024-01-15"
        materialization = deserialize_value(event, EventLogEntry).asset_materialization
        assert materialization is not None
        metadata["/".join(json.loads(asset_key))] = {
            name: value.value for name, value in materialization.metadata.items()
        }
    assert sorted(metadata) == sorted(ACCESS_ASSETS)
    assert metadata["access/events"]["dagster/row_count"] == loaded
    assert metadata["access/events"]["rows_read"] == generated.records
    assert metadata["access/events"]["rows_quarantined"] == generated.bad_records
    assert metadata["access/events"]["manifest"] == f"{deploy_env.output_url}/manifests/access/2024-01-15.json"
    assert metadata["access/dlq"]["dagster/row_count"] == generated.bad_records
    assert metadata["access/daily_metrics"]["dagster/row_count"] == 1

    # The manifest, and the run's captured output, are objects in the bucket.
    manifest = deploy_env.manifest("access", "2024-01-15")
    assert (manifest["status"], manifest["rows_loaded"], manifest["run_id"]) == ("loaded", loaded, result.run_id)
    assert deploy_env.keys(f"{OUTPUT_PREFIX}/") == [f"{OUTPUT_PREFIX}/manifests/access/2024-01-15.json"]
    log_keys = deploy_env.keys(f"{COMPUTE_LOG_PREFIX}/")
    run_logs = [key for key in log_keys if f"/{result.run_id}/compute_logs/" in key]
    assert {Path(key).suffix for key in run_logs} >= {".out", ".err"}, log_keys
    stderr_key = next(key for key in run_logs if key.endswith(".err"))
    stderr = deploy_env.admin.get_object(Bucket=deploy_env.bucket, Key=stderr_key)["Body"].read().decode()
    assert manifest["summary"] in stderr


def test_cli_run_in_its_own_processes_opens_the_deployed_instance_from_the_environment(
    tmp_path: Path,
    deploy_env: S3PipelineEnv,
    postgres_database: PostgresDatabase,  # noqa: F811 - the imported fixture
) -> None:
    """What a run task does: a fresh process (here `dagster asset materialize`, whose steps run
    in further processes) opens the instance from DAGSTER_HOME and the variables alone, and
    its run, metadata and compute logs land in PostgreSQL and S3."""
    [generated] = generate_landing_zone(
        deploy_env.local_landing, [day("2024-01-16")], sources=["access"], lines_per_hour=10
    )
    deploy_env.upload_landing()
    home = dagster_home(tmp_path, "home", DEFAULT_LAUNCHER)

    completed = subprocess.run(
        [str(BIN / "dagster"), "asset", "materialize", "-m", "pipeline.definitions"]
        + ["--select", "access/events,access/dlq", "--partition", "2024-01-16"],
        cwd=tmp_path,  # no project `.env` can add settings
        env={**os.environ, "DAGSTER_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=180,
    )

    assert completed.returncode == 0, (completed.stdout + completed.stderr)[-4000:]
    [(run_id, status)] = postgres_rows(postgres_database, "SELECT run_id, status FROM runs", ())
    assert status == "SUCCESS"
    [(event,)] = postgres_rows(
        postgres_database,
        "SELECT event FROM event_logs WHERE run_id = %s AND dagster_event_type = %s AND asset_key = %s",
        (run_id, DagsterEventType.ASSET_MATERIALIZATION.value, '["access", "events"]'),
    )
    materialization = deserialize_value(event, EventLogEntry).asset_materialization
    assert materialization is not None and materialization.partition == "2024-01-16"
    assert materialization.metadata["dagster/row_count"].value == generated.records - generated.bad_records
    assert deploy_env.manifest("access", "2024-01-16")["run_id"] == run_id
    assert any(f"/{run_id}/compute_logs/" in key for key in deploy_env.keys(f"{COMPUTE_LOG_PREFIX}/"))


def test_ecs_run_launcher_loads_from_the_unmodified_file_without_calling_aws(
    tmp_path: Path, deploy_env: S3PipelineEnv
) -> None:
    """deploy/dagster.yaml as shipped: the instance builds `EcsRunLauncher`, which validates its
    config against the launcher's schema; it makes no request (every AWS client here goes to
    the recording proxy), so a daemon starts even before its first run is launched."""
    instance = DagsterInstance.from_config(str(dagster_home(tmp_path, "home")))
    try:
        launcher = instance.run_launcher
        assert type(launcher).__name__ == "EcsRunLauncher"
        assert launcher.use_current_ecs_task_config is True
        assert launcher.env_vars == ["PIPELINE_LANDING_URL", "PIPELINE_OUTPUT_URL", "PIPELINE_LAKE_URL"]
        assert launcher.run_resources == {"cpu": "1024", "memory": "4096"}
        assert launcher.secrets_tags == ["dagster"]
        assert launcher.ecs.meta.region_name == "us-east-1"
    finally:
        instance.dispose()
    assert deploy_env.proxy.seen == []


def test_ecs_run_launcher_config_is_really_validated(tmp_path: Path, deploy_env: S3PipelineEnv) -> None:
    """The schema check above is real: a wrongly typed launcher field is refused when the
    instance builds the launcher, naming the field."""
    config = yaml.safe_load(DEPLOY_YAML.read_text())["run_launcher"]
    config["config"]["use_current_ecs_task_config"] = "sometimes"
    instance = DagsterInstance.from_config(str(dagster_home(tmp_path, "home", config)))
    try:
        with pytest.raises(DagsterInvalidConfigError, match="use_current_ecs_task_config"):
            _ = instance.run_launcher
    finally:
        instance.dispose()


def test_a_missing_variable_fails_naming_it(
    tmp_path: Path, deploy_env: S3PipelineEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process started without one of the variables refuses to start and says which."""
    monkeypatch.delenv("DAGSTER_PG_HOST")
    with pytest.raises(DagsterInvalidConfigError, match="DAGSTER_PG_HOST"):
        DagsterInstance.from_config(str(dagster_home(tmp_path, "home", DEFAULT_LAUNCHER)))


def test_throttling_is_the_same_as_the_local_instance() -> None:
    """Queue, run and tag limits, the `lake_writers` pool (the pause switch), run monitoring and
    run retries are those of the local dagster.yaml: what operators tested locally is what
    production does."""
    deployed = yaml.safe_load(DEPLOY_YAML.read_text())
    local = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    for section in ("run_queue", "concurrency", "run_monitoring", "run_retries", "telemetry"):
        assert deployed[section] == local[section], section
    assert deployed["concurrency"]["pools"] == {"default_limit": 2, "granularity": "run"}


def env_entries(node: Any) -> set[str]:
    """Names of every `{env: NAME}` entry in a loaded YAML document."""
    if isinstance(node, dict):
        if set(node) == {"env"}:
            return {node["env"]}
        return set().union(*(env_entries(value) for value in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(env_entries(value) for value in node)) if node else set()
    return set()


def test_every_variable_the_deployment_reads_is_documented() -> None:
    """Each variable deploy/dagster.yaml and deploy/workspace.yaml read, and each one the ECS
    launcher passes to run tasks, has a row in deploy/README.md."""
    instance_config = yaml.safe_load(DEPLOY_YAML.read_text())
    names = env_entries(instance_config) | env_entries(yaml.safe_load((DEPLOY / "workspace.yaml").read_text()))
    names |= set(instance_config["run_launcher"]["config"]["env_vars"])
    assert {"DAGSTER_PG_HOST", "DAGSTER_PG_PASSWORD", "DAGSTER_COMPUTE_LOG_BUCKET", "PIPELINE_LAKE_URL"} <= names
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)`", (DEPLOY / "README.md").read_text(), flags=re.MULTILINE))
    assert names - documented == set()


def test_dockerfile_command_and_inputs_exist() -> None:
    """Docker cannot run here, so this reads deploy/Dockerfile: the base image, the locked
    install, every copied path exists in the project, and the command's options are ones the
    installed `dagster code-server start` accepts."""
    from dagster._cli.code_server import start_command

    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, flags=re.MULTILINE)
    assert "pip install -c /tmp/src/requirements.lock /tmp/src" in dockerfile
    for source in re.findall(r"^COPY (.+) \S+$", dockerfile, flags=re.MULTILINE):
        for path in source.split():
            assert (PROJECT_ROOT / path).exists(), path
    command = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, flags=re.MULTILINE).group(1))  # type: ignore[union-attr]
    assert command[:3] == ["dagster", "code-server", "start"]
    accepted = {option for parameter in start_command.params for option in parameter.opts}
    assert {argument for argument in command[3:] if argument.startswith("--")} <= accepted
    assert command[command.index("--module-name") + 1] == "pipeline.definitions"
