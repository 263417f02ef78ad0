"""How the code location runs its steps, as loaded from the environment."""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from dagster import in_process_executor, multiprocess_executor

from pipeline.definitions import build_definitions
from pipeline.orchestration import jobs
from pipeline.orchestration.jobs import freshness_checks, freshness_sensor
from pipeline.orchestration.operations import OperationsSettings
from pipeline.sources import configured_sources


def test_steps_run_in_the_run_worker_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    # A run is one step per source: a process per step would only add its start-up (~3 s each)
    # to every run of a backfill.
    monkeypatch.delenv("PIPELINE_STEP_EXECUTOR", raising=False)
    assert build_definitions().executor is in_process_executor


def test_multiprocess_executor_can_be_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_STEP_EXECUTOR", " Multiprocess ")
    assert build_definitions().executor is multiprocess_executor


def test_freshness_factories_hide_only_their_supersession_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dagster's "superseded" warning of the two freshness factories is hidden; any other warning
    raised while building them (here added around the real factories) gets through."""
    spec = configured_sources()["access"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        freshness_sensor(freshness_checks(spec), OperationsSettings())
    assert [warning.category for warning in caught] == []

    def warning_first(factory: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            warnings.warn(f"unrelated warning from {factory.__name__}", UserWarning, stacklevel=2)
            return factory(*args, **kwargs)

        return wrapped

    for name in ("build_time_partition_freshness_checks", "build_sensor_for_freshness_checks"):
        monkeypatch.setattr(jobs, name, warning_first(getattr(jobs, name)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        freshness_sensor(freshness_checks(spec), OperationsSettings())
    assert [str(warning.message) for warning in caught] == [
        "unrelated warning from build_time_partition_freshness_checks",
        "unrelated warning from build_sensor_for_freshness_checks",
    ]


def test_the_engine_and_the_sources_know_nothing_of_dagster() -> None:
    """The layering of docs/architecture.md: importing every module of `pipeline.engine` and
    `pipeline.sources` (in a fresh interpreter) imports no Dagster package."""
    code = (
        "import importlib, pkgutil, sys\n"
        "import pipeline.engine, pipeline.sources\n"
        "for package in (pipeline.engine, pipeline.sources):\n"
        "    for module in pkgutil.walk_packages(package.__path__, package.__name__ + '.'):\n"
        "        importlib.import_module(module.name)\n"
        "print(sorted({name.split('.')[0] for name in sys.modules if name.startswith('dagster')}))\n"
    )
    imported = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120)
    assert imported.stdout.strip() == "[]"
