"""The run log an operator reads at INFO: one line at the start with the parameters, one line
per day with its summary sentence, and the per-file lines only at DEBUG."""

from __future__ import annotations

import logging
import re

from dagster import DagsterInstance

from pipeline.cli.generate import generate_landing_zone
from pipeline_tests.conftest import PipelineEnv, day, materialize_range

DAYS = [day("2024-01-15"), day("2024-01-16")]


def test_info_has_the_parameters_once_and_a_summary_per_day_and_files_are_debug(
    pipeline_env: PipelineEnv, instance: DagsterInstance
) -> None:
    generated = generate_landing_zone(pipeline_env.landing, DAYS, sources=["access"], lines_per_hour=5)
    result = materialize_range(
        pipeline_env.definitions(),
        instance,
        "2024-01-15",
        "2024-01-16",
        selection=["access/events", "access/dlq", "access/daily_metrics"],
    )
    assert result.success
    step_logs = [
        (entry.level, entry.user_message)
        for entry in instance.all_logs(result.run_id)
        if not entry.is_dagster_event and entry.step_key == "access_ingest"
    ]
    info = [message for level, message in step_logs if level >= logging.INFO]
    debug = [message for level, message in step_logs if level == logging.DEBUG]

    starts = [message for message in info if message.startswith(f"run {result.run_id}: ")]
    assert len(starts) == 1
    assert starts[0].startswith(f"run {result.run_id}: source=access days=2024-01-15..2024-01-16 (2) mode=local ")
    assert " chunk_bytes=4194304 sleep_between_batches_s=0" in starts[0]

    for partition in generated:
        key = partition.day.isoformat()
        summary = pipeline_env.manifest("access", key)["summary"]
        (line,) = [message for message in info if summary in message]
        assert re.fullmatch(rf"{re.escape(summary)} \(\d+\.\d\d s, {partition.lines} lines read\)", line), line
        # Every file has its lines at DEBUG (when it is opened, and what it gave), none at INFO.
        files = [message for message in debug if message.startswith(f"file access/dt={key}/")]
        assert len(files) == 2 * partition.files
    assert not [message for message in info if "/hour=" in message]
