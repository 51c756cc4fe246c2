"""The child side of ``isolated``: limit this process, run the reader, hand back its model.

Started as ``python -I -c BOOT SYS_PATH MODULE PATH FOLDER LIMITS``. The limits
are set before the file is opened, so no byte of it is parsed in an unbounded
process. The answer is ``FOLDER/answer.json`` (names, scalars, metadata, or the
error the reader raised) and ``FOLDER/<i>.npy`` for the i-th tensor, written
without pickle; it is written last, through a rename, so a child that dies
leaves none.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import signal
from pathlib import Path
from typing import Any

import numpy as np

from diffai.dtypes import numpy_dtype
from diffai.errors import UnreadableModel
from diffai.formats.limits import check_model
from diffai.model import Model

#: Each limit the parent asks for, and what it adds: CPU time is the wall-clock timeout's
#: backstop, so it is a second longer and never the one that fires first.
LIMITS = {
    "memory_bytes": (resource.RLIMIT_AS, 0),
    "seconds": (resource.RLIMIT_CPU, 1),
    "file_bytes": (resource.RLIMIT_FSIZE, 0),
}


def main(argv: list[str]) -> int:
    module, path, folder, limits = argv
    limit_self(json.loads(limits))
    write_answer(Path(folder), _read(module, Path(path), Path(folder)))
    return 0


def limit_self(limits: dict[str, int]) -> None:
    """Each limit at most what was asked, and never above what this process already has.

    Python ignores SIGXFSZ, so a write past the limit would be an ``OSError`` the reader
    may swallow; restored, the kernel's signal ends the child and the parent names it.
    """
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    for key, (which, margin) in LIMITS.items():
        soft, hard = resource.getrlimit(which)
        asked = limits[key] + margin
        wanted = asked if soft == resource.RLIM_INFINITY else min(asked, soft)
        resource.setrlimit(which, (wanted, hard))


def _read(module: str, path: Path, folder: Path) -> dict[str, Any]:
    try:
        model = importlib.import_module(module).read_in_process(path)
        check_model(path, model)  # before any value is read: its budget is what bounds them
        _write_arrays(model, folder)
    except UnreadableModel as exc:
        return {"error": type(exc).__name__, "problem": exc.problem}
    except MemoryError:
        problem = "reading it needs more memory than the reader may use"
        return {"error": "MalformedModel", "problem": problem}
    return {
        "format": model.format,
        "tensors": list(model.tensors),
        "dtypes": [ref.dtype for ref in model.tensors.values()],
        "scalars": model.scalars,
        "metadata": model.metadata,
    }


def _write_arrays(model: Model, folder: Path) -> None:
    """One at a time, chunk by chunk: a reader that streams its values never holds a
    tensor whole here, and one that loads them holds one tensor at most."""
    for index, ref in enumerate(model.tensors.values()):
        dtype = numpy_dtype(ref.dtype)
        header = {"descr": _npy_descr(dtype), "fortran_order": False, "shape": ref.shape}
        with (folder / f"{index}.npy").open("wb") as handle:
            np.lib.format.write_array_header_1_0(handle, header)
            for chunk in ref.chunks():
                handle.write(np.ascontiguousarray(chunk, dtype).tobytes())


def _npy_descr(dtype: np.dtype) -> str:
    """npy has no bf16 or f8: their bytes go as unsigned integers of their size, and the
    answer's ``dtypes`` says what they are."""
    return f"<u{dtype.itemsize}" if dtype.kind == "V" else dtype.str


def write_answer(folder: Path, document: dict[str, Any]) -> None:
    partial = folder / "answer.json.partial"
    partial.write_text(json.dumps(document), encoding="utf-8")
    os.replace(partial, folder / "answer.json")
