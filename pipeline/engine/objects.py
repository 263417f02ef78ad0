"""Object stores: where raw files land and where the pipeline writes its objects.

The engine only sees this small interface, so the same code reads a local folder or an
object-store bucket (`pipeline.engine.s3`). Keys are `/`-separated and relative to the
store's root; a key that tries to leave the root (`..`, absolute paths) is refused.
"""

from __future__ import annotations

import glob
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol

logger = logging.getLogger(__name__)

# A write's temporary file lives for milliseconds (a manifest is a few KB). One this old was
# left by a writer killed between writing and renaming it: safe to remove. A younger one may
# belong to a writer at work (a failed run's manifest can be written while the next run loads).
ABANDONED_TEMPORARY_S = 600.0
_TEMPORARY_SUFFIX = ".tmp"


def _temporary_prefix(path: Path) -> str:
    """How the temporary files of an atomic write of `path` are named: `.NAME.<random>.tmp`
    beside it (hidden, and never matching `*.json` readers)."""
    return f".{path.name}."


class UnsafeKeyError(ValueError):
    """A key or prefix tries to escape the store's root."""


def safe_key(key: str) -> str:
    """Return `key` normalised, refusing absolute keys and `..` segments."""
    path = PurePosixPath(key)
    if path.is_absolute() or any(part == ".." for part in path.parts):
        raise UnsafeKeyError(f"refusing key {key!r}: it must stay inside the store's root")
    return str(path) if str(path) != "." else ""


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix/` -> (`bucket`, `some/prefix`); refuses a missing bucket and `..`."""
    if not url.startswith("s3://"):
        raise ValueError(f"{url!r} is not an s3:// URL")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"{url!r} names no bucket; expected s3://bucket/prefix")
    return bucket, safe_key(prefix.strip("/"))


class ObjectStoreError(Exception):
    """A store operation failed; the message names the store, the bucket and the key.

    `retryable` tells whether trying again later could help (throttling, server errors,
    dropped connections, once the client's own retries are spent) or not (access denied,
    no such bucket, bad credentials): callers retry the former and fail fast on the latter.
    """

    def __init__(
        self, message: str, *, bucket: str = "", key: str = "", code: str = "", retryable: bool = False
    ) -> None:
        super().__init__(message)
        self.bucket = bucket
        self.key = key
        self.code = code
        self.retryable = retryable


class ObjectNotFoundError(ObjectStoreError, FileNotFoundError):
    """The object does not exist (any more). A `FileNotFoundError`, so that callers treat an
    object that vanished after it was listed exactly like a local file that did."""


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object: its key relative to the store root, its size in bytes, and a
    `version` that changes whenever the object is replaced (an S3 ETag, or the local file's
    modification time and size), so that a re-delivered file can be told from one already seen."""

    key: str
    size: int
    version: str = ""


class ObjectStore(Protocol):
    """What the engine needs from a place that holds objects."""

    url: str

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object under the folder `prefix` (recursively), in key order, with its size
        and version."""
        ...

    def open(self, key: str) -> BinaryIO:
        """A binary stream over the object's bytes, read lazily."""
        ...

    def write_atomic(self, key: str, data: bytes) -> str:
        """Write `data` so that a reader sees the old object or the new one, never half;
        returns the object's location (path or URL)."""
        ...

    def location(self, key: str) -> str:
        """Where the object of `key` is (a local path or an s3:// URL), whether or not it exists."""
        ...


class LocalObjectStore:
    """An object store over a local directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root)

    def _path(self, key: str) -> Path:
        return self.root / safe_key(key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        base = self._path(prefix)
        if not base.is_dir():
            return
        found: list[ObjectInfo] = []
        for directory, _subdirs, files in os.walk(base):
            for name in files:
                path = Path(directory) / name
                try:
                    status = path.stat()
                except FileNotFoundError:
                    continue  # vanished while listing; it is simply not part of this listing
                # A replaced file gets a new mtime (and usually size): that is its version.
                version = f"{status.st_mtime_ns}-{status.st_size}"
                found.append(ObjectInfo(path.relative_to(self.root).as_posix(), status.st_size, version))
        yield from sorted(found, key=lambda info: info.key)

    def open(self, key: str) -> BinaryIO:
        return self._path(key).open("rb")

    def location(self, key: str) -> str:
        return str(self._path(key))

    def write_atomic(self, key: str, data: bytes) -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write beside the target and rename: rename is atomic on one filesystem.
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=_temporary_prefix(path), suffix=_TEMPORARY_SUFFIX)
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        _remove_abandoned_temporaries(path)
        return str(path)


def _remove_abandoned_temporaries(path: Path) -> None:
    """Remove the temporary files of earlier writes of `path` whose writer died before its
    rename (older than `ABANDONED_TEMPORARY_S`). Never fails the write that calls it."""
    pattern = str(path.parent / f"{glob.escape(_temporary_prefix(path))}*{_TEMPORARY_SUFFIX}")
    cutoff = time.time() - ABANDONED_TEMPORARY_S
    for leftover in glob.glob(pattern):
        try:
            if os.stat(leftover).st_mtime < cutoff:
                os.unlink(leftover)
                logger.warning("removed %s, left by a write of %s that was killed before its rename", leftover, path)
        except FileNotFoundError:
            continue  # removed meanwhile (another writer's sweep): nothing left to do
        except OSError as error:
            logger.warning("could not remove abandoned temporary file %s: %s", leftover, error)
