"""The resource giving assets (and sensors) their stores and the lake, built from `PIPELINE_*` settings.

Two modes, chosen by the URLs alone:

- **local** (the embedded defaults): landing, output and lake are local folders. No S3
  client is ever created, so nothing can reach S3 (or any other remote service) by accident.
- **s3**: any of `PIPELINE_LANDING_URL`, `PIPELINE_OUTPUT_URL`, `PIPELINE_LAKE_URL` is
  `s3://bucket/prefix`. The boto3 client comes from the nested `S3ClientResource`
  (dagster-aws's `S3Resource`), so endpoint, region and credentials follow the standard AWS
  environment (`AWS_ENDPOINT_URL` for S3-compatible stores, `AWS_REGION`/`AWS_DEFAULT_REGION`,
  `AWS_ACCESS_KEY_ID`/`AWS_PROFILE`/task roles), with explicit timeouts and bounded retries.
  delta-rs, which writes the lake's commits, has its own client: it gets the same endpoint,
  region, credentials, timeouts and retries (`pipeline.engine.lake.location`).

The mode and the locations (never a secret) are logged when the resource is set up, i.e. at
the start of every step of every run.
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from botocore.handlers import disable_signing
from dagster import ConfigurableResource, InitResourceContext
from dagster_aws.s3 import S3Resource
from pydantic import Field, PrivateAttr

from pipeline.engine.lake import Lake, LakeLocation, S3ClientSettings
from pipeline.engine.lake.locks import DEFAULT_WAIT_S
from pipeline.engine.objects import LocalObjectStore, ObjectStore, parse_s3_url
from pipeline.engine.s3 import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_READ_TIMEOUT_S,
    S3ObjectStore,
    client_config,
)
from pipeline.settings import Settings, SettingsError, resolve_local


class S3ClientResource(S3Resource):
    """dagster-aws's `S3Resource` with explicit connect and read timeouts.

    Every field of `S3Resource` applies (region, endpoint, profile, keys, SSL, `max_attempts`);
    left unset, boto3 takes them from the standard AWS environment. `S3Resource.get_client()`
    hands botocore a retry setting only, leaving the timeouts at botocore's implicit defaults,
    and a botocore client's timeouts cannot be changed once it is built; so `get_client()`
    builds the client from the same fields, with `pipeline.engine.s3.client_config()`.
    """

    connect_timeout_s: float = Field(
        default=DEFAULT_CONNECT_TIMEOUT_S, description="Seconds to wait for a connection to S3."
    )
    read_timeout_s: float = Field(
        default=DEFAULT_READ_TIMEOUT_S,
        description="Seconds to wait for bytes from S3 on an open connection (per read, not per transfer).",
    )

    def get_client(self) -> Any:
        session = boto3.session.Session(profile_name=self.profile_name)
        client = session.client(
            "s3",
            # botocore reads AWS_DEFAULT_REGION only; AWS_REGION is what ECS tasks and the other
            # AWS SDKs use, and what our docs name. Unset, botocore falls back as usual.
            region_name=self.region_name or os.environ.get("AWS_REGION") or None,
            endpoint_url=self.endpoint_url,
            use_ssl=self.use_ssl,
            verify=self.verify,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
            aws_session_token=self.aws_session_token,
            config=client_config(
                connect_timeout_s=self.connect_timeout_s,
                read_timeout_s=self.read_timeout_s,
                max_attempts=self.max_attempts,
            ),
        )
        if self.use_unsigned_session:
            client.meta.events.register("choose-signer.s3.*", disable_signing)
        return client

    def lake_settings(self) -> S3ClientSettings:
        """The same endpoint, region, credentials, timeouts and retries for delta-rs's client.

        Credentials set here or in the environment are passed on; with a named profile
        (which delta-rs cannot read) the profile's current credentials are resolved by boto3.
        Otherwise delta-rs finds them itself, as boto3 does (environment, ECS task role,
        web identity, instance metadata), refreshing them as they expire."""
        access_key, secret_key, token = self.aws_access_key_id, self.aws_secret_access_key, self.aws_session_token
        if not access_key and self.profile_name:
            credentials = boto3.session.Session(profile_name=self.profile_name).get_credentials()
            if credentials is not None:
                frozen = credentials.get_frozen_credentials()
                access_key, secret_key, token = frozen.access_key, frozen.secret_key, frozen.token
        return S3ClientSettings(
            endpoint_url=self.endpoint_url,
            region=self.region_name or os.environ.get("AWS_REGION") or None,
            access_key_id=access_key,
            secret_access_key=secret_key,
            session_token=token,
            connect_timeout_s=self.connect_timeout_s,
            read_timeout_s=self.read_timeout_s,
            max_attempts=self.max_attempts,
        )


def _max_attempts_from_env() -> dict[str, int]:
    """`AWS_MAX_ATTEMPTS`, the standard variable for the number of attempts per call, if set.

    botocore reads it only when the client's configuration names no attempts, and
    `S3Resource` always does (5 by default), so it is passed on explicitly; otherwise an
    operator's setting would be silently ignored."""
    value = os.environ.get("AWS_MAX_ATTEMPTS", "").strip()
    if not value:
        return {}
    if not value.isdigit() or int(value) < 1:
        raise SettingsError(f"AWS_MAX_ATTEMPTS={value}: expected a whole number of attempts, at least 1")
    return {"max_attempts": int(value)}


