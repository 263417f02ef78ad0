"""The pause switch is on UI > Deployment > Concurrency from first sight: the `lake_writers` pool is
recorded with dagster.yaml's default limit by the first run (a CLI run too) and by the backfill
guard's first tick, never overriding a limit an operator set."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml
from dagster import DagsterInstance, build_sensor_context, instance_for_test

from pipeline.cli.generate import generate_landing_zone
from pipeline.orchestration.operations import (
    DEFAULT_POOL_LIMIT,
    LAKE_WRITERS_POOL,
    OperationsSettings,
    list_pool,
    set_pool_limit,
)
from pipeline.orchestration.resources import PipelineResource
from pipeline.orchestration.sensors import build_backfill_guard
from pipeline.settings import Settings
from pipeline.sources import configured_sources
from pipeline_tests.conftest import PROJECT_ROOT, PipelineEnv, day, materialize_range


@pytest.fixture
def project_instance() -> Iterator[DagsterInstance]:
    """A throwaway instance with the project's own `concurrency:` settings (dagster.yaml)."""
    concurrency = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())["concurrency"]
    with instance_for_test(overrides={"concurrency": concurrency}) as instance:
        yield instance


def listed(instance: DagsterInstance) -> dict[str, int | None]:
    """What Deployment > Concurrency lists: each pool with its limit."""
    storage = instance.event_log_storage
    return {key: storage.get_concurrency_info(key).slot_count for key in storage.get_concurrency_keys()}


def test_the_first_run_lists_the_pool_with_its_default_limit(
    pipeline_env: PipelineEnv, project_instance: DagsterInstance
) -> None:
    assert project_instance.global_op_concurrency_default_limit == DEFAULT_POOL_LIMIT == 2
    # Dagster alone lists nothing before its daemon has dequeued a run of the pool.
    assert listed(project_instance) == {}
    generate_landing_zone(pipeline_env.landing, [day("2024-01-15")], sources=["app"], lines_per_hour=5)
    result = materialize_range(pipeline_env.definitions(), project_instance, "2024-01-15", selection=["app/events"])
    assert result.success
    assert listed(project_instance) == {LAKE_WRITERS_POOL: 2}


def test_the_guards_first_tick_lists_the_pool(pipeline_env: PipelineEnv, project_instance: DagsterInstance) -> None:
    guard = build_backfill_guard(list(configured_sources().values()), OperationsSettings())
    resources = {"pipeline": PipelineResource.from_settings(Settings.from_env())}
    with build_sensor_context(instance=project_instance, resources=resources) as context:
        guard(context)
    assert listed(project_instance) == {LAKE_WRITERS_POOL: 2}


def test_a_limit_set_by_an_operator_is_kept(project_instance: DagsterInstance) -> None:
    set_pool_limit(project_instance, 0)
    assert list_pool(project_instance) is False
    assert listed(project_instance) == {LAKE_WRITERS_POOL: 0}


def test_nothing_is_recorded_without_a_default_limit() -> None:
    with instance_for_test() as instance:
        assert list_pool(instance) is False
        assert listed(instance) == {}
