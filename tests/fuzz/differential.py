"""diffai's PyTorch reader against the loader users run, on the same bytes.

The guarantee (docs/security.md): on every file, either diffai refuses it in
one line, or ``torch.load(weights_only=True)`` loads it too and the two agree
on every tensor's name, shape, dtype and bytes, bit for bit. So a file torch
refuses is one diffai must refuse as well.

The reference side runs in one long-lived child process limited to 1.5 GiB
of address space (``REFERENCE_LIMIT``): a fuzzed size makes torch allocate
whatever it declares, and a torch that runs out of memory or crashes counts as
a refusal. It runs ``weights_only=True`` only, never anything else, with the
numpy scalar globals allowed, as torch's own message tells users to do for
checkpoints that hold ``np.float64`` values (diffai reads those; they carry no
tensor), and so are the plain values of a training checkpoint diffai reads as
data (numpy arrays, ``argparse.Namespace``, paths, dates; not a ``deque``, whose
``APPENDS`` torch's weights-only unpickler refuses), the arrays compared as
tensors. A sparse tensor is described by its ``to_dense()``, what
diffai compares. Names are flattened by diffai's own ``flatten_checkpoint`` on both
sides: the naming is diffai's convention, what is compared is the parsing.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from diffai.errors import DiffaiError
from diffai.formats import open_model

REPO = Path(__file__).resolve().parents[2]
#: The reference child's address space; torch itself takes about 650 MiB of it.
REFERENCE_LIMIT = 3 << 29
#: A tensor as both sides describe it: shape, dtype name and a digest of its C-order bytes.
Described = dict[str, list[Any]]

_CHILD = r"""
import hashlib, json, resource, sys, warnings
LIMIT = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))
import argparse, datetime, pathlib
import numpy as np, torch
from diffai.dtypes import canonical_name
from diffai.formats.flatten import flatten_checkpoint
from diffai.formats.pytorch.packed import named_packed_tuples
from diffai.formats.pytorch.unpickler import TORCH_DTYPES
RECONSTRUCT = np._core.multiarray._reconstruct
NUMPY = [np.dtype, np._core.multiarray.scalar, np.ndarray, RECONSTRUCT,
         (RECONSTRUCT, "numpy.core.multiarray._reconstruct"),
         *(type(np.dtype(c)) for c in "? b h i l q B H I L Q e f d F D".split())]
HARMLESS = [argparse.Namespace, pathlib.PosixPath, pathlib.PurePosixPath, pathlib.PureWindowsPath,
            (pathlib.PureWindowsPath, "pathlib.WindowsPath"), datetime.date, datetime.datetime,
            datetime.timedelta, datetime.timezone]
warnings.simplefilter("ignore")

def describe(tensor):
    if isinstance(tensor, np.ndarray):
        little = np.ascontiguousarray(tensor.astype(tensor.dtype.newbyteorder("<")))
        return canonical_name(tensor.dtype), hashlib.sha256(little.tobytes()).hexdigest()
    tensor = tensor.dequantize() if tensor.is_quantized else tensor  # diffai compares those
    if tensor.layout != torch.strided:  # a sparse tensor is compared as to_dense() gives it
        tensor = tensor.to_dense()
    tensor = tensor.detach().resolve_conj().resolve_neg().reshape(-1).contiguous()
    raw = tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
    dtype = TORCH_DTYPES.get(str(tensor.dtype).removeprefix("torch."), str(tensor.dtype))
    return dtype, hashlib.sha256(raw).hexdigest()

def load(path):
    with torch.serialization.safe_globals(NUMPY + HARMLESS):
        checkpoint = torch.load(path, weights_only=True, map_location="cpu", mmap=False)
    is_tensor = lambda obj: isinstance(obj, (torch.Tensor, np.ndarray))
    found, scalars = flatten_checkpoint(checkpoint, is_tensor)
    found, _ = named_packed_tuples(path, found, scalars)
    return {name: [list(t.shape), *describe(t)] for name, t in found.items()}

