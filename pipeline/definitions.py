"""The Dagster code location: `dagster ... -m pipeline.definitions` loads `defs`."""

from __future__ import annotations

from dagster import Definitions

from pipeline.orchestration.assets import build_source_assets
from pipeline.orchestration.resources import PipelineResource
from pipeline.settings import Settings
from pipeline.sources import configured_sources


def build_definitions() -> Definitions:
    """Assets and checks for every configured source, with settings from the environment."""
    assets = [asset for spec in configured_sources().values() for asset in build_source_assets(spec)]
    return Definitions(assets=assets, resources={"pipeline": PipelineResource.from_settings(Settings.from_env())})


defs = build_definitions()
