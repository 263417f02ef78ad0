"""The documented Python way to read the lake: a DuckDB connection with a view per table.

    from pipeline.query import connect
    connection = connect()                      # this deployment's PIPELINE_* settings
    connection.sql("SELECT partition_date, count(*) FROM access.events GROUP BY 1").show()

Every source has `S.events`, `S.dlq`, `S.daily_metrics` and `S.loads`, over a consistent
snapshot: a day being replaced (or left half-replaced by a killed writer) shows as its last
complete load left it, in every table. Open connections never block a writer; a connection
keeps reading the snapshot it was opened on (open a new one to see newer loads). `as_of`
(a datetime) reads the lake as it was then, within the vacuum
retention (7 days by default).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import duckdb

from pipeline.engine.lake.snapshot import AsOf
from pipeline.settings import Settings
from pipeline.sources import configured_sources


def connect(*, as_of: AsOf = None, sources: Iterable[str] | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection over this deployment's lake (see the module docstring); only
    `sources` when given."""
    from pipeline.orchestration.resources import PipelineResource

    specs = configured_sources()
    chosen = [specs[name] for name in sources] if sources is not None else list(specs.values())
    lake = PipelineResource.from_settings(Settings.from_env()).lake()
    return lake.connect(chosen, as_of=as_of)


def parse_as_of(text: str) -> dt.datetime:
    """`--as-of`: an ISO date or timestamp, UTC unless it names its zone."""
    moment = dt.datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
