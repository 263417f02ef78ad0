"""Step-level retries that apply to transient errors only.

Dagster's `RetryPolicy` re-runs a failed step whatever the error, unless the error is a
`Failure(allow_retries=False)`. Re-running a step on a deterministic error (a schema
mismatch, a bad source definition, access denied, a missing bucket, a bug) only delays the
alert by the policy's waits and repeats the failure. So the ingest step carries both:

- `INGEST_RETRY_POLICY`, on its decorator;
- `retry_transient_only`, wrapping its body: an error that is not known to be transient
  leaves the step as `NotRetryableError` (a `Failure(allow_retries=False)`, with the
  original error as its cause and its text as the description), which Dagster fails at once.

What is transient: a storage error the store marked `retryable` (throttling, 5xx, dropped
connections once the S3 client's own attempts are spent, an object replaced mid-read), the
same failures met by the lake's own S3 clients, delta-rs and pyarrow (`lake.errors`),
a network error or timeout, another run holding the day past the wait (`DayLockTimeout`),
a lost S3 day lease (`DayLockLost`), and a Delta commit that lost a race with a concurrent
writer of the same table and day (`CommitFailedError`). Anything
else is treated as permanent: retrying an unknown error by default would hide bugs behind
minutes of waiting.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from dagster import Backoff, DagsterError, Failure, RetryPolicy
from deltalake.exceptions import CommitFailedError

from pipeline.engine.lake.errors import lake_storage_error
from pipeline.engine.lake.locks import DayLockLost, DayLockTimeout
from pipeline.engine.objects import ObjectStoreError
from pipeline.engine.s3 import is_transient_network_error

# Each S3 call is already retried by botocore (a few attempts with jittered backoff) and a
# broken download is resumed, so a transient fault reaching this policy outlasted those: an
# S3 brown-out, a throttling storm, a day held by another run past the wait. Waiting 10 s, then
# 30 s, and re-running the step is the right level for those; the step is idempotent (each
# day is replaced whole, its manifest rewritten). No jitter: botocore already jitters each call.
INGEST_RETRY_POLICY = RetryPolicy(max_retries=2, delay=10, backoff=Backoff.EXPONENTIAL)

_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    DayLockTimeout,
    DayLockLost,
    CommitFailedError,
)

ComputeFn = TypeVar("ComputeFn", bound=Callable[..., Iterator[Any]])


class NotRetryableError(Failure):
    """A step error that retrying cannot fix; Dagster skips the retry policy for it."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(description=f"{type(error).__name__}: {error}", allow_retries=False)


def is_transient(error: BaseException) -> bool:
    """Whether trying the step again later could succeed (see the module docstring).

    Follows the chain of causes, so an error re-raised by another layer is judged by its origin."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ObjectStoreError):
            return current.retryable
        lake_failure = lake_storage_error(current)
        if lake_failure is not None:
            return lake_failure.retryable
        if isinstance(current, _TRANSIENT_TYPES) or is_transient_network_error(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def retry_transient_only(compute: ComputeFn) -> ComputeFn:
    """Wrap a generator compute function so that only transient errors reach its retry policy.

    Goes between `@multi_asset(...)` and the function. `functools.wraps` keeps the signature
    (Dagster reads the context, config and resource parameters from it)."""

    @functools.wraps(compute)
    def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
        try:
            yield from compute(*args, **kwargs)
        except (Failure, DagsterError):
            raise  # Dagster's own control flow and framework errors keep their meaning
        except Exception as error:
            if is_transient(error):
                raise
            raise NotRetryableError(error) from error

    return wrapper  # type: ignore[return-value]
