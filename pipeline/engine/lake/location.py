"""Where the lake lives: a local folder or `s3://bucket/prefix`, and how its clients reach it.

Two clients touch an S3 lake besides the landing zone's boto3 one: delta-rs's object store
(the commits, `_delta_log/`) and pyarrow's S3 file system (the Parquet data files, written
and read). `LakeLocation` carries one `S3ClientSettings` and derives both clients from it,
so they reach the same endpoint, in the same region, with the same credentials, timeouts and
retries as the landing zone. (delta-rs also offers a pyarrow file system over its own store,
`DeltaStorageHandler`; a process that used it aborted at exit about one time in ten here,
"terminate called without an active exception", as delta-rs and polars users report too.)
The settings hold secrets: they are never logged, and `repr()` of a location hides them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.fs as pa_fs

from pipeline.engine.objects import parse_s3_url

# Keys of the object-store options that are secrets (never logged, never in repr()).
_SECRET_KEYS = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"})


@dataclass(frozen=True)
class S3ClientSettings:
    """The S3 client settings shared by the landing zone's boto3 client and delta-rs.

    Unset values fall back to the standard AWS environment in both clients (delta-rs reads
    `AWS_*` variables itself, including ECS task-role and web-identity credentials), so only
    what was set explicitly is passed on.
    """

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    max_attempts: int = 5

    def configured_endpoint(self) -> str | None:
        """The endpoint handed to delta-rs and pyarrow: set here, else the standard variables."""
        return self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None

    def configured_region(self) -> str | None:
        """The region handed to delta-rs and pyarrow: set here, else the standard variables."""
        return self.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None

    def endpoint_and_region(self) -> tuple[str, str]:
        """Where delta-rs and pyarrow reach S3, for the run log (never a secret): unset, AWS's
        own regional endpoint, in us-east-1 unless a region is set."""
        region = self.configured_region() or "us-east-1"
        return self.configured_endpoint() or f"https://s3.{region}.amazonaws.com", region

    def storage_options(self) -> dict[str, str]:
        """Options of delta-rs's object store (`object_store`'s S3 and client keys)."""
        endpoint, region = self.configured_endpoint(), self.configured_region()
        options = {
            # A request's whole duration (object_store has no per-read timeout): generous, since
            # a part of a multipart upload or a data file is several MB.
            "timeout": f"{max(self.read_timeout_s, 1.0):.0f}s",
            "connect_timeout": f"{max(self.connect_timeout_s, 1.0):.0f}s",
            # botocore counts the first attempt in max_attempts; object_store counts retries.
            "max_retries": str(max(self.max_attempts - 1, 0)),
            "retry_timeout": f"{max(self.read_timeout_s * self.max_attempts, 30.0):.0f}s",
        }
        if endpoint:
            options["AWS_ENDPOINT_URL"] = endpoint
            if endpoint.startswith("http://"):
                options["AWS_ALLOW_HTTP"] = "true"
        if region:
            options["AWS_REGION"] = region
        if self.access_key_id:
            options["AWS_ACCESS_KEY_ID"] = self.access_key_id
        if self.secret_access_key:
            options["AWS_SECRET_ACCESS_KEY"] = self.secret_access_key
        if self.session_token:
            options["AWS_SESSION_TOKEN"] = self.session_token
        return options

    def pyarrow_filesystem(self) -> pa_fs.S3FileSystem:
        """pyarrow's S3 file system with these settings (unset credentials: the standard AWS
        chain, as boto3 and delta-rs use)."""
        endpoint, region = self.configured_endpoint(), self.configured_region()
        arguments: dict[str, Any] = {
            "connect_timeout": self.connect_timeout_s,
            "request_timeout": self.read_timeout_s,
            "retry_strategy": pa_fs.AwsStandardS3RetryStrategy(max_attempts=self.max_attempts),
        }
        if endpoint:
            scheme, _, host = endpoint.partition("://")
            arguments["endpoint_override"] = host.rstrip("/") if host else endpoint
            arguments["scheme"] = scheme if host else "https"
        if region:
            arguments["region"] = region
        if self.access_key_id and self.secret_access_key:
            arguments["access_key"] = self.access_key_id
            arguments["secret_key"] = self.secret_access_key
            arguments["session_token"] = self.session_token
        return pa_fs.S3FileSystem(**arguments)


def redacted(options: Mapping[str, str]) -> dict[str, str]:
    """`options` with secret values replaced, safe to log."""
    return {key: ("***" if key in _SECRET_KEYS else value) for key, value in options.items()}


@dataclass(frozen=True)
class LakeLocation:
    """The root of the lake: `{root}/{source}/{table}` holds each Delta table.

    `root` is an absolute local path or `s3://bucket/prefix`; `storage_options` are delta-rs's
    object-store options (empty for a local lake: no S3 client is ever built for it).
    """

    root: str
    storage_options: Mapping[str, str] = field(default_factory=dict, repr=False)
    s3_settings: S3ClientSettings | None = field(default=None, repr=False)

    @classmethod
    def local(cls, path: Path) -> LakeLocation:
        """A lake in a local folder."""
        return cls(str(path.resolve()))

    @classmethod
    def s3(cls, url: str, settings: S3ClientSettings) -> LakeLocation:
        """A lake under `s3://bucket/prefix`."""
        bucket, prefix = parse_s3_url(url)
        root = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        return cls(root, settings.storage_options(), settings)

    @property
    def is_s3(self) -> bool:
        """Whether the lake is in S3."""
        return self.root.startswith("s3://")

    @property
    def bucket_and_prefix(self) -> tuple[str, str]:
        """`(bucket, prefix)` of an S3 lake."""
        return parse_s3_url(self.root)

    def table_uri(self, source: str, table: str) -> str:
        """The URI of one Delta table."""
        return f"{self.root}/{source}/{table}"

    def options(self) -> dict[str, str] | None:
        """Storage options for delta-rs calls (None for a local lake)."""
        return dict(self.storage_options) if self.storage_options else None

    def filesystem(self, table_uri: str) -> pa_fs.FileSystem:
        """A pyarrow file system rooted at `table_uri` (paths inside are a table's relative
        file paths, as the Delta log names them)."""
        if not self.is_s3:
            return pa_fs.SubTreeFileSystem(table_uri, pa_fs.LocalFileSystem())
        settings = self.s3_settings or S3ClientSettings()
        return pa_fs.SubTreeFileSystem(table_uri[len("s3://") :], settings.pyarrow_filesystem())

    def describe(self) -> str:
        """The location and its non-secret client options, for the run log."""
        if not self.is_s3:
            return self.root
        shown = {key: value for key, value in redacted(self.storage_options).items() if key not in _SECRET_KEYS}
        return f"{self.root} ({', '.join(f'{key}={value}' for key, value in sorted(shown.items()))})"

    def __str__(self) -> str:
        return self.root


def describe_options(options: Mapping[str, Any]) -> str:
    """Object-store options as a log-safe string."""
    return ", ".join(f"{key}={value}" for key, value in sorted(redacted(options).items()))
