"""An object store over S3, or any S3-compatible service (MinIO, Ceph, moto), through a boto3 client.

Plain Python, no Dagster: the caller hands in a boto3 S3 client (the Dagster wiring gets one
from `dagster_aws.s3.S3Resource`) built with `client_config()`, so that

- every call has explicit connect and read timeouts, also while a body is being streamed;
- transient failures (throttling, 5xx, dropped or reset connections, timeouts) are retried
  by botocore's *standard* retry mode, a bounded number of attempts with jittered
  exponential backoff; other 4xx errors are never retried by botocore.

What this module adds on top of the client:

- **Streaming reads.** `open()` returns a raw stream over GetObject's body: nothing is read
  until the caller reads, and `read(n)` pulls at most `n` bytes from the socket, so memory is
  bounded by the caller's chunk size, for `.log` and (through `gzip.GzipFile`) `.log.gz`. A
  connection that drops in the middle of a body is resumed where it stopped with a ranged
  GetObject pinned to the object's ETag (`If-Match`), so a resumed read can never splice two
  versions of a re-delivered file.
- **Clear errors.** Failures become `ObjectStoreError` naming the operation, the bucket and
  the key, with `retryable` telling whether trying again later could help. Permanent errors
  (access denied, no such bucket, bad credentials) surface on their first occurrence.
- **Atomic, deterministic writes.** `write_atomic` is a single PutObject to `{prefix}/{key}`:
  S3 makes an object visible whole or not at all, so a reader sees the old or the new
  object, never half of one, and a re-run replaces the object under the same key.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator
from typing import Any, NoReturn

from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    FlexibleChecksumError,
    HTTPClientError,
    IncompleteReadError,
    SSLError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from urllib3.exceptions import HTTPError as Urllib3Error

from pipeline.engine.objects import ObjectInfo, ObjectStoreError, parse_s3_url, safe_key
from pipeline.engine.s3_errors import s3_error

logger = logging.getLogger(__name__)

DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_READ_TIMEOUT_S = 60.0
DEFAULT_MAX_ATTEMPTS = 5


def client_config(
    *,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> Config:
    """The botocore configuration every S3 client of the pipeline is built with.

    `read_timeout_s` bounds each wait for bytes from the socket (also between two reads of a
    streamed body), not a whole transfer, so large objects are fine. `max_attempts` counts
    the first attempt, as `dagster_aws.s3.S3Resource.max_attempts` is documented to (botocore's
    own `max_attempts` key counts retries only, one more call than that description says; hence
    `total_max_attempts`). "standard" mode retries throttling, 5xx and connection errors with
    jittered exponential backoff, and nothing else.
    """
    return Config(
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
        retries={"total_max_attempts": max_attempts, "mode": "standard"},
    )


def is_transient_network_error(error: BaseException) -> bool:
    """Dropped connections, timeouts and cut bodies; a TLS failure is configuration, not luck."""
    if isinstance(error, SSLError):
        return False
    return isinstance(error, BotoConnectionError | HTTPClientError | IncompleteReadError)


def _is_resumable(error: BaseException) -> bool:
    """Errors raised while a GetObject body is read that a ranged re-request can recover from.

    Both botocore's wrappers and the raw urllib3/socket errors count, because which one
    surfaces depends on where in the read the connection broke."""
    return is_transient_network_error(error) or isinstance(error, Urllib3Error | ConnectionError | TimeoutError)


class S3ObjectStore:
    """An `ObjectStore` over `s3://bucket/prefix`: key `K` is the S3 object `{prefix}/{K}`."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "",
        *,
        resume_attempts: int = 3,
        resume_backoff_s: float = 0.5,
        list_page_size: int = 1000,
    ) -> None:
        """`client` is a boto3 S3 client built with `client_config()`.

        `resume_attempts` bounds how often one streamed read is resumed after a dropped
        connection (waiting `resume_backoff_s`, doubled each time). Listings are fetched
        `list_page_size` keys per request (1,000 is S3's maximum).
        """
        self.client = client
        self.bucket = bucket
        self.prefix = safe_key(prefix.strip("/"))
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.resume_attempts = resume_attempts
        self.resume_backoff_s = resume_backoff_s
        self.list_page_size = list_page_size

    @classmethod
    def from_url(cls, url: str, client: Any, **options: Any) -> S3ObjectStore:
        """The store at `s3://bucket/prefix`."""
        bucket, prefix = parse_s3_url(url)
        return cls(client, bucket, prefix, **options)

    def full_key(self, key: str) -> str:
        """The S3 key of store key `key` (validated: no `..`, not absolute)."""
        relative = safe_key(key)
        if not self.prefix:
            return relative
        return f"{self.prefix}/{relative}" if relative else self.prefix

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object under the folder `prefix`, in key order (S3 lists keys in UTF-8 byte order,
        which is code point order, as the local store sorts), with its size and ETag.

        Zero-byte keys ending in `/` are folder placeholders made by consoles and tools, not
        files (a local folder is not listed either), so they are left out.
        """
        folder = self.full_key(prefix)
        # List the folder, not every key that merely starts with the same characters.
        s3_prefix = f"{folder}/" if folder else ""
        root = f"{self.prefix}/" if self.prefix else ""
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket, Prefix=s3_prefix, PaginationConfig={"PageSize": self.list_page_size}
        )
        try:
            for page in pages:
                for entry in page.get("Contents", []):
                    key, size = entry["Key"], int(entry["Size"])
                    if key.endswith("/") and size == 0:
                        continue
                    yield ObjectInfo(key[len(root) :], size, entry.get("ETag", "").strip('"'))
        except (ClientError, BotoCoreError) as error:
            self._raise("ListObjectsV2", s3_prefix, error)

    def open(self, key: str) -> S3ObjectStream:
        """A lazily read, resumable binary stream over the object (also a context manager)."""
        full_key = self.full_key(key)
        response = self._get(full_key)
        return S3ObjectStream(self, full_key, response)

    def write_atomic(self, key: str, data: bytes) -> str:
        """Replace the object `{prefix}/{key}` with `data` in one PutObject; returns its URL.

        One PutObject is atomic (readers get the previous object or this one) and the key is
        deterministic, so a re-run replaces the object rather than adding another. botocore
        sends a CRC32 checksum that S3 verifies, so a body damaged in transit is refused.
        """
        full_key = self.full_key(key)
        content_type = "application/json" if full_key.endswith(".json") else "application/octet-stream"
        try:
            self.client.put_object(Bucket=self.bucket, Key=full_key, Body=data, ContentType=content_type)
        except (ClientError, BotoCoreError) as error:
            self._raise("PutObject", full_key, error)
        return f"s3://{self.bucket}/{full_key}"

    def location(self, key: str) -> str:
        """The object's s3:// URL."""
        return f"s3://{self.bucket}/{self.full_key(key)}"

    def _get(self, full_key: str, **arguments: str) -> dict[str, Any]:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=full_key, **arguments)
        except (ClientError, BotoCoreError) as error:
            self._raise("GetObject", full_key, error)

    def _raise(self, operation: str, key: str, error: BaseException) -> NoReturn:
        """Raise `error` as an `ObjectStoreError` naming the bucket and the key."""
        raise translate_error(operation, self.bucket, key, error) from error