for line in sys.stdin:
    try:
        answer = {"tensors": load(line.rstrip("\n"))}
    except BaseException as exc:  # the reference refuses the file: any failure counts
        answer = {"refused": f"{type(exc).__name__}: {str(exc)[:200]}"}
    print(json.dumps(answer), flush=True)
"""


class Disagreement(AssertionError):
    """diffai accepted a file that torch refuses, or read it otherwise than torch."""


class Reference:
    """``torch.load(weights_only=True)`` in a bounded child, restarted if it dies."""

    def __init__(self) -> None:
        self._child: subprocess.Popen[str] | None = None

    def load(self, path: Path) -> dict[str, Any]:
        child = self._running()
        assert child.stdin is not None and child.stdout is not None
        try:
            child.stdin.write(f"{path}\n")
            child.stdin.flush()
            answer = child.stdout.readline()
        except BrokenPipeError:
            answer = ""
        if not answer:  # killed by the memory limit or a crash in torch: a refusal too
            self.close()
            return {"refused": "the reference loader died"}
        return json.loads(answer)

    def _running(self) -> subprocess.Popen[str]:
        if self._child is None or self._child.poll() is not None:
            self._child = subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(REFERENCE_LIMIT)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                cwd=REPO,
            )
        return self._child

    def close(self) -> None:
        if self._child is not None:
            self._child.kill()
            self._child.wait()
            self._child = None


def diffai_view(path: Path) -> Described | str:
    """diffai's tensors, described as the reference describes torch's, or its one-line refusal."""
    try:
        model = open_model(path, "pytorch")
        return {name: _described(ref.array(), ref.dtype) for name, ref in model.tensors.items()}
    except DiffaiError as exc:
        message = str(exc)
        assert message and "\n" not in message and "\r" not in message, repr(message)
        return message


def _described(array: np.ndarray, dtype: str) -> list[Any]:
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    raw = np.ascontiguousarray(little).tobytes()
    return [list(array.shape), dtype, hashlib.sha256(raw).hexdigest()]


def check_agreement(path: Path, reference: Reference, ours: Described | str | None = None) -> str:
    """``refused`` (by diffai), or ``agreed``; ``Disagreement`` otherwise."""
    ours = diffai_view(path) if ours is None else ours
    if isinstance(ours, str):
        return "refused"
    theirs = reference.load(path)
    if "refused" in theirs and _TORCH_REFUSES_SCRIPT_OBJECTS in theirs["refused"]:
        return "unchecked"  # a dynamic LSTM's packed weights: torch reads them only unsafely
    if "refused" in theirs:
        raise Disagreement(f"diffai read {path} but torch refuses it: {theirs['refused']}")
    if ours != theirs["tensors"]:
        raise Disagreement(f"diffai and torch read {path} differently:\n{ours}\n{theirs}")
    return "agreed"


#: What torch's weights-only loader says of a ``torch.ScriptObject``, which diffai reads as data
#: (tests/test_format_quantized.py checks those against ``torch.load(weights_only=False)``).
_TORCH_REFUSES_SCRIPT_OBJECTS = "GLOBAL torch.ScriptObject was not an allowed global"

_reference = Reference()


def pytorch_differential_input(data: bytes, workdir: Path) -> None:
    """The pytorch target's bytes (odd first byte: a data.pkl, else a whole file), compared."""
    from tests.fuzz.targets import no_code_runs, torch_zip

    path = workdir / "differential.pt"
    path.write_bytes(torch_zip(data[1:]) if data[:1] and data[0] & 1 else data[1:])
    with no_code_runs():  # the reference child is a process: started outside the watch
        ours = diffai_view(path)
    check_agreement(path, _reference, ours)


DIFFERENTIAL_TARGETS = {"pytorch_differential": pytorch_differential_input}
