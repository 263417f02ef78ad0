"""Deployment settings from environment variables, with embedded local defaults.

Relative paths are resolved against the project root, so a fresh clone works from any
working directory without touching anything outside the project.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

DEFAULTS = {
    "PIPELINE_LANDING_URL": "data/landing",
    "PIPELINE_OUTPUT_URL": "data/output",
    "PIPELINE_LAKE_URL": "data/lake",
}
# Settings of earlier builds that now mean something else: refused with what to use instead,
# rather than ignored (a deployment still setting one would quietly write somewhere new).
RETIRED = {
    "PIPELINE_WAREHOUSE": "the single DuckDB file is gone: the tables are Delta tables under PIPELINE_LAKE_URL "
    "(default data/lake, or s3://bucket/prefix); unset PIPELINE_WAREHOUSE (README, 'Tables')",
}


class SettingsError(ValueError):
    """A setting is present but unusable; the message names the variable."""


def env_number(
    environ: Mapping[str, str], name: str, default: float, minimum: float, maximum: float = math.inf
) -> float:
    """A numeric setting: `default` when unset or blank; a present but unusable value is an
    error naming the variable (never silently replaced by the default)."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a number") from None
    if not minimum <= value <= maximum:
        expected = f"at least {minimum:g}" if math.isinf(maximum) else f"a value between {minimum:g} and {maximum:g}"
        raise SettingsError(f"{name}={raw!r}: expected {expected}")
    return value


def resolve_local(value: str) -> Path:
    """A local path setting, relative ones taken from the project root."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path


@dataclass(frozen=True)
class Settings:
    """Where raw files land, where objects are written, and where the lake's tables are."""

    landing_url: str
    output_url: str
    lake_url: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read `PIPELINE_*` variables, falling back to the local defaults."""
        env = os.environ if environ is None else environ
        for name, why in RETIRED.items():
            if env.get(name, "").strip():
                raise SettingsError(f"{name} is no longer used: {why}")
        values = {name: env.get(name, "").strip() or default for name, default in DEFAULTS.items()}
        return cls(
            landing_url=values["PIPELINE_LANDING_URL"],
            output_url=values["PIPELINE_OUTPUT_URL"],
            lake_url=values["PIPELINE_LAKE_URL"],
        )
