"""A reader for ``diffai.formats.isolated`` that misbehaves as the file tells it to.

Run in the isolated child by tests/test_isolated.py: each way a C parser can go
wrong on hostile bytes (a crash, a hang, a spin, a flood of writes, an
allocation, a corrupted answer) is played here for real, in the real child,
under the real limits, so every path of the parent's handling is exercised.
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from diffai.model import Model, TensorRef

VALUES = np.arange(6, dtype=np.float32).reshape(2, 3)


def read_in_process(path: Path) -> Model:
    return BEHAVIOURS[path.read_text().strip()](path)


def _model(path: Path, **scalars: object) -> Model:
    ref = TensorRef("w", VALUES.shape, "f32", load=lambda: VALUES)
    return Model(str(path), "misbehaving", path.stat().st_size, {"w": ref}, scalars=scalars)


def _spin_cpu(path: Path) -> Model:
    """The child's CPU limit is the wall clock's backstop and never fires first in real use;
    here the reader lowers it to what it has used so far, so the kernel's SIGXCPU is real."""
    used = int(resource.getrusage(resource.RUSAGE_SELF).ru_utime) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (used, resource.getrlimit(resource.RLIMIT_CPU)[1]))
    while True:
        pass


def _flood(path: Path) -> Model:
    with open(Path(sys.argv[4]) / "flood", "wb") as out:
        while True:
            out.write(bytes(1 << 20))


def _allocate(path: Path) -> Model:
    return _model(path, held=len(bytearray(8 << 30)))


def _rogue_answer(text: bytes, array: np.ndarray | None = None) -> Callable[[Path], Model]:
    """A child gone wrong writes its own answer and leaves before the real one is written."""

    def write(path: Path) -> Model:
        folder = Path(sys.argv[4])
        (folder / "answer.json").write_bytes(text)
        if array is not None:
            np.save(folder / "0.npy", array, allow_pickle=True)
        os._exit(0)

    return write


BEHAVIOURS: dict[str, Callable[[Path], Model]] = {
    "ok": lambda path: _model(path, epoch=3),
    "sleep": lambda path: time.sleep(600),  # type: ignore[func-returns-value]
    "spin": _spin_cpu,
    "flood": _flood,
    "segfault": lambda path: ctypes.string_at(0),  # type: ignore[return-value]
    "exit": lambda path: sys.exit(3),
    "allocate": _allocate,
    "huge-answer": lambda path: _model(path, text="x" * (65 << 20)),
    "answer-not-json": _rogue_answer(b"{'tensors': []}"),
    "answer-a-list": _rogue_answer(b"[]"),
    "answer-without-scalars": _rogue_answer(b'{"tensors": [], "metadata": {}}'),
    "answer-key-twice": _rogue_answer(b'{"tensors": [], "tensors": [], "scalars": {}}'),
    "array-of-objects": _rogue_answer(
        b'{"format": "x", "tensors": ["w"], "scalars": {}, "metadata": {}}',
        np.array([{"a": 1}], dtype=object),
    ),
}
