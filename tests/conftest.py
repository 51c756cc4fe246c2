"""Shared fixtures: real model files in tmp_path, the CLI run in-process, the report schema
the package ships (every report a test writes is validated against it)."""

from __future__ import annotations

import importlib.util
import json
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from safetensors.numpy import save_file

from diffai.cli import main
from diffai.report import report_schema

pytest_plugins = ["tests.github_api", "tests.gitlab_api", "tests.model_fixtures"]


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    def run(*argv: str | Path) -> CliResult:
        code = main([str(arg) for arg in argv])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


#: Runs diffai's CLI with torch unimportable, as in the Action's image (no torch at run time).
_WITHOUT_TORCH = (
    "import sys; sys.modules['torch'] = None; from diffai.cli import main; sys.exit(main())"
)


@pytest.fixture
def run_without_torch() -> Callable[..., CliResult]:
    """The CLI in a child process that cannot import torch: proof the run path needs none."""

    def run(*argv: str | Path) -> CliResult:
        command = [sys.executable, "-c", _WITHOUT_TORCH, *map(str, argv)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        return CliResult(done.returncode, done.stdout, done.stderr)

    return run


@pytest.fixture
def hide_module(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Make an optional dependency look uninstalled, as the extras' errors see it."""

    def hide(name: str) -> None:
        found = importlib.util.find_spec
        monkeypatch.setattr(
            importlib.util,
            "find_spec",
            lambda wanted, *rest: None if wanted == name else found(wanted, *rest),
        )

    return hide


@pytest.fixture(scope="session")
def report_validator() -> jsonschema.protocols.Validator:
    return jsonschema.Draft202012Validator(report_schema())


@pytest.fixture
def validate_report(report_validator: Any) -> Callable[[dict[str, Any]], None]:
    def validate(document: dict[str, Any]) -> None:
        json.dumps(document, allow_nan=False)  # strict JSON: no NaN/Infinity tokens
        report_validator.validate(document)

    return validate


@pytest.fixture
def write_safetensors(tmp_path: Path) -> Callable[..., Path]:
    def write(
        name: str, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None
    ) -> Path:
        path = tmp_path / name
        save_file({k: np.array(v, order="C") for k, v in tensors.items()}, path, metadata=metadata)
        return path

    return write


def raw_safetensors(path: Path, header: dict[str, Any] | bytes, data: bytes = b"") -> Path:
    """A safetensors file written byte by byte, to build the malformed ones."""
    encoded = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)
    return path
