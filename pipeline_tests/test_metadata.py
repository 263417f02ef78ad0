"""What a day's metadata says, value by value: the verdict an operator reads first, typed
values (numbers, timestamps, locations as URLs in S3 mode), a day label everywhere."""

from __future__ import annotations

import datetime as dt

from dagster import AssetKey, MetadataValue

from pipeline.engine.lake.loads import LoadRecord
from pipeline.orchestration.metadata import (
    events_metadata,
    location,
    metrics_metadata,
    metrics_removed,
    verdict,
)


def record(**figures: object) -> LoadRecord:
    base: dict[str, object] = {
        "source": "access",
        "partition_date": "2024-01-17",
        "run_id": "run-1",
        "definition_version": "abc",
        "status": "loaded",
        "files": 26,
        "rows_read": 2100,
        "rows_loaded": 2037,
        "rows_quarantined": 63,
        "quarantine_rate": 0.03,
        "hours_present": [hour for hour in range(24) if hour != 13],
        "missing_hours": [13],
        "failed_checks": {"line: matches_format": 63},
        "manifest": "s3://out/manifests/access/2024-01-17.json",
    }
    return LoadRecord(**(base | figures))  # type: ignore[arg-type]


def test_the_verdict_of_a_day_over_budget_with_a_missing_hour() -> None:
    assert verdict(record()) == (
        "✗ 3.00% quarantined > 1.00% budget; top rule `line: matches_format` (63); daily_metrics blocked; "
        "missing hour 13 — read the DLQ of the day, fix the source or its definition, re-run (runbook, *Reading the "
        "DLQ*)"
    )


def test_the_verdict_of_a_good_day_missing_hours() -> None:
    good = record(rows_quarantined=2, rows_loaded=2098, quarantine_rate=2 / 2100, missing_hours=[4, 13])
    assert verdict(good) == (
        "✓ 0.10% quarantined ≤ 1.00% budget; missing hours 04, 13 — a late file is loaded by the landing sensor or "
        "the weekly completeness scan"
    )


def test_events_metadata_is_typed_and_says_the_budget_and_the_hours() -> None:
    metadata = events_metadata(record())
    assert metadata["within_error_budget"] == MetadataValue.bool(False)
    assert metadata["error_budget"] == MetadataValue.float(0.01)
    assert metadata["quarantined_percent"] == "3.00%"
    assert (metadata["missing_hours"], metadata["missing_hours_count"], metadata["hours_present"]) == ("13", 1, 23)
    assert metadata["manifest"] == MetadataValue.url("s3://out/manifests/access/2024-01-17.json")


def test_locations_are_urls_in_s3_mode_and_paths_locally() -> None:
    assert location("s3://bucket/out/manifests/app/2024-01-17.json") == MetadataValue.url(
        "s3://bucket/out/manifests/app/2024-01-17.json"
    )
    assert location("/srv/out/manifests/app/2024-01-17.json") == MetadataValue.path(
        "/srv/out/manifests/app/2024-01-17.json"
    )


def test_metrics_metadata_names_its_day_and_types_its_values() -> None:
    first = dt.datetime(2024, 1, 17, 0, 0, 3, tzinfo=dt.UTC)
    metadata = metrics_metadata(
        record(quarantine_rate=0.0, rows_quarantined=0, metrics_rows=1),
        {
            "partition_date": dt.date(2024, 1, 17),
            "requests": 2037,
            "server_error_share": 0.0123,
            "first_event_at": first,
        },
    )
    assert metadata["day"] == "2024-01-17"
    assert metadata["dagster/row_count"] == 1
    assert metadata["events_rows"] == 2037
    assert metadata["requests"] == MetadataValue.int(2037)
    assert metadata["server_error_share"] == MetadataValue.float(0.0123)
    assert metadata["first_event_at"] == MetadataValue.timestamp(first)
    assert "partition_date" not in metadata


def test_a_removed_metrics_row_is_observed_on_its_own_day() -> None:
    observation = metrics_removed(record(), AssetKey(["access", "daily_metrics"]))
    assert (observation.asset_key, observation.partition) == (AssetKey(["access", "daily_metrics"]), "2024-01-17")
    assert observation.metadata["status"] == MetadataValue.text("removed")
    assert observation.metadata["day"] == MetadataValue.text("2024-01-17")
