"""Reading sources files, and the deployment's catalog: built-in sources plus the user's file.

`PIPELINE_SOURCES_FILE` *adds* sources to the built-in ones (`sources.yaml` in this package);
an entry named like a built-in source is refused unless it says `replaces: true`. The
catalog remembers which file each source came from (`pipeline sources list`).

Every refusal is a `SourceConfigError` naming the file, the source, the key and the fix; an
unknown key (a typo) is answered with the closest known key.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pipeline.sources.formats import FORMAT_TYPES, format_keys
from pipeline.sources.presets import apply_preset
from pipeline.sources.spec import DEFAULT_SOURCES_FILE, FieldSpec, SourceConfigError, SourceSpec, TimestampSpec


@dataclass(frozen=True)
class Catalog:
    """The sources of a deployment and the file each was read from."""

    specs: dict[str, SourceSpec]
    origins: dict[str, Path]


def _keys(model: type) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}  # type: ignore[attr-defined]


SOURCE_KEYS = _keys(SourceSpec) - {"name"}
FIELD_KEYS = _keys(FieldSpec)
TIMESTAMP_KEYS = _keys(TimestampSpec)


def read_source_file(path: Path) -> dict[str, SourceSpec]:
    """Read and validate every source declared in `path` (presets applied)."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise SourceConfigError(f"cannot read source definitions from {path}: {error}") from error
    if not isinstance(document, dict) or not isinstance(document.get("sources"), dict):
        raise SourceConfigError(f"{path}: expected a mapping with a 'sources' key")
    unknown = sorted(str(key) for key in document if key != "sources")
    if unknown:
        raise SourceConfigError(f"{path}: unknown top-level key {unknown[0]!r}; the file holds one key, 'sources'")
    specs: dict[str, SourceSpec] = {}
    for name, body in document["sources"].items():
        if not isinstance(body, dict):
            raise SourceConfigError(f"{path}: source {name!r} must be a mapping")
        try:
            resolved = apply_preset(body)
        except ValueError as error:
            raise SourceConfigError(f"{path}: source {name!r} is invalid: {error}") from None
        try:
            specs[name] = SourceSpec(name=name, **resolved)
        except ValidationError as error:
            problems = "; ".join(_describe(issue, resolved) for issue in error.errors())
            raise SourceConfigError(f"{path}: source {name!r} is invalid: {problems}") from None
        except TypeError as error:  # a key that is not a string, e.g. `1: x`
            raise SourceConfigError(f"{path}: source {name!r} is invalid: {error}") from None
    if not specs:
        raise SourceConfigError(f"{path}: no sources declared")
    return specs


def _describe(issue: Mapping[str, Any], body: Mapping[str, Any]) -> str:
    """One pydantic error as `key.path: message`, with a hint for an unknown key."""
    location = [str(part) for part in issue["loc"]]
    if len(location) > 1 and location[0] == "format" and location[1] in FORMAT_TYPES:
        location.pop(1)  # the discriminator pydantic adds: `format.json.x` is written `format.x`
    text = f"{'.'.join(location) or 'source'}: {issue['msg']}"
    if issue["type"] == "extra_forbidden":
        text += _unknown_key_hint(location, body)
    return text


def _unknown_key_hint(location: list[str], body: Mapping[str, Any]) -> str:
    key, parent = location[-1], location[:-1]
    if not parent:
        known = SOURCE_KEYS
    elif parent[0] == "fields" and len(parent) == 2:
        known = FIELD_KEYS
    elif parent == ["timestamp"]:
        known = TIMESTAMP_KEYS
    elif parent == ["format"]:
        declared = body.get("format")
        known = format_keys(declared.get("type", "") if isinstance(declared, dict) else str(declared))
    else:
        return ""
    close = difflib.get_close_matches(key, known, n=1)
    guess = f"did you mean {close[0]!r}? " if close else ""
    return f" (unknown key {key!r}: {guess}keys here: {', '.join(sorted(known))})"


def load_catalog(extra: Path | None = None) -> Catalog:
    """The built-in sources plus those of `extra` (a `PIPELINE_SOURCES_FILE`), checked against
    each other. (No storage name can collide with a source's: the lake keeps each source in its
    own folder, and `pipeline query` names its in-memory database `memory`, a reserved name.)"""
    specs = read_source_file(DEFAULT_SOURCES_FILE)
    origins = dict.fromkeys(specs, DEFAULT_SOURCES_FILE)
    if extra is not None and extra.resolve() != DEFAULT_SOURCES_FILE.resolve():
        builtin = set(specs)
        for name, spec in read_source_file(extra).items():
            if name in builtin and not spec.replaces:
                raise SourceConfigError(
                    f"{extra}: source {name!r} is invalid: a built-in source has that name "
                    f"({DEFAULT_SOURCES_FILE}); set `replaces: true` in this entry to replace it, or rename it"
                )
            if spec.replaces and name not in builtin:
                raise SourceConfigError(
                    f"{extra}: source {name!r} is invalid: replaces: there is no built-in source {name!r} to "
                    f"replace (built-in: {', '.join(sorted(builtin))}); remove `replaces`"
                )
            specs[name], origins[name] = spec, extra
    return Catalog(specs, origins)
