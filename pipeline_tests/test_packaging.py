"""The wheel: every module of `pipeline` with the data files it reads at run time, and nothing else
(not the tests). Built from a copy of the project, so the build leaves nothing in the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from unittest import mock

import pytest

from pipeline_tests.conftest import PROJECT_ROOT

# Without the tokenizer built in place: the wheel build must compile it itself.
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "*.so")


def build_wheel(tmp_path: Path, packages: tuple[str, ...], env: dict[str, str] | None = None) -> tuple[Path, set[str]]:
    """Build the project's wheel from a copy of it holding `packages`; return the copy and the
    wheel's file names."""
    source = tmp_path / "project"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PROJECT_ROOT / name, source / name)
    for package in packages:
        shutil.copytree(PROJECT_ROOT / package, source / package, ignore=IGNORED)
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dist), str(source)],
        check=True,
        capture_output=True,
        timeout=280,
        env=env,
    )
    [wheel] = dist.glob("log_pipeline-*.whl")
    return source, set(zipfile.ZipFile(wheel).namelist())


@pytest.mark.timeout(300)  # a wheel build in an isolated environment: ~5-20 s
def test_the_wheel_ships_pipeline_with_its_data_and_without_the_tests(tmp_path: Path) -> None:
    source, names = build_wheel(tmp_path, ("pipeline", "pipeline_tests"))

    packaged = {name for name in names if not name.startswith("log_pipeline-")}
    assert {name.split("/")[0] for name in packaged} == {"pipeline"}
    # Every package (every folder of modules) is a regular package, with its __init__.py.
    expected = {
        path.relative_to(source).as_posix() for path in (source / "pipeline").rglob("*") if path.suffix == ".py"
    }
    assert {"pipeline/engine/__init__.py", "pipeline/engine/ingest.py", "pipeline/engine/lake/__init__.py"} <= expected
    assert {path.parent.as_posix() + "/__init__.py" for path in map(Path, expected)} <= expected
    # The built-in source definitions and presets, read from beside their module at run time, and
    # the native tokenizer, compiled by the build for this interpreter (its C source stays out).
    built = {"pipeline/sources/sources.yaml", "pipeline/sources/presets.yaml",
             "pipeline/engine/formats/_tokenizer" + sysconfig.get_config_var("EXT_SUFFIX")}  # fmt: skip
    assert packaged == expected | built


@pytest.mark.timeout(300)
def test_without_a_c_compiler_the_install_goes_on_without_the_native_tokenizer(tmp_path: Path) -> None:
    """A machine without a C compiler (CC fails). Expected: the wheel still builds, without the
    compiled tokenizer; the `delimited` format then takes its polars path (same rows:
    reliability/test_format_properties.py) and says so once in the log."""
    _, names = build_wheel(tmp_path, ("pipeline",), env={**os.environ, "CC": "false", "LDSHARED": "false"})
    assert "pipeline/engine/formats/delimited.py" in names
    assert not [name for name in names if "_tokenizer" in name]


def test_a_missing_native_tokenizer_is_logged_and_the_polars_path_used(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.engine import formats
    from pipeline.engine.formats.delimited import native_tokenizer

    with monkeypatch.context() as patched:
        # As on a machine where it was not compiled: the import fails.
        patched.delattr(formats, "_tokenizer", raising=False)
        patched.setitem(sys.modules, "pipeline.engine.formats._tokenizer", None)
        assert native_tokenizer.__wrapped__() is None
    assert "the native tokenizer of `delimited` is not built" in caplog.text
    with mock.patch.dict(os.environ, {"PIPELINE_NATIVE_TOKENIZER": "0"}):
        assert native_tokenizer.__wrapped__() is None
