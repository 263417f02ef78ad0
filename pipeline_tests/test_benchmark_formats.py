"""The format benchmark (`benchmarks/formats.py`) measures what it claims, at a tiny size:
each format's generated day has the asked number of lines, 1% of them bad in the format's
typical ways, every line accounted for; the figures themselves are not asserted."""

from __future__ import annotations

from pathlib import Path

from benchmarks import formats


def test_every_format_is_generated_parsed_and_reported(tmp_path: Path) -> None:
    figures = formats.measure(tmp_path, 2400, repeat=1)
    assert set(figures) == {
        "regex_access", "json", "logfmt", "syslog_rfc3164", "delimited_alb", "delimited_cloudfront",
        "regex_json", "regex_alb", "delimited_alb_polars", "delimited_cloudfront_polars",
    }  # fmt: skip
    for name, figure in figures.items():
        # CloudFront files open with two header lines (24 files): counted as ignored.
        header = 48 if name.startswith("delimited_cloudfront") else 0
        assert figure["lines"] == 2400 + header, name
        assert figure["lines_ignored"] == header, name
        assert figure["rows_loaded"] + figure["rows_quarantined"] == 2400, name
        assert 0.003 < figure["quarantine_rate"] < 0.03, name
        assert figure["bytes_per_s"] > 0 and figure["lines_per_s"] > 0
    # The same lines parsed as json and through a regex give the same verdicts.
    assert figures["json"]["rows_quarantined"] == figures["regex_json"]["rows_quarantined"]
    assert figures["delimited_alb"]["rows_quarantined"] == figures["regex_alb"]["rows_quarantined"]
    # With and without the native tokenizer: the same files, the same verdicts.
    for name, native in formats.POLARS_PATH.items():
        assert {key: figures[name][key] for key in ("bytes", "rows_loaded", "rows_quarantined")} == {
            key: figures[native][key] for key in ("bytes", "rows_loaded", "rows_quarantined")
        }
    assert list(tmp_path.iterdir()) == []  # each day is deleted once measured
    rows = formats.report_rows(figures)
    assert [row[0].split(" (")[0] for row in rows] == [f"parse {name}" for name in figures]
    assert {row[0].split(" (")[0]: row[2] for row in rows if row[2]} == {
        "parse json": ">= regex/byte", "parse delimited_alb": ">= regex/byte",
        "parse delimited_cloudfront": ">= regex/byte",
    }  # fmt: skip
    assert formats.report_rows({}) == []
