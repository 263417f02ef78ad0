"""The S3 object store (pipeline.engine.s3) against moto's S3-compatible server on loopback.

What a user relies on: listings give every object of a folder with its size and a version
that changes on re-delivery; reads stream in bounded memory (`.log` and `.log.gz`) and
survive a dropped connection; writes replace one object at a deterministic key; transient
faults are retried with timeouts, and permanent ones fail at once, naming bucket and key.
"""

from __future__ import annotations

import gzip
import tracemalloc
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import FlexibleChecksumError

from pipeline.engine.objects import (
    LocalObjectStore,
    ObjectInfo,
    ObjectNotFoundError,
    ObjectStoreError,
    UnsafeKeyError,
    parse_s3_url,
)
from pipeline.engine.reader import iter_line_batches, open_log
from pipeline.engine.s3 import S3ObjectStore, S3ObjectStream, client_config
from pipeline.orchestration.resources import S3ClientResource
from pipeline.orchestration.retries import is_transient
from pipeline_tests.storage.conftest import REGION
from pipeline_tests.storage.s3_server import FaultProxy, MotoServer

MiB = 1024 * 1024


def make_store(endpoint: str, bucket: str, prefix: str = "landing", **options: Any) -> S3ObjectStore:
    """A store whose client talks to `endpoint`, with short timeouts so faults resolve quickly."""
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        config=client_config(connect_timeout_s=2, read_timeout_s=1, max_attempts=options.pop("max_attempts", 4)),
    )
    options.setdefault("resume_backoff_s", 0.01)
    return S3ObjectStore(client, bucket, prefix, **options)


def log_lines(count: int) -> bytes:
    """`count` distinct, access-log-like lines (about 60 bytes each)."""
    return b"".join(
        b'10.0.%d.%d - - "GET /item/%08d HTTP/1.1" 200 %d\n' % (i % 250, i % 199, i, i) for i in range(count)
    )


class RecordingBody:
    """Wraps a GetObject body and records the size asked for by every read."""

    def __init__(self, body: Any, reads: list[int | None]) -> None:
        self._body = body
        self._reads = reads

    def read(self, amount: int | None = None) -> bytes:
        self._reads.append(amount)
        return self._body.read(amount)

    def close(self) -> None:
        self._body.close()


def record_body_reads(store: S3ObjectStore, monkeypatch: pytest.MonkeyPatch) -> list[int | None]:
    """Every `read(n)` the store makes on a response body, from now on."""
    reads: list[int | None] = []
    original = store.client.get_object

    def get_object(**arguments: Any) -> dict[str, Any]:
        response = original(**arguments)
        response["Body"] = RecordingBody(response["Body"], reads)
        return response

    monkeypatch.setattr(store.client, "get_object", get_object)
    return reads


# -- listing and versions -------------------------------------------------------------


