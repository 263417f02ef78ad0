"""Object stores: where raw files land and where the pipeline writes its objects.

The engine only sees this small interface, so the same code reads a local folder or an
object-store bucket. Keys are `/`-separated and relative to the store's root; a key that
tries to leave the root (`..`, absolute paths) is refused.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol


class UnsafeKeyError(ValueError):
    """A key or prefix tries to escape the store's root."""


def safe_key(key: str) -> str:
    """Return `key` normalised, refusing absolute keys and `..` segments."""
    path = PurePosixPath(key)
    if path.is_absolute() or any(part == ".." for part in path.parts):
        raise UnsafeKeyError(f"refusing key {key!r}: it must stay inside the store's root")
    return str(path) if str(path) != "." else ""


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object: its key relative to the store root and its size in bytes."""

    key: str
    size: int


class ObjectStore(Protocol):
    """What the engine needs from a place that holds objects."""

    url: str

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with `prefix` (recursively), in key order."""
        ...

    def open(self, key: str) -> BinaryIO:
        """A binary stream over the object's bytes, read lazily."""
        ...

    def write_atomic(self, key: str, data: bytes) -> str:
        """Write `data` so that a reader sees the old object or the new one, never half;
        returns the object's location (path or URL)."""
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
                    size = path.stat().st_size
                except FileNotFoundError:
                    continue  # vanished while listing; it is simply not part of this listing
                found.append(ObjectInfo(path.relative_to(self.root).as_posix(), size))
        yield from sorted(found, key=lambda info: info.key)

    def open(self, key: str) -> BinaryIO:
        return self._path(key).open("rb")

    def write_atomic(self, key: str, data: bytes) -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write beside the target and rename: rename is atomic on one filesystem.
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return str(path)
