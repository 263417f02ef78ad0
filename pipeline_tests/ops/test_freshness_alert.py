"""The `freshness_alert` sensor, evaluated directly against a real (empty) instance: a cursor it
cannot read (hand-edited, truncated, from an older version) never crashes the tick; it is
logged and treated as empty, and the tick writes a good cursor again."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from dagster import DagsterInstance, build_sensor_context

from pipeline.orchestration.operations import OperationsSettings
from pipeline.orchestration.sensors import build_freshness_alert
from pipeline.sources import configured_sources
from pipeline_tests.ops.conftest import Webhook

NOW = dt.datetime(2024, 3, 5, 7, 0, tzinfo=dt.UTC)  # past the 06:00 deadline: 2024-03-04 is expected


@pytest.mark.parametrize("cursor", ["{not json", '["access"]', '{"access": 3}', "null"])
def test_an_unreadable_cursor_is_logged_and_treated_as_empty(
    instance: DagsterInstance, webhook: Webhook, capfd: pytest.CaptureFixture[str], cursor: str
) -> None:
    sensor = build_freshness_alert(
        [configured_sources()["access"]], OperationsSettings(webhook_url=webhook.url), clock=lambda: NOW
    )
    with build_sensor_context(instance=instance, cursor=cursor) as context:
        result = sensor(context)
    # Nothing was loaded: the day is alerted as if the cursor were empty, and the cursor is sound again.
    assert [text.split(" is missing")[0] for text in webhook.texts()] == [":warning: access 2024-03-04"]
    assert json.loads(result.cursor) == {"access": "2024-03-04"}
    # The sensor's log (Dagster's console handler writes to the process's stderr).
    assert "WARNING - freshness_alert: " in capfd.readouterr().err
