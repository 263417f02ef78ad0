"""How the code location runs its steps, as loaded from the environment."""

from __future__ import annotations

import pytest
from dagster import in_process_executor, multiprocess_executor

from pipeline.definitions import build_definitions


def test_steps_run_in_the_run_worker_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    # A run is one step per source: a process per step would only add its start-up (~3 s each)
    # to every run of a backfill.
    monkeypatch.delenv("PIPELINE_STEP_EXECUTOR", raising=False)
    assert build_definitions().executor is in_process_executor


def test_multiprocess_executor_can_be_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_STEP_EXECUTOR", " Multiprocess ")
    assert build_definitions().executor is multiprocess_executor
