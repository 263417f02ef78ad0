"""Local mode cannot touch S3, and every run says first which mode it is in.

`test_s3_pipeline.py` already shows that explicit local folders create no boto3 client and that
an S3 range run logs `mode=s3` with the endpoint. This file covers what it leaves out:

- the embedded defaults themselves (no `PIPELINE_*` variable at all), not explicit folders;
- every kind of run (the daily job as the schedule and the landing sensor launch it, an empty
  day, a partition-range run), and a `dagster asset materialize` in its own process, where the
  guard sits in botocore itself (below boto3) in every process of the run;
- the mode line is logged before the first step starts, in both modes.

Local mode means no S3 client of any kind: not boto3's, and not the lake's own two either,
pyarrow's `S3FileSystem` (data files) and delta-rs's object store (commits) opened with an
`s3://` URI or S3 storage options. The in-process guard refuses all three; the last test shows
it is live.

The embedded defaults are relative to the project root; the tests move that root to a
temporary folder, so they never write into the shared `data/` folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import deltalake
import deltalake.table
import deltalake.transaction
import deltalake.writer.convert_to
import deltalake.writer.writer
import pyarrow as pa
import pyarrow._s3fs
import pyarrow.fs
import pytest
from dagster import DagsterEventType, DagsterInstance, ExecuteInProcessResult

import pipeline.settings
from pipeline.cli.generate import generate_landing_zone
from pipeline.definitions import build_definitions
from pipeline.engine.lake import LakeLocation, S3ClientSettings
from pipeline.engine.lake.snapshot import connect as snapshot_connect
from pipeline.orchestration.resources import PipelineResource
from pipeline.query import connect
from pipeline.sources import configured_sources
from pipeline_tests.conftest import PROJECT_ROOT, day, materialize_range
from pipeline_tests.ops.conftest import BIN
from pipeline_tests.storage.conftest import REGION, S3PipelineEnv
from pipeline_tests.storage.s3_server import MotoServer

# PIPELINE_WAREHOUSE is retired (refused if set): removed too, so a developer's shell cannot fail the tests.
PIPELINE_VARIABLES = (
    "PIPELINE_LANDING_URL",
    "PIPELINE_OUTPUT_URL",
    "PIPELINE_LAKE_URL",
    "PIPELINE_WAREHOUSE",
    "PIPELINE_SOURCES_FILE",
)
ACCESS_ASSETS = ["access/events", "access/dlq", "access/daily_metrics"]
STORAGE_LINE = "pipeline storage: "
LAKE_PREFIX = "lake"
# Where delta-rs's Python API hands a table URI and storage options to its Rust core: every
# DeltaTable, create, write, convert and add-actions commit goes through one of these names.
DELTA_RS_ENTRY_POINTS = (
    (deltalake.table, "RawDeltaTable"),
    (deltalake.table, "_create_deltalake"),
    (deltalake.writer.writer, "write_deltalake_rust"),
    (deltalake.writer.convert_to, "_convert_to_deltalake"),
    (deltalake.transaction, "_create_table_with_add_actions"),
)


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


class S3ClientRefused(AssertionError):
    """Raised by the guard: local mode must not create an S3 client of any kind."""


def _is_s3(value: Any) -> bool:
    """An `s3://` URI, or storage options naming an AWS setting (delta-rs's S3 store)."""
    if isinstance(value, str | Path):
        return str(value).lower().startswith(("s3://", "s3a://"))
    if isinstance(value, Mapping):
        return any(str(key).lower().startswith("aws_") for key in value)
    return False


class _GuardedRawDeltaTable:
    """delta-rs's `RawDeltaTable` with its constructor and `is_deltatable` refusing S3."""

    def __init__(self, real: Any, check: Any) -> None:
        self._real, self._check = real, check

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._check("deltalake.RawDeltaTable", args, kwargs)
        return self._real(*args, **kwargs)

    def is_deltatable(self, *args: Any, **kwargs: Any) -> bool:
        self._check("deltalake.RawDeltaTable.is_deltatable", args, kwargs)
        return self._real.is_deltatable(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@pytest.fixture
def s3_clients_refused(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Creating any S3 client records the attempt and raises `S3ClientRefused`: any boto3 or
    botocore client (any service), any pyarrow `S3FileSystem` (its constructor initialises
    pyarrow's AWS SDK first, through `ensure_s3_initialized`), and any delta-rs table opened,
    created or written with an `s3://` URI or S3 storage options."""
    attempts: list[str] = []

    def refuse(kind: str) -> None:
        attempts.append(kind)
        raise S3ClientRefused(f"local mode must not create an S3 client: {kind}")

    def refuse_client(*args: Any, **kwargs: Any) -> None:
        refuse(f"boto3/botocore client {args[1:2] or kwargs.get('service_name')!r}")

    monkeypatch.setattr(botocore.session.Session, "create_client", refuse_client)
    monkeypatch.setattr(boto3.session.Session, "client", refuse_client)
    monkeypatch.setattr(boto3.session.Session, "resource", refuse_client)

    def refuse_pyarrow_s3(*args: Any, **kwargs: Any) -> None:
        refuse("pyarrow S3 (AWS SDK initialisation)")

    for module in (pyarrow._s3fs, pyarrow.fs):
        for name in ("ensure_s3_initialized", "initialize_s3"):
            monkeypatch.setattr(module, name, refuse_pyarrow_s3)

    def check_delta(kind: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if any(_is_s3(value) for value in (*args, *kwargs.values())):
            refuse(f"delta-rs S3 store ({kind})")

    def guarded(kind: str, real: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            check_delta(kind, args, kwargs)
            return real(*args, **kwargs)

        return call

    for module, name in DELTA_RS_ENTRY_POINTS:
        real = getattr(module, name)  # a deltalake release that renamed one fails here, loudly
        wrapper = _GuardedRawDeltaTable(real, check_delta) if name == "RawDeltaTable" else guarded(name, real)
        monkeypatch.setattr(module, name, wrapper)
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


def lake_rows(sql: str) -> list[tuple[object, ...]]:
    """Rows of a query over the lake, the documented way (`pipeline.query.connect`)."""
    with connect() as connection:
        return connection.execute(sql).fetchall()


def test_embedded_defaults_create_no_aws_client_and_every_run_says_mode_local(
    embedded_defaults: Path, s3_clients_refused: list[str], instance: DagsterInstance
) -> None:
    """With nothing configured, a loaded day, an empty day and a range run all succeed without
    creating a single S3 client (boto3, pyarrow or delta-rs), each saying `mode=local` and the
    default locations first; the rows are in the default lake, each attempt in `loads`, and
    the manifests (written from the latest attempt) in the default output folder."""
    data = embedded_defaults / "data"
    [generated] = generate_landing_zone(data / "landing", [day("2024-01-15")], sources=["access"], lines_per_hour=10)
    assert generated.bad_records > 0
    expected = f"mode=local landing={data / 'landing'} output={data / 'output'} lake={data / 'lake'}"

    runs = [
        run_daily_job(instance, "2024-01-15"),
        run_daily_job(instance, "2024-01-16"),  # no files: an empty day
        materialize_range(build_definitions(), instance, "2024-01-15", "2024-01-16", selection=ACCESS_ASSETS),
    ]

    assert s3_clients_refused == []
    for result in runs:
        assert result.success
        assert storage_line_before_first_step(instance, result.run_id) == expected
    events = runs[0].get_asset_materialization_events()[0].materialization.metadata
    loaded = generated.records - generated.bad_records
    assert events["dagster/row_count"].value == loaded
    # The lake is the default folder, one Delta table per table, read without any S3 client.
    assert sorted(path.name for path in (data / "lake" / "access").iterdir() if path.name != "_locks") == [
        "daily_metrics",
        "dlq",
        "events",
        "loads",
    ]
    assert (data / "lake" / "access" / "events" / "_delta_log").is_dir()
    assert lake_rows("SELECT partition_date::VARCHAR, count(*) FROM access.events GROUP BY 1") == [
        ("2024-01-15", loaded)
    ]
    assert lake_rows("SELECT partition_date::VARCHAR, count(*) FROM access.dlq GROUP BY 1") == [
        ("2024-01-15", generated.bad_records)
    ]
    assert lake_rows(
        "SELECT partition_date::VARCHAR, attempt, run_id, status, rows_loaded FROM access.loads ORDER BY 1, 2"
    ) == [
        ("2024-01-15", 1, runs[0].run_id, "loaded", loaded),
        ("2024-01-15", 2, runs[2].run_id, "loaded", loaded),
        ("2024-01-16", 1, runs[1].run_id, "empty", 0),
        ("2024-01-16", 2, runs[2].run_id, "empty", 0),
    ]
    manifests = data / "output" / "manifests" / "access"
    assert sorted(path.name for path in manifests.iterdir()) == ["2024-01-15.json", "2024-01-16.json"]
    for name, status in (("2024-01-15", "loaded"), ("2024-01-16", "empty")):
        manifest = json.loads((manifests / f"{name}.json").read_text())
        assert (manifest["status"], manifest["run_id"]) == (status, runs[2].run_id)
    assert s3_clients_refused == []


# Installed in every Python process of the CLI run (PYTHONPATH): creating any botocore client
# (boto3 builds all of its clients and resources through it), any pyarrow S3 file system, or
# any delta-rs table on S3 (the entry points of `DELTA_RS_ENTRY_POINTS`) is recorded and
# refused; the project root of the embedded defaults is moved to the test's folder.
GUARD = """
import os

import botocore.session
import deltalake.table
import deltalake.transaction
import deltalake.writer.convert_to
import deltalake.writer.writer
import pyarrow._s3fs
import pyarrow.fs


def _record(kind):
    with open(os.environ["TEST_AWS_ATTEMPTS"], "a") as attempts:
        attempts.write(f"{os.getpid()} {kind}\\n")
    raise RuntimeError(f"local mode must not create an S3 client: {kind}")


def _refuse(self, service_name, *args, **kwargs):
    _record(service_name)


botocore.session.Session.create_client = _refuse


def _refuse_pyarrow(*args, **kwargs):
    _record("pyarrow S3")


for _module in (pyarrow._s3fs, pyarrow.fs):
    _module.ensure_s3_initialized = _module.initialize_s3 = _refuse_pyarrow


def _is_s3(value):
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value).lower().startswith(("s3://", "s3a://"))
    if hasattr(value, "keys"):
        return any(str(key).lower().startswith("aws_") for key in value.keys())
    return False


def _guarded(name, real):
    def call(*args, **kwargs):
        if any(_is_s3(value) for value in (*args, *kwargs.values())):
            _record(f"delta-rs S3 store ({name})")
        return real(*args, **kwargs)

    return call


class _GuardedRawDeltaTable:
    def __init__(self, real):
        self._real = real
        self.is_deltatable = _guarded("is_deltatable", real.is_deltatable)

    def __call__(self, *args, **kwargs):
        return _guarded("RawDeltaTable", self._real)(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._real, name)


deltalake.table.RawDeltaTable = _GuardedRawDeltaTable(deltalake.table.RawDeltaTable)
for _module, _name in (
    (deltalake.table, "_create_deltalake"),
    (deltalake.writer.writer, "write_deltalake_rust"),
    (deltalake.writer.convert_to, "_convert_to_deltalake"),
    (deltalake.transaction, "_create_table_with_add_actions"),
):
    setattr(_module, _name, _guarded(_name, getattr(_module, _name)))

import pipeline.settings  # noqa: E402

pipeline.settings.PROJECT_ROOT = __import__("pathlib").Path(os.environ["TEST_PROJECT_ROOT"])
"""


def test_cli_run_in_its_own_processes_creates_no_aws_client(tmp_path: Path) -> None:
    """`dagster asset materialize` of a day with the embedded defaults, the guard in botocore,
    pyarrow and delta-rs in the CLI process and in any step process (with
    `PIPELINE_STEP_EXECUTOR=multiprocess` each step runs in a process of its own): the run
    succeeds, no client was even attempted, and the run log says `mode=local` with the default
    folders. (With an s3:// URL the same guard records attempts
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
    expected = f"{STORAGE_LINE}mode=local landing={data / 'landing'} output={data / 'output'} lake={data / 'lake'}"
    assert expected in output, output[-4000:]
    assert "mode=s3" not in output
    assert (data / "output" / "manifests" / "access" / "2024-01-15.json").is_file()
    assert (data / "lake" / "access" / "events" / "_delta_log").is_dir()


@pytest.fixture
def s3_lake(s3_pipeline: S3PipelineEnv, moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> LakeLocation:
    """The storage fixture's S3 landing zone and output store, with the lake in the same bucket
    (as deployed), every client straight to the S3 server: this run is in the test process,
    as is the fault proxy, and delta-rs keeps the GIL while it waits for S3, so through the
    proxy both would stall. Returns the lake, as a reader reaches it."""
    url = f"s3://{s3_pipeline.bucket}/{LAKE_PREFIX}"
    monkeypatch.delenv("PIPELINE_WAREHOUSE", raising=False)
    monkeypatch.setenv("PIPELINE_LAKE_URL", url)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint)
    return LakeLocation.s3(url, S3ClientSettings(endpoint_url=moto_server.endpoint))


def test_s3_urls_say_mode_s3_and_the_endpoint_before_the_first_step(
    s3_pipeline: S3PipelineEnv, s3_lake: LakeLocation, moto_server: MotoServer, instance: DagsterInstance
) -> None:
    """The daily job on an S3 landing zone, output store and lake (an empty day: nothing landed
    yet) says first `mode=s3`, the three URLs, and the endpoint and region its clients really
    use: boto3's (landing, output, day locks) and the lake's own (delta-rs and pyarrow). The
    endpoint named is the one used: the lake's commits and data files and the manifest are
    objects of that server's bucket (no other S3 is reachable)."""
    result = run_daily_job(instance, "2024-01-15")

    assert result.success
    endpoint = moto_server.endpoint
    assert storage_line_before_first_step(instance, result.run_id) == (
        f"mode=s3 landing={s3_pipeline.landing_url} output={s3_pipeline.output_url} lake={s3_lake.root} "
        f"s3_endpoint={endpoint} s3_region={REGION} lake_endpoint={endpoint} lake_region={REGION}"
    )
    keys = s3_pipeline.keys(f"{LAKE_PREFIX}/access/loads/")
    assert any(key.startswith(f"{LAKE_PREFIX}/access/loads/_delta_log/") for key in keys), keys
    assert any(key.startswith(f"{LAKE_PREFIX}/access/loads/partition_date=2024-01-15/") for key in keys), keys
    with snapshot_connect(s3_lake, configured_sources().values()) as connection:
        attempts = connection.execute("SELECT attempt, status, run_id FROM access.loads").fetchall()
    assert attempts == [(1, "empty", result.run_id)]
    assert s3_pipeline.manifest("access", "2024-01-15")["status"] == "empty"


def test_the_guard_refuses_every_kind_of_s3_client(s3_clients_refused: list[str], tmp_path: Path) -> None:
    """The guard of the local-mode test is live: a boto3 client, a pyarrow `S3FileSystem`, and
    delta-rs on an `s3://` URI or with S3 storage options are each refused and recorded, as is
    the product's own S3 lake; a local Delta table is not."""
    schema = pa.schema([("n", pa.int64())])
    data = pa.table({"n": [1, 2]}, schema=schema)
    local = tmp_path / "local-table"
    deltalake.write_deltalake(str(local), data)
    assert deltalake.DeltaTable(str(local)).version() == 0
    assert s3_clients_refused == []

    attempts = [
        lambda: boto3.client("s3"),
        lambda: boto3.session.Session().resource("s3"),
        lambda: botocore.session.get_session().create_client("sts"),
        lambda: pyarrow.fs.S3FileSystem(region=REGION),
        lambda: deltalake.DeltaTable("s3://bucket/table"),
        lambda: deltalake.DeltaTable.is_deltatable("s3://bucket/table"),
        lambda: deltalake.DeltaTable(str(local), storage_options={"AWS_REGION": REGION}),
        lambda: deltalake.write_deltalake("s3://bucket/table", data),
        lambda: deltalake.DeltaTable.create("s3://bucket/table", schema=schema),
        lambda: PipelineResource(landing_url="a", output_url="b", lake_url="s3://bucket/lake").lake(),
        lambda: (
            PipelineResource(landing_url="a", output_url="b", lake_url="s3://bucket/lake")
            .lake_location()
            .filesystem("s3://bucket/lake/access/events")
        ),
    ]
    for attempt in attempts:
        with pytest.raises(S3ClientRefused):
            attempt()
    kinds = "\n".join(s3_clients_refused)
    assert len(s3_clients_refused) == len(attempts), kinds
    assert kinds.count("boto3/botocore client") == 4, kinds
    assert kinds.count("pyarrow S3") == 2, kinds
    assert kinds.count("delta-rs S3 store") == 5, kinds


def test_a_local_ingest_does_not_even_import_botocore(tmp_path: Path) -> None:
    """The engine's ingest of a local day, in a fresh process, loads no AWS code at all: botocore
    is imported only by the S3 store and the S3 lease (through the boto3 client they are given),
    so a local run does not pay its ~16 MB of memory."""
    landing = tmp_path / "landing"
    generate_landing_zone(landing, [day("2024-01-15")], sources=["access"], lines_per_hour=10)
    script = textwrap.dedent(
        f"""
        import datetime as dt, sys
        from pathlib import Path
        from pipeline.engine.ingest import IngestOptions, RunInfo, ingest_partition
        from pipeline.engine.lake import Lake, LakeLocation
        from pipeline.engine.objects import LocalObjectStore
        from pipeline.sources import load_sources

        root = Path({str(tmp_path)!r})
        result = ingest_partition(
            load_sources()["access"],
            dt.date(2024, 1, 15),
            landing=LocalObjectStore(root / "landing"),
            output=LocalObjectStore(root / "output"),
            lake=Lake(LakeLocation.local(root / "lake")),
            run=RunInfo("no-aws", dt.datetime(2024, 1, 16, tzinfo=dt.UTC)),
            options=IngestOptions(resume=False),
        )
        print(result.record.status, result.record.rows_read, sorted(m for m in sys.modules if m.startswith("boto")))
        """
    )
    env = {name: value for name, value in os.environ.items() if name not in PIPELINE_VARIABLES}
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.split("\n")[-2] == "loaded 240 []", completed.stdout
