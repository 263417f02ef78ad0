"""`deploy/prometheus` and `deploy/grafana`: rules checked and unit-tested by Debian's promtool,
the dashboard parsed, and every expression of both checked against the metrics really pushed."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from pipeline.engine.operational_metrics import PUSHED_METRIC_NAMES
from pipeline_tests.conftest import PROJECT_ROOT

PROMETHEUS = PROJECT_ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "alerts.yml"
RULE_TESTS = PROMETHEUS / "alerts_test.yml"
DASHBOARD = PROJECT_ROOT / "deploy" / "grafana" / "dashboard.json"
# A metric name in PromQL: ours start with `pipeline_`, recording rules have a colon. Quoted
# strings (label values) are removed before looking, and `$variables` are not names.
METRIC_NAME = re.compile(r"(?<![\w$:.])([a-zA-Z_][a-zA-Z0-9_]*:[a-zA-Z0-9_:]+|pipeline_[a-zA-Z0-9_]+)")
QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')


def metric_names(expr: str) -> set[str]:
    return set(METRIC_NAME.findall(QUOTED.sub('""', expr)))


def rule_groups() -> list[dict[str, Any]]:
    return yaml.safe_load(RULES.read_text())["groups"]  # type: ignore[no-any-return]


def recorded_names() -> set[str]:
    return {rule["record"] for group in rule_groups() for rule in group["rules"] if "record" in rule}


def panel_targets() -> list[tuple[str, dict[str, Any]]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target) for panel in dashboard["panels"] for target in panel["targets"]]


def promtool_run(promtool: str, *arguments: str, cwd: Path = PROJECT_ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *arguments], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_promtool_accepts_the_rules(promtool: str) -> None:
    checked = promtool_run(promtool, "check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 8 rules found" in checked.stdout


def test_the_rules_unit_tests_pass(promtool: str) -> None:
    tested = promtool_run(promtool, "test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_is_tested_firing_and_silent() -> None:
    alerts = {rule["alert"] for group in rule_groups() for rule in group["rules"] if "alert" in rule}
    assert alerts == {
        "LogPipelineNoRecentSuccess",
        "LogPipelineSourceWithoutSuccess",
        "LogPipelineMetricsAbsent",
        "LogPipelineQuarantineOverBudget",
        "LogPipelineVolumeLow",
        "LogPipelineNewestDayStale",
    }
    cases = [
        case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test.get("alert_rule_test", [])
    ]
    fires = {case["alertname"] for case in cases if case["exp_alerts"]}
    silent = {case["alertname"] for case in cases if not case["exp_alerts"]}
    assert fires == alerts
    assert silent == alerts


def test_the_rules_name_only_pushed_or_recorded_metrics() -> None:
    known = PUSHED_METRIC_NAMES | recorded_names()
    for group in rule_groups():
        for rule in group["rules"]:
            names = metric_names(rule["expr"])
            assert names, rule
            assert names <= known, (rule.get("alert") or rule.get("record"), names - known)


def test_the_dashboard_is_valid_and_uses_its_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert {"pipeline", "source"} <= set(variables)
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)) == 10
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(position["x"], position["x"] + position["w"])
            for y in range(position["y"], position["y"] + position["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
    for variable in ("pipeline", "source"):
        assert metric_names(variables[variable]["definition"]) <= PUSHED_METRIC_NAMES


def test_every_panel_names_metrics_the_pipeline_pushes() -> None:
    known = PUSHED_METRIC_NAMES | recorded_names()
    shown: set[str] = set()
    for title, target in panel_targets():
        names = metric_names(target["expr"])
        assert names, f"panel {title!r}: {target['expr']} names no metric"
        assert names <= known, f"panel {title!r} names {names - known}, which nothing pushes or records"
        shown |= names
    # Every pushed figure is on the dashboard somewhere, except the per-attempt ones a table of
    # the loads table answers better (rows read, lines read, the attempt's own day and hours).
    assert PUSHED_METRIC_NAMES - shown == {
        "pipeline_last_attempt_rows_read",
        "pipeline_last_attempt_lines_read",
        "pipeline_last_attempt_day_timestamp_seconds",
        "pipeline_last_attempt_missing_hours",
        "pipeline_last_attempt_timestamp_seconds",
    }


def test_every_panel_expression_is_valid_promql(promtool: str, tmp_path: Path) -> None:
    """promtool parses each expression (variables replaced by what Grafana would put there)."""
    rules = [
        {
            "record": f"dashboard:panel_{index}:expr",
            "expr": target["expr"].replace("$pipeline", ".*").replace("$source", ".*"),
        }
        for index, (_, target) in enumerate(panel_targets())
    ]
    path = tmp_path / "dashboard_exprs.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = promtool_run(promtool, "check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules)} rules found" in checked.stdout
