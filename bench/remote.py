"""Remote models (issue 16, part 2): a pair read by HTTP ranges against downloading it first.

    python bench/run.py --suite remote [--remote-mib 256]

A 2 x 2 GiB safetensors pair (32 f32 tensors of 64 MiB; ``--remote-mib`` for a
smaller one) is served over loopback by a range server that adds 20 ms to every
request, as a far-away store would. Measured, each in a child process:

- ``diffai URL URL``: wall time, peak RSS, bytes the server sent against the
  bytes of the compared tensors (and whether any byte went twice), and the bytes
  the process wrote to storage (``/proc/self/io`` ``write_bytes``);
- ``curl`` downloading both files (one request each, the same 20 ms), then
  ``diffai`` on the local copies: the time a user spends today;
- ``diffai`` on the local files alone (warm cache), for the floor.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
LATENCY = 0.020
TENSOR_BYTES = 64 << 20
RANGE = re.compile(r"^bytes=(\d+)-(\d+)$")
#: Runs the CLI and prints what the process wrote to storage and its peak RSS.
CHILD = """
import json, resource, sys
from diffai.cli import main
code = main(sys.argv[1:])
io = dict(line.split(": ") for line in open("/proc/self/io").read().splitlines())
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"code": code, "written": int(io["write_bytes"]), "rss": rss}), file=sys.stderr)
"""


@dataclass
class Served:
    """Byte ranges the server sent, per file."""

    pieces: dict[str, list[tuple[int, int]]]

    def total(self) -> int:
        return sum(end - start for pieces in self.pieces.values() for start, end in pieces)

    def twice(self) -> int:
        repeated = 0
        for pieces in self.pieces.values():
            reached = 0
            for start, end in sorted(pieces):
                repeated += max(0, min(end, reached) - start)
                reached = max(reached, end)
        return repeated


def write_pair(folder: Path, total: int) -> tuple[Path, Path]:
    """Two safetensors files of ``total`` bytes each, written one tensor at a time."""
    count = max(1, total // TENSOR_BYTES)
    rows = TENSOR_BYTES // 4 // 4096
    header = {
        f"layers.{i}.weight": {"dtype": "F32", "shape": [rows, 4096],
                               "data_offsets": [i * TENSOR_BYTES, (i + 1) * TENSOR_BYTES]}
        for i in range(count)
    }  # fmt: skip
    raw = json.dumps(header).encode()
    paths = folder / "base.safetensors", folder / "cand.safetensors"
    rng = np.random.default_rng(16)
    with paths[0].open("wb") as base, paths[1].open("wb") as cand:
        for handle in (base, cand):
            handle.write(len(raw).to_bytes(8, "little") + raw)
        for _ in range(count):
            values = rng.standard_normal((rows, 4096), dtype=np.float32)
            base.write(values.tobytes())
            cand.write((values + np.float32(1e-3)).tobytes())
    return paths


def serve(folder: Path) -> tuple[ThreadingHTTPServer, Served]:
    served = Served({})
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            time.sleep(LATENCY)
            path = folder / self.path.lstrip("/")
            size = path.stat().st_size
            asked = RANGE.match(self.headers.get("Range", ""))
            start, end = (int(asked[1]), min(size, int(asked[2]) + 1)) if asked else (0, size)
            self.send_response(206 if asked else 200)
            if asked:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
            self.send_header("Content-Length", str(end - start))
            self.end_headers()
            self.wfile.flush()
            with path.open("rb") as handle:
                sent = _sendfile(self.connection.fileno(), handle.fileno(), start, end - start)
            with lock:
                served.pieces.setdefault(self.path, []).append((start, start + sent))

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, served


def _sendfile(socket: int, file: int, offset: int, count: int) -> int:
    sent = 0
    while sent < count:
        done = os.sendfile(socket, file, offset + sent, count - sent)
        if done == 0:
            break
        sent += done
    return sent


def run_diffai(*argv: str) -> dict[str, float]:
    started = time.perf_counter()
    child = subprocess.run([sys.executable, "-c", CHILD, *argv, "-q"], cwd=ROOT,
                           capture_output=True, text=True, check=False)  # fmt: skip
    seconds = time.perf_counter() - started
    figures = json.loads(child.stderr.strip().splitlines()[-1])
    if figures["code"] not in (0, 1):
        raise RuntimeError(child.stderr)
    return {**figures, "seconds": seconds}


def run_curl(urls: list[str], folder: Path) -> float:
    started = time.perf_counter()
    argv = ["curl", "-sSf", "--no-progress-meter", "--parallel"]
    for url in urls:
        argv += ["-o", str(folder / url.rsplit("/", 1)[1]), url]
    subprocess.run(argv, check=True)
    return time.perf_counter() - started


def run_suite(total_mib: int = 2048, echo=print) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="diffai-remote-") as scratch:
        folder = Path(scratch)
        base, cand = write_pair(folder, total_mib << 20)
        server, served = serve(folder)
        urls = [f"http://127.0.0.1:{server.server_address[1]}/{p.name}" for p in (base, cand)]
        remote = run_diffai(*urls)
        file_bytes = base.stat().st_size
        compared = 2 * (file_bytes - 8 - int.from_bytes(base.read_bytes()[:8], "little"))
        fetched, twice = served.total(), served.twice()
        downloads = folder / "downloads"
        downloads.mkdir()
        curl_seconds = run_curl(urls, downloads)
        after_curl = run_diffai(*(str(downloads / p.name) for p in (base, cand)))
        local = run_diffai(str(base), str(cand))
        server.shutdown()
    figures = {
        "pair_mib": total_mib, "remote_seconds": remote["seconds"], "remote_rss": remote["rss"],
        "remote_written": remote["written"], "fetched_ratio": fetched / compared,
        "bytes_twice": twice, "curl_seconds": curl_seconds,
        "curl_then_diffai_seconds": curl_seconds + after_curl["seconds"],
        "curl_written": 2 * file_bytes,
        "local_seconds": local["seconds"], "local_rss": local["rss"],
        "load": os.getloadavg()[0],
    }  # fmt: skip
    for name, value in figures.items():
        echo(f"{name:>26}: {value:,.3f}" if isinstance(value, float) else f"{name:>26}: {value:,}")
    return figures


HEADING = "\n## Remote models\n"


def kept_section(page: Path) -> str:
    """This suite's section of ``docs/performance.md``, which the perf suite's rewrite keeps."""
    text = page.read_text() if page.exists() else ""
    return HEADING + text.split(HEADING, 1)[1] if HEADING in text else ""


def write_section(page: Path, figures: dict[str, float], command: str) -> None:
    """This suite's section replaced, up to the next heading or marked section (the MoE
    suite's, ``<!-- moe suite: start -->``, follows it and must survive a remote rerun)."""
    text = page.read_text()
    head, _, rest = text.partition(HEADING)
    following = re.search(r"\n(## |<!-- )", rest)
    tail = rest[following.start() + 1 :] if following else ""
    body = section(figures, command).rstrip("\n") + "\n"
    page.write_text(head.rstrip("\n") + "\n" + body + ("\n" + tail if tail else ""))


