"""Presets: named source definitions (`presets.yaml`) a source can build on with `preset: NAME`.

Merging is shallow and predictable: a key the source sets replaces the preset's, except
`fields` (merged by field name: a field the source declares replaces the preset's definition
of it, and `NAME: null` removes it), `timestamp` and `format` (merged key by key, so
`timestamp: {from: ts}` changes only where the time is read).
"""

from __future__ import annotations

import copy
import difflib
from functools import cache
from pathlib import Path
from typing import Any

import yaml

PRESETS_FILE = Path(__file__).with_name("presets.yaml")
_MERGED_BY_KEY = ("timestamp", "format")


@cache
def presets() -> dict[str, dict[str, Any]]:
    """Every preset by name, as written in `presets.yaml`."""
    document = yaml.safe_load(PRESETS_FILE.read_text(encoding="utf-8"))
    return document["presets"]


def apply_preset(body: dict[str, Any]) -> dict[str, Any]:
    """`body` with its `preset` (if any) filled in underneath; raises `ValueError` for an
    unknown preset or a malformed override."""
    name = body.get("preset")
    if name is None:
        return body
    known = presets()
    if not isinstance(name, str) or name not in known:
        close = difflib.get_close_matches(str(name), known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"preset: unknown preset {name!r}{hint}; presets: {', '.join(sorted(known))}")
    merged = copy.deepcopy(known[name])
    for key, value in body.items():
        if key == "fields" and isinstance(value, dict):
            fields = merged.setdefault("fields", {})
            for field, definition in value.items():
                if definition is None:
                    if field not in fields:
                        raise ValueError(
                            f"fields.{field}: null removes a field of the preset, and {name!r} has none named so"
                        )
                    del fields[field]
                else:
                    fields[field] = definition
        elif key in _MERGED_BY_KEY and isinstance(value, dict | str):
            merged[key] = _merge_mapping(key, merged.get(key), value)
        else:
            merged[key] = value
    merged["preset"] = name
    return merged


def _merge_mapping(key: str, base: object, override: dict[str, Any] | str) -> object:
    if key == "format" and isinstance(override, str):
        override = {"type": override}
    if key == "format" and isinstance(base, str):
        base = {"type": base}
    if not isinstance(base, dict) or not isinstance(override, dict):
        return override
    if key == "format" and override.get("type", base.get("type")) != base.get("type"):
        return override  # another format altogether: none of the preset's options apply
    return {**base, **override}
