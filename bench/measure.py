"""Run a command in its own process and measure it: wall and CPU time, peak memory, output.

Every measured command is spawned by a small ``python -S`` launcher, never
by the benchmark process: at ``exec`` Linux folds the RSS high-water mark of
the memory a child was spawned from into the child's ``ru_maxrss``, so a child
spawned straight from this (torch-importing, GB-allocating) process would
report this process's peak instead of its own.

Memory, two figures per run:

- ``peak_rss``: the child's ``ru_maxrss`` from ``os.wait4`` (= ``VmHWM``), the
  kernel's exact high-water mark, but of *all* resident pages, so it also counts
  the page-cache pages of every memory-mapped model file the child touched
  (about both files' size for diffai, the floor and safetensors' loader);
- ``peak_anon``: the largest ``RssAnon`` (heap, buffers, thread stacks: what the
  process allocates) seen in ``/proc/<pid>/status``, polled every
  ``SAMPLE_SECONDS`` by a thread of the launcher. The kernel keeps no anonymous
  high-water mark and ``VmHWM`` cannot be split afterwards (its file and anonymous
  parts peak at different moments), so this is sampled: a lower bound, taken as the
  maximum over every repetition.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

SAMPLE_SECONDS = 0.005


@dataclass(frozen=True)
class ChildRun:
    exit_code: int
    seconds: float
    cpu_seconds: float
    peak_rss: int
    peak_anon: int
    timed_out: bool
    stdout: str
    stderr: str


def launch(
    stdout_path: str, stderr_path: str, timeout: float, memory_limit: int, argv: list[str]
) -> None:
    """Run ``argv`` and print its exit code, times and memory as JSON (runs in the launcher)."""
    import json
    import os
    import re
    import resource
    import signal
    import threading
    import time

    def anon_bytes(pid: int) -> int:
        try:
            with open(f"/proc/{pid}/status") as status:
                match = re.search(r"^RssAnon:\s+(\d+) kB", status.read(), re.MULTILINE)
        except OSError:
            return 0
        return int(match[1]) * 1024 if match else 0

    def sample(pid: int, done: threading.Event, peak: list[int]) -> None:
        while not done.wait(SAMPLE_SECONDS):
            peak[0] = max(peak[0], anon_bytes(pid))

    def kill(pid: int, expired: list[bool]) -> None:
        expired[0] = True
        os.kill(pid, signal.SIGKILL)

    if memory_limit:  # inherited by the child: an allocation past it fails
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    actions = [
        (os.POSIX_SPAWN_OPEN, 1, stdout_path, flags, 0o600),
        (os.POSIX_SPAWN_OPEN, 2, stderr_path, flags, 0o600),
    ]
    start = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions)
    done, peak, expired = threading.Event(), [0], [False]
    sampler = threading.Thread(target=sample, args=(pid, done, peak))
    sampler.start()
    timer = threading.Timer(timeout, kill, args=(pid, expired)) if timeout else None
    if timer:
        timer.start()
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - start
    if timer:
        timer.cancel()
    done.set()
    sampler.join()
    run = {
        "exit_code": os.waitstatus_to_exitcode(status),
        "seconds": seconds,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss": usage.ru_maxrss * 1024,  # kilobytes on Linux
        "peak_anon": peak[0],
        "timed_out": expired[0],
    }
    print(json.dumps(run))


LAUNCHER = (
    f"SAMPLE_SECONDS = {SAMPLE_SECONDS}\n{inspect.getsource(launch)}\n"
    "import sys\nlaunch(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), "
    "sys.argv[5:])\n"
)


def run_child(
    argv: Sequence[str | Path],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 0.0,
    memory_limit: int = 0,
    keep_stdout: bool = False,
) -> ChildRun:
    """``argv`` run once through the launcher; ``argv[0]`` must be a path to an executable."""
    with tempfile.TemporaryDirectory(prefix="diffai-bench-") as scratch:
        stdout = Path(scratch) / "stdout" if keep_stdout else Path(os.devnull)
        stderr = Path(scratch) / "stderr"
        launcher = [sys.executable, "-S", "-c", LAUNCHER, str(stdout), str(stderr)]
        launcher += [str(timeout), str(memory_limit), *map(str, argv)]
        environment = None if env is None else {**os.environ, **env}
        completed = subprocess.run(
            launcher, capture_output=True, text=True, check=True, env=environment
        )
        return ChildRun(
            **json.loads(completed.stdout),
            stdout=stdout.read_text() if keep_stdout else "",
            stderr=stderr.read_text(errors="replace"),
        )


def executable(name: str) -> str:
    """The full path of a command on PATH (``posix_spawn`` does not search PATH)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        raise SystemExit(f"bench: {name!r} is not on PATH")
    return found


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


# --- the page cache ----------------------------------------------------------------------------


def evict(paths: Iterable[Path]) -> None:
    """Drop the files' pages from the page cache (clean pages only, hence the fsync)."""
    for path in files_in(paths):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm(paths: Iterable[Path]) -> None:
    """Read the files once, so that the next run finds them in the page cache."""
    files = files_in(paths)
    if files:
        subprocess.run(["cat", *map(str, files)], stdout=subprocess.DEVNULL, check=True)


def cached_bytes(paths: Iterable[Path]) -> int | None:
    """Bytes of the files in the page cache, from util-linux ``fincore``; None without it."""
    if not shutil.which("fincore"):
        return None
    files = [str(path) for path in files_in(paths)]
    listing = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", *files],
        capture_output=True,
        text=True,
        check=True,
    )
    return sum(int(line) for line in listing.stdout.split())


def files_in(paths: Iterable[Path]) -> list[Path]:
    """The files themselves, or every file in a folder."""
    return [f for p in paths for f in (sorted(p.iterdir()) if p.is_dir() else [p])]
