"""The version of a source definition: a short hash of what decides its rows.

Recorded on every `loads` row and used as the assets' `code_version`, so the Dagster UI
shows which days were loaded under an older definition, and a retry only skips a day loaded
from the same files under the same definition.
"""

from __future__ import annotations

import hashlib
import json

from pipeline.sources.spec import SourceSpec

# Keys that describe a source (the catalog's owners and tags too), or judge it, without changing
# a single row or verdict of the quarantine check (`volume` only shapes a warning).
_NOT_VERSIONED = frozenset({"description", "first_day", "owners", "preset", "replaces", "tags", "volume"})
VERSION_CHARS = 12


def definition_version(spec: SourceSpec) -> str:
    """A stable hash of the definition's parsing, schema, budget and metrics."""
    document = {key: value for key, value in spec.model_dump(mode="json").items() if key not in _NOT_VERSIONED}
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:VERSION_CHARS]
