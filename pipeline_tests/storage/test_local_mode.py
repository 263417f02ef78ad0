"""Local mode cannot touch S3, and every run says first which mode it is in.

`test_s3_pipeline.py` already shows that explicit local folders create no boto3 client and that
an S3 range run logs `mode=s3` with the endpoint. This file covers what it leaves out:

- the embedded defaults themselves (no `PIPELINE_*` variable at all), not explicit folders;
- every kind of run (the daily job as the schedule and the landing sensor launch it, an empty
  day, a partition-range run), and a `dagster asset materialize` in its own process, where the
  guard sits in botocore itself (below boto3) in every process of the run;
- the mode line is logged before the first step starts, in both modes.

The embedded defaults are relative to the project root; the tests move that root to a
temporary folder, so they never write into the shared `data/` folder.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import pytest
from dagster import DagsterEventType, DagsterInstance, ExecuteInProcessResult

import pipeline.settings
from pipeline.cli.generate import generate_landing_zone
from pipeline.definitions import build_definitions
from pipeline_tests.conftest import PROJECT_ROOT, day, materialize_range
from pipeline_tests.ops.conftest import BIN
from pipeline_tests.storage.conftest import REGION, S3PipelineEnv

PIPELINE_VARIABLES = ("PIPELINE_LANDING_URL", "PIPELINE_OUTPUT_URL", "PIPELINE_WAREHOUSE", "PIPELINE_SOURCES_FILE")
ACCESS_ASSETS = ["access/events", "access/dlq", "access/daily_metrics"]
STORAGE_LINE = "pipeline storage: "


@pytest.fixture
def embedded_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No PIPELINE_* variable is set; the project root the defaults are relative to is a
    temporary folder. Returns that root."""
    for name in PIPELINE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / "project"
    (root / "data").mkdir(parents=True)
    monkeypatch.setattr(pipeline.settings, "PROJECT_ROOT", root)
    return root