def _check_url(url: str, variable: str) -> None:
    """Refuse a location that is neither a local path nor a well-formed s3:// URL."""
    if url.startswith("s3://"):
        try:
            parse_s3_url(url)
        except ValueError as error:
            raise SettingsError(f"{variable}={url}: {error}") from error
    elif "://" in url:
        raise SettingsError(f"{variable}={url}: expected a local directory or an s3://bucket/prefix URL")


class PipelineResource(ConfigurableResource):
    """Locations of the landing zone, the output store and the lake."""

    landing_url: str
    output_url: str
    lake_url: str
    # How long a run waits for another run writing the same day before failing (retryable).
    day_lock_wait_s: float = DEFAULT_WAIT_S
    # Only used (and only turned into a client) when a URL is s3://.
    s3: S3ClientResource = Field(default_factory=S3ClientResource)

    _s3_client: Any = PrivateAttr(default=None)

    @classmethod
    def from_settings(cls, settings: Settings) -> PipelineResource:
        """Build the resource from environment-derived settings."""
        return cls(
            landing_url=settings.landing_url,
            output_url=settings.output_url,
            lake_url=settings.lake_url,
            s3=S3ClientResource(**_max_attempts_from_env()),
        )

    def setup_for_execution(self, context: InitResourceContext) -> None:
        """Check the settings and log the mode before any step uses them.

        A bad setting fails here, in resource setup, so no retry policy waits on it."""
        description = self.describe()
        if context.log is not None:
            context.log.info("pipeline storage: %s", description)

    @property
    def mode(self) -> str:
        """`s3` when the landing zone, the output store or the lake is in S3, else `local`."""
        urls = (self.landing_url, self.output_url, self.lake_url)
        return "s3" if any(url.startswith("s3://") for url in urls) else "local"

    def landing(self) -> ObjectStore:
        """Where raw log files land."""
        return self._store(self.landing_url, "PIPELINE_LANDING_URL")

    def output(self) -> ObjectStore:
        """Where manifests and other objects are written."""
        return self._store(self.output_url, "PIPELINE_OUTPUT_URL")

    def lake_location(self) -> LakeLocation:
        """Where the Delta tables are, with the options delta-rs needs to reach them."""
        _check_url(self.lake_url, "PIPELINE_LAKE_URL")
        if self.lake_url.startswith("s3://"):
            return LakeLocation.s3(self.lake_url, self.s3.lake_settings())
        return LakeLocation.local(resolve_local(self.lake_url))

    def lake(self) -> Lake:
        """The lake (its S3 day locks use the same boto3 client as the stores)."""
        location = self.lake_location()
        return Lake(location, s3_client=self.s3_client() if location.is_s3 else None, lock_wait_s=self.day_lock_wait_s)

    def s3_client(self) -> Any:
        """The boto3 S3 client, created on first use (never in local mode) and shared by the stores."""
        if self._s3_client is None:
            self._s3_client = self.s3.get_client()
        return self._s3_client

    def describe(self) -> str:
        """One line naming the mode and locations, logged at the start of every run.

        Validates the settings; in local mode it creates no S3 client."""
        _check_url(self.landing_url, "PIPELINE_LANDING_URL")
        _check_url(self.output_url, "PIPELINE_OUTPUT_URL")
        _check_url(self.lake_url, "PIPELINE_LAKE_URL")
        line = (
            f"mode={self.mode} landing={self._location(self.landing_url)} output={self._location(self.output_url)} "
            f"lake={self._location(self.lake_url)}"
        )
        if self.mode == "s3":
            # boto3's client (landing, output, the lake's day locks), as it resolved them.
            client = self.s3_client()
            line += f" s3_endpoint={client.meta.endpoint_url} s3_region={client.meta.region_name}"
        if self.lake_url.startswith("s3://"):
            # delta-rs (commits) and pyarrow (data files) have clients of their own: what they get.
            endpoint, region = self.s3.lake_settings().endpoint_and_region()
            line += f" lake_endpoint={endpoint} lake_region={region}"
        return line

    def _location(self, url: str) -> str:
        return url if url.startswith("s3://") else str(resolve_local(url))

    def _store(self, url: str, variable: str) -> ObjectStore:
        _check_url(url, variable)
        if url.startswith("s3://"):
            return S3ObjectStore.from_url(url, self.s3_client())
        return LocalObjectStore(resolve_local(url))
