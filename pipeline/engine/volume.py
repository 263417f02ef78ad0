"""`volume_normal`: is a day's row count normal for its weekday? (The green tick must not lie.)

A day that loads 0 rows where it usually loads millions is green to every other check when
its files exist (empty or truncated files) or when they are missing altogether. This module
judges the day against the **median of the same weekday over the previous weeks**: weekly
seasonality is the strongest in logs (weekends are quieter), and a median ignores one odd
week (an outage, a holiday) where a mean would be dragged by it.

Plain Python: the caller passes the day's rows and the rows of earlier days, as the `loads`
table has them (`rows_by_day`), and turns the `VolumeVerdict` into the asset check.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Outcome = Literal["passed", "warned", "insufficient_history", "disabled"]


class VolumeSpec(BaseModel):
    """How a source's daily volume is judged (`volume:` in a source definition).

    Defaults: compare with the same weekday of the previous 6 weeks, judge only once 3 of them
    were loaded, accept 0.5x to 2x the median, and report outside that as a WARN.
    """

    model_config = ConfigDict(extra="forbid")

    # False: the check passes without judging (a source whose volume is legitimately erratic).
    enabled: bool = True
    # How many previous same weekdays are looked at (1 = last week only).
    weeks: int = Field(default=6, ge=1, le=52)
    # How many of those must have been loaded before a day is judged.
    min_weeks: int = Field(default=3, ge=1, le=52)
    # Allowed ratio day / median, both ends included.
    ratio_band: tuple[float, float] = (0.5, 2.0)
    # Severity of the check when the day is outside the band.
    severity: Literal["warn", "error"] = "warn"

    @model_validator(mode="after")
    def _consistent(self) -> VolumeSpec:
        low, high = self.ratio_band
        if not 0 <= low <= 1 <= high:
            raise ValueError(f"ratio_band {list(self.ratio_band)} must be [low, high] with 0 <= low <= 1 <= high")
        if self.min_weeks > self.weeks:
            raise ValueError(f"min_weeks ({self.min_weeks}) cannot exceed weeks ({self.weeks})")
        return self


@dataclass(frozen=True)
class VolumeVerdict:
    """The judgement of one day, with the figures behind it (for the check's metadata)."""

    outcome: Outcome
    day: dt.date
    rows_loaded: int
    weekday: str
    # The previous same weekdays that were loaded, newest first, with their rows.
    sample: tuple[tuple[dt.date, int], ...]
    median: float | None
    # rows_loaded / median; None when not judged or when the median is 0.
    ratio: float | None
    ratio_band: tuple[float, float]
    min_weeks: int
    severity: Literal["warn", "error"]
    sentence: str

    @property
    def passed(self) -> bool:
        """Whether the check passes (too little history is not a failure: it is not judged)."""
        return self.outcome != "warned"

    def metadata(self) -> dict[str, object]:
        """Plain values for the asset check's metadata."""
        return {
            "outcome": self.outcome,
            "rows_loaded": self.rows_loaded,
            "weekday": self.weekday,
            "median": self.median,
            "ratio": None if self.ratio is None else round(self.ratio, 4),
            "ratio_band": list(self.ratio_band),
            "sample": {day.isoformat(): rows for day, rows in self.sample},
            "weeks_loaded": len(self.sample),
            "weeks_needed": self.min_weeks,
            "summary": self.sentence,
        }


def judge_volume(
    day: dt.date,
    rows_loaded: int,
    rows_by_day: Mapping[dt.date, int],
    spec: VolumeSpec,
    *,
    had_files: bool | None = None,
) -> VolumeVerdict:
    """Judge `day`'s `rows_loaded` against the same weekday's median over the previous
    `spec.weeks` weeks of `rows_by_day` (rows per loaded day; days absent from it were never
    loaded and are skipped, not counted as 0; a loaded empty day counts as 0).

    `had_files` only shapes the sentence of an empty day ("its files were empty" vs "no file").
    """
    weekday = day.strftime("%A")
    sample = tuple(
        (previous, int(rows_by_day[previous]))
        for previous in (day - dt.timedelta(weeks=n) for n in range(1, spec.weeks + 1))
        if previous in rows_by_day
    )

    def verdict(outcome: Outcome, median: float | None, ratio: float | None, sentence: str) -> VolumeVerdict:
        return VolumeVerdict(
            outcome=outcome,
            day=day,
            rows_loaded=rows_loaded,
            weekday=weekday,
            sample=sample,
            median=median,
            ratio=ratio,
            ratio_band=spec.ratio_band,
            min_weeks=spec.min_weeks,
            severity=spec.severity,
            sentence=sentence,
        )

    if not spec.enabled:
        return verdict("disabled", None, None, f"{day}: volume check disabled for this source; not judged")
    if len(sample) < spec.min_weeks:
        loaded = f"only {len(sample)}" if sample else "no"
        plural = weekday if len(sample) == 1 else f"{weekday}s"
        return verdict(
            "insufficient_history",
            None,
            None,
            f"{day}: {loaded} previous {plural} loaded ({spec.min_weeks} needed); not judged",
        )
    median = float(statistics.median(rows for _, rows in sample))
    rows = _rows_text(rows_loaded, had_files)
    low, high = spec.ratio_band
    if median == 0:
        # The source is usually empty on this weekday: only data is unusual.
        outcome: Outcome = "passed" if rows_loaded == 0 else "warned"
        return verdict(outcome, median, None, f"{day}: {rows}; the usual for a {weekday} is 0")
    ratio = rows_loaded / median
    outcome = "passed" if low <= ratio <= high else "warned"
    sentence = f"{day}: {rows}, {ratio:.2f}x the usual {median:,.0f} for a {weekday}"
    if outcome == "passed":
        sentence += f" (within {low:g}x-{high:g}x)"
    else:
        sentence += f" (outside {low:g}x-{high:g}x)"
    return verdict(outcome, median, ratio, sentence)


def _rows_text(rows: int, had_files: bool | None) -> str:
    text = f"{rows:,} row" + ("" if rows == 1 else "s")
    if rows == 0 and had_files is True:
        text += " (its files were empty)"
    elif rows == 0 and had_files is False:
        text += " (no file landed)"
    return text


def rows_by_day(attempts: Iterable[Mapping[str, object]]) -> dict[dt.date, int]:
    """Rows per day as the tables hold them, from `loads` rows (`partition_date`, `status`,
    `ended_at`, `rows_loaded`): each day's latest successful (loaded or empty) attempt; failed
    attempts were rolled back and change nothing."""
    latest: dict[dt.date, tuple[dt.datetime, int]] = {}
    for row in attempts:
        if row["status"] not in ("loaded", "empty"):
            continue
        day, ended, rows = row["partition_date"], row["ended_at"], int(row["rows_loaded"])  # type: ignore[call-overload]
        if day not in latest or ended > latest[day][0]:  # type: ignore[operator, index]
            latest[day] = (ended, rows)  # type: ignore[index, assignment]
    return {day: rows for day, (_, rows) in latest.items()}
