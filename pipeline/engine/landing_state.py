"""What has landed for one source and day, summarised as a fingerprint.

The landing sensor compares the fingerprint of a day's files now with the one recorded
when the day was last loaded: a late file, a removed file or a re-delivered file with new
content changes it. It is computed from one listing (no file is opened), with the same
rules the ingest uses to pick a day's files, so that a stray `notes.txt` does not trigger
a re-run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

from pipeline.engine.landing import PartitionListing, list_partition, partition_prefix
from pipeline.engine.objects import ObjectInfo, ObjectStore

# Length of the hex digest kept: 80 bits, plenty to tell two listings of one day apart,
# short enough for run keys and tags.
FINGERPRINT_CHARS = 20


@dataclass(frozen=True)
class LandingState:
    """The log files of one day as listed now."""

    source: str
    day: dt.date
    bytes: int
    fingerprint: str
    # The listing the fingerprint was computed from: the ingest reads exactly these files, so
    # the recorded fingerprint describes what was loaded (and the day is listed once per run).
    listing: PartitionListing

    @property
    def files(self) -> int:
        """Log files of the day."""
        return len(self.listing.files)

    @property
    def hours_present(self) -> list[int]:
        """Hours with at least one log file."""
        return self.listing.hours_present


class _OneListing:
    """An object store view that answers `list` from a listing already taken, so that
    `list_partition` applies its rules without listing the store a second time."""

    def __init__(self, url: str, infos: list[ObjectInfo]) -> None:
        self.url = url
        self._infos = infos

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        return (info for info in self._infos if info.key.startswith(prefix))


def landing_state(store: ObjectStore, source: str, day: dt.date) -> LandingState:
    """List one day of one source and fingerprint its log files.

    The fingerprint covers each file's key, size and `version` (an S3 ETag, or the local
    file's modification time); a store that reports no version falls back to key and size.
    """
    infos = list(store.list(partition_prefix(source, day)))
    listing = list_partition(_OneListing(store.url, infos), source, day)  # type: ignore[arg-type]
    accepted = {landed.key for landed in listing.files}
    digest = hashlib.sha256()
    total = 0
    for info in sorted(infos, key=lambda item: item.key):
        if info.key not in accepted:
            continue
        total += info.size
        digest.update(f"{info.key}\t{info.size}\t{getattr(info, 'version', '')}\n".encode())
    return LandingState(
        source=source,
        day=day,
        bytes=total,
        fingerprint=digest.hexdigest()[:FINGERPRINT_CHARS],
        listing=listing,
    )
