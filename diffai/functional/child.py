"""The child side of a model run: limit this process, deny it the network, run every probe.

Started by ``runner`` as ``python -I -c BOOT SYS_PATH MODEL PROBES OUT LIMITS THREADS``
with an environment of its own (no token, no proxy, no ``HOME``). In order:
the ``resource`` limits of ``isolated_child``; ONNX Runtime imported (trusted
code); the seccomp filter (``sandbox``), so no byte of the model is parsed by a
process that could open a socket or start a program; then one session, on the
CPU only, with bounded threads, no custom-op library, no optimized model saved,
and the runs one after the other. Each run's outputs go to ``OUT/<run>/<i>.npy``
as they come, so memory holds one run. The answer (``OUT/answer.json``) is
written last, through a rename.
"""

from __future__ import annotations

import json
import resource
from pathlib import Path
from typing import Any

import numpy as np

from diffai.formats.isolated_child import limit_self, write_answer
from diffai.functional.probes import NAMES
from diffai.functional.sandbox import deny_network_and_programs

#: ORT's error texts quote whole shapes and node lists; the parent shortens them further.
MAX_PROBLEM = 2000
#: Bytes of outputs one model may write over all runs (the disk the comparison borrows).
MAX_OUTPUT_BYTES = 2 << 30


def main(argv: list[str]) -> int:
    model, probes, out, limits, threads = argv
    limit_self(json.loads(limits))
    write_answer(Path(out), _run(Path(model), Path(probes), Path(out), int(threads)))
    return 0


def _run(model: Path, probes: Path, out: Path, threads: int) -> dict[str, Any]:
    try:
        import onnxruntime
    except ImportError:
        return {"error": "missing", "problem": "onnxruntime is not installed"}
    try:
        deny_network_and_programs()
    except OSError as exc:
        return {"error": "sandbox", "problem": f"cannot deny it the network: {exc}"}
    try:
        session = _session(onnxruntime, model, threads)
    except Exception as exc:  # ORT raises its own classes, and RuntimeError, for a bad graph
        return {"error": "load", "problem": str(exc)[:MAX_PROBLEM]}
    return _runs(session, probes, out)


def _session(onnxruntime: Any, model: Path, threads: int) -> Any:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 4  # errors come back as exceptions; stderr is /dev/null anyway
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def _runs(session: Any, probes: Path, out: Path) -> dict[str, Any]:
    names = json.loads((probes / NAMES).read_text("utf-8"))
    outputs = [port.name for port in session.get_outputs()]
    kinds: dict[str, str] = {}
    written = 0
    runs = sorted((p for p in probes.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    for run in runs:
        feed = {name: np.load(run / f"{i}.npy", allow_pickle=False) for i, name in enumerate(names)}
        try:
            values = session.run(None, feed)
        except Exception as exc:  # a kernel's failure on these inputs, in ORT's words
            return {"error": "run", "problem": str(exc)[:MAX_PROBLEM], "run": int(run.name)}
        written += sum(value.nbytes for value in values if isinstance(value, np.ndarray))
        if written > MAX_OUTPUT_BYTES:
            problem = f"over {MAX_OUTPUT_BYTES:,} bytes by run {run.name}; use fewer probes"
            return {"error": "outputs", "problem": problem}
        (out / run.name).mkdir()
        for index, (name, value) in enumerate(zip(outputs, values, strict=True)):
            kinds[name] = _save(out / run.name / f"{index}.npy", value)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux counts KiB
    return {"outputs": outputs, "kinds": kinds, "runs": len(runs), "peak_rss_bytes": peak}


def _save(path: Path, value: Any) -> str:
    """A numeric tensor as npy; anything else (sequences, maps, strings) only named."""
    if not isinstance(value, np.ndarray):
        return type(value).__name__
    if value.dtype.kind not in "biuf":
        return f"array of {value.dtype}"
    np.save(path, np.ascontiguousarray(value), allow_pickle=False)
    return "tensor"
