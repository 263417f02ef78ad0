"""Declaring log sources in YAML (pipeline.sources.spec.load_sources).

What a user relies on: the built-in file loads; a broken definition is refused up front with a
message naming the file, the source and the problem; and a new source needs only YAML.
"""

from __future__ import annotations

import copy
import datetime as dt
import io
import os
from pathlib import Path

import polars as pl
import pytest
import yaml

from pipeline.engine.parse import PartitionParser
from pipeline.engine.reader import iter_line_batches
from pipeline.sources.spec import DEFAULT_SOURCES_FILE, SourceConfigError, SourceSpec, load_sources

REAL_LOGS = Path(__file__).resolve().parents[2] / "shared" / "real-logs"


def real_log(relative: str) -> bytes:
    """Bytes of a file under ../shared/real-logs; skip when absent, but fail in CI (CI always has them)."""
    path = REAL_LOGS / relative
    if not path.is_file():
        message = f"real log file {path} not found (the shared real-logs folder sits beside the project)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}; CI=true, so it must be present")
        pytest.skip(message)
    return path.read_bytes()


def builtin_document() -> dict:
    return yaml.safe_load(DEFAULT_SOURCES_FILE.read_text(encoding="utf-8"))


def write_sources(tmp_path: Path, document: dict) -> Path:
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def app_variant(tmp_path: Path, change, name: str = "app") -> Path:
    """A sources file holding only the built-in `app` source, modified by `change(body)`, under `name`."""
    body = copy.deepcopy(builtin_document()["sources"]["app"])
    change(body)
    return write_sources(tmp_path, {"sources": {name: body}})


# -- the built-in file ---------------------------------------------------------------


def test_builtin_sources_load():
    # The shipped definitions are valid and declare exactly the two documented sources.
    specs = load_sources()
    assert set(specs) == {"access", "app"}
    assert all(isinstance(spec, SourceSpec) for spec in specs.values())
    assert specs["access"].multiline is False
    assert specs["app"].multiline is True
    assert specs["access"].columns[0] == "timestamp"
    assert specs["app"].columns == ["timestamp", "level", "logger", "message"]


# -- broken definitions --------------------------------------------------------------


def test_malformed_yaml_names_the_file_and_position(tmp_path):
    # A YAML syntax error is reported with the file and where the parser stopped, not a raw traceback.
    path = tmp_path / "sources.yaml"
    path.write_text("sources:\n  app:\n    pattern: [unclosed\n", encoding="utf-8")
    with pytest.raises(SourceConfigError) as caught:
        load_sources(path)
    message = str(caught.value)
    assert str(path) in message
    assert "cannot read source definitions" in message
    assert "line 3" in message


def test_missing_file_is_a_config_error(tmp_path):
    # Pointing at a file that does not exist is reported as a configuration problem.
    path = tmp_path / "nope.yaml"
    with pytest.raises(SourceConfigError, match="cannot read source definitions"):
        load_sources(path)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param("- just\n- a list\n", "expected a mapping with a 'sources' key", id="not-a-mapping"),
        pytest.param("sources: {}\n", "no sources declared", id="no-sources"),
        pytest.param("sources:\n  app: 3\n", "source 'app' must be a mapping", id="source-not-a-mapping"),
    ],
)
def test_wrong_document_shape_is_refused(tmp_path, text, problem):
    # The document's overall shape is checked before any source.
    path = tmp_path / "sources.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SourceConfigError) as caught:
        load_sources(path)
    assert str(path) in str(caught.value)
    assert problem in str(caught.value)


def _unknown_check(body):
    body["fields"]["level"]["checks"]["is_a_level"] = True


def _no_timestamp_group(body):
    body["pattern"] = body["pattern"].replace("?P<timestamp>", "?P<when>")


def _field_not_captured(body):
    body["fields"]["thread"] = {"type": "string"}


def _pattern_does_not_compile(body):
    body["pattern"] = "^(?P<timestamp>\\S+ (?P<level>"


def _range_with_one_bound(body):
    body["fields"]["level"]["checks"] = {"str_length": [1]}


