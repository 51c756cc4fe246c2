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
    _limit_self(json.loads(limits))
    _answer(Path(folder), _read(module, Path(path), Path(folder)))
    return 0


def _limit_self(limits: dict[str, int]) -> None:
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
        "scalars": model.scalars,
        "metadata": model.metadata,
    }


def _write_arrays(model: Model, folder: Path) -> None:
    """One at a time, so a reader that loads lazily holds one tensor at most."""
    for index, ref in enumerate(model.tensors.values()):
        np.save(folder / f"{index}.npy", np.asarray(ref.array()), allow_pickle=False)


def _answer(folder: Path, document: dict[str, Any]) -> None:
    partial = folder / "answer.json.partial"
    partial.write_text(json.dumps(document), encoding="utf-8")
    os.replace(partial, folder / "answer.json")
