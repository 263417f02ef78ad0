"""Source definitions: each log source is data (a line format plus a schema)."""

from __future__ import annotations

import os

from pipeline.settings import resolve_local
from pipeline.sources.catalog import Catalog, load_catalog
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
    "Catalog",
    "FieldSpec",
    "SourceConfigError",
    "SourceSpec",
    "TimestampSpec",
    "configured_catalog",
    "configured_sources",
    "load_sources",
]


def configured_catalog() -> Catalog:
    """The sources of this deployment and where each is defined: the built-in ones plus those
    of `PIPELINE_SOURCES_FILE` if set (a relative path is taken from the project root, like
    every local path setting)."""
    extra = os.environ.get("PIPELINE_SOURCES_FILE")
    return load_catalog(resolve_local(extra) if extra else None)


def configured_sources() -> dict[str, SourceSpec]:
    """The sources of this deployment (see `configured_catalog`)."""
    return configured_catalog().specs
