"""Fixtures of the S3 tests: moto's S3-compatible server on loopback, a fault-injecting proxy in
front of it, a bucket per test, and a pipeline whose landing zone, output store and lake are in S3.

The AWS settings are the standard environment variables (`AWS_ENDPOINT_URL`, dummy keys,
`AWS_DEFAULT_REGION`), set per test; shared AWS config and credential files are hidden, so
a developer's own profile can never be picked up and no test can reach a real AWS account.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import duckdb
import pytest
from botocore.config import Config
from dagster import Definitions

from pipeline.engine.lake import LakeLocation, S3ClientSettings
from pipeline.engine.lake.snapshot import connect
from pipeline.sources import configured_sources
from pipeline_tests.conftest import LakeReader
from pipeline_tests.storage.s3_server import FaultProxy, MotoServer

REGION = "us-east-1"
LANDING_PREFIX = "landing"
OUTPUT_PREFIX = "output"
LAKE_PREFIX = "lake"


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """moto's standalone server in a child process, for the whole session."""
    server = MotoServer(tmp_path_factory.mktemp("moto") / "server.log")
    yield server
    server.stop()


@pytest.fixture
def fault_proxy(moto_server: MotoServer) -> Iterator[FaultProxy]:
    """A fresh fault-injecting proxy in front of the moto server (no faults until a test adds some)."""
    proxy = FaultProxy(moto_server.port)
    yield proxy
    proxy.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fault_proxy: FaultProxy) -> FaultProxy:
    """Standard AWS variables pointing every client the pipeline builds at the proxy (so the
    tests see and can fault every call); no real profile, credentials or region can leak in."""
    for name in ("AWS_PROFILE", "AWS_REGION", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_MAX_ATTEMPTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", fault_proxy.endpoint)
    return fault_proxy


@pytest.fixture
def admin_s3(moto_server: MotoServer, aws_env: FaultProxy) -> Any:
    """A client straight to the server (not through the proxy), for arranging and inspecting."""
    return boto3.session.Session().client(
        "s3",
        endpoint_url=moto_server.endpoint,
        region_name=REGION,
        config=Config(connect_timeout=5, read_timeout=30, retries={"total_max_attempts": 1}),
    )


@pytest.fixture
def bucket(admin_s3: Any, moto_server: MotoServer) -> Iterator[str]:
    """A new, empty bucket; emptied and removed afterwards so the server's memory stays small."""
    name = f"pipeline-test-{uuid.uuid4().hex[:12]}"
    admin_s3.create_bucket(Bucket=name)
    yield name
    paginator = admin_s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=name):
        for entry in page.get("Contents", []):
            admin_s3.delete_object(Bucket=name, Key=entry["Key"])
    admin_s3.delete_bucket(Bucket=name)


def upload_folder(client: Any, bucket: str, folder: Path, prefix: str) -> list[str]:
    """Upload every file under `folder` to `s3://bucket/prefix/<relative path>`; returns the keys."""
    keys: list[str] = []
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            key = f"{prefix}/{path.relative_to(folder).as_posix()}"
            client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
            keys.append(key)
    return keys


@dataclass
class S3PipelineEnv(LakeReader):
    """One pipeline deployment whose landing zone, output store and lake are prefixes of a bucket."""

    bucket: str
    admin: Any
    proxy: FaultProxy
    local_landing: Path  # where tests generate files before `upload_landing()`
    direct_endpoint: str  # the S3 server itself, not the proxy: for arranging and inspecting

    @property
    def landing_url(self) -> str:
        return f"s3://{self.bucket}/{LANDING_PREFIX}"

    @property
    def output_url(self) -> str:
        return f"s3://{self.bucket}/{OUTPUT_PREFIX}"

    @property
    def lake_url(self) -> str:
        return f"s3://{self.bucket}/{LAKE_PREFIX}"

    def upload_landing(self) -> list[str]:
        """Upload the generated landing zone; returns the S3 keys."""
        return upload_folder(self.admin, self.bucket, self.local_landing, LANDING_PREFIX)

    def definitions(self) -> Definitions:
        """Definitions built from the environment this fixture set."""
        from pipeline.definitions import build_definitions

        return build_definitions()

    def keys(self, prefix: str) -> list[str]:
        """Every key of the bucket under `prefix`."""
        paginator = self.admin.get_paginator("list_objects_v2")
        return [
            entry["Key"]
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
            for entry in page.get("Contents", [])
        ]

    def manifest(self, source: str, day: str) -> dict[str, Any]:
        """The stats manifest of a partition, read from S3."""
        key = f"{OUTPUT_PREFIX}/manifests/{source}/{day}.json"
        return json.loads(self.admin.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def connect(self) -> duckdb.DuckDBPyConnection:
        """The lake read the documented way, with delta-rs and pyarrow pointed at the S3 server
        itself: what a test inspects is never faulted (nor counted) by the proxy."""
        location = LakeLocation.s3(self.lake_url, S3ClientSettings(endpoint_url=self.direct_endpoint))
        return connect(location, configured_sources().values())


@pytest.fixture
def s3_pipeline(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    bucket: str,
    admin_s3: Any,
    aws_env: FaultProxy,
    moto_server: MotoServer,
) -> S3PipelineEnv:
    """`PIPELINE_LANDING_URL`, `PIPELINE_OUTPUT_URL` and `PIPELINE_LAKE_URL` in S3, through the proxy."""
    env = S3PipelineEnv(bucket, admin_s3, aws_env, tmp_path / "generated-landing", moto_server.endpoint)
    env.local_landing.mkdir()
    monkeypatch.setenv("PIPELINE_LANDING_URL", env.landing_url)
    monkeypatch.setenv("PIPELINE_OUTPUT_URL", env.output_url)
    monkeypatch.setenv("PIPELINE_LAKE_URL", env.lake_url)
    monkeypatch.delenv("PIPELINE_WAREHOUSE", raising=False)
    monkeypatch.delenv("PIPELINE_SOURCES_FILE", raising=False)
    return env