def translate_error(operation: str, bucket: str, key: str, error: BaseException) -> ObjectStoreError:
    """An `ObjectStoreError` for a failed S3 call, saying what failed, where, and whether a retry may help."""
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        metadata = error.response.get("ResponseMetadata", {})
        return s3_error(
            operation,
            bucket,
            key,
            str(details.get("Code", "Unknown")),
            status=int(metadata.get("HTTPStatusCode") or 0),
            text=details.get("Message") or error.response.get("message") or "",
            attempts=int(metadata.get("RetryAttempts", 0)) + 1,
        )
    code = type(error).__name__
    head = f"S3 {operation} failed for bucket {bucket!r}, key {key!r} (s3://{bucket}/{key}): {code}: {error}"
    if is_transient_network_error(error):
        return ObjectStoreError(
            f"{head}; the network kept failing through the client's retries, a later retry may succeed",
            bucket=bucket,
            key=key,
            code=code,
            retryable=True,
        )
    # Missing credentials or region, an invalid parameter, a TLS failure: configuration.
    return ObjectStoreError(f"{head} (not retried)", bucket=bucket, key=key, code=code)


class S3ObjectStream(io.RawIOBase):
    """The body of one GetObject, read on demand and resumed after a dropped connection.

    `read(n)` returns at most `n` bytes and reads no more than that from the socket. After a
    connection error mid-body the stream asks for the remaining bytes (`Range: bytes=pos-`)
    of the very same version (`If-Match: <ETag>`), up to the store's `resume_attempts` times;
    if the object was replaced meanwhile the read fails with a retryable `ObjectStoreError`
    (a new attempt will read the new version whole) instead of mixing two versions.
    """

    def __init__(self, store: S3ObjectStore, key: str, response: dict[str, Any]) -> None:
        super().__init__()
        self._store = store
        self._key = key
        self._body = response["Body"]
        self._etag: str | None = response.get("ETag")
        self._length: int | None = response.get("ContentLength")
        self._position = 0
        self._resumes = 0

    @property
    def key(self) -> str:
        """The S3 key being read."""
        return self._key

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def read(self, size: int | None = -1) -> bytes:
        """Up to `size` bytes (all remaining ones if `size` is negative or None); b"" at the end."""
        if self.closed:
            raise ValueError(f"read from closed stream over s3://{self._store.bucket}/{self._key}")
        amount = None if size is None or size < 0 else size
        while True:
            try:
                data = self._body.read(amount)
            except FlexibleChecksumError as error:
                # botocore checks the body's checksum as it ends: the bytes already handed on
                # may be corrupt, so this read cannot be resumed; reading the object again can.
                raise ObjectStoreError(
                    f"S3 GetObject of bucket {self._store.bucket!r}, key {self._key!r}: the body read does not "
                    f"match its checksum ({error}); retryable",
                    bucket=self._store.bucket,
                    key=self._key,
                    code="ChecksumMismatch",
                    retryable=True,
                ) from error
            except Exception as error:
                if not _is_resumable(error):
                    raise
                self._resume(error)
                continue
            self._position += len(data)
            return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()

    def _resume(self, error: BaseException) -> None:
        where = f"s3://{self._store.bucket}/{self._key}"
        if self._resumes >= self._store.resume_attempts:
            raise ObjectStoreError(
                f"S3 GetObject failed for bucket {self._store.bucket!r}, key {self._key!r} ({where}): the connection "
                f"broke at byte {self._position:,} ({type(error).__name__}: {error}) after {self._resumes} of "
                f"{self._store.resume_attempts} resumed read(s); a later retry may succeed",
                bucket=self._store.bucket,
                key=self._key,
                code=type(error).__name__,
                retryable=True,
            ) from error
        self._resumes += 1
        wait = self._store.resume_backoff_s * 2 ** (self._resumes - 1)
        logger.warning(
            "reading %s broke at byte %d (%s: %s); resuming in %.1f s (attempt %d of %d)",
            where,
            self._position,
            type(error).__name__,
            error,
            wait,
            self._resumes,
            self._store.resume_attempts,
        )
        time.sleep(wait)
        self._body.close()
        if self._length is not None and self._position >= self._length:
            # Every byte arrived before the connection broke: nothing is left to ask for.
            self._body = io.BytesIO()
            return
        arguments = {"Range": f"bytes={self._position}-"}
        if self._etag:
            arguments["IfMatch"] = self._etag
        try:
            response = self._store._get(self._key, **arguments)
        except ObjectStoreError as failure:
            if failure.code == "PreconditionFailed":
                raise ObjectStoreError(
                    f"S3 object {where} was replaced while being read (ETag {self._etag} is gone); "
                    "a new attempt will read the new version whole",
                    bucket=self._store.bucket,
                    key=self._key,
                    code="PreconditionFailed",
                    retryable=True,
                ) from failure
            raise
        self._body = response["Body"]
