"""Fixtures for the operations tests: a webhook receiver, a PostgreSQL database per test, a
DAGSTER_HOME using it, and real `dagster-webserver` / `dagster-daemon` processes.

Tests that need PostgreSQL or Chromium skip with the reason when those are absent, except
in CI (`CI=true`), where their absence is a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from pipeline_tests.conftest import IN_CI, PROJECT_ROOT

PG_HOST = os.environ.get("PIPELINE_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("PIPELINE_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("PIPELINE_TEST_PG_USER", "postgres")
PG_PASSWORD = os.environ.get("PIPELINE_TEST_PG_PASSWORD", "")
CHROMIUM = Path(os.environ.get("PIPELINE_TEST_CHROMIUM", "/usr/bin/chromium"))
BIN = Path(sys.executable).parent


def pytest_configure(config: pytest.Config) -> None:
    """Register the `e2e` marker (slow tests with real Dagster processes; run by default,
    deselect with `-m "not e2e"`)."""
    config.addinivalue_line("markers", "e2e: starts dagster-webserver/dagster-daemon processes (slow)")


def unavailable(message: str) -> None:
    """Skip with a reason on a developer's machine; fail loudly in CI."""
    if IN_CI:
        pytest.fail(message + " (CI must provide it)")
    pytest.skip(message)


def free_port() -> int:
    """A TCP port that is free right now on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.5) -> Any:
    """Poll `condition` until it returns something truthy; fail naming `what` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


