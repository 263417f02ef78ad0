"""The worked examples of `docs/sources.md` work as the document says.

Each example is a YAML block after a `<!-- example: NAME day=D loaded=N quarantined=M -->`
marker, followed by a text block of sample lines (the text after `   <- ` on a line is a
comment for the reader). The example must load, and its lines parsed for day D must give N
rows and M quarantined rows, with the reasons the comments name.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
import yaml

from pipeline.sources.spec import load_sources
from pipeline_tests.parsing import PROJECT_ROOT, parse

DOC = PROJECT_ROOT / "docs" / "sources.md"
EXAMPLE = re.compile(
    r"<!-- example: (?P<name>\w+) day=(?P<day>[\d-]+) loaded=(?P<loaded>\d+) quarantined=(?P<quarantined>\d+) -->\n"
    r"```yaml\n(?P<yaml>.*?)```\n```text\n(?P<text>.*?)```",
    re.DOTALL,
)
EXAMPLES = {match["name"]: match for match in EXAMPLE.finditer(DOC.read_text(encoding="utf-8"))}


def test_every_format_has_a_worked_example():
    assert set(EXAMPLES) == {"regex", "json", "logfmt", "syslog", "delimited", "delimited_header"}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_worked_example(name: str, tmp_path: Path) -> None:
    example = EXAMPLES[name]
    path = tmp_path / "sources.yaml"
    path.write_text(example["yaml"], encoding="utf-8")
    [spec] = load_sources(path).values()
    lines, expected = [], {}
    for number, line in enumerate(example["text"].splitlines(), start=1):
        text, _, comment = line.partition("   <- ")
        lines.append(text)
        if comment and ":" in comment and not comment.startswith("20"):
            expected[number] = comment.split(" (")[0]
    result = parse(spec, "\n".join(lines).encode() + b"\n", dt.date.fromisoformat(example["day"]))
    assert (result.events.height, result.quarantined.height) == (int(example["loaded"]), int(example["quarantined"]))
    reasons = {number: "; ".join(found) for number, found in result.reasons().items()}
    assert set(reasons) == set(expected)
    for number, named in expected.items():
        assert reasons[number].startswith(named), (number, reasons[number])
    assert yaml.safe_load(example["yaml"])["sources"]


def test_readme_example_loads_and_parses(tmp_path: Path) -> None:
    # The README's "Adding a source" example is a working definition.
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Adding a source\n", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "sources.yaml"
    path.write_text(block, encoding="utf-8")
    spec = load_sources(path)["web"]
    data = (
        b'{"ts": "2024-03-01T10:00:00Z", "level": "info", "msg": "hi", "ctx": {"user_id": 7}}\n'
        b'{"ts": "2024-03-01T10:00:01Z", "level": "trace", "msg": "x"}\n'
    )
    result = parse(spec, data, dt.date(2024, 3, 1))
    assert result.rows("level", "message", "user") == [(1, "info", "hi", 7)]
    assert result.reasons() == {2: ["level: isin(['debug', 'info', 'warn', 'error'])"]}
