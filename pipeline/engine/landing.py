"""The landing zone layout: `{source}/dt=YYYY-MM-DD/hour=HH/<file>.log[.gz]`."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from pipeline.engine.objects import ObjectStore

HOURS = tuple(range(24))
# ASCII digits only: Python's \d also matches e.g. Arabic-Indic and full-width digits.
_HOUR_FOLDER = re.compile(r"^hour=([0-9]{2})$")
LOG_SUFFIXES = (".log", ".log.gz")


@dataclass(frozen=True)
class LandedFile:
    """One log file of a partition."""

    key: str
    hour: int
    size: int

    @property
    def gzipped(self) -> bool:
        """Whether the file is gzip-compressed (by its name)."""
        return self.key.endswith(".gz")


@dataclass(frozen=True)
class PartitionListing:
    """What landed for one source and day: log files, and anything else found (never silently dropped)."""

    files: list[LandedFile]
    ignored_objects: list[str]

    @property
    def hours_present(self) -> list[int]:
        """Hours with at least one log file (an empty file still counts as delivered)."""
        return sorted({landed.hour for landed in self.files})

    @property
    def missing_hours(self) -> list[int]:
        """Hours of the day with no log file at all."""
        present = set(self.hours_present)
        return [hour for hour in HOURS if hour not in present]


def partition_prefix(source: str, day: dt.date) -> str:
    """The key prefix holding one day of one source."""
    return f"{source}/dt={day.isoformat()}/"


def list_partition(store: ObjectStore, source: str, day: dt.date) -> PartitionListing:
    """List a day's log files in a stable order (hour, then key)."""
    prefix = partition_prefix(source, day)
    files: list[LandedFile] = []
    ignored: list[str] = []
    for info in store.list(prefix):
        relative = info.key[len(prefix) :]
        parts = relative.split("/")
        match = _HOUR_FOLDER.match(parts[0]) if len(parts) == 2 else None
        hour = int(match.group(1)) if match else -1
        name = parts[-1]
        if hour in HOURS and name.endswith(LOG_SUFFIXES) and not name.startswith("."):
            files.append(LandedFile(info.key, hour, info.size))
        else:
            ignored.append(info.key)
    files.sort(key=lambda landed: (landed.hour, landed.key))
    return PartitionListing(files=files, ignored_objects=ignored)