def _unknown_type(body):
    body["fields"]["logger"]["type"] = "boolean"


def _unknown_key(body):
    body["colour"] = "blue"


def _reserved_column(body):
    body["pattern"] = body["pattern"].replace("?P<logger>", "?P<line_number>")
    body["fields"]["line_number"] = body["fields"].pop("logger")


def _no_metrics(body):
    body["daily_metrics"] = {}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        pytest.param(_unknown_check, "fields.level: Value error, unknown check 'is_a_level'", id="unknown-check"),
        pytest.param(
            _no_timestamp_group, "timestamp field 'timestamp' is not a named group of the pattern", id="no-ts-group"
        ),
        pytest.param(
            _field_not_captured,
            "fields ['thread'] are declared but not captured by the pattern",
            id="field-not-captured",
        ),
        pytest.param(_pattern_does_not_compile, "pattern: Value error, regular expression", id="bad-regex"),
        pytest.param(_range_with_one_bound, "check 'str_length' takes a list of two numbers", id="range-one-bound"),
        pytest.param(_unknown_type, "fields.logger.type: Input should be", id="unknown-type"),
        pytest.param(_unknown_key, "colour: Extra inputs are not permitted", id="unknown-key"),
        pytest.param(_reserved_column, "fields ['line_number'] clash with columns the pipeline adds", id="reserved"),
        pytest.param(_no_metrics, "declare at least one daily metric", id="no-metrics"),
    ],
)
def test_invalid_source_is_refused_naming_source_and_problem(tmp_path, change, problem):
    # A broken source is refused when definitions load (before any data is read) with a message that
    # names the file, the source and what is wrong, so the user can fix the YAML without reading code.
    path = app_variant(tmp_path, change, name="billing")
    with pytest.raises(SourceConfigError) as caught:
        load_sources(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: source 'billing' is invalid: ")
    assert problem in message


@pytest.mark.parametrize("name", ["../etc", "Access", "1st", "a-b", "a" * 64, ""])
def test_unsafe_source_name_is_refused(tmp_path, name):
    # The name becomes a DuckDB schema, an asset key and a path segment: path tricks and odd
    # characters are refused, and the message quotes the offending name.
    path = app_variant(tmp_path, lambda body: None, name=name)
    with pytest.raises(SourceConfigError) as caught:
        load_sources(path)
    message = str(caught.value)
    assert f"source {name!r} is invalid" in message
    assert f"source name {name!r} must match" in message


def _invalid_str_matches(body):
    body["fields"]["logger"]["checks"] = {"str_matches": "(unclosed"}


def _unknown_timezone(body):
    body["timestamp"]["timezone"] = "Mars/Olympus_Mons"


def _isin_not_a_list(body):
    # pandera reads the string as the set of its characters: every record is then quarantined.
    body["fields"]["level"]["checks"] = {"isin": "INFO"}


def _numeric_range_on_string_field(body):
    body["fields"]["level"]["checks"] = {"in_range": [1, 5]}


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(_invalid_str_matches, id="str_matches-regex-does-not-compile"),
        pytest.param(_unknown_timezone, id="unknown-timezone"),
        pytest.param(_isin_not_a_list, id="isin-given-a-string"),
        pytest.param(_numeric_range_on_string_field, id="numeric-in_range-on-string-field"),
    ],
)
def test_definitions_that_cannot_work_are_refused_at_load(tmp_path, change):
    # spec.py promises that a malformed definition fails before any data is touched. None of these
    # can ever load a record, so they should be refused by load_sources with the source named.
    path = app_variant(tmp_path, change, name="billing")
    with pytest.raises(SourceConfigError, match="source 'billing' is invalid"):
        specs = load_sources(path)
        # If loading accepted it, show what happens to the first line of data instead.
        parser = PartitionParser(specs["billing"], dt.date(2024, 1, 20))
        lines = iter_line_batches(io.BytesIO(b"2024-01-20 10:00:00,000 INFO app: hello\n"))
        list(parser.parse_file(lines, "app.log"))


