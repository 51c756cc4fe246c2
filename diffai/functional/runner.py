"""Run one ONNX model on the probes in a bounded child (``child``), and read back its outputs.

The child is ``diffai.formats.isolated``'s: limited in address space
(``memory_mb``), wall-clock and CPU time (``timeout_seconds``) and bytes per
file written, its stdin, stdout and stderr closed, and here its environment
replaced by two variables, so no token, proxy setting or ``HOME`` reaches a
process that runs an untrusted graph. A child that ran one is anything
afterwards: its answer is read as strictly as a hostile file, and every output
array through diffai's own npy reader.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from diffai.errors import MissingExtra, UnreadableModel, UsageError
from diffai.formats import numpy as npy
from diffai.formats.isolated import ChildLimits, answer_document, bad_answer, boot, run_child
from diffai.functional.child import MAX_OUTPUT_BYTES
from diffai.functional.sandbox import machine
from diffai.policy.functional import FunctionalPolicy
from diffai.text import one_line

BOOT = boot("diffai.functional.child")
#: Intra-op threads of each session: both models alike, so thread count never shows as drift.
THREADS = 2
#: The child's whole environment.
CHILD_ENV = {"LC_ALL": "C", "OMP_NUM_THREADS": "1"}
#: ORT's messages quote node names and shapes; a line keeps this much.
SHOWN_PROBLEM = 400
CHILD_PROBLEMS = {
    "sandbox": "ONNX Runtime was not started: {problem}",
    "load": "ONNX Runtime cannot load it: {problem}",
    "run": "ONNX Runtime failed on probe run {run}: {problem}",
    "outputs": "its outputs are too large: {problem}",
}


@dataclass(frozen=True)
class Outputs:
    """What one model answered: its output names, which are tensors, and where they are."""

    names: tuple[str, ...]
    kinds: dict[str, str]
    runs: int
    folder: Path
    peak_rss_bytes: int | None = None

    def array(self, run: int, index: int) -> np.ndarray:
        path = self.folder / str(run) / f"{index}.npy"
        try:
            (ref,) = npy.read(path).tensors.values()
        except (UnreadableModel, OSError, ValueError) as exc:
            raise UnreadableModel(
                path, f"an output of the run is unreadable: {one_line(exc)}"
            ) from exc
        return ref.array()


def require_runner(path: Path) -> None:
    """What running needs, checked before any child starts."""
    if importlib.util.find_spec("onnxruntime") is None:
        raise MissingExtra(path, "running it (regression_test.functional) needs onnxruntime", "run")
    if machine() is None:
        raise UsageError(
            "regression_test.functional runs models only where diffai can deny them the "
            "network (Linux on x86_64 or aarch64)"
        )


def run_model(path: Path, side: str, probes: Path, out: Path, policy: FunctionalPolicy) -> Outputs:
    """``path`` run on every probe run in ``probes``; its outputs land in ``out``."""
    reader = f"ONNX Runtime, running the {side}"
    limits = ChildLimits(policy.memory_mb << 20, policy.timeout_seconds, MAX_OUTPUT_BYTES)
    out.mkdir()
    # CPU time counts every thread: the backstop allows the main one and each intra-op one.
    child_limits = {**asdict(limits), "seconds": limits.seconds * (THREADS + 1)}
    args = [str(path), str(probes), str(out), json.dumps(child_limits), str(THREADS)]
    run_child(path, reader, limits, args, BOOT, CHILD_ENV)
    document = answer_document(path, out / "answer.json", reader)
    if "error" in document:
        raise _child_error(path, document)
    return _outputs(path, reader, document, out)


def _child_error(path: Path, document: dict[str, object]) -> UnreadableModel:
    kind = str(document.get("error"))
    problem = one_line(str(document.get("problem", "")).strip())[:SHOWN_PROBLEM]
    if kind == "missing":
        return MissingExtra(path, f"running it needs onnxruntime ({problem})", "run")
    template = CHILD_PROBLEMS.get(kind, "ONNX Runtime failed: {problem}")
    return UnreadableModel(path, template.format(problem=problem, run=document.get("run")))


def _outputs(path: Path, reader: str, document: dict[str, object], out: Path) -> Outputs:
    names, kinds, runs = (document.get(key) for key in ("outputs", "kinds", "runs"))
    named = isinstance(names, list) and all(isinstance(name, str) for name in names)
    if not (named and isinstance(kinds, dict) and isinstance(runs, int) and runs >= 0):
        raise bad_answer(path, reader, "its answer lacks outputs, kinds or runs")
    peak = document.get("peak_rss_bytes")
    peak = peak if isinstance(peak, int) and not isinstance(peak, bool) else None
    return Outputs(tuple(names), {str(k): str(v) for k, v in kinds.items()}, runs, out, peak)