# -- webhook receiver ----------------------------------------------------------------------
@dataclass
class Webhook:
    """A local Slack-compatible incoming webhook: records every JSON body it receives."""

    url: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    # Status codes to answer with, in order (then 200); and a delay before answering.
    responses: list[int] = field(default_factory=list)
    delay_s: float = 0.0

    def texts(self) -> list[str]:
        """The `text` of every message received, in order."""
        return [message["text"] for message in self.messages]

    def wait_for_text(self, predicate: Callable[[str], bool], timeout_s: float = 60) -> str:
        """The first received text matching `predicate`, waiting for it to arrive."""
        return wait_for(
            lambda: next((text for text in self.texts() if predicate(text)), None), timeout_s, "a webhook message"
        )


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    """An HTTP receiver on a free port, in a thread; its URL carries a fake secret token."""
    hook = Webhook(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if hook.delay_s:
                time.sleep(hook.delay_s)
            status = hook.responses.pop(0) if hook.responses else 200
            if status == 200:
                hook.messages.append(json.loads(body))
                hook.paths.append(self.path)
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok" if status == 200 else b"invalid_payload")

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - silence the default stderr log
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/s3cr3t-token"
    thread = threading.Thread(target=server.serve_forever, name="webhook", daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# -- PostgreSQL ----------------------------------------------------------------------------
@dataclass(frozen=True)
class PostgresDatabase:
    """A database created for one test."""

    host: str
    port: int
    user: str
    password: str
    name: str

    def env(self) -> dict[str, str]:
        """The variables the PostgreSQL dagster.yaml reads."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USERNAME": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": self.name,
        }


def _admin_connection() -> Any:
    try:
        import psycopg2
    except ImportError:
        unavailable("psycopg2 is not installed (it comes with dagster-postgres)")
    try:
        connection = psycopg2.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, password=PG_PASSWORD, dbname="postgres", connect_timeout=5
        )
    except psycopg2.OperationalError as error:
        unavailable(f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT} as {PG_USER}: {error}".strip())
    connection.autocommit = True
    return connection


@pytest.fixture
def postgres_database() -> Iterator[PostgresDatabase]:
    """A fresh PostgreSQL database for this test, dropped afterwards (with its connections)."""
    admin = _admin_connection()
    name = f"pipeline_test_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PostgresDatabase(PG_HOST, PG_PORT, PG_USER, PG_PASSWORD, name)
    finally:
        with admin.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


def postgres_instance_yaml(fast: bool = True) -> dict[str, Any]:
    """The project's dagster.yaml plus PostgreSQL storage from `DAGSTER_PG_*` variables (the
    deployment variant); `fast` shortens the daemon's polling so tests wait less."""
    config = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    config["storage"] = {
        "postgres": {
            "postgres_db": {
                "hostname": {"env": "DAGSTER_PG_HOST"},
                "port": {"env": "DAGSTER_PG_PORT"},
                "username": {"env": "DAGSTER_PG_USERNAME"},
                "password": {"env": "DAGSTER_PG_PASSWORD"},
                "db_name": {"env": "DAGSTER_PG_DB"},
                # SQLAlchemy 2.1 maps plain `postgresql` to psycopg 3; dagster-postgres needs psycopg2.
                "scheme": "postgresql+psycopg2",
            }
        }
    }
    if fast:
        config["run_queue"]["dequeue_interval_seconds"] = 1
        config["run_monitoring"]["poll_interval_seconds"] = 5
        config["run_retries"]["retry_on_asset_or_op_failure"] = False
    return config


# -- real Dagster processes ----------------------------------------------------------------
GRAPHQL_TIMEOUT_S = 60


@dataclass
class Deployment:
    """A DAGSTER_HOME on PostgreSQL with `dagster-webserver` and `dagster-daemon` running."""

    home: Path
    env: dict[str, str]
    url: str
    logs: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _instance: Any = None

    def shared_instance(self) -> Any:
        """One DagsterInstance on this deployment's storage, kept for the test (for polling)."""
        if self._instance is None:
            self._instance = self.instance()
        return self._instance

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run a GraphQL operation against the webserver (as the UI does); fail on errors."""
        response = requests.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=GRAPHQL_TIMEOUT_S
        )
        response.raise_for_status()
        document = response.json()
        assert not document.get("errors"), document["errors"]
        return document["data"]  # type: ignore[no-any-return]

    def dagster(self, *arguments: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the `dagster` CLI against this instance (what an operator types)."""
        completed = subprocess.run(
            [str(BIN / "dagster"), *arguments],
            cwd=PROJECT_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
        return completed

    def instance(self) -> Any:
        """A DagsterInstance on the same storage (a context manager)."""
        from dagster import DagsterInstance

        previous = {name: os.environ.get(name) for name in self.env if name.startswith("DAGSTER_PG_")}
        os.environ.update({name: value for name, value in self.env.items() if name.startswith("DAGSTER_PG_")})
        try:
            return DagsterInstance.from_config(str(self.home))
        finally:
            for name, value in previous.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def log_tail(self, chars: int = 4000) -> str:
        """The end of each process's log, for failure messages."""
        parts = []
        for path in sorted(self.logs.glob("*.log")):
            parts.append(f"--- {path.name} ---\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a process and everything it started (its own process group, including processes
    re-parented after their parent died, e.g. a code server or an orphaned step, which may
    outlive a SIGTERM: a code server waits for its runs, a run process for its storage)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    time.sleep(1)  # let the group's members act on the SIGTERM
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


@pytest.fixture
def deployment_factory(
    tmp_path: Path, postgres_database: PostgresDatabase, webhook: Webhook
) -> Iterator[Callable[..., Deployment]]:
    """Start `dagster-webserver` and `dagster-daemon` on a PostgreSQL DAGSTER_HOME; stopped
    (process groups killed) at teardown, whatever happened. Call it after setting the
    PIPELINE_* environment (the `pipeline_env` fixture)."""
    started: list[Deployment] = []

    def start(extra_env: dict[str, str] | None = None, daemon: bool = True) -> Deployment:
        home = tmp_path / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text(yaml.safe_dump(postgres_instance_yaml(), sort_keys=False))
        logs = tmp_path / "process-logs"
        logs.mkdir()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            **postgres_database.env(),
            "DAGSTER_HOME": str(home),
            "PYTHONPATH": str(PROJECT_ROOT),
            "PIPELINE_NOTIFY_WEBHOOK_URL": webhook.url,
            "PIPELINE_UI_BASE_URL": url,
            # Only the sensors under test: no schedule, landing scan or freshness alert noise.
            "PIPELINE_AUTOMATION": "stopped",
            "PIPELINE_GUARD_INTERVAL_S": "5",
            **(extra_env or {}),
        }
        deployment = Deployment(home=home, env=env, url=url, logs=logs)
        started.append(deployment)
        commands = {"webserver": [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port)]}
        if daemon:
            commands["daemon"] = [str(BIN / "dagster-daemon"), "run"]
        for name, command in commands.items():
            log = (logs / f"{name}.log").open("wb")
            deployment.processes.append(
                subprocess.Popen(
                    [*command, "-m", "pipeline.definitions"],
                    cwd=PROJECT_ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: teardown kills the code servers too
                )
            )

        def webserver_ready() -> bool:
            for process in deployment.processes:
                if process.poll() is not None:
                    pytest.fail(f"a Dagster process exited with {process.returncode}:\n{deployment.log_tail()}")
            try:
                data = deployment.graphql(
                    "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
                    "locationOrLoadError { __typename } } } } }"
                )
            except requests.RequestException:
                return False
            entries = data["workspaceOrError"]["locationEntries"]
            return bool(entries) and all(
                entry["loadStatus"] == "LOADED" and entry["locationOrLoadError"]["__typename"] == "RepositoryLocation"
                for entry in entries
            )

        wait_for(webserver_ready, 120, "the webserver to load the code location", interval_s=1)
        if daemon:

            def daemons_healthy() -> bool:
                statuses = deployment.graphql(
                    "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }"
                )["instance"]["daemonHealth"]["allDaemonStatuses"]
                wanted = {"BACKFILL", "QUEUED_RUN_COORDINATOR", "SENSOR", "MONITORING"}
                return wanted <= {status["daemonType"] for status in statuses if status["healthy"]}

            wait_for(daemons_healthy, 120, "the daemon's heartbeats", interval_s=1)
        return deployment

    try:
        yield start
    finally:
        for deployment in started:
            for process in reversed(deployment.processes):
                _stop(process)
            if deployment._instance is not None:
                deployment._instance.dispose()


