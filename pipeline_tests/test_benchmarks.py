"""The benchmark suite runs end to end (at its `--quick` size: figures are not asserted, only
that every measurement happened on the data it claims)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.engine.lake import Lake, LakeLocation
from pipeline.sources import load_sources
from pipeline_tests.conftest import PROJECT_ROOT


@pytest.mark.timeout(600)
def test_benchmark_suite_runs_and_reports_every_figure(tmp_path: Path) -> None:
    """`python -m benchmarks.run` produces the table and JSON with every measure."""
    output = tmp_path / "results.json"
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick"]
        + ["--workdir", str(tmp_path / "work"), "--output", str(output)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    results = json.loads(output.read_text())
    throughput = results["throughput"]
    # Every measurement read the lines it claims: 4,800 per partition, the baselines their subsets.
    assert throughput["floor_duckdb_read_lines"]["lines"] == 4800
    assert throughput["pipeline_ingest_access"]["lines"] == 4800
    assert throughput["pipeline_ingest_app"]["lines"] >= 4800  # plus traceback continuation lines
    assert throughput["baseline_seed_style"]["lines"] == 500
    assert throughput["baseline_pandas_pandera"]["lines"] == 2000
    assert all(figure["lines_per_s"] > 0 for figure in throughput.values())
    # The components: the regex over every line; the append of exactly the rows the ingest loads.
    assert throughput["component_regex_extract"]["lines"] == 4800
    lake = tmp_path / "work" / "1x" / "ingest-access-lake"
    with Lake(LakeLocation.local(lake)).connect([load_sources()["access"]]) as connection:
        loaded = connection.execute("SELECT count(*) FROM access.events").fetchone()[0]  # type: ignore[index]
    assert 4700 < loaded < 4800
    # The readers counted exactly the loaded rows, through the snapshot and straight from Parquet.
    assert throughput["reader_snapshot_query"]["lines"] == throughput["reader_parquet_direct"]["lines"] == loaded
    append = throughput["component_lake_write"]
    assert append["lines"] == loaded and append["unit"] == "rows"
    # DuckDB alone loads the lines that split into the combined layout: it skips the malformed
    # lines the ingest quarantines but keeps e.g. out-of-range statuses, and the generated day has
    # no X-Forwarded-For lists (valid, but split apart): between the ingest's rows and the lines.
    native = throughput["component_duckdb_native_load"]
    assert native["unit"] == "rows" and loaded <= native["lines"] < 4800
    ceiling = results["ingest_ceiling"]
    assert ceiling["cores"] >= 1 and ceiling["rows_per_line"] == loaded / 4800 and ceiling["lines_per_s"] > 0
    assert results["memory"]["1x"]["lines"] == 4800 and results["memory"]["10x"]["lines"] == 48000
    for figures in results["memory"].values():
        # The split of the sampled peak: both parts present, together at most the kernel's peak.
        parts = figures["anonymous_at_peak_mb"] + figures["file_backed_at_peak_mb"]
        assert figures["anonymous_at_peak_mb"] > 50 and figures["file_backed_at_peak_mb"] > 20
        assert parts <= figures["peak_rss_mb"] + 1
    assert results["memory_target"]["lines"] == 9600 and results["memory_target"]["target_mb"] == 700
    assert results["backfill_cli_range"]["partitions"] == 2
    # The daemon-driven backfill: launched as in the UI, run by the daemon, marked done.
    daemon = results["backfill_daemon"]
    assert daemon["partitions"] == 2 and daemon["runs"] >= 1 and daemon["run_statuses"] == ["SUCCESS"]
    assert daemon["wall_s"] >= daemon["data_loaded_s"] > 0 and daemon["summed_compute_s"] > 0
    assert (daemon["ranges"], daemon["most_runs_at_once"]) == (1, 1)
    # The same days as two concurrent ranges: two backfills, one run each, both loaded.
    two = results["backfill_daemon_2_ranges"]
    assert (two["partitions"], two["ranges"], two["runs"], two["run_statuses"]) == (2, 2, 2, ["SUCCESS"])
    assert 1 <= two["most_runs_at_once"] <= 2  # at most the lake_writers limit
    assert "ratio to seed-style baseline (a)" in completed.stdout
    assert "peak RSS 10x / 1x" in completed.stdout
    assert "ceiling: regex + lake write alone" in completed.stdout and "ingest / DuckDB alone" in completed.stdout
    assert "reader: snapshot query / Parquet direct" in completed.stdout
    assert "partitions, daemon, 2 range(s) (s)" in completed.stdout and "load average" in completed.stdout
    # The format rows (benchmarks/formats.py): the same volume as the access row.
    assert results["formats"]["json"]["lines"] == 4800 and "parse json (" in completed.stdout
