"""Shared fixtures: an isolated landing zone, output store, lake and Dagster instance."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest
from dagster import DagsterInstance, Definitions, ExecuteInProcessResult, instance_for_test

PROJECT_ROOT = Path(__file__).resolve().parent.parent
REAL_LOGS = PROJECT_ROOT.parent / "shared" / "real-logs"
IN_CI = os.environ.get("CI", "").lower() == "true"


def require_real_logs() -> Path:
    """The real log samples; skipped with a reason on a user's clone, a failure in CI."""
    if not REAL_LOGS.is_dir():
        message = f"real log samples not found at {REAL_LOGS} (they live beside the project, in ../shared)"
        if IN_CI:
            pytest.fail(message + "; CI must provide them")
        pytest.skip(message)
    return REAL_LOGS


class LakeReader:
    """Queries over a deployment's lake; `connect()` says how it is reached."""

    def connect(self) -> duckdb.DuckDBPyConnection:
        raise NotImplementedError

    def query(self, sql: str, parameters: list[object] | None = None) -> list[tuple[object, ...]]:
        """Run a query over the lake."""
        with self.connect() as connection:
            return connection.execute(sql, parameters or []).fetchall()

    def attempts(self, source: str, partition_day: str | None = None) -> list[dict[str, object]]:
        """The `loads` rows of a source (of one day), oldest first."""
        where = f" WHERE partition_date = '{partition_day}'" if partition_day else ""
        with self.connect() as connection:
            cursor = connection.execute(f"SELECT * FROM {source}.loads{where} ORDER BY partition_date, attempt")
            names = [column[0] for column in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


@dataclass
class PipelineEnv(LakeReader):
    """Paths of one isolated pipeline deployment."""

    landing: Path
    output: Path
    lake: Path

    def definitions(self) -> Definitions:
        """Definitions built from the environment this fixture set."""
        from pipeline.definitions import build_definitions

        return build_definitions()

    def connect(self) -> duckdb.DuckDBPyConnection:
        """The lake of the current `PIPELINE_*` settings, the documented way (`pipeline.query.connect`)."""
        from pipeline.query import connect

        return connect()

    def manifest(self, source: str, day: str) -> dict[str, object]:
        """The stats manifest of a partition."""
        return json.loads((self.output / "manifests" / source / f"{day}.json").read_text())


@pytest.fixture
def pipeline_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PipelineEnv:
    """Point every PIPELINE_* setting at a fresh temporary folder."""
    env = PipelineEnv(tmp_path / "landing", tmp_path / "output", tmp_path / "lake")
    env.landing.mkdir()
    monkeypatch.setenv("PIPELINE_LANDING_URL", str(env.landing))
    monkeypatch.setenv("PIPELINE_OUTPUT_URL", str(env.output))
    monkeypatch.setenv("PIPELINE_LAKE_URL", str(env.lake))
    monkeypatch.delenv("PIPELINE_WAREHOUSE", raising=False)
    monkeypatch.delenv("PIPELINE_SOURCES_FILE", raising=False)
    return env


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    """A throwaway Dagster instance with real (sqlite) storage."""
    with instance_for_test() as test_instance:
        yield test_instance


def materialize_range(
    defs: Definitions,
    instance: DagsterInstance,
    start: str,
    end: str | None = None,
    selection: list[str] | None = None,
    raise_on_error: bool = True,
) -> ExecuteInProcessResult:
    """Materialize `selection` (default: all assets) for the days start..end in one run,
    exactly as `dagster asset materialize --partition-range` does."""
    from dagster import AssetKey

    job = defs.resolve_implicit_global_asset_job_def()
    # The selection is recorded on the run, as for a UI or CLI launch (the notifications and the
    # run-failure metrics name the run's sources from it); a job subset would not record it.
    keys = [AssetKey.from_user_string(key) for key in selection] if selection is not None else None
    return job.execute_in_process(
        instance=instance,
        asset_selection=keys,
        tags={"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end or start},
        raise_on_error=raise_on_error,
    )


def day(text: str) -> dt.date:
    """Shorthand for a date literal."""
    return dt.date.fromisoformat(text)