# -- GraphQL operations the UI uses --------------------------------------------------------
LAUNCH_BACKFILL = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { stepKey invalidOutputName }
    ... on UnauthorizedError { message }
    ... on PartitionSetNotFoundError { message }
  }
}
"""

BACKFILL_STATUS = """
query BackfillStatus($backfillId: String!) {
  partitionBackfillOrError(backfillId: $backfillId) {
    __typename
    ... on PartitionBackfill {
      id
      status
      numPartitions
      partitionNames
      runs { id status tags { key value } }
      error { message }
    }
    ... on PythonError { message }
  }
}
"""


def launch_backfill(
    deployment: Deployment,
    assets: list[str],
    partitions: list[str],
    run_config: dict[str, Any] | None = None,
    title: str = "e2e",
) -> str:
    """Launch a partition backfill of `assets` through GraphQL, as the UI's dialog does."""
    params: dict[str, Any] = {
        "assetSelection": [{"path": key.split("/")} for key in assets],
        "partitionNames": partitions,
        "fromFailure": False,
        "title": title,
        "tags": [],
    }
    if run_config is not None:
        params["runConfigData"] = run_config
    result = deployment.graphql(LAUNCH_BACKFILL, {"backfillParams": params})["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    return str(result["backfillId"])


def backfill_status(deployment: Deployment, backfill_id: str) -> dict[str, Any]:
    """The backfill as the UI's backfill page reads it."""
    result = deployment.graphql(BACKFILL_STATUS, {"backfillId": backfill_id})["partitionBackfillOrError"]
    assert result["__typename"] == "PartitionBackfill", result
    return result  # type: ignore[no-any-return]


def wait_for_backfill(deployment: Deployment, backfill_id: str, timeout_s: float = 240) -> dict[str, Any]:
    """Poll until the backfill reaches a final status; returns it."""

    def finished() -> dict[str, Any] | None:
        status = backfill_status(deployment, backfill_id)
        return (
            status
            if status["status"] in ("COMPLETED", "FAILED", "CANCELED", "COMPLETED_SUCCESS", "COMPLETED_FAILED")
            else None
        )

    try:
        return wait_for(finished, timeout_s, f"backfill {backfill_id} to finish", interval_s=2)  # type: ignore[no-any-return]
    except pytest.fail.Exception:
        print(deployment.log_tail())
        raise


# -- in-process helpers --------------------------------------------------------------------
def pipeline_resource() -> Any:
    """The `pipeline` resource as the definitions build it from the environment."""
    from pipeline.orchestration.resources import PipelineResource
    from pipeline.settings import Settings

    return PipelineResource.from_settings(Settings.from_env())


def execute_request(defs: Any, instance: Any, request: Any, run_config: dict[str, Any] | None = None) -> Any:
    """Execute a schedule's or sensor's RunRequest in-process, as the daemon would launch it."""
    job = defs.resolve_job_def(request.job_name or "access_daily")
    return job.execute_in_process(
        instance=instance,
        partition_key=request.partition_key,
        tags={key: value for key, value in request.tags.items() if key != "dagster/partition"},
        run_config=run_config,
        raise_on_error=False,
    )


def materialized_partitions(result: Any, key: str) -> dict[str, dict[str, Any]]:
    """Metadata (raw values) of each partition a run materialized for `key`."""
    from dagster import AssetKey

    found: dict[str, dict[str, Any]] = {}
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        if materialization.asset_key == AssetKey.from_user_string(key):
            found[materialization.partition] = {name: value.value for name, value in materialization.metadata.items()}
    return found


# -- reading a deployment's results --------------------------------------------------------
def run_event_texts(deployment: Deployment, run_id: str) -> list[str]:
    """The messages of a run's event log (what the run page shows), oldest first."""
    instance = deployment.shared_instance()
    return [entry.message or entry.user_message or "" for entry in instance.all_logs(run_id)]


def partition_metadata(instance: Any, key: str, partition: str) -> dict[str, Any]:
    """Metadata (raw values) of the newest materialization of one partition of `key`."""
    from dagster import AssetKey, AssetRecordsFilter

    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey.from_user_string(key), asset_partitions=[partition]), limit=1
    ).records
    assert records, f"no materialization of {key} {partition}"
    metadata = records[0].asset_materialization.metadata
    return {name: value.value for name, value in metadata.items()}