# -- a source declared only in YAML --------------------------------------------------

JAVA_SOURCE = r"""
description: log4j layout with a T date separator and a padded [thread] column (lnav's logfile_java.0).
first_day: "2020-01-01"
record_start: '^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}'
# Folded (>-): the line break becomes the space between the level and the [thread] column.
pattern: >-
  ^(?P<timestamp>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2},\d{3}) (?P<level>[A-Z]+)
  \[(?P<thread>[^\]]*)\] (?P<logger>\S+)\s*: (?P<message>.*)$
timestamp:
  field: timestamp
  format: "%Y-%m-%dT%H:%M:%S,%3f"
fields:
  level: {type: string}
  thread: {type: string}
  logger: {type: string}
  message: {type: string}
daily_metrics:
  records: "count(*)"
"""


def test_new_source_declared_only_in_yaml_parses_real_java_log(tmp_path):
    # The worked example of "adding a source needs no Python": a `java` source added to the
    # sources file loads next to the built-in ones and accepts every record of lnav's
    # logfile_java.0, the very file the `app` source quarantines line by line.
    data = real_log("lnav/logfile_java.0")
    document = builtin_document()
    document["sources"]["java"] = yaml.safe_load(JAVA_SOURCE)
    specs = load_sources(write_sources(tmp_path, document))
    assert set(specs) == {"access", "app", "java"}
    java = specs["java"]
    assert java.columns == ["timestamp", "level", "thread", "logger", "message"]
    assert java.pattern == (
        r"^(?P<timestamp>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2},\d{3}) (?P<level>[A-Z]+) "
        r"\[(?P<thread>[^\]]*)\] (?P<logger>\S+)\s*: (?P<message>.*)$"
    )

    day = dt.date(2025, 1, 24)
    batches = list(PartitionParser(java, day).parse_file(iter_line_batches(io.BytesIO(data)), "java.log"))
    events = pl.concat([b.events for b in batches])
    quarantined = pl.concat([b.quarantined for b in batches])
    lines_read = sum(b.lines_read for b in batches)
    ignored = sum(b.lines_ignored for b in batches)
    continuations = sum(b.continuation_lines for b in batches)
    # Every line accounted for: all 20 are records, all accepted.
    assert lines_read == data.count(b"\n") == 20
    assert lines_read == events.height + quarantined.height + ignored + continuations
    assert quarantined.is_empty()
    assert events["line_number"].to_list() == list(range(1, 21))
    assert events.row(0, named=True) == {
        "source_file": "java.log",
        "line_number": 1,
        "timestamp": dt.datetime(2025, 1, 24, 7, 0, 30, 139000, tzinfo=dt.UTC),
        "level": "INFO",
        "thread": "background-preinit       ",
        "logger": "Version",
        "message": "HV000001: Hibernate Validator 8.0.1.Final",
    }
    # A message that starts with a tab keeps it.
    assert events.filter(pl.col("line_number") == 7)["message"].to_list() == [
        "\t/objroot/iorroot/activators/activator-ts_one.ior"
    ]
    assert events["timestamp"].max() == dt.datetime(2025, 1, 24, 7, 5, 38, 884000, tzinfo=dt.UTC)
    assert events["level"].unique().to_list() == ["INFO"]

    # The built-in app source, on the same bytes, accepts nothing.
    app_batches = list(PartitionParser(specs["app"], day).parse_file(iter_line_batches(io.BytesIO(data)), "java.log"))
    assert sum(b.events.height for b in app_batches) == 0
    assert sum(b.quarantined.height for b in app_batches) == 20


def test_relative_sources_file_is_taken_from_the_project_root(tmp_path, monkeypatch):
    # Like every local path setting: a daemon or webserver started from another directory
    # finds the same file.
    from pipeline.sources import configured_sources

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PIPELINE_SOURCES_FILE", "pipeline/sources/sources.yaml")
    assert sorted(configured_sources()) == sorted(load_sources(DEFAULT_SOURCES_FILE))