def test_list_gives_relative_keys_sizes_and_etags_of_the_folder_only(
    admin_s3: Any, bucket: str, aws_env: FaultProxy
) -> None:
    """Every object under the folder (across pages), in key order, with size and ETag; nothing from a
    sibling folder that merely shares the name's start; console folder placeholders left out."""
    objects = {
        "landing/access/dt=2024-01-15/hour=00/web-01.log": b"a\n",
        "landing/access/dt=2024-01-15/hour=00/web-02.log": b"bb\n",
        "landing/access/dt=2024-01-15/hour=13/web-01.log.gz": gzip.compress(b"ccc\n", mtime=0),
        "landing/access/dt=2024-01-15/notes.txt": b"not a log",
        "landing/access/dt=2024-01-150/hour=00/web-01.log": b"sibling folder\n",
        "elsewhere/access/dt=2024-01-15/hour=00/web-01.log": b"outside the prefix\n",
    }
    for key, body in objects.items():
        admin_s3.put_object(Bucket=bucket, Key=key, Body=body)
    admin_s3.put_object(Bucket=bucket, Key="landing/access/dt=2024-01-15/hour=01/", Body=b"")
    etags = {key: admin_s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"') for key in objects}

    store = make_store(aws_env.endpoint, bucket, list_page_size=2)
    listed = list(store.list("access/dt=2024-01-15/"))

    expected_keys = sorted(key for key in objects if key.startswith("landing/access/dt=2024-01-15/"))
    assert listed == [ObjectInfo(key.removeprefix("landing/"), len(objects[key]), etags[key]) for key in expected_keys]
    # Four keys plus a placeholder at two keys per page: the listing really paginated.
    assert len(aws_env.requests("GET", r"list-type=2")) == 3
    assert list(store.list("access/dt=2024-01-16")) == []


def test_redelivered_object_gets_a_new_version(admin_s3: Any, bucket: str, aws_env: FaultProxy) -> None:
    """A sensor can tell a re-delivered file from one it has seen: new content, new version."""
    store = make_store(aws_env.endpoint, bucket)
    key = "landing/app/dt=2024-01-15/hour=03/app-01.log"
    admin_s3.put_object(Bucket=bucket, Key=key, Body=b"first delivery\n")
    (first,) = store.list("app")
    admin_s3.put_object(Bucket=bucket, Key=key, Body=b"first delivery\n")
    (same_again,) = store.list("app")
    admin_s3.put_object(Bucket=bucket, Key=key, Body=b"second delivery, other content\n")
    (second,) = store.list("app")
    assert first.version and first.version == same_again.version
    assert second.version != first.version
    assert (second.key, second.size) == ("app/dt=2024-01-15/hour=03/app-01.log", 31)


def test_local_store_version_changes_on_redelivery(tmp_path: Path) -> None:
    """The local store gives the same kind of version: modification time and size."""
    path = tmp_path / "app" / "dt=2024-01-15" / "hour=03" / "app-01.log"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"first\n")
    store = LocalObjectStore(tmp_path)
    (first,) = store.list("app")
    path.write_bytes(b"second delivery\n")
    (second,) = store.list("app")
    assert first.version == f"{first_mtime_ns(first)}-6"
    assert second.version != first.version and second.size == 16
    # Positional construction without a version keeps working.
    assert ObjectInfo("k", 1) == ObjectInfo("k", 1, "")


def first_mtime_ns(info: ObjectInfo) -> str:
    return info.version.split("-")[0]


# -- streaming reads --------------------------------------------------------------------


