"""What every hostile input must get: exit 2, one line naming the file, no report, no code run.

``refused`` runs the real CLI in this process (fast, for the many crafted
files). ``run_bounded`` runs it in a child process limited in address space
and time, for the inputs built to exhaust one of them; one child takes a whole
batch, since starting Python is what costs time here. ``Call`` and
``declare_size`` craft the pickles and zip archives several modules need.
"""

from __future__ import annotations

import json
import resource
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from tests.conftest import CliResult

#: The address space a bomb may leave the child: Python and numpy take 150 MiB of it, torch 650.
MEMORY_LIMIT = 3 << 29  # 1.5 GiB
#: Seconds one hostile input may take; the slowest refusal here takes about 3 on a busy machine.
TIME_LIMIT = 20
#: Runs ``diffai.cli.main`` once per argv of a JSON list, reporting code, stderr and seconds.
_DRIVER = """
import contextlib, io, json, sys, time
from diffai.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    err, start = io.StringIO(), time.monotonic()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    results.append([code, err.getvalue(), time.monotonic() - start])
print(json.dumps(results))
"""


@dataclass(frozen=True)
class Refusal:
    """How the CLI treated a hostile input."""

    hostile: Path
    code: int
    err: str
    report_written: bool
    seconds: float = 0.0


def assert_refused(refusal: Refusal, problem: str, named: Path | None = None) -> None:
    """Exit 2; one line, ``diffai: error: <file>[:<line>]: ...<problem>...``; no report."""
    line = refusal.err.removesuffix("\n")
    assert refusal.code == 2, refusal
    assert "Traceback" not in refusal.err and "internal error" not in refusal.err, refusal.err
    assert refusal.err.count("\n") == 1 and refusal.err.endswith("\n"), refusal.err
    assert line.startswith(f"diffai: error: {named or refusal.hostile}:"), line  # ":3:" too
    assert problem in line, (problem, line)
    assert not refusal.report_written
    assert refusal.seconds < TIME_LIMIT, refusal


def write_baseline(path: Path) -> Path:
    """A small, valid model to compare a hostile file against."""
    save_file({"w": np.arange(4, dtype=np.float32)}, path)
    return path


@pytest.fixture
def baseline(tmp_path: Path) -> Path:
    return write_baseline(tmp_path / "baseline.safetensors")


@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    """The file a crafted payload creates if it ever runs."""
    return tmp_path / "PWNED"


@pytest.fixture
def refused(
    run_cli: Callable[..., CliResult], tmp_path: Path, baseline: Path
) -> Callable[..., Refusal]:
    """Run ``diffai BASELINE HOSTILE --report ... [extra]`` in this process."""

    def run(hostile: Path, *extra: str | Path) -> Refusal:
        report = tmp_path / "report.json"
        start = time.monotonic()
        result = run_cli(baseline, hostile, "--report", report, *extra)
        return Refusal(hostile, result.code, result.err, report.exists(), time.monotonic() - start)

    return run


def as_candidate(baseline: Path, hostile: Path) -> list[str]:
    return [str(baseline), str(hostile)]


def run_bounded(
    hostiles: Sequence[Path], argv: Callable[[Path, Path], list[str]] = as_candidate
) -> list[Refusal]:
    """``diffai <argv(baseline, hostile)> --report ...`` for each file, in one bounded child."""
    folder = hostiles[0].parent
    baseline = write_baseline(folder / "bounded-baseline.safetensors")
    reports = [folder / f"{hostile.name}.report.json" for hostile in hostiles]
    argvs = [
        [*argv(baseline, hostile), "--report", str(report)]
        for hostile, report in zip(hostiles, reports, strict=True)
    ]
    child = subprocess.run(
        [sys.executable, "-c", _DRIVER, json.dumps(argvs)],
        capture_output=True,
        text=True,
        timeout=TIME_LIMIT * len(argvs),
        preexec_fn=limit_memory,
        check=True,
    )
    results = json.loads(child.stdout)
    return [
        Refusal(hostile, code, err, report.exists(), seconds)
        for hostile, report, (code, err, seconds) in zip(hostiles, reports, results, strict=True)
    ]


def limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


class Call:
    """Pickles as ``func(*args)``, the way a hostile ``__reduce__`` does."""

    def __init__(self, func: object, *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.func, self.args


def declare_size(path: Path, member: str, size: int) -> Path:
    """Make the central directory claim ``size`` uncompressed bytes for ``member``."""
    raw = bytearray(path.read_bytes())
    entry = raw.index(b"PK\x01\x02")
    while raw[entry + 46 : entry + 46 + len(member)] != member.encode():
        entry = raw.index(b"PK\x01\x02", entry + 4)
    struct.pack_into("<I", raw, entry + 24, size)  # the uncompressed size field
    path.write_bytes(bytes(raw))
    return path
