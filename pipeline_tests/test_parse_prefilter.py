"""The vectorised pre-filter never lets through a row that pandera would reject.

`PartitionParser` runs pandera's `validate` only on rows its one-query pre-filter flags. If
the pre-filter were laxer than pandera, a bad row would be loaded unseen. These tests run
pandera on every row of generated frames (including edge values: bounds, nulls, empty
strings) and compare.
"""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pandera.errors import SchemaErrors

from pipeline.engine.parse import _ROW, PartitionParser
from pipeline.sources.spec import FieldSpec, SourceSpec, TimestampSpec

DAY = dt.date(2024, 1, 20)
START = dt.datetime(2024, 1, 20, tzinfo=dt.UTC)


def spec_with_every_check() -> SourceSpec:
    """A source whose fields carry every check a source may declare."""
    return SourceSpec(
        name="every_check",
        first_day=dt.date(2020, 1, 1),
        pattern=r"^(?P<ts>\S+) (?P<a>\S+) (?P<b>\S+) (?P<c>\S+) (?P<d>\S+) (?P<e>\S+)$",
        timestamp=TimestampSpec(field="ts", format="%Y-%m-%dT%H:%M:%S", tolerance_minutes=30),
        fields={
            "a": FieldSpec(type="integer", checks={"in_range": [0, 10], "notin": [5]}),
            "b": FieldSpec(type="float", nullable=True, checks={"greater_than": 0, "less_than_or_equal_to": 2.5}),
            "c": FieldSpec(type="string", checks={"isin": ["x", "y", ""]}),
            "d": FieldSpec(type="string", nullable=True, checks={"str_length": [1, 3], "str_matches": "[a-z]+$"}),
            "e": FieldSpec(type="integer", checks={"greater_than_or_equal_to": -1, "less_than": 4}),
        },
        daily_metrics={"rows": "count(*)"},
    )


def pandera_rejects(parser: PartitionParser, frame: pl.DataFrame) -> set[int]:
    """Row ids pandera rejects when validating the whole frame."""
    try:
        parser.schema.validate(frame, lazy=True)
    except SchemaErrors as errors:
        positions = errors.failure_cases["index"].drop_nulls().cast(pl.UInt32)
        return set(frame[_ROW].gather(positions).to_list())
    return set()


timestamps = st.one_of(
    st.none(),
    st.integers(min_value=-3 * 3600, max_value=27 * 3600).map(lambda seconds: START + dt.timedelta(seconds=seconds)),
)
rows = st.fixed_dictionaries(
    {
        "ts": timestamps,
        "a": st.one_of(st.none(), st.integers(-3, 13)),
        "b": st.one_of(st.none(), st.sampled_from([-1.0, 0.0, 1e-9, 1.0, 2.5, 2.5000001, 9.0])),
        "c": st.one_of(st.none(), st.sampled_from(["x", "y", "", "z", "xx"])),
        "d": st.one_of(st.none(), st.sampled_from(["", "a", "abc", "abcd", "A", "a1", "zz"])),
        "e": st.one_of(st.none(), st.integers(-3, 6)),
    }
)


@settings(max_examples=150, deadline=None)
@given(st.lists(rows, min_size=1, max_size=60))
def test_prefilter_flags_every_row_pandera_rejects(generated: list[dict[str, object]]) -> None:
    """Whatever the values, the suspects include every row pandera rejects."""
    parser = PartitionParser(spec_with_every_check(), DAY)
    frame = pl.DataFrame(
        generated,
        schema={
            "ts": pl.Datetime("us", "UTC"),
            "a": pl.Int64,
            "b": pl.Float64,
            "c": pl.String,
            "d": pl.String,
            "e": pl.Int64,
        },
    ).with_row_index(_ROW)
    suspects, _columns = parser._suspects(frame)
    assert pandera_rejects(parser, frame) <= set(suspects.to_list())


@pytest.mark.parametrize("source", ["access", "app"])
def test_prefilter_is_exact_on_built_in_sources(source: str) -> None:
    """On the built-in schemas the pre-filter flags exactly the rows pandera rejects."""
    from pipeline.sources import load_sources

    parser = PartitionParser(load_sources()[source], DAY)
    base = {"timestamp": [START, START - dt.timedelta(hours=2), None, START + dt.timedelta(hours=23)]}
    if source == "access":
        columns = {
            **base,
            "client": ["a", "b", "c", None],
            "remote_user": [None, "u", None, None],
            "method": ["GET", None, "GET", "GET"],
            "path": ["/", None, "/", "/"],
            "protocol": ["HTTP/1.1", None, None, None],
            "status": [200, 99, 600, 599],
            "bytes": [None, -1, 0, 10],
            "referrer": [None, None, None, None],
            "user_agent": [None, None, None, None],
        }
    else:
        columns = {
            **base,
            "level": ["INFO", "VERBOSE", "ERROR", None],
            "logger": ["a", "b", "c", "d"],
            "message": ["m", "", "m", "m"],
        }
    frame = pl.DataFrame(columns).cast({"timestamp": pl.Datetime("us", "UTC")}).with_row_index(_ROW)
    frame = frame.cast({name: dtype for name, dtype in parser._events_schema.items() if name in frame.columns})
    suspects, _columns = parser._suspects(frame)
    assert set(suspects.to_list()) == pandera_rejects(parser, frame) == {1, 2, 3}
