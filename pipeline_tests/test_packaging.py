"""The wheel: every module of `pipeline` with the data files it reads at run time, and nothing else
(not the tests). Built from a copy of the project, so the build leaves nothing in the checkout."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pipeline_tests.conftest import PROJECT_ROOT

IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")


@pytest.mark.timeout(300)  # a wheel build in an isolated environment: ~5-20 s
def test_the_wheel_ships_pipeline_with_its_data_and_without_the_tests(tmp_path: Path) -> None:
    source = tmp_path / "project"
    for name in ("pyproject.toml", "README.md"):
        source.mkdir(exist_ok=True)
        shutil.copy(PROJECT_ROOT / name, source / name)
    for package in ("pipeline", "pipeline_tests"):
        shutil.copytree(PROJECT_ROOT / package, source / package, ignore=IGNORED)
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dist), str(source)],
        check=True,
        capture_output=True,
        timeout=280,
    )
    [wheel] = dist.glob("log_pipeline-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())

    packaged = {name for name in names if not name.startswith("log_pipeline-")}
    assert {name.split("/")[0] for name in packaged} == {"pipeline"}
    # Every package (every folder of modules) is a regular package, with its __init__.py.
    expected = {
        path.relative_to(source).as_posix() for path in (source / "pipeline").rglob("*") if path.suffix == ".py"
    }
    assert {"pipeline/engine/__init__.py", "pipeline/engine/ingest.py", "pipeline/engine/lake/__init__.py"} <= expected
    assert {path.parent.as_posix() + "/__init__.py" for path in map(Path, expected)} <= expected
    # The built-in source definitions and presets, read from beside their module at run time.
    assert packaged == expected | {"pipeline/sources/sources.yaml", "pipeline/sources/presets.yaml"}
