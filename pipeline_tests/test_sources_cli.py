"""`pipeline sources list` and `pipeline sources check`: the tools a user runs before deploying.

`check` must show what the real parser does with the sample (rows, quarantined lines with
reasons, accounting, rate), write nothing, and exit 1 when a day like the sample would fail
the blocking `quarantine_rate` check.
"""

from __future__ import annotations

import datetime as dt
import gzip
from pathlib import Path

import pytest
import yaml

from pipeline.cli.main import main
from pipeline.sources.spec import DEFAULT_SOURCES_FILE

GOOD = '198.51.100.7 - - [20/Jan/2024:09:05:00 -0700] "POST /api HTTP/2.0" 201 17 "-" "curl/8"'


@pytest.fixture(autouse=True)
def _settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PIPELINE_SOURCES_FILE", raising=False)
    monkeypatch.delenv("PIPELINE_WAREHOUSE", raising=False)
    monkeypatch.setenv("PIPELINE_LANDING_URL", str(tmp_path / "landing"))


def sample(folder: Path, lines: list[str], name: str = "a.log") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data, mtime=0) if name.endswith(".gz") else data)
    return path


def test_list_shows_each_source_and_its_file(tmp_path, monkeypatch, capsys):
    extra = tmp_path / "mine.yaml"
    extra.write_text(yaml.safe_dump({"sources": {"web": {"preset": "json", "first_day": "2024-01-01"}}}))
    monkeypatch.setenv("PIPELINE_SOURCES_FILE", str(extra))
    assert main(["sources", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["source", "format", "first_day", "budget", "fields", "defined", "in"]
    assert lines[1].split() == ["access", "regex", "2024-01-01", "1.00%", "9", str(DEFAULT_SOURCES_FILE)]
    assert lines[2].split() == ["app", "regex,", "multi-line", "2024-01-01", "1.00%", "3", str(DEFAULT_SOURCES_FILE)]
    assert lines[3].split() == ["web", "json", "(preset", "json)", "2024-01-01", "1.00%", "2", str(extra)]


def test_check_reports_rows_reasons_counts_and_fails_above_budget(tmp_path, capsys):
    path = sample(tmp_path / "dt=2024-01-20", [GOOD, "garbage", GOOD.replace(" 201 ", " 999 "), ""])
    assert main(["sources", "check", "access", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"  {path}: day 2024-01-20 (from its dt= folder), 4 lines" in out
    assert "Parsed rows: 1\n" in out and "│ 1           ┆ 2024-01-20 16:05:00 UTC ┆ 198.51.100.7" in out
    assert "Quarantined rows: 2\n  line 2: line: matches_format (got garbage)\n      garbage\n" in out
    assert "  line 3: status: in_range(100, 599) (got 999)\n" in out
    # Rules by rows, ties by name: the same order as `loads`, manifests and metadata.
    assert "\nFailed checks:\n         1  line: matches_format\n         1  status: in_range(100, 599)\n" in out
    assert "Lines read 4 = 1 loaded + 2 quarantined + 0 continuation + 1 ignored" in out
    assert out.rstrip().endswith(
        "Quarantine rate 66.67% of 3 rows: ABOVE the error budget of 1.00% (a day like this fails the blocking "
        "quarantine_rate check)"
    )
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.log", "dt=2024-01-20"]  # nothing written


def test_check_within_budget_exits_zero_and_day_option_wins(tmp_path, capsys):
    path = sample(tmp_path / "dt=2019-01-01", [GOOD] * 3)
    assert main(["sources", "check", "access", str(path), "--day", "2024-01-20", "--rows", "2"]) == 0
    out = capsys.readouterr().out
    assert "day 2024-01-20 (--day), 3 lines" in out
    assert "Parsed rows: 3 (first 2 shown)" in out
    assert "Quarantine rate 0.00% of 3 rows: within the error budget of 1.00%" in out


def test_check_without_a_day_uses_today_and_says_so(tmp_path, capsys):
    path = sample(tmp_path, [GOOD])
    assert main(["sources", "check", "access", str(path)]) == 1  # 20 Jan 2024 is not today
    out = capsys.readouterr().out
    assert f"day {dt.date.today()} (today: no dt=YYYY-MM-DD in its path; set --day)" in out
    assert "timestamp: within_day" in out


def test_check_landing_key_gzip_and_a_cut_gzip_file(tmp_path, capsys):
    # landing:KEY reads the landing store; .gz is decompressed; a gzip cut short keeps its
    # complete lines and quarantines the rest as `file: readable_to_end`, as a load would.
    folder = tmp_path / "landing" / "access" / "dt=2024-01-20" / "hour=09"
    sample(folder, [GOOD] * 200, "ok.log.gz")
    cut = folder / "cut.log.gz"
    cut.write_bytes((folder / "ok.log.gz").read_bytes()[:-30])
    keys = ["landing:access/dt=2024-01-20/hour=09/ok.log.gz", "landing:access/dt=2024-01-20/hour=09/cut.log.gz"]
    assert main(["sources", "check", "access", *keys, "--quarantined", "1"]) == 0  # 1 of ~340 rows: within 1%
    out = capsys.readouterr().out
    assert "landing:access/dt=2024-01-20/hour=09/ok.log.gz: day 2024-01-20 (from its dt= folder), 200 lines" in out
    assert "file: readable_to_end" in out
    loaded = int(out.split("Parsed rows: ")[1].split()[0].replace(",", ""))
    assert 200 <= loaded < 400
    lines = out.split("Lines read ")[1].split()[0]
    assert lines == f"{loaded + 1:,}"


def test_check_multiline_and_a_preset_source_from_the_users_file(tmp_path, monkeypatch, capsys):
    extra = tmp_path / "mine.yaml"
    extra.write_text(
        yaml.safe_dump(
            {"sources": {"auth": {"preset": "syslog_rfc3164", "first_day": "2024-01-01", "error_budget": 0.5}}}
        )
    )
    monkeypatch.setenv("PIPELINE_SOURCES_FILE", str(extra))
    path = sample(tmp_path / "dt=2024-12-31", ["Dec 31 23:59:59 h sshd[1]: bye", "Jan  1 00:30:00 h cron: hi", "oops"])
    assert main(["sources", "check", "auth", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"source auth (syslog format) from {extra}; error budget 50.00%" in out
    assert "Parsed rows: 2" in out and "2025-01-01 00:30:00 UTC" in out
    assert "  line 3: line: matches_format (got oops)" in out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["check", "nosuch", "x.log"], "error: no source 'nosuch'; loaded: access, app"),
        (["check", "access", "/no/such/file.log"], "error: /no/such/file.log: no such file"),
        (["check", "access", "/tmp/dt=2024-13-45/x.log"], "error: /tmp/dt=2024-13-45/x.log: its folder dt=2024-13-45"),
    ],
)
def test_check_usage_errors_exit_2(arguments, message, capsys):
    assert main(["sources", *arguments]) == 2
    assert capsys.readouterr().err.startswith(message)


def test_a_broken_definitions_file_exits_2_naming_it(tmp_path, monkeypatch, capsys):
    extra = tmp_path / "mine.yaml"
    extra.write_text(yaml.safe_dump({"sources": {"web": {"preset": "json", "first_day": "2024-01-01", "colour": 1}}}))
    monkeypatch.setenv("PIPELINE_SOURCES_FILE", str(extra))
    assert main(["sources", "list"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {extra}: source 'web' is invalid: colour: Extra inputs")