@pytest.fixture
def aws_clients_refused(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Creating any AWS client (boto3 or botocore, any service) records the attempt and raises."""
    attempts: list[str] = []

    def refuse(*args: Any, **kwargs: Any) -> None:
        attempts.append(repr(args[1:2]))
        raise AssertionError("local mode must not create an AWS client")

    monkeypatch.setattr(botocore.session.Session, "create_client", refuse)
    monkeypatch.setattr(boto3.session.Session, "client", refuse)
    monkeypatch.setattr(boto3.session.Session, "resource", refuse)
    return attempts


def storage_line_before_first_step(instance: DagsterInstance, run_id: str) -> str:
    """The run's `pipeline storage:` line, checked to come before its first step starts."""
    entries = instance.all_logs(run_id)
    first_step = next(i for i, entry in enumerate(entries) if entry.dagster_event_type == DagsterEventType.STEP_START)
    lines = [(i, entry.user_message) for i, entry in enumerate(entries) if entry.user_message.startswith(STORAGE_LINE)]
    assert lines, f"run {run_id} never logged its storage mode"
    position, line = lines[0]
    assert position < first_step, "the storage mode must be logged before any step starts"
    return line.removeprefix(STORAGE_LINE)


def run_daily_job(instance: DagsterInstance, partition: str) -> ExecuteInProcessResult:
    """The source's daily job for one partition, as the schedule and the landing sensor launch it."""
    return (
        build_definitions()
        .resolve_job_def("access_daily")
        .execute_in_process(instance=instance, partition_key=partition)
    )


def test_embedded_defaults_create_no_aws_client_and_every_run_says_mode_local(
    embedded_defaults: Path, aws_clients_refused: list[str], instance: DagsterInstance
) -> None:
    """With nothing configured, a loaded day, an empty day and a range run all succeed without
    creating a single AWS client, each saying `mode=local` and the default locations first."""
    data = embedded_defaults / "data"
    [generated] = generate_landing_zone(data / "landing", [day("2024-01-15")], sources=["access"], lines_per_hour=10)
    expected = f"mode=local landing={data / 'landing'} output={data / 'output'} warehouse={data / 'warehouse.duckdb'}"

    runs = [
        run_daily_job(instance, "2024-01-15"),
        run_daily_job(instance, "2024-01-16"),  # no files: an empty day
        materialize_range(build_definitions(), instance, "2024-01-15", "2024-01-16", selection=ACCESS_ASSETS),
    ]

    assert aws_clients_refused == []
    for result in runs:
        assert result.success
        assert storage_line_before_first_step(instance, result.run_id) == expected
    manifests = data / "output" / "manifests" / "access"
    assert sorted(path.name for path in manifests.iterdir()) == ["2024-01-15.json", "2024-01-16.json"]
    assert (data / "warehouse.duckdb").is_file()
    events = runs[0].get_asset_materialization_events()[0].materialization.metadata
    assert events["dagster/row_count"].value == generated.records - generated.bad_records


# Installed in every Python process of the CLI run (PYTHONPATH): creating any botocore client
# (boto3 builds all of its clients and resources through it) is recorded and refused; the
# project root of the embedded defaults is moved to the test's folder.
GUARD = """
import os

import botocore.session


def _refuse(self, service_name, *args, **kwargs):
    with open(os.environ["TEST_AWS_ATTEMPTS"], "a") as attempts:
        attempts.write(f"{os.getpid()} {service_name}\\n")
    raise RuntimeError("local mode must not create an AWS client")


botocore.session.Session.create_client = _refuse

import pipeline.settings  # noqa: E402

pipeline.settings.PROJECT_ROOT = __import__("pathlib").Path(os.environ["TEST_PROJECT_ROOT"])
"""


def test_cli_run_in_its_own_processes_creates_no_aws_client(tmp_path: Path) -> None:
    """`dagster asset materialize` of a day with the embedded defaults, the guard in botocore in
    the CLI process and in any step process (with `PIPELINE_STEP_EXECUTOR=multiprocess` each step
    runs in a process of its own): the run succeeds, no client was even attempted, and the run log says
    `mode=local` with the default folders. (With an s3:// URL the same guard records attempts
    from each of those processes and the run fails: the guard is live.)"""
    root = tmp_path / "project"
    generate_landing_zone(root / "data" / "landing", [day("2024-01-15")], sources=["access"], lines_per_hour=10)
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(textwrap.dedent(GUARD))
    attempts = tmp_path / "aws-attempts.txt"
    env = {name: value for name, value in os.environ.items() if name not in PIPELINE_VARIABLES}
    env.update(
        {
            "PYTHONPATH": os.pathsep.join([str(guard), str(PROJECT_ROOT)]),
            "TEST_AWS_ATTEMPTS": str(attempts),
            "TEST_PROJECT_ROOT": str(root),
            "DAGSTER_HOME": str(tmp_path / "dagster_home"),
            # Even a client that slipped past the guard would find nothing there.
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        }
    )
    (tmp_path / "dagster_home").mkdir()

    completed = subprocess.run(
        [
            str(BIN / "dagster"),
            "asset",
            "materialize",
            "-m",
            "pipeline.definitions",
            "--select",
            "access/events,access/dlq",
            "--partition",
            "2024-01-15",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )

    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-4000:]
    assert not attempts.exists(), attempts.read_text()
    data = root / "data"
    expected = f"{STORAGE_LINE}mode=local landing={data / 'landing'} output={data / 'output'}"
    assert expected in output, output[-4000:]
    assert "mode=s3" not in output
    assert (data / "output" / "manifests" / "access" / "2024-01-15.json").is_file()


def test_s3_urls_say_mode_s3_and_the_endpoint_before_the_first_step(
    s3_pipeline: S3PipelineEnv, instance: DagsterInstance
) -> None:
    """The daily job on an S3 landing zone (an empty day: nothing landed yet) says `mode=s3`,
    both URLs, the warehouse, and the endpoint and region its client really uses, first."""
    result = run_daily_job(instance, "2024-01-15")

    assert result.success
    assert storage_line_before_first_step(instance, result.run_id) == (
        f"mode=s3 landing={s3_pipeline.landing_url} output={s3_pipeline.output_url} "
        f"warehouse={s3_pipeline.warehouse} s3_endpoint={s3_pipeline.proxy.endpoint} s3_region={REGION}"
    )
    assert s3_pipeline.manifest("access", "2024-01-15")["status"] == "empty"
