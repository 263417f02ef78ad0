"""Definitions are proven before anything runs: every definition that could never work is refused.

Each refusal is a `SourceConfigError` whose message names the file, the source, the key and
the fix, so the YAML can be corrected without reading code. Also: `PIPELINE_SOURCES_FILE`
adds to the built-in sources, and presets merge as documented.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.sources import configured_catalog, load_sources
from pipeline.sources.catalog import load_catalog
from pipeline.sources.spec import DEFAULT_SOURCES_FILE, SourceConfigError

BASE = {
    "first_day": "2024-01-01",
    "format": "json",
    "timestamp": {"field": "timestamp", "from": "time", "format": "%Y-%m-%dT%H:%M:%S%#z"},
    "fields": {"level": {"type": "string"}, "status": {"type": "integer", "nullable": True}},
    "daily_metrics": {"records": "count(*)"},
}


def write(tmp_path: Path, sources: dict[str, object], name: str = "sources.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"sources": sources}, sort_keys=False), encoding="utf-8")
    return path


def refusal(tmp_path: Path, body: dict[str, object], name: str = "web") -> str:
    """The message refusing a file holding the one source `body`, checked to name the file and source."""
    path = write(tmp_path, {name: body})
    with pytest.raises(SourceConfigError) as caught:
        load_sources(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: source {name!r} is invalid: "), message
    return message


def changed(**changes: object) -> dict[str, object]:
    body = yaml.safe_load(yaml.safe_dump(BASE))
    for dotted, value in changes.items():
        target = body
        *parents, last = dotted.split("__")
        for parent in parents:
            target = target[parent]
        target[last] = value
    return body


def test_the_base_definition_loads(tmp_path):
    assert list(load_sources(write(tmp_path, {"web": BASE}))) == ["web"]


# -- timestamps ---------------------------------------------------------------------------


DIRECTIVES_LISTED = "unknown or unsupported directive %Q; supported: "
PERCENT_F_HINT = (
    "%f reads the digits as nanoseconds (',747' would become 747 ns and the milliseconds would be lost); "
    "use %3f for milliseconds, %6f for microseconds, %9f for nanoseconds"
)


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        pytest.param(
            "%Y-%m-%d %H:%M:%S%Q",
            f"timestamp.format: Value error, timestamp format '%Y-%m-%d %H:%M:%S%Q': {DIRECTIVES_LISTED}",
            id="unknown-directive",
        ),
        pytest.param("%Y-%m-%d %H:%M:%S,%f", PERCENT_F_HINT, id="percent-f"),
        pytest.param(
            "%Y-%m-%d %H:%M:%S %Z", "%Z reads a zone name (CET, EST) and ignores it; use %z or %#z", id="zone"
        ),
        pytest.param("%Y-%W %H:%M:%S", "week numbers (%U %W %V %G %g) are not parsed reliably", id="week-number"),
        pytest.param("%Y-%m-%d %H", "format '%Y-%m-%d %H' is refused by polars: Invalid format string", id="polars"),
        pytest.param("2024-01-01", "timestamp format '2024-01-01' has no % directives", id="no-directive"),
        pytest.param("%Y-%m-%d %", "unknown or unsupported '%' at its end", id="trailing-percent"),
    ],
)
def test_unusable_timestamp_format_is_refused_with_the_fix(tmp_path, fmt, expected):
    assert expected in refusal(tmp_path, changed(timestamp__format=fmt))


def test_format_without_a_year_needs_the_partition_year(tmp_path):
    message = refusal(tmp_path, changed(timestamp__format="%b %d %H:%M:%S"))
    assert "timestamp format '%b %d %H:%M:%S' has no year (%Y, %y, ...): add the year to the format, or set " \
           "`year: partition` to take it from the partition's data date" in message  # fmt: skip
    # With `year: partition` it loads; a format list may mix formats with and without a year.
    body = changed(timestamp__format=["%b %d %H:%M:%S", "%Y-%m-%dT%H:%M:%S%#z"], timestamp__year="partition")
    assert load_sources(write(tmp_path, {"web": body}))["web"].timestamp.year == "partition"


def test_partition_year_with_formats_that_all_have_a_year_is_refused(tmp_path):
    message = refusal(tmp_path, changed(timestamp__year="partition"))
    assert "`year: partition` applies to formats without a year; every format here has one" in message


def test_timestamp_field_format_without_year_is_refused(tmp_path):
    body = changed(fields__seen={"type": "timestamp", "format": "%d/%m %H:%M"})
    assert "fields.seen.format: '%d/%m %H:%M' has no year (%Y, %y, ...)" in refusal(tmp_path, body)
    body = changed(fields__level={"type": "string", "format": "%Y"})
    assert "fields.level: Value error, `format` applies to timestamp fields; this one is string" in refusal(
        tmp_path, body
    )


# -- metric SQL ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "duckdb_says"),
    [
        pytest.param("sum(stauts)", 'Binder Error: Referenced column "stauts" not found', id="unknown-column"),
        pytest.param("count(", "Parser Error: syntax error", id="syntax-error"),
        pytest.param("status", 'column "status" must appear in the GROUP BY clause', id="not-an-aggregate"),
        pytest.param("count(*) FROM other --", "Parser Error: syntax error", id="a-from-clause"),
        pytest.param("count(*); DROP TABLE x", "syntax error", id="two-statements"),
        pytest.param(
            "no_such_function(level)", "Catalog Error: Scalar Function with name no_such_function", id="function"
        ),
    ],
)
def test_metric_sql_that_does_not_bind_is_refused(tmp_path, expression, duckdb_says):
    message = refusal(tmp_path, changed(daily_metrics={"records": "count(*)", "bad": expression}))
    assert f"daily_metrics.bad: {expression!r} does not bind against the events columns: " in message
    assert duckdb_says in message
    # The fix: what to write and which columns exist, with their types.
    assert "Write one aggregate SQL expression (e.g. count(*), sum(bytes)) over: partition_date DATE, " \
           "source_file VARCHAR, line_number BIGINT, timestamp TIMESTAMPTZ, level VARCHAR, status BIGINT, " \
           "run_id VARCHAR" in message  # fmt: skip


def test_metrics_bind_against_every_column_type(tmp_path):
    body = changed(
        fields__ratio={"type": "float", "nullable": True},
        fields__seen={"type": "timestamp", "nullable": True},
        daily_metrics={"a": "max(seen) - min(timestamp)", "b": "avg(ratio)", "c": "histogram(level)",
                       "d": "count(DISTINCT source_file)", "e": "max(line_number) FILTER (WHERE run_id IS NOT NULL)"},
    )  # fmt: skip
    assert set(load_sources(write(tmp_path, {"web": body}))["web"].daily_metrics) == set("abcde")


def test_metric_named_partition_date_is_refused(tmp_path):
    assert "daily metric name 'partition_date'" in refusal(
        tmp_path, changed(daily_metrics={"partition_date": "count(*)"})
    )


# -- unknown keys (typos) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            changed(patern="x"),
            "patern: Extra inputs are not permitted (unknown key 'patern': did you mean 'pattern'? keys here: ",
            id="source-key",
        ),
        pytest.param(
            changed(fields__level={"type": "string", "nulable": True}),
            "fields.level.nulable: Extra inputs are not permitted (unknown key 'nulable': did you mean 'nullable'? "
            "keys here: checks, format, from, ",
            id="field-key",
        ),
        pytest.param(
            changed(timestamp__timzone="UTC"),
            "timestamp.timzone: Extra inputs are not permitted (unknown key 'timzone': did you mean 'timezone'?",
            id="timestamp-key",
        ),
        pytest.param(
            changed(format={"type": "delimited", "seperator": ",", "columns": ["time", "level", "status"]}),
            "format.seperator: Extra inputs are not permitted (unknown key 'seperator': did you mean 'separator'?",
            id="format-key",
        ),
        pytest.param(
            changed(format={"type": "xml"}),
            "format: Input tag 'xml' found using 'type' does not match any of the expected tags: 'regex', 'json', "
            "'logfmt', 'syslog', 'delimited'",
            id="format-type",
        ),
    ],
)
def test_unknown_key_is_refused_with_the_closest_known_key(tmp_path, body, expected):
    assert expected in refusal(tmp_path, body)


def test_unknown_top_level_key_is_refused(tmp_path):
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump({"sources": {"web": BASE}, "source": {}}))
    with pytest.raises(SourceConfigError, match=r"unknown top-level key 'source'; the file holds one key, 'sources'"):
        load_sources(path)


# -- what the format can fill -------------------------------------------------------------


SYSLOG = {"format": {"type": "syslog", "rfc": 3164}, "timestamp": {"field": "timestamp", "format": "%b %d %H:%M:%S",
          "year": "partition"}}  # fmt: skip
REGEX = r"^(?P<timestamp>\S+) (?P<level>\S+) (?P<status>\d+)$"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            {**changed(**SYSLOG), "fields": {"hostname": {"type": "integer"}}},
            "fields.hostname.type: 'hostname' of a syslog format can be read as string, not integer; change the type",
            id="syslog-text-part-as-integer",
        ),
        pytest.param(
            {**changed(**SYSLOG), "fields": {"pid": {}}},
            "fields.pid.from: RFC 3164 syslog has no part 'pid'; parts: priority, facility, severity, timestamp, "
            "hostname, app_name, procid, message",
            id="syslog-unknown-part",
        ),
        pytest.param(
            changed(format={"type": "delimited", "columns": ["time", "level"]}),
            "fields.status.from: 'status' is not one of the columns ['time', 'level']",
            id="delimited-column",
        ),
        pytest.param(
            changed(fields__level={"from": "/log~2level"}),
            "fields.level.from: JSON pointer '/log~2level' has a '~' not followed by 0 or 1",
            id="json-pointer",
        ),
        pytest.param(
            changed(fields__level={"from": "log..level"}),
            "fields.level.from: 'log..level' is not a dotted path (empty part)",
            id="json-dotted-path",
        ),
        pytest.param(
            changed(format="logfmt", fields__level={"from": "a=b"}),
            "fields.level.from: 'a=b' cannot be a logfmt key",
            id="logfmt-key",
        ),
        pytest.param(
            changed(format="regex", pattern=REGEX),
            "timestamp.from: a regex source reads each field from the named group of the same name",
            id="regex-from",
        ),
        pytest.param(changed(format="regex"), "a regex source needs `pattern`", id="regex-without-pattern"),
        pytest.param(changed(pattern="^x$"), "`pattern` applies to the regex format only", id="pattern-with-json"),
        pytest.param(
            changed(format={"type": "delimited", "columns": ["a"], "header": "#Fields:"}),
            "declare either `columns` (the column names, in order) or `header`",
            id="columns-and-header",
        ),
        pytest.param(
            changed(format={"type": "delimited", "separator": "||", "header": "#Fields:"}),
            "separator must be one character other than a line break",
            id="separator",
        ),
        pytest.param(
            changed(format={"type": "delimited", "brackets": "[", "header": "#Fields:"}),
            "brackets must be two different characters (open, close)",
            id="brackets",
        ),
        pytest.param(
            changed(fields__Level={"type": "string"}),
            "field name 'Level' must match ^[a-z][a-z0-9_]{0,62}$ (it becomes a column); rename it and set "
            "`from` to the name in the record",
            id="field-name",
        ),
    ],
)
def test_field_the_format_cannot_fill_is_refused(tmp_path, body, expected):
    assert expected in refusal(tmp_path, body)


# -- names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["main", "memory", "system", "temp", "information_schema", "pg_catalog", "lake", "loads", "manifests"]
)
def test_reserved_source_names_are_refused(tmp_path, name):
    message = refusal(tmp_path, BASE, name=name)
    assert f"source name {name!r} is reserved (it names a DuckDB catalog or schema, or a folder of the lake or " \
           "output store: " in message and "choose another name" in message  # fmt: skip


def test_names_starting_with_an_underscore_are_refused(tmp_path):
    assert "source name '_delta_log' must match ^[a-z][a-z0-9_]{0,62}$" in refusal(tmp_path, BASE, name="_delta_log")


# -- PIPELINE_SOURCES_FILE adds to the built-in sources -------------------------------------


def test_sources_file_adds_to_the_built_in_sources(tmp_path, monkeypatch):
    path = write(tmp_path, {"web": BASE})
    monkeypatch.setenv("PIPELINE_SOURCES_FILE", str(path))
    catalog = configured_catalog()
    assert list(catalog.specs) == ["access", "app", "web"]
    assert catalog.origins == {"access": DEFAULT_SOURCES_FILE, "app": DEFAULT_SOURCES_FILE, "web": path}


def test_a_built_in_name_is_refused_unless_the_entry_replaces_it(tmp_path):
    access = yaml.safe_load(DEFAULT_SOURCES_FILE.read_text())["sources"]["access"]
    path = write(tmp_path, {"access": {**access, "error_budget": 0.05}})
    with pytest.raises(SourceConfigError) as caught:
        load_catalog(path)
    assert str(caught.value) == (
        f"{path}: source 'access' is invalid: a built-in source has that name ({DEFAULT_SOURCES_FILE}); set "
        "`replaces: true` in this entry to replace it, or rename it"
    )
    path = write(tmp_path, {"access": {**access, "error_budget": 0.05, "replaces": True}})
    catalog = load_catalog(path)
    assert catalog.specs["access"].error_budget == 0.05 and catalog.origins["access"] == path


def test_replaces_without_a_built_in_source_of_that_name_is_refused(tmp_path):
    path = write(tmp_path, {"web": {**BASE, "replaces": True}})
    with pytest.raises(SourceConfigError, match=r"replaces: there is no built-in source 'web' to replace \(built-in: "
                       r"access, app\); remove `replaces`"):  # fmt: skip
        load_catalog(path)


# -- presets -----------------------------------------------------------------------------


def test_unknown_preset_is_refused_with_the_closest(tmp_path):
    message = refusal(tmp_path, {"preset": "syslog_rfc3146", "first_day": "2024-01-01"})
    assert (
        "preset: unknown preset 'syslog_rfc3146' (did you mean 'syslog_rfc3164'?); presets: apache_combined, "
        in message
    )


def test_preset_overrides_merge_by_field_and_by_key(tmp_path):
    # fields merge by name (null removes one), timestamp and format merge key by key, other
    # keys replace the preset's.
    body = {
        "preset": "json",
        "first_day": "2024-01-01",
        "timestamp": {"from": "ts"},
        "fields": {"message": None, "logger": {"from": "log.logger"}},
        "daily_metrics": {"records": "count(*)"},
    }
    spec = load_sources(write(tmp_path, {"web": body}))["web"]
    assert (spec.preset, spec.timestamp.from_, spec.timestamp.format) == ("json", "ts", "%Y-%m-%dT%H:%M:%S%.f%#z")
    assert list(spec.fields) == ["level", "logger"]
    assert spec.daily_metrics == {"records": "count(*)"}
    assert "fields.nosuch: null removes a field of the preset, and 'json' has none named so" in refusal(
        tmp_path, {"preset": "json", "first_day": "2024-01-01", "fields": {"nosuch": None}}
    )
