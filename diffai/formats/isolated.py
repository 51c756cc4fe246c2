"""Readers built on libraries not hardened against hostile input, run in a bounded child.

scipy's MAT parser segfaults on files with four mutated bytes, and the HDF5
library is C parsing a file's own structures: in diffai's process, such a crash
kills the CI step with no word of why. So such a reader's ``read_in_process``
runs in a child process (``isolated_child``) limited in address space, CPU time
and bytes written, which hands each tensor back as a ``.npy`` file and
everything else as JSON. A crash, a timeout or an exhausted limit becomes one
``UnreadableModel`` line naming the signal; and since a child that parsed
hostile bytes may be anything, its answer is read like any hostile file: JSON
strictly, bounded, and every array through diffai's own npy reader (no pickle),
memory-mapped, then checked by ``check_model`` like any model.

Measured on a 33 KB MAT v5 file: the child adds about 0.55 s (starting Python
and importing numpy and scipy), once per file.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from diffai.dtypes import NAMES, itemsize, numpy_dtype
from diffai.errors import MalformedModel, UnreadableModel
from diffai.formats import numpy as npy
from diffai.formats.limits import byte_budget
from diffai.formats.strictjson import DuplicateKey, InvalidJson, loads_strict
from diffai.model import Model, TensorRef
from diffai.text import one_line

#: Address space for Python, numpy, scipy and h5py themselves, on top of the file's budget.
CHILD_OVERHEAD_BYTES = 1 << 30
#: Wall-clock seconds a child may take: a start, and 50 MB/s of file (scipy reads 1 GB in
#: about 5 s). Its CPU limit is one second more, a backstop that never fires first.
BASE_SECONDS = 10
BYTES_PER_SECOND = 50_000_000
#: The child's JSON answer: names and scalars, never values.
ANSWER_NAME = "answer.json"
MAX_ANSWER_BYTES = 64 << 20
#: Errors a child may report, by class name; any other name is an UnreadableModel.
ERRORS: dict[str, type[UnreadableModel]] = {
    cls.__name__: cls for cls in (UnreadableModel, MalformedModel)
}
#: What a signal says about the child, beyond "it crashed".
SIGNAL_PROBLEMS = {
    signal.SIGXCPU: "{reader} used up its CPU time on this file",
    signal.SIGXFSZ: "{reader} wrote more than {limits.file_bytes:,} bytes for this file",
}


def boot(module: str) -> str:
    """``python -c`` code for a child that runs ``module.main`` on its other arguments; it gets
    this process's ``sys.path``, so it imports this very diffai."""
    return (
        "import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
        f"from {module} import main; raise SystemExit(main(sys.argv[2:]))"
    )


BOOT = boot("diffai.formats.isolated_child")


@dataclass(frozen=True)
class ChildLimits:
    """What the child sets on itself before it opens the file (``resource`` limits)."""

    memory_bytes: int
    seconds: int
    file_bytes: int

    @classmethod
    def for_file(cls, size: int) -> ChildLimits:
        budget = byte_budget(size)
        seconds = BASE_SECONDS + size // BYTES_PER_SECOND
        return cls(budget + CHILD_OVERHEAD_BYTES, seconds, budget + MAX_ANSWER_BYTES)


def read_isolated(path: Path, module: str, reader: str) -> Model:
    """``module.read_in_process(path)``, run in a bounded child; ``reader`` names it in errors."""
    limits = ChildLimits.for_file(path.stat().st_size)
    with tempfile.TemporaryDirectory(prefix="diffai-isolated-") as folder:
        args = [module, str(path), folder, json.dumps(asdict(limits))]
        run_child(path, reader, limits, args)
        # Mapped arrays outlive the folder: an unlinked file stays while it is mapped.
        return _answer(path, Path(folder), reader)


