"""One writer per day: a lock per (source, day) that a killed process never keeps.

A day is replaced by several commits (events, dlq, daily_metrics, then the `loads` row that
seals it). Delta serialises writers of one *table*; this lock serialises writers of one
*day* across the tables, so two runs of the same day never interleave their commits: the
second waits (bounded, saying so in its run log) and then replaces the day whole itself.
Writers of different days never wait for each other.

- Local lake: an OS file lock (`flock`) on `{lake}/{source}/_locks/{day}.lock`, released by
  the kernel when the holder exits, however it dies.
- S3 lake: a lease object `{prefix}/{source}/_locks/{day}.json`, created with a conditional
  PUT (`If-None-Match: *`), renewed by a heartbeat (`If-Match` its ETag), deleted on release.
  A holder killed with SIGKILL stops renewing; once the lease is older than its duration
  (judged by the server's clocks: the object's Last-Modified against the response's Date),
  the next writer takes it over with a conditional PUT, so exactly one of several waiters
  wins. A holder that could not renew in time treats the lock as lost and stops before its
  next commit (`ensure_held`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # the errors are caught as the client's own `exceptions.ClientError`: local mode never loads botocore
    from botocore.exceptions import ClientError

logger = logging.getLogger(__name__)

DEFAULT_WAIT_S = 1800.0
DEFAULT_LEASE_S = 120.0
LOCK_FOLDER = "_locks"
_LOG_EVERY_S = 10.0


class DayLockTimeout(TimeoutError):
    """Another writer held the day for longer than this run may wait (retryable)."""


class DayLockLost(ConnectionError):
    """The lease of an S3 lock could not be renewed in time; another writer may own the day
    now, so this attempt stops before committing anything more (retryable)."""


class DayLock(Protocol):
    """A held lock on one day of one source."""

    def ensure_held(self) -> None:
        """Raise `DayLockLost` if the lock can no longer be trusted."""
        ...


def _holder(owner: str) -> dict[str, Any]:
    return {
        "owner": owner,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def _describe_holder(text: str | bytes) -> str:
    try:
        holder = json.loads(text)
        return f"run {holder['owner']} (pid {holder['pid']} on {holder['host']}, since {holder['since']})"
    except (ValueError, KeyError, TypeError):
        return "another process"


class _Waiter:
    """Backoff and periodic log lines while waiting for a lock."""

    def __init__(self, what: str, wait_s: float, log: logging.Logger | logging.LoggerAdapter) -> None:  # type: ignore[type-arg]
        self.what = what
        self.wait_s = wait_s
        self.log = log
        self.started = time.monotonic()
        self.delay = 0.05
        self.last_log = float("-inf")

    def wait(self, holder: Callable[[], str]) -> None:
        now = time.monotonic()
        waited = now - self.started
        if waited >= self.wait_s:
            raise DayLockTimeout(
                f"{self.what} is being written by {holder()}; gave up after waiting {waited:.0f} s "
                f"(at most {self.wait_s:.0f} s). The step is retried; a day is only ever written by one run at a time."
            )
        if now - self.last_log >= _LOG_EVERY_S:
            self.log.info(
                "%s is being written by %s; waiting (%.0f s so far, at most %.0f s)",
                self.what,
                holder(),
                waited,
                self.wait_s,
            )
            self.last_log = now
        time.sleep(self.delay)
        self.delay = min(self.delay * 2, 1.0)


class _FileLock:
    def ensure_held(self) -> None:
        """An OS lock cannot be lost while this process lives."""


@contextlib.contextmanager
def local_day_lock(
    lake_root: Path,
    source: str,
    day: dt.date,
    *,
    owner: str,
    wait_s: float = DEFAULT_WAIT_S,
    log: logging.Logger | logging.LoggerAdapter = logger,  # type: ignore[type-arg]
) -> Iterator[DayLock]:
    """Hold the day of a local lake (an OS file lock; see the module docstring)."""
    path = lake_root / source / LOCK_FOLDER / f"{day.isoformat()}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    # The file is never deleted: removing it while another process waits on it would let a
    # third one lock a new file of the same name.
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        waiter = _Waiter(f"{source} {day}", wait_s, log)
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waiter.wait(lambda: _describe_holder(path.read_bytes()))
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(_holder(owner)).encode(), 0)
        try:
            yield _FileLock()
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _is_precondition_failure(error: ClientError) -> bool:
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return _error_code(error) in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412)


def _server_age_s(response: dict[str, Any]) -> float:
    """How long ago, by the server's clock, the object was last written."""
    modified: dt.datetime = response["LastModified"]
    date_header = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    now = email.utils.parsedate_to_datetime(date_header) if date_header else dt.datetime.now(dt.UTC)
    return (now - modified).total_seconds()


