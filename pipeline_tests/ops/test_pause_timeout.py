"""A paused range run does not wait forever: after `pause_timeout_s` still paused, its step fails
with a sentence naming the pool, the day it stopped before and how to resume, instead of
holding its run slot; the days before the pause stay loaded, nothing after it is loaded.

Run in-process against a real instance with the project's concurrency settings (`granularity:
run`, as in dagster.yaml: the in-process step claims no op slot, only the switch is read)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from dagster import DagsterInstance, instance_for_test

from pipeline.cli.generate import generate_landing_zone
from pipeline.orchestration.operations import DEFAULT_POOL_LIMIT, is_paused, set_pool_limit
from pipeline_tests.conftest import PROJECT_ROOT, PipelineEnv, day

DAYS = [day("2024-03-04"), day("2024-03-05"), day("2024-03-06")]


@pytest.fixture
def project_instance() -> Iterator[DagsterInstance]:
    """A throwaway instance with the project's own `concurrency:` settings (dagster.yaml)."""
    concurrency = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())["concurrency"]
    with instance_for_test(overrides={"concurrency": concurrency}) as instance:
        yield instance


def run_range(env: PipelineEnv, instance: DagsterInstance, config: dict[str, Any]) -> Any:
    """`access_daily` for DAYS in one run (as a backfill launches a range), with ingest config."""
    job = env.definitions().resolve_job_def("access_daily")
    return job.execute_in_process(
        instance=instance,
        run_config={"ops": {"access_ingest": {"config": config}}},
        tags={
            "dagster/asset_partition_range_start": DAYS[0].isoformat(),
            "dagster/asset_partition_range_end": DAYS[-1].isoformat(),
        },
        raise_on_error=False,
    )


def pause_once_loading(instance: DagsterInstance, text: str, stop: threading.Event) -> None:
    """Set the pool's limit to 0 as soon as a run logs `text` (the first day is under way)."""
    while not stop.is_set():
        for run in instance.get_runs(limit=1):
            if any(text in (entry.user_message or "") for entry in instance.all_logs(run.run_id)):
                set_pool_limit(instance, 0)
                return
        time.sleep(0.02)


@pytest.mark.timeout(180)
def test_a_run_paused_too_long_fails_with_a_sentence_and_loads_nothing_after_the_pause(
    pipeline_env: PipelineEnv, project_instance: DagsterInstance
) -> None:
    generate_landing_zone(
        pipeline_env.landing, DAYS, sources=["access"], lines_per_hour=5, bad_line_rate=0.0, missing_hours={}
    )
    # Small batches with a pause after each, and a progress line per batch: the first day takes a
    # few seconds, and the operator pauses while it loads (it finishes the day, then waits).
    config = {
        "chunk_bytes": 4096,
        "sleep_between_batches_s": 0.1,
        "progress_interval_s": 0.0,
        "pause_poll_s": 0.05,
        "pause_timeout_s": 0.5,
    }
    stop = threading.Event()
    operator = threading.Thread(
        target=pause_once_loading, args=(project_instance, "progress access 2024-03-04 (day 1 of 3)", stop)
    )
    operator.start()
    try:
        started = time.monotonic()
        result = run_range(pipeline_env, project_instance, config)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        operator.join()
    assert is_paused(project_instance)
    assert not result.success
    [failure] = [event for event in result.all_events if event.is_step_failure]
    description = failure.step_failure_data.user_failure_data.description
    waited = re.search(r"after ([0-9.]+) s", description)
    assert waited is not None and 0.5 <= float(waited.group(1)) < 30
    assert description.replace(waited.group(0), "after W s") == (
        "Paused too long: the 'lake_writers' pool is still paused (limit 0) after W s (pause_timeout_s=0.5); "
        "stopped before access 2024-03-05 (day 2 of 3), the days before it are loaded. To resume: set the pool's "
        f"limit back (`dagster instance concurrency set lake_writers {DEFAULT_POOL_LIMIT}` or UI > Deployment > "
        "Concurrency), then re-execute this run from failure or re-run the remaining days (the days already "
        "loaded are kept)."
    )
    # Not retried (a retry would only wait again): one attempt of the step, ended well within the test's bound.
    assert len([event for event in result.all_events if event.event_type_value == "STEP_START"]) == 1
    assert elapsed < 120
    # The first day is loaded and materialized; nothing after the pause.
    loaded = [(row["partition_date"].isoformat(), row["status"]) for row in pipeline_env.attempts("access")]
    assert loaded == [("2024-03-04", "loaded")]
    materialized = {
        event.materialization.partition
        for event in result.get_asset_materialization_events()
        if event.materialization.asset_key.to_user_string() == "access/events"
    }
    assert materialized == {"2024-03-04"}

    # Resumed: a re-run of the range goes on (the loaded day is replaced whole, never doubled).
    set_pool_limit(project_instance, DEFAULT_POOL_LIMIT)
    assert run_range(pipeline_env, project_instance, {"pause_timeout_s": 0.5}).success
    assert sorted({row["partition_date"] for row in pipeline_env.attempts("access")}) == DAYS