def section(figures: dict[str, float], command: str) -> str:
    mib = int(figures["pair_mib"])
    speedup = figures["curl_then_diffai_seconds"] / figures["remote_seconds"]
    rows = [
        ("diffai URL URL (ranges)", figures["remote_seconds"], figures["remote_rss"],
         figures["remote_written"]),
        ("curl both files, then diffai", figures["curl_then_diffai_seconds"], None,
         figures["curl_written"]),
        ("  of which curl", figures["curl_seconds"], None, figures["curl_written"]),
        ("diffai on local files (warm cache)", figures["local_seconds"], figures["local_rss"], 0),
    ]  # fmt: skip
    table = "\n".join(
        f"| {name} | {seconds:.2f} s | {_mib(rss)} | {_mib(written)} |"
        for name, seconds, rss, written in rows
    )
    return f"""{HEADING}
A {mib:,} MiB x 2 safetensors pair (f32 tensors of 64 MiB) served over loopback by a
range server that adds {LATENCY * 1000:.0f} ms to every request (`bench/remote.py`, run by
`{command}`), one run each:

| command | time | peak RSS | written to disk |
| --- | --- | --- | --- |
{table}

- bytes fetched / bytes of the compared tensors: **{figures["fetched_ratio"]:.4f}** (goal
  at most 1.02); bytes served twice: **{int(figures["bytes_twice"])}**;
- written to disk by the remote run: **{int(figures["remote_written"])} bytes**
  (`/proc/self/io` `write_bytes`; curl writes the whole pair);
- downloading first and then comparing takes **{speedup:.2f}x** as long as reading by
  ranges: the statistics run while the next ranges are in flight (4 per stream, 8 MiB
  each), where the download must finish before the comparison starts;
- peak RSS: the remote run's is its own buffers (at most 4 ranges of 8 MiB in flight per
  stream, a stream per side and worker), whatever the model's size; the local run's counts
  the pages of the memory-mapped files it touched (page cache, not heap);
- load average {figures["load"]:.1f} (1 minute, at the end; the machine is shared).
"""


def _mib(count: float | None) -> str:
    return "" if count is None else f"{count / (1 << 20):,.0f} MiB"
