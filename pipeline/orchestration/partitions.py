"""Partition definitions: one UTC day per partition, starting at the source's first day."""

from __future__ import annotations

import datetime as dt
from functools import cache

from dagster import DailyPartitionsDefinition, PartitionKeyRange

from pipeline.sources.spec import SourceSpec


@cache
def _daily(first_day: dt.date) -> DailyPartitionsDefinition:
    return DailyPartitionsDefinition(start_date=first_day.isoformat(), timezone="UTC")


def daily_partitions(spec: SourceSpec) -> DailyPartitionsDefinition:
    """The daily partitions of a source (shared object for sources with the same first day)."""
    return _daily(spec.first_day)


def days_in_range(partition_key_range: PartitionKeyRange) -> list[dt.date]:
    """Every data date of an inclusive partition key range."""
    first = dt.date.fromisoformat(partition_key_range.start)
    last = dt.date.fromisoformat(partition_key_range.end)
    return [first + dt.timedelta(days=offset) for offset in range((last - first).days + 1)]