def run_child(
    path: Path, reader: str, limits: ChildLimits, args: list[str], boot: str = BOOT,
    env: dict[str, str] | None = None,
) -> None:  # fmt: skip
    """``boot`` (a child's ``main``) run on ``args`` in a child; its failures as one line.

    ``env`` None passes this process's environment on; the graph runner passes its own.
    """
    argv = [sys.executable, "-I", "-c", boot, json.dumps(sys.path), *args]
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, timeout=limits.seconds, check=False, env=env,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        problem = f"{reader} took over {limits.seconds} s on this file and was stopped"
        raise UnreadableModel(path, problem) from exc
    except OSError as exc:
        raise UnreadableModel(path, f"cannot start {reader}: {exc.strerror or exc}") from exc
    if done.returncode < 0:
        raise UnreadableModel(path, _signal_problem(reader, -done.returncode, limits))
    if done.returncode:
        raise UnreadableModel(path, f"{reader} failed on this file (exit status {done.returncode})")


def _signal_problem(reader: str, number: int, limits: ChildLimits) -> str:
    template = SIGNAL_PROBLEMS.get(number, "{reader} crashed on this file (signal {number})")
    return template.format(reader=reader, number=number, limits=limits)


def _answer(path: Path, folder: Path, reader: str) -> Model:
    document = answer_document(path, folder / ANSWER_NAME, reader)
    if "error" in document:
        error = ERRORS.get(document["error"], UnreadableModel)
        raise error(path, str(document.get("problem", "")))
    names, scalars, metadata, format = (
        document.get(key) for key in ("tensors", "scalars", "metadata", "format")
    )
    shaped = isinstance(names, list) and all(isinstance(name, str) for name in names)
    if not (shaped and isinstance(scalars, dict) and isinstance(metadata, dict)):
        raise bad_answer(path, reader, "its answer lacks tensors, scalars or metadata")
    dtypes = document.get("dtypes", [None] * len(names))
    if not (isinstance(dtypes, list) and len(dtypes) == len(names)):
        raise bad_answer(path, reader, "its dtypes do not match its tensors")
    tensors = {
        name: _tensor(path, folder, reader, index, name, dtype)
        for index, (name, dtype) in enumerate(zip(names, dtypes, strict=True))
    }
    size = path.stat().st_size
    return Model(str(path), str(format), size, tensors, scalars=scalars, metadata=metadata)


def answer_document(path: Path, answer: Path, reader: str) -> dict[str, Any]:
    """A child's JSON answer, read as strictly as a hostile file."""
    try:
        if answer.stat().st_size > MAX_ANSWER_BYTES:
            raise bad_answer(path, reader, f"its answer is over {MAX_ANSWER_BYTES:,} bytes")
        document = loads_strict(answer.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, InvalidJson, DuplicateKey) as exc:
        raise bad_answer(path, reader, f"its answer is unreadable: {one_line(exc)}") from exc
    if not isinstance(document, dict):
        raise bad_answer(path, reader, "its answer is not a JSON object")
    return document


def _tensor(
    path: Path, folder: Path, reader: str, index: int, name: str, dtype: object
) -> TensorRef:
    """``dtype``, when the child names one, is what the npy's bytes are (bf16 travels as u16)."""
    try:
        (ref,) = npy.read(folder / f"{index}.npy").tensors.values()
    except (UnreadableModel, OSError, ValueError) as exc:
        problem = f"its array for {name!r} is unreadable: {one_line(exc)}"
        raise bad_answer(path, reader, problem) from exc
    if dtype is None or dtype == ref.dtype:
        return TensorRef(name, ref.shape, ref.dtype, ref.load)
    if dtype not in NAMES or itemsize(dtype) != itemsize(ref.dtype):
        raise bad_answer(path, reader, f"its dtype {str(dtype)[:40]!r} for {name!r} does not fit")
    view = numpy_dtype(dtype)
    return TensorRef(name, ref.shape, str(dtype), lambda: ref.array().view(view))


def bad_answer(path: Path, reader: str, problem: str) -> MalformedModel:
    return MalformedModel(path, f"{reader} gave an answer diffai cannot use ({problem})")