def check_executions(instance: Any, key: str, check: str) -> list[dict[str, Any]]:
    """Evaluations of an asset check, newest first: partition, passed, severity, description,
    metadata, run. Only evaluated executions (a planned check that never ran has no result)."""
    from dagster import AssetCheckKey, AssetKey, DagsterEventType

    history = instance.event_log_storage.get_asset_check_execution_history(
        AssetCheckKey(AssetKey.from_user_string(key), check), limit=50
    )
    found = []
    for record in history:
        if record.event is None or record.event.dagster_event_type != DagsterEventType.ASSET_CHECK_EVALUATION:
            continue
        evaluation = record.event.dagster_event.event_specific_data
        found.append(
            {
                "status": record.status.value,
                "run_id": record.run_id,
                "partition": record.partition,
                "passed": evaluation.passed,
                "severity": evaluation.severity.value,
                "description": evaluation.description,
                "metadata": {name: value.value for name, value in evaluation.metadata.items()},
            }
        )
    return found


def run_process_ids(deployment: Deployment, run_id: str) -> dict[str, int]:
    """The processes of a run, from the pids its events were logged by: the run worker
    (`RUN_START`) and each step's process (`STEP_START`; the default multiprocess executor runs
    every step in a child process of the run worker)."""
    from dagster import DagsterEventType

    found: dict[str, int] = {}
    for entry in deployment.shared_instance().all_logs(run_id):
        if entry.dagster_event_type == DagsterEventType.RUN_START and entry.dagster_event and entry.dagster_event.pid:
            found["run_worker"] = entry.dagster_event.pid
        elif (
            entry.dagster_event_type == DagsterEventType.STEP_START and entry.dagster_event and entry.dagster_event.pid
        ):
            found[f"step:{entry.step_key}"] = entry.dagster_event.pid
    return found


def process_alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"
