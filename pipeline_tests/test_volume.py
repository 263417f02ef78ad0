"""`volume_normal`'s judgement on generated weeks: passes, warns low and high, stays silent
without history, catches empty days, matches weekdays, and skips days never loaded."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from pipeline.engine.volume import VolumeSpec, judge_volume, rows_by_day
from pipeline.sources import SourceConfigError, load_sources
from pipeline.sources.spec import DEFAULT_SOURCES_FILE

WEDNESDAY = dt.date(2024, 1, 17)
DEFAULT = VolumeSpec()


def weeks_of(day: dt.date, weekday_rows: list[int], other_days: int = 0) -> dict[dt.date, int]:
    """History before `day`: its previous same weekdays get `weekday_rows` (newest first); every
    other day of those weeks gets `other_days` rows."""
    history: dict[dt.date, int] = {}
    for offset in range(1, 7 * len(weekday_rows) + 1):
        previous = day - dt.timedelta(days=offset)
        history[previous] = weekday_rows[offset // 7 - 1] if offset % 7 == 0 else other_days
    return history


USUAL = weeks_of(WEDNESDAY, [21000, 21600, 21300, 20900, 21800, 21300])


def test_a_usual_day_passes_with_its_figures() -> None:
    verdict = judge_volume(WEDNESDAY, 21000, USUAL, DEFAULT)
    assert verdict.outcome == "passed" and verdict.passed
    assert verdict.median == 21300.0
    assert verdict.ratio == pytest.approx(21000 / 21300)
    assert verdict.weekday == "Wednesday"
    assert verdict.sample == (
        (dt.date(2024, 1, 10), 21000),
        (dt.date(2024, 1, 3), 21600),
        (dt.date(2023, 12, 27), 21300),
        (dt.date(2023, 12, 20), 20900),
        (dt.date(2023, 12, 13), 21800),
        (dt.date(2023, 12, 6), 21300),
    )
    assert verdict.sentence == "2024-01-17: 21,000 rows, 0.99x the usual 21,300 for a Wednesday (within 0.5x-2x)"


def test_a_low_day_warns_with_the_sentence_an_operator_reads() -> None:
    verdict = judge_volume(WEDNESDAY, 1204, USUAL, DEFAULT)
    assert verdict.outcome == "warned" and not verdict.passed
    assert verdict.severity == "warn"
    assert verdict.sentence == "2024-01-17: 1,204 rows, 0.06x the usual 21,300 for a Wednesday (outside 0.5x-2x)"
    assert verdict.metadata() == {
        "outcome": "warned",
        "rows_loaded": 1204,
        "weekday": "Wednesday",
        "median": 21300.0,
        "ratio": 0.0565,
        "ratio_band": [0.5, 2.0],
        "sample": {
            "2024-01-10": 21000,
            "2024-01-03": 21600,
            "2023-12-27": 21300,
            "2023-12-20": 20900,
            "2023-12-13": 21800,
            "2023-12-06": 21300,
        },
        "weeks_loaded": 6,
        "weeks_needed": 3,
        "summary": verdict.sentence,
    }


def test_a_high_day_warns_too() -> None:
    verdict = judge_volume(WEDNESDAY, 50000, USUAL, DEFAULT)
    assert verdict.outcome == "warned"
    assert verdict.sentence == "2024-01-17: 50,000 rows, 2.35x the usual 21,300 for a Wednesday (outside 0.5x-2x)"


def test_the_band_ends_are_within_it() -> None:
    assert judge_volume(WEDNESDAY, 10650, USUAL, DEFAULT).outcome == "passed"  # exactly 0.5x
    assert judge_volume(WEDNESDAY, 42600, USUAL, DEFAULT).outcome == "passed"  # exactly 2x
    assert judge_volume(WEDNESDAY, 10649, USUAL, DEFAULT).outcome == "warned"


@pytest.mark.parametrize(
    ("loaded", "sentence"),
    [
        ([21000, 21600], "2024-01-17: only 2 previous Wednesdays loaded (3 needed); not judged"),
        ([21000], "2024-01-17: only 1 previous Wednesday loaded (3 needed); not judged"),
        ([], "2024-01-17: no previous Wednesdays loaded (3 needed); not judged"),
    ],
)
def test_too_little_history_is_not_judged(loaded: list[int], sentence: str) -> None:
    verdict = judge_volume(WEDNESDAY, 3, weeks_of(WEDNESDAY, loaded, other_days=21000), DEFAULT)
    assert verdict.outcome == "insufficient_history" and verdict.passed
    assert (verdict.median, verdict.ratio) == (None, None)
    assert verdict.sentence == sentence


@pytest.mark.parametrize(
    ("had_files", "rows_text"),
    [(True, "0 rows (its files were empty)"), (False, "0 rows (no file landed)"), (None, "0 rows")],
)
def test_an_empty_day_of_a_source_that_has_data_warns(had_files: bool | None, rows_text: str) -> None:
    verdict = judge_volume(WEDNESDAY, 0, USUAL, DEFAULT, had_files=had_files)
    assert verdict.outcome == "warned"
    assert verdict.ratio == 0.0
    assert verdict.sentence == f"2024-01-17: {rows_text}, 0.00x the usual 21,300 for a Wednesday (outside 0.5x-2x)"


def test_only_the_same_weekday_is_compared() -> None:
    # Quiet Sundays (2,000) among busy weekdays (20,000): a Sunday of 2,100 is normal...
    sunday = dt.date(2024, 1, 21)
    history = weeks_of(sunday, [2000, 1900, 2100, 2000], other_days=20000)
    assert judge_volume(sunday, 2100, history, DEFAULT).outcome == "passed"
    # ...and a Sunday of 20,000 (a weekday's volume) is not.
    busy = judge_volume(sunday, 20000, history, DEFAULT)
    assert busy.outcome == "warned"
    assert busy.sentence == "2024-01-21: 20,000 rows, 10.00x the usual 2,000 for a Sunday (outside 0.5x-2x)"
    assert {day.weekday() for day, _ in busy.sample} == {6}


def test_days_never_loaded_are_skipped_not_counted_as_zero() -> None:
    history = dict(USUAL)
    for missing in (dt.date(2024, 1, 10), dt.date(2023, 12, 27)):
        del history[missing]
    verdict = judge_volume(WEDNESDAY, 21000, history, DEFAULT)
    assert verdict.outcome == "passed"
    assert [day for day, _ in verdict.sample] == [
        dt.date(2024, 1, 3),
        dt.date(2023, 12, 20),
        dt.date(2023, 12, 13),
        dt.date(2023, 12, 6),
    ]
    assert verdict.median == 21450.0  # of 21,600, 20,900, 21,800, 21,300


def test_a_loaded_empty_day_in_the_history_counts_and_the_median_shrugs_it_off() -> None:
    # One outage Wednesday (0 rows) among five normal ones: the median does not move much.
    history = weeks_of(WEDNESDAY, [0, 21600, 21300, 20900, 21800, 21300])
    verdict = judge_volume(WEDNESDAY, 21000, history, DEFAULT)
    assert (verdict.outcome, verdict.median) == ("passed", 21300.0)


def test_a_weekday_that_is_always_empty() -> None:
    history = weeks_of(WEDNESDAY, [0, 0, 0])
    quiet = judge_volume(WEDNESDAY, 0, history, DEFAULT)
    assert (quiet.outcome, quiet.ratio, quiet.sentence) == (
        "passed",
        None,
        "2024-01-17: 0 rows; the usual for a Wednesday is 0",
    )
    assert judge_volume(WEDNESDAY, 5, history, DEFAULT).outcome == "warned"


def test_the_lookback_and_the_minimum_are_the_specs() -> None:
    spec = VolumeSpec(weeks=2, min_weeks=2, ratio_band=(0.9, 1.1), severity="error")
    # Only the last two Wednesdays (21,000 and 21,600) count; the older ones are ignored.
    verdict = judge_volume(WEDNESDAY, 19000, weeks_of(WEDNESDAY, [21000, 21600, 1, 1, 1, 1]), spec)
    assert (verdict.outcome, verdict.median, verdict.severity, len(verdict.sample)) == ("warned", 21300.0, "error", 2)
    assert verdict.sentence.endswith("0.89x the usual 21,300 for a Wednesday (outside 0.9x-1.1x)")
    one_known = judge_volume(WEDNESDAY, 19000, weeks_of(WEDNESDAY, [21000]), spec)
    assert one_known.outcome == "insufficient_history"


def test_a_disabled_check_does_not_judge() -> None:
    verdict = judge_volume(WEDNESDAY, 0, USUAL, VolumeSpec(enabled=False))
    assert (verdict.outcome, verdict.passed) == ("disabled", True)
    assert verdict.sentence == "2024-01-17: volume check disabled for this source; not judged"


def test_rows_by_day_keeps_each_days_latest_success() -> None:
    def row(day: str, status: str, ended: str, rows: int) -> dict[str, object]:
        return {
            "partition_date": dt.date.fromisoformat(day),
            "status": status,
            "ended_at": dt.datetime.fromisoformat(ended).replace(tzinfo=dt.UTC),
            "rows_loaded": rows,
        }

    assert rows_by_day(
        [
            row("2024-01-10", "loaded", "2024-01-11T01:31", 20000),
            row("2024-01-10", "loaded", "2024-01-11T09:00", 21000),  # re-run after late files
            row("2024-01-10", "failed", "2024-01-12T09:00", 0),  # rolled back: changes nothing
            row("2024-01-03", "empty", "2024-01-04T01:31", 0),
            row("2023-12-27", "failed", "2023-12-28T01:31", 0),  # never loaded: absent
        ]
    ) == {dt.date(2024, 1, 10): 21000, dt.date(2024, 1, 3): 0}


# -- configuration -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"ratio_band": [2.0, 0.5]}, "ratio_band [2.0, 0.5] must be [low, high]"),
        ({"ratio_band": [0.5]}, "ratio_band"),
        ({"min_weeks": 4, "weeks": 3}, "min_weeks (4) cannot exceed weeks (3)"),
        ({"severity": "fatal"}, "severity"),
        ({"weeks": 0}, "weeks"),
        ({"window": 3}, "window"),
    ],
)
def test_an_unusable_volume_spec_is_refused(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        VolumeSpec.model_validate(settings)


def test_the_built_in_sources_get_the_documented_defaults() -> None:
    for spec in load_sources().values():
        assert spec.volume == VolumeSpec(enabled=True, weeks=6, min_weeks=3, ratio_band=(0.5, 2.0), severity="warn")


def test_a_source_declares_its_volume_settings_in_yaml(tmp_path: Path) -> None:
    document = yaml.safe_load(DEFAULT_SOURCES_FILE.read_text())
    document["sources"]["access"]["volume"] = {"weeks": 8, "min_weeks": 4, "ratio_band": [0.3, 3], "severity": "error"}
    document["sources"]["app"]["volume"] = {"enabled": False}
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump(document))
    specs = load_sources(path)
    assert specs["access"].volume == VolumeSpec(weeks=8, min_weeks=4, ratio_band=(0.3, 3.0), severity="error")
    assert specs["app"].volume.enabled is False

    document["sources"]["app"]["volume"] = {"ratio_band": [1.5, 3]}
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(SourceConfigError, match="source 'app' is invalid: volume: "):
        load_sources(path)
