"""What a failed S3 call of the lake's own clients says, in the words of the landing zone's.

delta-rs (the commits) and pyarrow (the data files) raise `OSError`s, or DuckDB errors when a
query reads through pyarrow, whose text holds the failed request in each library's own form:

- delta-rs (`object_store`): `Error performing PUT http://host/bucket/key in 104ms, after 1
  retries ... 503 Service Unavailable ... <Code>SlowDown</Code>`, or no status at all when the
  network failed (`error sending request`, `connection closed before message completed`);
- pyarrow (the AWS C++ SDK): `When uploading part for key 'key' in bucket 'bucket': AWS Error
  SLOW_DOWN during UploadPart operation: Please reduce your request rate.`

`lake_storage_error()` turns such an error into the `ObjectStoreError` the landing zone's
boto3 client gives for the same response (`pipeline.engine.s3_errors.s3_error`): it names the
operation, the bucket and the key, says what to check, and whether a later retry may help
(throttling, 5xx and network failures once the client's own retries are spent) or not (access
denied, no such bucket, bad credentials). So a step retries the former and fails at once on
the latter, saying where, whichever client met the fault.
"""

from __future__ import annotations

import re
import urllib.parse

import duckdb
from deltalake.exceptions import DeltaError

from pipeline.engine.objects import ObjectStoreError
from pipeline.engine.s3_errors import s3_error

# What delta-rs (OSError, DeltaError), pyarrow (OSError) and DuckDB reading through pyarrow raise.
_CLIENT_ERRORS = (OSError, DeltaError, duckdb.Error)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# delta-rs / object_store
_REQUEST = re.compile(r"Error performing (?P<method>[A-Z]+) (?P<url>https?://\S+)")
_STATUS = re.compile(r"non-2xx status code\W*(?P<status>[1-5]\d\d)\b")
_CODE = re.compile(r"<Code>(?P<code>[^<]+)</Code>")
_MESSAGE = re.compile(r"<Message>(?P<message>[^<]*)</Message>")
_RETRIES = re.compile(r"after (?P<retries>\d+) retries")
_NETWORK = re.compile(r"error sending request|connection closed|connection reset|timed out|error decoding", re.I)
# pyarrow / the AWS C++ SDK
_AWS_ERROR = re.compile(
    r"AWS Error (?P<name>[A-Z_]+)(?: \(HTTP status (?P<status>\d{3})\))? during (?P<operation>\w+) operation:"
    r" ?(?P<text>[^\n]*?)(?: \(Request ID: [^)]*\))?\s*$",
    re.M,
)
_KEY_IN_BUCKET = re.compile(r"for key '(?P<key>[^']*)' in bucket '(?P<bucket>[^']*)'")
_SOURCE = re.compile(r"input source '(?P<path>[^']+)'")
# AWS SDK error names that its own retry strategy retries: what is left once it gave up.
_SDK_TRANSIENT = frozenset({"InternalFailure", "NetworkConnection", "RequestTimeout", "ServiceUnavailable"})


def lake_storage_error(error: BaseException) -> ObjectStoreError | None:
    """The S3 failure a delta-rs, pyarrow or DuckDB error reports, as an `ObjectStoreError`
    naming bucket and key; None when the error is not one (or is one already). Only those
    libraries' own error types are read: an error of ours that quotes one is judged by its
    cause, not by its text."""
    if isinstance(error, ObjectStoreError) or not isinstance(error, _CLIENT_ERRORS):
        return None
    text = _ANSI.sub("", str(error))
    return _from_delta_rs(text) or _from_pyarrow(text)


def _from_delta_rs(text: str) -> ObjectStoreError | None:
    request = _REQUEST.search(text)
    if request is None:
        return None
    url = urllib.parse.urlsplit(request["url"])
    # object_store addresses S3 path-style: /bucket/key (a listing: /bucket?prefix=...).
    bucket, _, key = urllib.parse.unquote(url.path).lstrip("/").partition("/")
    query = urllib.parse.parse_qs(url.query)
    method = request["method"]
    if "list-type" in query:
        operation, key = "ListObjectsV2", query.get("prefix", [""])[0]
    else:
        operation = {"GET": "GetObject", "PUT": "PutObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}.get(
            method, method
        )
    retries = _RETRIES.search(text)
    attempts = int(retries["retries"]) + 1 if retries else None
    status = _STATUS.search(text)
    if status is None:
        if not _NETWORK.search(text):
            return None
        return s3_error(
            operation,
            bucket,
            key,
            "NetworkError",
            text=_last_cause(text),
            attempts=attempts,
            client="delta-rs",
            transient=True,
        )
    code, message = _CODE.search(text), _MESSAGE.search(text)
    return s3_error(
        operation,
        bucket,
        key,
        code["code"] if code else f"HTTP{status['status']}",
        status=int(status["status"]),
        text=message["message"] if message else "",
        attempts=attempts,
        client="delta-rs",
    )


def _from_pyarrow(text: str) -> ObjectStoreError | None:
    failure = _AWS_ERROR.search(text)
    if failure is None:
        return None
    where = _KEY_IN_BUCKET.search(text)
    if where is not None:
        bucket, key = where["bucket"], where["key"]
    else:
        # A dataset scan names the file it could not open: bucket/key (see datasets.py).
        source = _SOURCE.search(text)
        bucket, _, key = (source["path"] if source else "").partition("/")
    # ACCESS_DENIED -> AccessDenied: the S3 error code the SDK's name stands for.
    code = "".join(part.capitalize() for part in failure["name"].split("_"))
    return s3_error(
        failure["operation"],
        bucket,
        key,
        code,
        status=int(failure["status"] or 0),
        text=failure["text"],
        client="pyarrow",
        transient=code in _SDK_TRANSIENT,
    )


def _last_cause(text: str) -> str:
    """The innermost cause object_store names (its last line): `connection closed before ...`."""
    lines = [line.strip(" ↳-") for line in text.splitlines() if line.strip(" ↳-")]
    return lines[-1] if lines else ""


# A Rust backtrace as delta-rs appends it to its errors when RUST_BACKTRACE is set: frame lines
# "   0: <unknown>" / "  12: deltalake::...", each maybe followed by "  at src/...rs:12:5".
_FIRST_FRAME = re.compile(r"\s*0: (?:<unknown>|\S*::)")
_FRAME = re.compile(r"\s*(?:\d+: |at )\S")


def without_rust_backtrace(text: str) -> str:
    """`text` without the Rust backtraces in it (each from its frame 0 to its last frame line);
    the rest, e.g. the Python traceback of a chained exception after it, stays."""
    kept: list[str] = []
    in_backtrace = False
    for line in text.split("\n"):
        if _FIRST_FRAME.match(line):
            in_backtrace = True
        elif not (in_backtrace and _FRAME.match(line)):
            in_backtrace = False
            kept.append(line)
    return "\n".join(kept)


def error_text(error: BaseException) -> str:
    """`Type: message` of an error for a sentence an operator reads, without the Rust backtrace
    delta-rs appends when `RUST_BACKTRACE` is set (the run's log keeps the whole traceback)."""
    message = without_rust_backtrace(_ANSI.sub("", str(error))).rstrip()
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


__all__ = ["error_text", "lake_storage_error", "without_rust_backtrace"]
