"""Re-judging quarantined rows after a definition is fixed, without the landing files."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance

from pipeline.cli.generate import generate_landing_zone
from pipeline.sources.spec import DEFAULT_SOURCES_FILE
from pipeline_tests.conftest import PROJECT_ROOT, PipelineEnv, day, materialize_range

NOTICE = "(got NOTICE)"


def app_accepting_notice(tmp_path: Path) -> Path:
    """The built-in sources, with `app` also accepting the NOTICE level (the generator's bad level)."""
    document = yaml.safe_load(DEFAULT_SOURCES_FILE.read_text())
    app = copy.deepcopy(document["sources"]["app"])
    app["fields"]["level"]["checks"]["isin"].append("NOTICE")
    app["replaces"] = True
    path = tmp_path / "fixed.yaml"
    path.write_text(yaml.safe_dump({"sources": {"app": app}}))
    return path


def test_rows_that_now_pass_move_to_events_without_the_landing_files(
    pipeline_env: PipelineEnv, instance: DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A day of `app` loaded with NOTICE lines quarantined; the landing files then expire; the
    definition learns NOTICE; the day is re-judged (the `app_dlq_rejudge` job).
    Expected: exactly the NOTICE records move to events with their original file and line,
    the other quarantined records stay (with their reasons as the new definition words them),
    the accounting identity holds, the attempt is in `loads` (operation `rejudge`), and the
    day's metrics count the moved rows."""
    generate_landing_zone(
        pipeline_env.landing, [day("2024-01-15")], sources=["app"], lines_per_hour=60, bad_line_rate=0.02
    )
    defs = pipeline_env.definitions()
    materialize_range(
        defs, instance, "2024-01-15", selection=["app/events", "app/dlq", "app/daily_metrics"], raise_on_error=False
    )
    (before,) = pipeline_env.attempts("app", "2024-01-15")
    notice = pipeline_env.query(
        "SELECT source_file, line_number FROM app.dlq WHERE ends_with(reason, ?) ORDER BY 1, 2", [NOTICE]
    )
    others = pipeline_env.query(
        "SELECT source_file, line_number FROM app.dlq WHERE NOT ends_with(reason, ?) ORDER BY 1, 2", [NOTICE]
    )
    assert notice and others
    shutil.rmtree(pipeline_env.landing / "app")  # expired
    monkeypatch.setenv("PIPELINE_SOURCES_FILE", str(app_accepting_notice(tmp_path)))

    job = pipeline_env.definitions().resolve_job_def("app_dlq_rejudge")
    result = job.execute_in_process(instance=instance, partition_key="2024-01-15", raise_on_error=False)
    after = pipeline_env.attempts("app", "2024-01-15")[-1]
    assert result.success is after["within_error_budget"]  # other bad levels may keep it over budget
    assert (after["operation"], after["status"], after["attempt"]) == ("rejudge", "loaded", 2)
    assert after["rows_loaded"] == before["rows_loaded"] + len(notice)
    assert after["rows_quarantined"] == len(others)
    for name in ("lines_read", "lines_ignored", "continuation_lines", "files", "landing_fingerprint"):
        assert after[name] == before[name], name
    assert (
        after["lines_read"]
        == after["rows_loaded"] + after["rows_quarantined"] + after["continuation_lines"] + after["lines_ignored"]
    )
    moved = pipeline_env.query("SELECT source_file, line_number FROM app.events WHERE level = 'NOTICE' ORDER BY 1, 2")
    assert moved == notice
    assert pipeline_env.query("SELECT source_file, line_number FROM app.dlq ORDER BY 1, 2") == others
    assert pipeline_env.query("SELECT count(*) FROM app.dlq WHERE ends_with(reason, ?)", [NOTICE]) == [(0,)]
    assert pipeline_env.query("SELECT DISTINCT run_id FROM app.events UNION SELECT DISTINCT run_id FROM app.dlq") == [
        (result.run_id,)
    ]
    metrics = [(after["rows_loaded"],)] if after["within_error_budget"] else []
    assert pipeline_env.query("SELECT records FROM app.daily_metrics") == metrics
    assert "now pass" in pipeline_env.manifest("app", "2024-01-15")["summary"]


def run(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *arguments], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)


def test_the_cli_rejudges_a_range_and_a_never_loaded_day_is_refused(
    pipeline_env: PipelineEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`pipeline dlq rejudge` runs through Dagster; a day that was never loaded fails, saying so."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    generate_landing_zone(pipeline_env.landing, [day("2024-01-15")], sources=["app"], lines_per_hour=20)
    load = run("-m", "dagster", "asset", "materialize", "-m", "pipeline.definitions", "--select", "app/events,app/dlq",
               "--partition", "2024-01-15")  # fmt: skip
    assert load.returncode == 0, load.stderr[-2000:]
    ok = run("-m", "pipeline.cli.main", "dlq", "rejudge", "--source", "app", "--start", "2024-01-15")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert [a["operation"] for a in pipeline_env.attempts("app", "2024-01-15")] == ["load", "rejudge"]
    refused = run("-m", "pipeline.cli.main", "dlq", "rejudge", "--source", "app", "--start", "2024-01-16")
    assert refused.returncode != 0
    assert "app 2024-01-16 was never loaded: there is no DLQ to re-judge" in refused.stdout + refused.stderr


CDN = {
    "format": {"type": "delimited", "separator": "\t", "header": "#Fields:"},
    "timestamp": {"field": "ts", "from": ["date", "time"], "format": "%Y-%m-%d %H:%M:%S"},
    "fields": {
        "host": {"type": "string", "from": "cs(Host)"},
        "status": {"type": "integer", "from": "sc-status", "checks": {"in_range": [100, 599]}},
    },
    "daily_metrics": {"requests": "count(*)"},
}
# Hour 02: a record before any header, then a layout; hour 03: a layout, then another with
# the columns in another order (a restarted writer), status 799 meaning "fixed later" in both.
CDN_FILES = {
    "hour=02/a.log": [
        "2024-01-15\t02:00:00\torphan.example\t200",
        "#Version: 1.0",
        "#Fields: date time cs(Host) sc-status",
        "2024-01-15\t02:00:01\ta.example\t200",
        "2024-01-15\t02:00:02\tb.example\t799",
    ],
    "hour=03/b.log": [
        "#Fields: date time cs(Host) sc-status",
        "2024-01-15\t03:00:01\tc.example\t799",
        "#Fields: sc-status date time cs(Host)",
        "799\t2024-01-15\t03:00:02\td.example",
        "200\t2024-01-15\t03:00:03\te.example",
        "1000\t2024-01-15\t03:00:04\tf.example",
    ],
}


def land_cdn_files(env: PipelineEnv) -> None:
    """`CDN_FILES` as the landing files of 2024-01-15."""
    for key, lines in CDN_FILES.items():
        path = env.landing / "cdn" / "dt=2024-01-15" / key
        path.parent.mkdir(parents=True)
        path.write_text("\n".join(lines) + "\n")


def cdn_sources(tmp_path: Path, highest_status: int, **options: object) -> Path:
    source = {**copy.deepcopy(CDN), **options}
    source["fields"]["status"]["checks"]["in_range"] = [100, highest_status]
    path = tmp_path / f"cdn-{highest_status}.yaml"
    path.write_text(yaml.safe_dump({"sources": {"cdn": {"first_day": "2024-01-01", **source}}}))
    return path


def test_a_header_delimited_source_is_rejudged_through_each_records_own_layout(
    pipeline_env: PipelineEnv, instance: DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A W3C-style source whose files name their columns in `#Fields:` lines (one file changing
    its layout mid-way) quarantines status 799; the landing files expire; the definition
    admits up to 899; the day is re-judged.
    Expected: the load recorded each file's header lines in `loads`; exactly the three 799
    records move to events, each read through the layout in force at its line (host and
    status right in both column orders); status 1000 stays quarantined by the range check,
    the record before any header stays quarantined for `follows_a_header`; a second
    re-judge still has the header lines."""
    land_cdn_files(pipeline_env)
    monkeypatch.setenv("PIPELINE_SOURCES_FILE", str(cdn_sources(tmp_path, 599)))
    materialize_range(pipeline_env.definitions(), instance, "2024-01-15", selection=["cdn/events", "cdn/dlq"],
                      raise_on_error=False)  # fmt: skip
    (load,) = pipeline_env.attempts("cdn", "2024-01-15")
    assert [(h["source_file"], h["line_number"], h["line"]) for h in load["header_lines"]] == [
        ("cdn/dt=2024-01-15/hour=02/a.log", 3, "#Fields: date time cs(Host) sc-status"),
        ("cdn/dt=2024-01-15/hour=03/b.log", 1, "#Fields: date time cs(Host) sc-status"),
        ("cdn/dt=2024-01-15/hour=03/b.log", 3, "#Fields: sc-status date time cs(Host)"),
    ]
    assert (load["rows_loaded"], load["rows_quarantined"], load["lines_ignored"]) == (2, 5, 4)
    shutil.rmtree(pipeline_env.landing / "cdn")  # expired
    monkeypatch.setenv("PIPELINE_SOURCES_FILE", str(cdn_sources(tmp_path, 899)))

    job = pipeline_env.definitions().resolve_job_def("cdn_dlq_rejudge")
    for attempt in (2, 3):
        result = job.execute_in_process(instance=instance, partition_key="2024-01-15", raise_on_error=False)
        after = pipeline_env.attempts("cdn", "2024-01-15")[-1]
        assert (after["operation"], after["status"], after["attempt"]) == ("rejudge", "loaded", attempt)
        assert (after["rows_loaded"], after["rows_quarantined"]) == (5, 2)
        assert after["header_lines"] == load["header_lines"]
        assert pipeline_env.query("SELECT host, status, line_number FROM cdn.events ORDER BY host") == [
            ("a.example", 200, 4),
            ("b.example", 799, 5),
            ("c.example", 799, 2),
            ("d.example", 799, 4),
            ("e.example", 200, 5),
        ]
        assert pipeline_env.query("SELECT line_number, reason FROM cdn.dlq ORDER BY source_file, line_number") == [
            (1, "line: follows_a_header (got no header line before it in its file)"),
            (6, "status: in_range(100, 899) (got 1000)"),
        ]
        assert result.run_id in {run for (run,) in pipeline_env.query("SELECT DISTINCT run_id FROM cdn.events")}


def test_a_multiline_header_delimited_rejudge_equals_a_load_under_the_fixed_definition(
    pipeline_env: PipelineEnv, instance: DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Multi-line records (`record_start`) of a header-delimited source are re-judged one by
    one, each after the header line in force at it. Expected: the re-judged day's events and
    DLQ are exactly what loading the landing files under the fixed definition gives."""
    lines = [
        "#Fields: date time sc-status cs(Host)",
        "2024-01-15\t02:00:01\t799\ta.example",
        "  continued",
        "2024-01-15\t02:00:02\t200\tb.example",
        "#Fields: sc-status date time cs(Host)",
        "799\t2024-01-15\t02:00:03\tc.example",
        "  continued",
        "  and again",
        "1000\t2024-01-15\t02:00:04\td.example",
    ]
    landed = pipeline_env.landing / "cdn" / "dt=2024-01-15" / "hour=02" / "a.log"
    landed.parent.mkdir(parents=True)
    landed.write_text("\n".join(lines) + "\n")
    multiline = {"record_start": "^[0-9]"}
    defs_query = "SELECT source_file, line_number, host, status FROM cdn.events ORDER BY 1, 2"
    dlq_query = "SELECT source_file, line_number, raw_line, reason FROM cdn.dlq ORDER BY 1, 2"

    monkeypatch.setenv("PIPELINE_SOURCES_FILE", str(cdn_sources(tmp_path, 899, **multiline)))
    materialize_range(pipeline_env.definitions(), instance, "2024-01-15", selection=["cdn/events", "cdn/dlq"],
                      raise_on_error=False)  # fmt: skip
    loaded_fixed = pipeline_env.query(defs_query), pipeline_env.query(dlq_query)
    assert [(line, host, status) for _, line, host, status in loaded_fixed[0]] == [
        (2, "a.example\n  continued", 799),
        (4, "b.example", 200),
        (6, "c.example\n  continued\n  and again", 799),
    ]

    monkeypatch.setenv("PIPELINE_SOURCES_FILE", str(cdn_sources(tmp_path, 599, **multiline)))
    materialize_range(pipeline_env.definitions(), instance, "2024-01-15", selection=["cdn/events", "cdn/dlq"],
                      raise_on_error=False)  # fmt: skip
    assert pipeline_env.attempts("cdn", "2024-01-15")[-1]["rows_quarantined"] == 3
    landed.unlink()  # expired
    monkeypatch.setenv("PIPELINE_SOURCES_FILE", str(cdn_sources(tmp_path, 899, **multiline)))
    job = pipeline_env.definitions().resolve_job_def("cdn_dlq_rejudge")
    job.execute_in_process(instance=instance, partition_key="2024-01-15", raise_on_error=False)
    assert pipeline_env.attempts("cdn", "2024-01-15")[-1]["operation"] == "rejudge"
    assert (pipeline_env.query(defs_query), pipeline_env.query(dlq_query)) == loaded_fixed


def test_a_header_delimited_day_loaded_before_header_lines_were_recorded_is_refused_until_reloaded(
    pipeline_env: PipelineEnv, instance: DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A day loaded by a version that had no `header_lines` column in `loads` (simulated: the
    load runs with the old schema). The next run adds the column; the old row reads NULL there.
    Expected: the re-judge refuses, saying the load predates recorded header lines and to
    re-run the day from its landing files; once re-run, the day can be re-judged."""
    from pipeline.engine.lake import loads

    land_cdn_files(pipeline_env)
    monkeypatch.setenv("PIPELINE_SOURCES_FILE", str(cdn_sources(tmp_path, 599)))
    before_header_lines = loads.LOADS_SCHEMA.remove(loads.LOADS_SCHEMA.get_field_index("header_lines"))
    with monkeypatch.context() as old_version:
        old_version.setattr(loads, "LOADS_SCHEMA", before_header_lines)
        materialize_range(pipeline_env.definitions(), instance, "2024-01-15", selection=["cdn/events", "cdn/dlq"],
                          raise_on_error=False)  # fmt: skip
    monkeypatch.setenv("PIPELINE_SOURCES_FILE", str(cdn_sources(tmp_path, 899)))
    job = pipeline_env.definitions().resolve_job_def("cdn_dlq_rejudge")

    refused = job.execute_in_process(instance=instance, partition_key="2024-01-15", raise_on_error=False)
    assert not refused.success
    old, failed = pipeline_env.attempts("cdn", "2024-01-15")
    assert old["header_lines"] is None
    assert (failed["operation"], failed["status"]) == ("rejudge", "failed")
    assert failed["error"] == (
        "CannotRejudge: source 'cdn' reads its columns from the '#Fields:' header line of each file, and the load "
        f"of 2024-01-15 (run {old['run_id']}) was recorded before header lines were kept in `loads`: re-run the day "
        "from its landing files (once; later re-judges of it then work)"
    )
    assert pipeline_env.query("SELECT count(*) FROM cdn.dlq") == [(5,)]  # the day as the load left it

    materialize_range(pipeline_env.definitions(), instance, "2024-01-15", selection=["cdn/events", "cdn/dlq"],
                      raise_on_error=False)  # fmt: skip
    assert job.execute_in_process(instance=instance, partition_key="2024-01-15", raise_on_error=False).success is False
    last = pipeline_env.attempts("cdn", "2024-01-15")[-1]
    assert (last["operation"], last["status"], last["rows_loaded"], last["rows_quarantined"]) == (
        "rejudge", "loaded", 5, 2)  # fmt: skip
    assert len(last["header_lines"]) == 3


def test_a_fixed_column_list_needs_no_header_lines() -> None:
    """Only a layout read from header lines needs them: a delimited source with `columns` is
    re-judged from a row that recorded none."""
    from pipeline.engine.lake.loads import LoadRecord
    from pipeline.engine.rejudge import check_rejudgeable
    from pipeline.sources.spec import SourceSpec

    columns = {"type": "delimited", "separator": "\t", "columns": ["date", "time", "cs(Host)", "sc-status"]}
    spec = SourceSpec(name="cdn", first_day="2024-01-01", **{**CDN, "format": columns})
    check_rejudgeable(spec, LoadRecord("cdn", "2024-01-15", "run-1", "v1", header_lines=None))
