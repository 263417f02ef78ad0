"""The lake: each source's `events`, `dlq`, `daily_metrics` and `loads` as open Delta Lake tables.

`{PIPELINE_LAKE_URL}/{source}/{table}`, partitioned by `partition_date`, written by delta-rs
(commits) and pyarrow (data files), read by DuckDB. Many writers and readers share it: Delta's
optimistic concurrency lets writers of different days commit side by side, a lock per day
(`locks.py`) keeps two writers of one day apart, and readers see a consistent snapshot that no
writer ever waits for (`snapshot.py`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import duckdb

from pipeline.engine.lake.loads import EMPTY, FAILED, LOADED, LoadRecord
from pipeline.engine.lake.location import LakeLocation, S3ClientSettings
from pipeline.engine.lake.locks import DEFAULT_LEASE_S, DEFAULT_WAIT_S, DayLock, local_day_lock, s3_day_lock
from pipeline.engine.lake.snapshot import AsOf, SourceSnapshot, connect
from pipeline.engine.lake.tables import SchemaChangeError, SourceTables
from pipeline.sources.spec import SourceSpec

logger = logging.getLogger(__name__)


class Lake:
    """The lake at one location, with what its writers need: the tables of each source and
    the per-day lock (on S3 the lock needs a boto3 client: the landing zone's)."""

    def __init__(
        self,
        location: LakeLocation,
        *,
        s3_client: Any = None,
        lock_wait_s: float = DEFAULT_WAIT_S,
        lease_s: float = DEFAULT_LEASE_S,
    ) -> None:
        if location.is_s3 and s3_client is None:
            raise ValueError("an S3 lake needs an S3 client for its day locks")
        self.location = location
        self.s3_client = s3_client
        self.lock_wait_s = lock_wait_s
        self.lease_s = lease_s
        self._tables: dict[str, SourceTables] = {}

    def tables(self, spec: SourceSpec) -> SourceTables:
        """The tables of one source (not yet created: see `SourceTables.ensure`)."""
        tables = self._tables.get(spec.name)
        if tables is None or tables.spec != spec:
            tables = self._tables[spec.name] = SourceTables(self.location, spec)
        return tables

    @contextlib.contextmanager
    def day_lock(
        self,
        source: str,
        day: dt.date,
        *,
        owner: str,
        log: logging.Logger | logging.LoggerAdapter = logger,  # type: ignore[type-arg]
    ) -> Iterator[DayLock]:
        """Hold one day of one source for writing (waits while another writer holds it)."""
        if self.location.is_s3:
            bucket, prefix = self.location.bucket_and_prefix
            with s3_day_lock(
                self.s3_client,
                bucket,
                prefix,
                source,
                day,
                owner=owner,
                wait_s=self.lock_wait_s,
                lease_s=self.lease_s,
                log=log,
            ) as lock:
                yield lock
        else:
            with local_day_lock(
                Path(self.location.root), source, day, owner=owner, wait_s=self.lock_wait_s, log=log
            ) as lock:
                yield lock

    def snapshot(self, spec: SourceSpec, as_of: AsOf = None) -> SourceSnapshot:
        """A consistent snapshot of one source's tables."""
        return SourceSnapshot(self.tables(spec), as_of=as_of)

    def connect(self, specs: Iterable[SourceSpec], *, as_of: AsOf = None) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection with a view per source and table (see `snapshot.connect`)."""
        return connect(self.location, specs, as_of=as_of)


__all__ = [
    "EMPTY",
    "FAILED",
    "LOADED",
    "Lake",
    "LakeLocation",
    "LoadRecord",
    "S3ClientSettings",
    "SchemaChangeError",
    "SourceSnapshot",
    "SourceTables",
    "connect",
]
