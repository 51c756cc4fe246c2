"""Every data file the package reads at run time is named by pyproject's package data.

An editable install (how the tests run) finds any file in the tree; a wheel ships only
what ``[tool.setuptools.package-data]`` names, so a template missing there works here
and fails for every user who ran ``pip install diffai``.
"""

from __future__ import annotations

import fnmatch
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the suite runs on 3.11
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "diffai"


def _data_files() -> list[str]:
    """Files in the package that are not Python source or build output."""
    skipped = {".py", ".pyc", ".c", ".so"}
    return sorted(
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and path.suffix not in skipped and "__pycache__" not in path.parts
    )


def test_every_data_file_ships_in_the_wheel() -> None:
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["diffai"]
    missing = [name for name in _data_files() if not any(fnmatch.fnmatch(name, g) for g in globs)]
    assert _data_files() and missing == []
