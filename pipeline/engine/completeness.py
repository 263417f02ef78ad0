"""The weekly "missing hours" backfill, as plain Python: scan a window of days, find the
hours that were missing when a day was loaded and have landed since, and say what
re-running those days recovered.

Every exit path writes a backfill stats manifest, `{output}/backfills/{source}/{start}..{end}.json`
(nothing to do, nothing arrived, re-runs requested, re-runs finished), with a sentence the
notification repeats: "access: Recovered 3 hours for 2024-01-20..26 (...)", "access: No
missing hours in 2024-01-20..26.", "access: Still missing in 2024-01-20..26: ...".

A day's state comes from its latest attempt in the `loads` table (every attempt, whatever
its outcome, has a row there) and from a listing of its landing folder now; nothing here
knows about Dagster.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.engine.lake.loads import SEALING_STATUSES, LoadRecord
from pipeline.engine.landing import HOURS
from pipeline.engine.landing_state import landing_state
from pipeline.engine.objects import ObjectInfo, ObjectStore

REPORT_PREFIX = "backfills"
# Report statuses. The first three are final when written by the scan; `requested` waits for
# the re-runs, after which the report becomes `recovered` or `incomplete`.
COMPLETE = "complete"
STILL_MISSING = "still_missing"
REQUESTED = "requested"
RECOVERED = "recovered"
INCOMPLETE = "incomplete"
FINAL_STATUSES = frozenset({COMPLETE, STILL_MISSING, RECOVERED, INCOMPLETE})


def window_label(start: dt.date, end: dt.date) -> str:
    """A short name for a window of days: `2024-01-20..26`, `2024-01-29..02-04`."""
    if start == end:
        return start.isoformat()
    if (start.year, start.month) == (end.year, end.month):
        return f"{start.isoformat()}..{end.day:02d}"
    if start.year == end.year:
        return f"{start.isoformat()}..{end.month:02d}-{end.day:02d}"
    return f"{start.isoformat()}..{end.isoformat()}"


def format_hours(hours: list[int]) -> str:
    """Hours as readable ranges: `04`, `04-06, 09`, `all 24 hours`."""
    if len(hours) == len(HOURS):
        return "all 24 hours"
    ordered = sorted(set(hours))
    parts: list[str] = []
    index = 0
    while index < len(ordered):
        first = last = ordered[index]
        while index + 1 < len(ordered) and ordered[index + 1] == last + 1:
            index += 1
            last = ordered[index]
        parts.append(f"{first:02d}" if first == last else f"{first:02d}-{last:02d}")
        index += 1
    return ", ".join(parts)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def report_key(source: str, start: dt.date, end: dt.date) -> str:
    """Where the backfill stats manifest of a window lives in the output store."""
    return f"{REPORT_PREFIX}/{source}/{start.isoformat()}..{end.isoformat()}.json"


def read_json(store: ObjectStore, key: str) -> dict[str, Any] | None:
    """A JSON object from the store, or None when there is no such object."""
    try:
        with store.open(key) as stream:
            return json.loads(stream.read())  # type: ignore[no-any-return]
    except FileNotFoundError:
        return None


@dataclass
class DayReport:
    """One day of a window: what was missing when scanned, and what the re-run changed."""

    day: str
    # Status of the day's latest attempt when scanned (loaded, empty, failed), None if never processed.
    status_before: str | None
    # Hours not in the lake when scanned: the latest attempt's missing hours, or all 24 for a
    # day that was never processed or whose last attempt failed.
    missing_before: list[int]
    # Of those, the hours that have files now: the day is re-run to load them.
    arrived: list[int]
    rerun: bool
    outcome: str | None = None  # after the re-run: loaded, empty, failed, not_run
    run_id: str | None = None
    recovered: list[int] = field(default_factory=list)
    still_missing: list[int] = field(default_factory=list)


@dataclass
class RunOutcome:
    """How the re-run of one day ended, as the orchestrator saw it."""

    run_id: str
    succeeded: bool


@dataclass
class CompletenessReport:
    """The backfill stats manifest of one source and window."""

    source: str
    start: str
    end: str
    status: str
    days: list[DayReport]
    scanned_at: str
    finished_at: str | None = None
    run_ids: list[str] = field(default_factory=list)
    notification: str | None = None  # "sent <time>", "disabled", or None while pending
    message: str = ""

    @property
    def window_id(self) -> str:
        """Identifies the window in run tags: `access:2024-01-20..2024-01-26`."""
        return f"{self.source}:{self.start}..{self.end}"

    @property
    def label(self) -> str:
        """The window as people read it: `2024-01-20..26`."""
        return window_label(dt.date.fromisoformat(self.start), dt.date.fromisoformat(self.end))

    @property
    def rerun_days(self) -> list[str]:
        """Days that are (or were) re-run to recover hours that arrived late."""
        return [day.day for day in self.days if day.rerun]

    @property
    def hours_to_recover(self) -> int:
        """Hours that were missing and have arrived since."""
        return sum(len(day.arrived) for day in self.days)

    @property
    def hours_recovered(self) -> int:
        """Hours loaded by the re-runs."""
        return sum(len(day.recovered) for day in self.days)

    @property
    def still_missing(self) -> dict[str, list[int]]:
        """Hours still without data, per day (after the re-runs, or as scanned)."""
        if self.status == REQUESTED:
            return {
                day.day: [hour for hour in day.missing_before if hour not in day.arrived]
                for day in self.days
                if len(day.missing_before) > len(day.arrived)
            }
        return {day.day: day.still_missing for day in self.days if day.still_missing}

    def sentence(self) -> str:
        """What happened, in one or two sentences (the notification's text)."""
        label, source = self.label, self.source
        still = self.still_missing
        still_text = "; ".join(f"{day}: {format_hours(hours)}" for day, hours in still.items())
        if self.status == COMPLETE:
            return f"{source}: No missing hours in {label}."
        if self.status == STILL_MISSING:
            return f"{source}: Still missing in {label}: {still_text}. No late file has arrived for them."
        if self.status == REQUESTED:
            plan = "; ".join(f"{day.day}: {format_hours(day.arrived)}" for day in self.days if day.rerun)
            text = (
                f"{source}: Re-running {_plural(len(self.rerun_days), 'day')} of {label} to recover "
                f"{_plural(self.hours_to_recover, 'hour')} that arrived late ({plan})."
            )
            return text + (f" Still missing: {still_text}." if still else "")
        recovered = "; ".join(f"{day.day}: {format_hours(day.recovered)}" for day in self.days if day.recovered)
        text = f"{source}: Recovered {_plural(self.hours_recovered, 'hour')} for {label}"
        text += f" ({recovered})." if recovered else "."
        failed = [day for day in self.days if day.outcome in ("failed", "not_run")]
        if failed:
            text += " Re-run did not finish for " + "; ".join(
                f"{day.day} ({'run ' + day.run_id[:8] + ' failed' if day.run_id else 'no run was launched'})"
                for day in failed
            )
            text += "."
        if still:
            text += f" Still missing: {still_text}."
        return text

    def to_json(self) -> str:
        """The manifest document, with the seed's summary figures at the top level."""
        document = {
            "source": self.source,
            "start_date": self.start,
            "end_date": self.end,
            "status": self.status,
            "message": self.sentence(),
            "dates_processed": len(self.rerun_days) if self.status != REQUESTED else 0,
            "dates_to_process": self.rerun_days,
            "hours_to_recover": self.hours_to_recover,
            "hours_recovered": self.hours_recovered,
            "still_missing": self.still_missing,
            "scanned_at": self.scanned_at,
            "finished_at": self.finished_at,
            "run_ids": self.run_ids,
            "notification": self.notification,
            "days": [asdict(day) for day in self.days],
        }
        return json.dumps(document, indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> CompletenessReport:
        """Read a manifest written by `to_json`."""
        document = json.loads(text)
        return cls(
            source=document["source"],
            start=document["start_date"],
            end=document["end_date"],
            status=document["status"],
            days=[DayReport(**day) for day in document["days"]],
            scanned_at=document["scanned_at"],
            finished_at=document["finished_at"],
            run_ids=list(document["run_ids"]),
            notification=document["notification"],
            message=document["message"],
        )


def scan_window(
    source: str,
    start: dt.date,
    end: dt.date,
    *,
    landing: ObjectStore,
    attempts: Mapping[str, LoadRecord],
    scanned_at: dt.datetime,
) -> CompletenessReport:
    """Compare each day's latest attempt (`attempts`, by day, from `loads`) with what has
    landed now; plan the re-runs.

    The report's status is `complete` (no hour missing), `still_missing` (hours missing,
    none arrived) or `requested` (some days must be re-run); `scanned_at` is an audit stamp.
    """
    if end < start:
        raise ValueError(f"empty window {start}..{end}")
    days: list[DayReport] = []
    day = start
    while day <= end:
        attempt = attempts.get(day.isoformat())
        status_before = attempt.status if attempt else None
        if attempt is None or status_before not in SEALING_STATUSES:
            missing_before = list(HOURS)
        else:
            missing_before = [int(hour) for hour in attempt.missing_hours]
        present = set(landing_state(landing, source, day).hours_present) if missing_before else set()
        arrived = [hour for hour in missing_before if hour in present]
        days.append(DayReport(day.isoformat(), status_before, missing_before, arrived, rerun=bool(arrived)))
        day += dt.timedelta(days=1)
    if any(report.rerun for report in days):
        status = REQUESTED
    elif any(report.missing_before for report in days):
        status = STILL_MISSING
        for report in days:
            report.still_missing = list(report.missing_before)
    else:
        status = COMPLETE
    report = CompletenessReport(
        source=source,
        start=start.isoformat(),
        end=end.isoformat(),
        status=status,
        days=days,
        scanned_at=scanned_at.isoformat(),
        finished_at=None if status == REQUESTED else scanned_at.isoformat(),
    )
    report.message = report.sentence()
    return report


def finish_window(
    report: CompletenessReport,
    outcomes: dict[str, RunOutcome],
    *,
    attempts: Mapping[str, LoadRecord],
    finished_at: dt.datetime,
) -> CompletenessReport:
    """Record what the re-runs did, from each re-run day's latest attempt (`attempts`).

    A day counts as recovered only if its latest attempt was made by one of the window's runs
    with a loaded or empty status; the hours recovered are the planned ones now present.
    """
    run_ids = {outcome.run_id for outcome in outcomes.values()}
    for day in report.days:
        if not day.rerun:
            day.still_missing = list(day.missing_before)
            continue
        outcome = outcomes.get(day.day)
        attempt = attempts.get(day.day)
        if (
            outcome is not None
            and outcome.succeeded
            and attempt is not None
            and attempt.run_id in run_ids
            and attempt.status in SEALING_STATUSES
        ):
            present = {int(hour) for hour in attempt.hours_present}
            day.outcome = attempt.status
            day.run_id = attempt.run_id
            day.recovered = [hour for hour in day.missing_before if hour in present]
            day.still_missing = [hour for hour in day.missing_before if hour not in present]
        else:
            day.outcome = "failed" if outcome is not None else "not_run"
            day.run_id = outcome.run_id if outcome is not None else None
            day.recovered = []
            day.still_missing = list(day.missing_before)
    report.status = INCOMPLETE if any(day.outcome in ("failed", "not_run") for day in report.days) else RECOVERED
    report.run_ids = sorted(run_ids)
    report.finished_at = finished_at.isoformat()
    report.message = report.sentence()
    return report


def write_report(output: ObjectStore, report: CompletenessReport) -> str:
    """Write (or replace) the window's backfill stats manifest atomically; returns its location."""
    report.message = report.sentence()
    key = report_key(report.source, dt.date.fromisoformat(report.start), dt.date.fromisoformat(report.end))
    return output.write_atomic(key, report.to_json().encode())


def read_report(output: ObjectStore, key: str) -> CompletenessReport | None:
    """A backfill stats manifest by key, or None."""
    try:
        with output.open(key) as stream:
            return CompletenessReport.from_json(stream.read())
    except FileNotFoundError:
        return None


def report_objects(output: ObjectStore, source: str) -> list[ObjectInfo]:
    """Every backfill stats manifest of a source (key, size, version), oldest window first."""
    prefix = f"{REPORT_PREFIX}/{source}/"
    found = []
    for info in output.list(prefix):
        name = info.key[len(prefix) :]
        # Skip temporary files of an atomic write in progress (".name.json.xxxx.tmp").
        if name.endswith(".json") and "/" not in name and not name.startswith("."):
            found.append(info)
    return sorted(found, key=lambda info: info.key)


def report_keys(output: ObjectStore, source: str) -> list[str]:
    """Keys of every backfill stats manifest of a source, oldest window first."""
    return [info.key for info in report_objects(output, source)]
