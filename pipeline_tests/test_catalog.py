"""What the Dagster catalog says about each source's assets, as an operator reads it: owners and
tags from the sources file, the events' column schema (types, nullability, checks as
constraints), the table names, and the definition's version as `code_version`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, TableColumn, TableColumnConstraints

from pipeline.definitions import build_definitions
from pipeline.sources import configured_sources
from pipeline.sources.spec import SourceConfigError, load_sources
from pipeline.sources.version import definition_version

WEB = {
    "first_day": "2024-01-01",
    "owners": ["oncall@example.com", "team:edge"],
    "tags": {"domain": "edge", "tier": "1"},
    "format": "json",
    "timestamp": {"field": "timestamp", "from": "time", "format": "%Y-%m-%dT%H:%M:%S%#z"},
    "fields": {"status": {"type": "integer", "nullable": True, "checks": {"in_range": [100, 599]}}},
    "daily_metrics": {"records": "count(*)"},
}


def write(tmp_path: Path, sources: dict[str, object]) -> Path:
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump({"sources": sources}, sort_keys=False), encoding="utf-8")
    return path


def specs_by_key(monkeypatch: pytest.MonkeyPatch, sources_file: Path | None = None) -> dict[AssetKey, object]:
    if sources_file is None:
        monkeypatch.delenv("PIPELINE_SOURCES_FILE", raising=False)
    else:
        monkeypatch.setenv("PIPELINE_SOURCES_FILE", str(sources_file))
    return {spec.key: spec for spec in build_definitions().resolve_all_asset_specs()}


def test_built_in_sources_declare_owners_and_tags_that_reach_every_asset(monkeypatch: pytest.MonkeyPatch) -> None:
    specs = specs_by_key(monkeypatch)
    expected = {
        "access": (["team:web-platform"], {"domain": "web", "format": "apache_combined"}),
        "app": (["team:app-platform"], {"domain": "application", "format": "python_logging"}),
    }
    for source, (owners, tags) in expected.items():
        for table in ("events", "dlq", "daily_metrics"):
            spec = specs[AssetKey([source, table])]
            assert list(spec.owners) == owners, (source, table)
            user_tags = {key: value for key, value in spec.tags.items() if not key.startswith("dagster/")}
            assert user_tags == tags, (source, table)
            assert spec.metadata["dagster/table_name"] == f"{source}.{table}"
            assert spec.code_version == definition_version(configured_sources()[source])


def test_a_declared_sources_owners_tags_and_column_schema_reach_its_assets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    specs = specs_by_key(monkeypatch, write(tmp_path, {"web": WEB}))
    events = specs[AssetKey(["web", "events"])]
    assert list(events.owners) == ["oncall@example.com", "team:edge"]
    assert {key: value for key, value in events.tags.items() if not key.startswith("dagster/")} == {
        "domain": "edge",
        "tier": "1",
    }
    columns = {column.name: column for column in events.metadata["dagster/column_schema"].columns}
    assert list(columns) == ["partition_date", "source_file", "line_number", "timestamp", "status", "run_id"]
    assert columns["status"] == TableColumn(
        "status", "int", constraints=TableColumnConstraints(nullable=True, other=["in_range [100, 599]"])
    )
    assert columns["partition_date"].type == "date" and columns["partition_date"].constraints.nullable is False
    assert columns["timestamp"].type == "timestamp" and columns["timestamp"].constraints.nullable is False
    assert columns["timestamp"].constraints.other == ["within the day ± 60 min"]


def test_owners_and_tags_change_no_definition_version(tmp_path: Path) -> None:
    """Catalog keys change no row: a day loaded before they were added is not 'loaded under an older definition'."""
    bare = {key: value for key, value in WEB.items() if key not in ("owners", "tags")}
    (with_catalog,) = load_sources(write(tmp_path, {"web": WEB})).values()
    (without,) = load_sources(write(tmp_path, {"web": bare})).values()
    assert definition_version(with_catalog) == definition_version(without)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("owners", ["edge team"], "owner 'edge team' must be an email address or a team name written `team:NAME`"),
        ("tags", {"tier": "one two"}, "tag tier: value 'one two': letters, digits, `_`, `-`, `.`, up to 63 of them"),
        ("tags", {"dagster/kind": "x"}, "tag key 'dagster/kind': letters, digits"),
    ],
)
def test_owners_and_tags_dagster_would_refuse_are_refused_when_read(
    tmp_path: Path, key: str, value: object, message: str
) -> None:
    path = write(tmp_path, {"web": {**WEB, key: value}})
    with pytest.raises(SourceConfigError) as caught:
        load_sources(path)
    assert str(caught.value).startswith(f"{path}: source 'web' is invalid: ")
    assert message in str(caught.value)


def test_dlq_and_daily_metrics_have_column_schemas_and_the_metrics_column_lineage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    specs = specs_by_key(monkeypatch)
    dlq = specs[AssetKey(["access", "dlq"])].metadata["dagster/column_schema"]
    assert [(column.name, column.type, column.constraints.nullable) for column in dlq.columns] == [
        ("partition_date", "date", False),
        ("source_file", "string", False),
        ("line_number", "int", False),
        ("raw_line", "string", False),
        ("raw_bytes", "binary", True),
        ("reasons", "list<struct<field: string, check: string, value: string>>", False),
        ("reason", "string", False),
        ("run_id", "string", False),
        ("quarantined_at", "timestamp", False),
    ]
    metrics = specs[AssetKey(["access", "daily_metrics"])]
    columns = {column.name: column for column in metrics.metadata["dagster/column_schema"].columns}
    assert list(columns) == ["partition_date", *configured_sources()["access"].daily_metrics, "run_id"]
    assert (columns["requests"].type, columns["requests"].description) == ("int", "count(*)")
    assert (columns["first_event_at"].type, columns["server_error_share"].type) == ("timestamp", "float")
    events = AssetKey(["access", "events"])
    lineage = {
        metric: [(dep.asset_key, dep.column_name) for dep in deps]
        for metric, deps in metrics.metadata["dagster/column_lineage"].deps_by_column.items()
    }
    # `count(*)` reads no column; the others read exactly what their SQL names.
    assert lineage == {
        **{name: [(events, "status")] for name in ("status_2xx", "status_3xx", "status_4xx", "status_5xx")},
        "server_error_share": [(events, "status")],
        "bytes_sent": [(events, "bytes")],
        "distinct_clients": [(events, "client")],
        "first_event_at": [(events, "timestamp")],
        "last_event_at": [(events, "timestamp")],
    }


def test_a_column_named_only_in_a_string_is_not_lineage() -> None:
    from pipeline.sources.metrics import metric_columns

    reads = metric_columns(
        "timestamp",
        {"level": "string", "status": "integer"},
        {"errors": "count(*) FILTER (WHERE level = 'status')", "both": "sum(status) + count(DISTINCT level)"},
    )
    assert reads == {"errors": ["level"], "both": ["level", "status"]}