class _Lease:
    """A held S3 lease, renewed by a daemon thread."""

    def __init__(self, client: Any, bucket: str, key: str, etag: str, body: dict[str, Any], lease_s: float) -> None:
        self.client = client
        self.bucket = bucket
        self.key = key
        self.etag = etag
        self.body = body
        self.lease_s = lease_s
        self.renewed = time.monotonic()
        self.lost_reason: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew_loop, name=f"lease-{key}", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            try:
                self.body["renewed_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
                response = self.client.put_object(
                    Bucket=self.bucket, Key=self.key, Body=json.dumps(self.body).encode(), IfMatch=self.etag
                )
                self.etag = response["ETag"]
                self.renewed = time.monotonic()
            except self.client.exceptions.ClientError as error:
                if _is_precondition_failure(error) or _error_code(error) in ("NoSuchKey", "404"):
                    self.lost_reason = f"the lease s3://{self.bucket}/{self.key} was taken over by another writer"
                    logger.warning("%s", self.lost_reason)
                    return
                logger.warning("could not renew lease s3://%s/%s (will retry): %s", self.bucket, self.key, error)
            except Exception as error:  # network trouble: the next beat tries again
                logger.warning("could not renew lease s3://%s/%s (will retry): %s", self.bucket, self.key, error)

    def ensure_held(self) -> None:
        """Raise `DayLockLost` once another writer may own the day."""
        if self.lost_reason is None and time.monotonic() - self.renewed > self.lease_s * 0.75:
            self.lost_reason = (
                f"the lease s3://{self.bucket}/{self.key} was not renewed for "
                f"{time.monotonic() - self.renewed:.0f} s (its duration is {self.lease_s:.0f} s)"
            )
        if self.lost_reason is not None:
            raise DayLockLost(self.lost_reason + "; stopping before the next commit")

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self.lost_reason is not None:
            return  # not ours any more: leave it to its new holder
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=self.etag)
        except self.client.exceptions.ClientError as error:
            if not (_is_precondition_failure(error) or _error_code(error) in ("NoSuchKey", "404")):
                logger.warning(
                    "could not release lease s3://%s/%s (it expires by itself): %s", self.bucket, self.key, error
                )
        except Exception as error:
            logger.warning(
                "could not release lease s3://%s/%s (it expires by itself): %s", self.bucket, self.key, error
            )


@contextlib.contextmanager
def s3_day_lock(
    client: Any,
    bucket: str,
    prefix: str,
    source: str,
    day: dt.date,
    *,
    owner: str,
    wait_s: float = DEFAULT_WAIT_S,
    lease_s: float = DEFAULT_LEASE_S,
    log: logging.Logger | logging.LoggerAdapter = logger,  # type: ignore[type-arg]
) -> Iterator[DayLock]:
    """Hold the day of an S3 lake (a lease object; see the module docstring)."""
    key = "/".join(part for part in (prefix, source, LOCK_FOLDER, f"{day.isoformat()}.json") if part)
    body = _holder(owner) | {"lease_s": lease_s}
    waiter = _Waiter(f"{source} {day}", wait_s, log)
    holder_text = "another process"
    lease: _Lease | None = None
    while lease is None:
        try:
            response = client.put_object(Bucket=bucket, Key=key, Body=json.dumps(body).encode(), IfNoneMatch="*")
            lease = _Lease(client, bucket, key, response["ETag"], body, lease_s)
            break
        except client.exceptions.ClientError as error:
            if not _is_precondition_failure(error):
                raise
        try:
            current = client.get_object(Bucket=bucket, Key=key)
            text = current["Body"].read()
        except client.exceptions.ClientError as error:
            if _error_code(error) in ("NoSuchKey", "404"):
                continue  # released meanwhile: try again at once
            raise
        holder_text = _describe_holder(text)
        if _server_age_s(current) > lease_s:
            try:
                response = client.put_object(
                    Bucket=bucket, Key=key, Body=json.dumps(body).encode(), IfMatch=current["ETag"]
                )
            except client.exceptions.ClientError as error:
                if not _is_precondition_failure(error):
                    raise
                continue  # another waiter took it over first
            log.warning(
                "%s %s: took over the lease of %s, not renewed for over %.0f s (its holder died)",
                source,
                day,
                holder_text,
                lease_s,
            )
            lease = _Lease(client, bucket, key, response["ETag"], body, lease_s)
            break
        waiter.wait(lambda text=holder_text: text)
    try:
        yield lease
    finally:
        lease.release()
