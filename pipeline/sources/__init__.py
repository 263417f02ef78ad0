"""Source definitions: each log source is data (a line format plus a schema)."""

from __future__ import annotations

import os

from pipeline.settings import resolve_local
from pipeline.sources.spec import (
    DEFAULT_SOURCES_FILE,
    FieldSpec,
    SourceConfigError,
    SourceSpec,
    TimestampSpec,
    load_sources,
)

__all__ = [
    "DEFAULT_SOURCES_FILE",
    "FieldSpec",
    "SourceConfigError",
    "SourceSpec",
    "TimestampSpec",
    "configured_sources",
    "load_sources",
]


def configured_sources() -> dict[str, SourceSpec]:
    """The sources of this deployment: `PIPELINE_SOURCES_FILE` if set (a relative path is
    taken from the project root, like every local path setting), else the built-in file."""
    override = os.environ.get("PIPELINE_SOURCES_FILE")
    return load_sources(resolve_local(override) if override else DEFAULT_SOURCES_FILE)
