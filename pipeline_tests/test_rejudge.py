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


def test_a_header_delimited_source_cannot_be_rejudged() -> None:
    """A delimited layout read from `#Fields:` lines is not in the DLQ: refused, saying why."""
    from pipeline.engine.rejudge import CannotRejudge, check_rejudgeable
    from pipeline.sources.spec import SourceSpec

    spec = SourceSpec(
        name="cdn",
        first_day="2024-01-01",
        format={"type": "delimited", "separator": "\t", "header": "#Fields:"},
        timestamp={"field": "ts", "from": ["date", "time"], "format": "%Y-%m-%d %H:%M:%S"},
        fields={"status": {"type": "integer", "from": "sc-status"}},
        daily_metrics={"requests": "count(*)"},
    )
    with pytest.raises(CannotRejudge, match="reads its columns from the '#Fields:' header line of each file"):
        check_rejudgeable(spec)