def test_large_object_is_streamed_in_bounded_reads_and_memory(
    moto_server: MotoServer, admin_s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 32 MiB object is read in chunk-sized socket reads, and the reading process never holds
    more than a few chunks of it (measured with tracemalloc; moto runs in another process).

    The reader's working set is a handful of chunk-sized buffers (about 7 chunks measured),
    whatever the object's size; a store that buffered the object would need all 32 MiB."""
    payload = log_lines(600_000)
    size, expected_lines = len(payload), payload.count(b"\n")
    assert size > 32 * MiB
    admin_s3.put_object(Bucket=bucket, Key="landing/big/web-01.log", Body=payload)
    del payload
    store = make_store(moto_server.endpoint, bucket)
    reads = record_body_reads(store, monkeypatch)
    chunk = 512 * 1024

    tracemalloc.start()
    try:
        lines = 0
        with store.open("big/web-01.log") as stream:
            for batch in iter_line_batches(stream, chunk_bytes=chunk):
                lines += len(batch.lines)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert lines == expected_lines
    assert all(amount is not None and amount <= chunk for amount in reads)
    assert len(reads) >= size // chunk
    assert peak < 12 * chunk, f"peak {peak:,} bytes while reading a {size:,}-byte object in {chunk:,}-byte chunks"


def test_log_gz_object_is_streamed(
    moto_server: MotoServer, admin_s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `.log.gz` object is decompressed as it streams: every line comes out, the compressed
    bytes are pulled in small reads, and memory stays at a few chunks, below even the size of
    the compressed object (so neither the compressed nor the uncompressed bytes are held whole)."""
    payload = log_lines(400_000)
    expected = payload.count(b"\n")
    compressed = gzip.compress(payload, compresslevel=1, mtime=0)
    uncompressed_size = len(payload)
    del payload
    chunk = 256 * 1024
    assert len(compressed) > 12 * chunk
    admin_s3.put_object(Bucket=bucket, Key="landing/big/web-01.log.gz", Body=compressed)
    store = make_store(moto_server.endpoint, bucket)
    reads = record_body_reads(store, monkeypatch)

    tracemalloc.start()
    try:
        lines = 0
        with store.open("big/web-01.log.gz") as raw, open_log(raw, gzipped=True) as stream:
            for batch in iter_line_batches(stream, chunk_bytes=chunk):
                lines += len(batch.lines)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert lines == expected
    assert len(reads) > 1 and all(amount is not None and amount <= 1 * MiB for amount in reads)
    assert peak < 12 * chunk, f"peak {peak:,} bytes for {uncompressed_size:,} bytes ({len(compressed):,} compressed)"


def test_dropped_connection_mid_body_is_resumed_from_where_it_stopped(
    admin_s3: Any, bucket: str, aws_env: FaultProxy
) -> None:
    """The server cuts the body half-way: the store asks for the rest of the same version
    (Range + If-Match) and the reader gets every byte exactly once."""
    payload = log_lines(50_000)
    admin_s3.put_object(Bucket=bucket, Key="landing/cut/web-01.log", Body=payload)
    aws_env.inject("GET", r"/landing/cut/web-01\.log$", "truncate")
    store = make_store(aws_env.endpoint, bucket)

    with store.open("cut/web-01.log") as stream:
        received = b"".join(iter(lambda: stream.read(64 * 1024), b""))

    assert received == payload
    attempts = aws_env.requests("GET", r"/landing/cut/web-01\.log$")
    assert [(seen.outcome, seen.range) for seen in attempts] == [
        ("truncate", None),
        ("forwarded", f"bytes={len(payload) // 2}-"),
    ]


def test_object_replaced_while_being_read_is_not_spliced(admin_s3: Any, bucket: str, aws_env: FaultProxy) -> None:
    """If the connection drops and the object was re-delivered meanwhile, the read fails (retryably)
    rather than joining the first half of the old file to the second half of the new one."""
    key = "landing/app/dt=2024-01-15/hour=03/app-01.log"
    admin_s3.put_object(Bucket=bucket, Key=key, Body=log_lines(20_000))
    aws_env.inject("GET", "hour=03/app-01.log$", "truncate")
    store = make_store(aws_env.endpoint, bucket)

    with store.open("app/dt=2024-01-15/hour=03/app-01.log") as stream:
        stream.read(1000)
        admin_s3.put_object(Bucket=bucket, Key=key, Body=log_lines(30_000))
        with pytest.raises(ObjectStoreError) as raised:
            while stream.read(64 * 1024):
                pass

    assert raised.value.retryable and raised.value.code == "PreconditionFailed"
    assert f"s3://{bucket}/{key}" in str(raised.value) and "replaced while being read" in str(raised.value)


# -- writes -------------------------------------------------------------------------------


def test_write_replaces_one_object_at_a_deterministic_key(admin_s3: Any, bucket: str, aws_env: FaultProxy) -> None:
    """Writing twice leaves one object, under `{prefix}/{key}`, holding the second content."""
    store = make_store(aws_env.endpoint, bucket, prefix="output")
    first = store.write_atomic("manifests/access/2024-01-15.json", b'{"run": 1}')
    second = store.write_atomic("manifests/access/2024-01-15.json", b'{"run": 2}')
    assert first == second == f"s3://{bucket}/output/manifests/access/2024-01-15.json"
    listing = admin_s3.list_objects_v2(Bucket=bucket, Prefix="output/")["Contents"]
    assert [entry["Key"] for entry in listing] == ["output/manifests/access/2024-01-15.json"]
    stored = admin_s3.get_object(Bucket=bucket, Key="output/manifests/access/2024-01-15.json")
    assert stored["Body"].read() == b'{"run": 2}'
    assert stored["ContentType"] == "application/json"


# -- faults ---------------------------------------------------------------------------------


def test_transient_faults_are_retried_with_backoff_and_timeouts(
    admin_s3: Any, bucket: str, aws_env: FaultProxy
) -> None:
    """Throttling, 5xx, a reset connection and a stalled response all end in success; the
    server saw each failed attempt followed by a successful one."""
    payload = b"one line\n" * 10
    admin_s3.put_object(Bucket=bucket, Key="landing/t/web-01.log", Body=payload)
    aws_env.inject("GET", "list-type=2", "503", times=2)
    aws_env.inject("GET", r"/landing/t/web-01\.log$", "500", times=1)
    aws_env.inject("GET", r"/landing/t/web-01\.log$", "stall", times=1, stall_s=2.5)
    aws_env.inject("PUT", r"/landing/out\.json$", "reset", times=1)
    store = make_store(aws_env.endpoint, bucket, max_attempts=4)

    assert [info.key for info in store.list("t")] == ["t/web-01.log"]
    with store.open("t/web-01.log") as stream:
        assert stream.read() == payload
    store.write_atomic("out.json", b"{}")

    assert [seen.outcome for seen in aws_env.requests("GET", "list-type=2")] == ["503", "503", "forwarded"]
    assert [seen.outcome for seen in aws_env.requests("GET", r"/landing/t/web-01\.log$")] == [
        "500",
        "stall",
        "forwarded",
    ]
    assert [seen.outcome for seen in aws_env.requests("PUT", r"/landing/out\.json$")] == ["reset", "forwarded"]


def test_transient_fault_outlasting_the_attempts_is_reported_as_retryable(bucket: str, aws_env: FaultProxy) -> None:
    """After its bounded attempts the client gives up with an error that says a later retry may help."""
    aws_env.inject("GET", "list-type=2", "503", times=10)
    store = make_store(aws_env.endpoint, bucket, max_attempts=3)
    with pytest.raises(ObjectStoreError) as raised:
        list(store.list("access"))
    assert raised.value.retryable and raised.value.code == "SlowDown"
    assert f"bucket {bucket!r}" in str(raised.value) and "after 3 attempt(s)" in str(raised.value)
    assert len(aws_env.requests("GET", "list-type=2")) == 3


def test_missing_bucket_fails_at_once_naming_bucket_and_key(aws_env: FaultProxy) -> None:
    """NoSuchBucket is not retried: one request each, and the message names the bucket and the key."""
    store = make_store(aws_env.endpoint, "no-such-bucket-here")
    with pytest.raises(ObjectStoreError) as listed:
        list(store.list("access/dt=2024-01-15"))
    with pytest.raises(ObjectStoreError) as opened:
        store.open("access/dt=2024-01-15/hour=00/web-01.log")
    with pytest.raises(ObjectStoreError) as written:
        store.write_atomic("manifests/access/2024-01-15.json", b"{}")

    for raised, key in (
        (listed, "landing/access/dt=2024-01-15/"),
        (opened, "landing/access/dt=2024-01-15/hour=00/web-01.log"),
        (written, "landing/manifests/access/2024-01-15.json"),
    ):
        assert not raised.value.retryable and raised.value.code == "NoSuchBucket"
        assert "bucket 'no-such-bucket-here'" in str(raised.value) and f"key {key!r}" in str(raised.value)
        assert "the bucket does not exist" in str(raised.value)
    assert len(aws_env.seen) == 3


def test_access_denied_fails_at_once_naming_bucket_and_key(admin_s3: Any, bucket: str, aws_env: FaultProxy) -> None:
    """AccessDenied is not retried: a single request, and a message an operator can act on."""
    admin_s3.put_object(Bucket=bucket, Key="landing/secret/web-01.log", Body=b"x\n")
    aws_env.inject("GET", r"/landing/secret/web-01\.log$", "403", times=10)
    store = make_store(aws_env.endpoint, bucket, max_attempts=5)
    with pytest.raises(ObjectStoreError) as raised:
        store.open("secret/web-01.log")
    message = str(raised.value)
    assert not raised.value.retryable and raised.value.code == "AccessDenied"
    assert f"bucket {bucket!r}, key 'landing/secret/web-01.log'" in message
    assert "check the IAM and bucket policies" in message and "not retried" in message
    assert len(aws_env.requests("GET", r"/landing/secret/web-01\.log$")) == 1


def test_missing_key_is_a_file_not_found(bucket: str, aws_env: FaultProxy) -> None:
    """An object deleted after listing is a FileNotFoundError, as a vanished local file is."""
    store = make_store(aws_env.endpoint, bucket)
    with pytest.raises(ObjectNotFoundError) as raised:
        store.open("access/dt=2024-01-15/hour=00/gone.log")
    assert isinstance(raised.value, FileNotFoundError)
    assert "landing/access/dt=2024-01-15/hour=00/gone.log" in str(raised.value)


def test_keys_leaving_the_prefix_are_refused_before_any_request(bucket: str, aws_env: FaultProxy) -> None:
    """`..` can never reach outside the configured prefix, in a URL, a listing, a read or a write."""
    store = make_store(aws_env.endpoint, bucket)
    with pytest.raises(UnsafeKeyError):
        list(store.list("../output"))
    with pytest.raises(UnsafeKeyError):
        store.open("access/../../output/manifests/x.json")
    with pytest.raises(UnsafeKeyError):
        store.write_atomic("../escape.json", b"{}")
    with pytest.raises(UnsafeKeyError):
        parse_s3_url(f"s3://{bucket}/landing/../output")
    with pytest.raises(ValueError, match="names no bucket"):
        parse_s3_url("s3:///landing")
    assert aws_env.seen == []


class _BodyFailingItsChecksum:
    """A GetObject body whose bytes were corrupted in transit: botocore hands them on, then
    raises `FlexibleChecksumError` when the end is read and the CRC does not match."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def read(self, amount: int | None = None) -> bytes:
        if self._data:
            data, self._data = self._data, b""
            return data
        raise FlexibleChecksumError(error_msg="Expected checksum AAAAAA== did not match calculated checksum BBBBBB==")

    def close(self) -> None:
        pass


def test_body_failing_its_checksum_is_a_retryable_error_naming_bucket_and_key() -> None:
    """Fault: a body whose checksum fails at its end. Expected: a retryable `ObjectStoreError`
    naming bucket and key (the step is tried again and reads the object whole), not botocore's
    raw error, which the retry policy took for a permanent one."""
    store = S3ObjectStore(None, "landing-bucket", "logs")
    key = "access/dt=2024-01-15/hour=05/web.log"
    stream = S3ObjectStream(store, key, {"Body": _BodyFailingItsChecksum(b"a\nb\n"), "ETag": '"e"', "ContentLength": 4})
    assert stream.read(1024) == b"a\nb\n"
    with pytest.raises(ObjectStoreError) as caught:
        stream.read(1024)
    error = caught.value
    assert (error.retryable, error.bucket, error.key, error.code) == (True, "landing-bucket", key, "ChecksumMismatch")
    assert "landing-bucket" in str(error) and key in str(error) and is_transient(error)


def test_aws_region_alone_sets_the_region_of_the_s3_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented `AWS_REGION` (what ECS tasks set) is honoured, though botocore itself reads
    only `AWS_DEFAULT_REGION`; that one still works alone."""
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    assert S3ClientResource().get_client().meta.region_name == "eu-central-1"
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-south-1")
    assert S3ClientResource().get_client().meta.region_name == "ap-south-1"
