"""Faults while diffai writes: a signal mid-run, a full disk, a failing stdout.

Whatever happens, the outputs are all there and whole, or none of them is:
no report, no markdown, no ``.report.json.*`` temporary file. tests/test_cli.py
checks that a failed read writes no report.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from diffai import report as report_module
from diffai.errors import ReportError
from tests.conftest import CliResult
from tests.hostile.conftest import TIME_LIMIT

#: Big enough that comparing takes seconds on any machine: 2 x 300 MB.
TENSORS, ELEMENTS = 25, 3_000_000


@pytest.fixture(scope="module")
def big_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("big")
    names = [f"layers.{i}.weight" for i in range(TENSORS)]
    base, cand = folder / "base.safetensors", folder / "cand.safetensors"
    save_file({name: np.zeros(ELEMENTS, np.float32) for name in names}, base)
    save_file({name: np.full(ELEMENTS, 0.5, np.float32) for name in names}, cand)
    return base, cand


@pytest.fixture
def many_tensors(write_safetensors: Callable[..., Path]) -> tuple[Path, Path]:
    """Two small models whose report is about 200 KB: 300 changed tensors."""
    base = {f"blocks.{i}.weight": np.arange(4, dtype=np.float32) for i in range(300)}
    cand = {name: values + 1 for name, values in base.items()}
    return write_safetensors("a.safetensors", base), write_safetensors("b.safetensors", cand)


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"]
)
def test_a_signal_mid_run_exits_by_it_and_leaves_no_file(
    big_models: tuple[Path, Path], tmp_path: Path, signum: int, code: int
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    outputs = [
        "--report",
        out / "report.json",
        "--markdown",
        out / "comment.md",
        "--junit",
        out / "j.xml",
    ]
    argv = [sys.executable, "-m", "diffai", *big_models, "--progress", *outputs]
    child = subprocess.Popen([str(arg) for arg in argv], stderr=subprocess.PIPE, text=True)
    stderr = _read_until(child, "comparing")  # the progress bar: the comparison has begun
    child.send_signal(signum)
    sent = time.monotonic()
    assert child.wait(timeout=TIME_LIMIT) == code, "".join(stderr)
    assert time.monotonic() - sent < TIME_LIMIT
    assert leftovers(out) == []


def _read_until(child: subprocess.Popen[str], text: str) -> list[str]:
    """Read the child's stderr, in a thread that goes on to the end, until ``text`` appears."""
    seen: list[str] = []
    found = threading.Event()

    def read() -> None:
        while chunk := child.stderr.read(1):  # type: ignore[union-attr]
            seen.append(chunk)
            if text in "".join(seen[-len(text) :]):
                found.set()

    threading.Thread(target=read, daemon=True).start()
    assert found.wait(TIME_LIMIT), "".join(seen)
    return seen


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 KiB tmpfs: a real full disk, for root; skipped where mounting is not allowed."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


def test_a_full_disk_leaves_no_partial_report(
    run_cli: Callable[..., CliResult], many_tensors: tuple[Path, Path], tiny_disk: Path
) -> None:
    report = tiny_disk / "report.json"
    result = run_cli(*many_tensors, "--report", report)
    assert result.code == 2
    assert result.err == f"diffai: error: {report}: cannot write: No space left on device\n"
    assert leftovers(tiny_disk) == []


def test_one_output_failing_removes_the_others(
    run_cli: Callable[..., CliResult],
    many_tensors: tuple[Path, Path],
    tiny_disk: Path,
    tmp_path: Path,
) -> None:
    """The report fits, the markdown does not: neither is left, so no job reads half a run."""
    report, markdown = tmp_path / "report.json", tiny_disk / "comment.md"
    report.write_text("a stale report from an earlier run\n")
    result = run_cli(*many_tensors, "--report", report, "--markdown", markdown)
    assert result.code == 2 and "comment.md: cannot write: No space left on device" in result.err
    assert not report.exists() and leftovers(tiny_disk) == []


@pytest.fixture
def full_device(tmp_path: Path) -> Path:
    """A device that fails every write with ENOSPC, like /dev/full (which, for root, a
    regression could replace with a file: so root gets a private node of its own)."""
    if os.geteuid() != 0:
        return Path("/dev/full")
    node = tmp_path / "full"
    os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
    return node


def test_a_report_to_a_full_device_fails_in_one_line(
    run_cli: Callable[..., CliResult], many_tensors: tuple[Path, Path], full_device: Path
) -> None:
    result = run_cli(*many_tensors, "--report", full_device)
    assert result.code == 2
    assert result.err == f"diffai: error: {full_device}: cannot write: No space left on device\n"
    assert stat.S_ISCHR(full_device.stat().st_mode)  # written to, never replaced by a file


def test_stdout_to_a_full_device_fails_and_writes_no_report(
    many_tensors: tuple[Path, Path], full_device: Path, tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    with full_device.open("w") as stdout:
        done = subprocess.run(
            [sys.executable, "-m", "diffai", *map(str, many_tensors), "--report", str(report)],
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            timeout=TIME_LIMIT,
            check=False,
        )
    assert done.returncode == 2
    assert done.stderr == "diffai: error: standard output: cannot write: No space left on device\n"
    assert not report.exists()


@pytest.mark.parametrize(
    ("fault", "code"), [(KeyboardInterrupt, 130), (OSError(28, "No space left"), 2)]
)
def test_a_fault_between_write_and_rename_leaves_no_temporary_file(
    run_cli: Callable[..., CliResult],
    many_tensors: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fault: BaseException | type[BaseException],
    code: int,
) -> None:
    """A signal (or a failing rename) after the temporary file is complete: the narrowest window."""

    def interrupted(source: str, target: str) -> None:
        raise fault

    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(report_module.os, "replace", interrupted)
    assert run_cli(*many_tensors, "--report", out / "report.json").code == code
    assert leftovers(out) == []


def test_write_atomically_raises_report_error_and_cleans_up(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder" / "report.json"
    with pytest.raises(ReportError, match="cannot write: No such file or directory"):
        report_module.write_atomically(missing, "{}")
    assert leftovers(tmp_path) == []
