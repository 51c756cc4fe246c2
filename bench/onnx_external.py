"""The ONNX suite: a 3 GiB model with external data compared in bounded memory, and why the
reader walks protobuf by hand instead of calling ``onnx.load``.

    python bench/run.py --suite onnx        # ~3 min, 7.3 GB of scratch files under /tmp

Writes, under a fresh folder in ``/tmp`` (never the repo), removed afterwards:

- ``external/base.onnx`` + ``base.onnx.data``: 12 f32 tensors of 256 MiB (3 GiB) as
  external data, and ``cand.onnx`` naming the same data file (a hard link, not a
  symbolic one, which the reader refuses) but for one tensor, which points at a
  moved copy appended to it;
- ``inline.onnx``: 1 GiB of ``raw_data`` inside the file (4 x 256 MiB).

Then, each in its own process through ``measure.run_child`` (``peak_rss`` is
``VmHWM`` and counts the mapped files' page-cache pages; ``peak_anon`` is what
the process allocates): diffai on the external pair and on the inline model
against itself, and ``onnx.load`` (+ ``numpy_helper.to_array`` per tensor) on
both, the reading a reader built on the ``onnx`` package would start from.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from measure import ChildRun, run_child

#: The checkout's diffai, whatever an editable install elsewhere points at.
REPO = Path(__file__).resolve().parents[1]

MIB = 1 << 20
TENSOR_SHAPE = (8192, 8192)  # 256 MiB of f32
EXTERNAL_TENSORS = 12
INLINE_TENSORS = 4
_ONNX_LOAD = """
import sys
import onnx
from onnx import numpy_helper
model = onnx.load(sys.argv[1])
total = sum(float(numpy_helper.to_array(t).ravel()[0]) for t in model.graph.initializer)
"""


def _write_data(path: Path, tensors: int, seed: int) -> None:
    """Random f32 tensors, written 64 MiB at a time so this process never holds 3 GiB."""
    rng = np.random.default_rng(seed)
    rows = TENSOR_SHAPE[0] // 4
    with path.open("wb") as handle:
        for _ in range(tensors * 4):
            handle.write(rng.standard_normal((rows, TENSOR_SHAPE[1]), np.float32).tobytes())


def _external_model(path: Path, data_name: str, moved: int | None = None) -> None:
    import onnx
    from onnx import TensorProto, helper

    size = TENSOR_SHAPE[0] * TENSOR_SHAPE[1] * 4
    tensors = []
    for index in range(EXTERNAL_TENSORS):
        offset = (EXTERNAL_TENSORS if index == moved else index) * size
        tensor = TensorProto(name=f"layers.{index}.weight", data_type=TensorProto.FLOAT)
        tensor.dims.extend(TENSOR_SHAPE)
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", data_name), ("offset", offset), ("length", size)):
            tensor.external_data.add(key=key, value=str(value))
        tensors.append(tensor)
    graph = helper.make_graph([], "g", [], [], initializer=tensors)
    onnx.save(helper.make_model(graph), str(path))


def _append_moved_copy(data: Path, index: int) -> None:
    size = TENSOR_SHAPE[0] * TENSOR_SHAPE[1] * 4
    source = np.memmap(data, np.float32, "r", offset=index * size, shape=(size // 4,))
    rng = np.random.default_rng(1)
    with data.open("ab") as handle:
        for start in range(0, source.size, 16 * MIB):
            piece = np.asarray(source[start : start + 16 * MIB])
            handle.write((piece + rng.normal(0, 1e-3, piece.size).astype(np.float32)).tobytes())


def _inline_model(path: Path) -> None:
    import onnx
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(2)
    tensors = [
        numpy_helper.from_array(rng.standard_normal(TENSOR_SHAPE, np.float32), f"w{index}")
        for index in range(INLINE_TENSORS)
    ]
    onnx.save(helper.make_model(helper.make_graph([], "g", [], [], initializer=tensors)), str(path))


def build(folder: Path) -> dict[str, Path]:
    external = folder / "external"
    external.mkdir()
    data = external / "base.onnx.data"
    _write_data(data, EXTERNAL_TENSORS, seed=0)
    _append_moved_copy(data, index=5)
    _external_model(external / "base.onnx", data.name)
    _external_model(external / "cand.onnx", data.name, moved=5)
    inline = folder / "inline.onnx"
    _inline_model(inline)
    return {"base": external / "base.onnx", "cand": external / "cand.onnx", "inline": inline}


def _row(what: str, run: ChildRun) -> str:
    return (
        f"{what:<52} {run.seconds:7.1f} s  VmHWM {run.peak_rss / MIB:7.0f} MiB  "
        f"RssAnon {run.peak_anon / MIB:6.0f} MiB  exit {run.exit_code}"
    )


def run_suite() -> None:
    folder = Path(tempfile.mkdtemp(prefix="diffai-bench-onnx-", dir="/tmp"))
    try:
        paths = build(folder)
        data_bytes = (paths["base"].parent / "base.onnx.data").stat().st_size
        print(f"external data: {data_bytes / (1 << 30):.2f} GiB; inline: "
              f"{paths['inline'].stat().st_size / (1 << 30):.2f} GiB")  # fmt: skip
        diffai = [sys.executable, "-m", "diffai"]
        runs = {
            "diffai base.onnx cand.onnx (3 GiB external, 1 moved)": [
                *diffai, paths["base"], paths["cand"], "-q"],
            "diffai inline.onnx inline.onnx (1 GiB raw_data)": [
                *diffai, paths["inline"], paths["inline"], "-q"],
            "onnx.load + to_array, 3 GiB external": [sys.executable, "-c", _ONNX_LOAD,
                                                     paths["base"]],
            "onnx.load + to_array, 1 GiB raw_data inside": [sys.executable, "-c", _ONNX_LOAD,
                                                            paths["inline"]],
        }  # fmt: skip
        for what, argv in runs.items():
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            print(_row(what, run_child(argv, env=env, timeout=900)), flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    run_suite()
