"""What diffai is measured against, each run as its own process by ``perf.py``.

    python bench/competitors.py floor|torch|torch-f64|diffai-python BASE CAND   (.safetensors)

Each prints one JSON object on stdout: ``pass_seconds`` (the work, after imports)
and what it computed. Each imports only what it needs, inside its function.

- ``floor``: the least any comparison must do, a bare single-threaded numpy pass:
  both files memory-mapped, the header parsed by hand, ``np.add.reduce`` over every
  tensor of both files (no copies, no float64, no second pass);
- ``torch``: the script a user writes with torch (threads at torch's default):
  ``safe_open(framework="pt")``, per tensor mean/std/min/max of both sides,
  ``(a - b).norm() / a.norm()`` and the cosine similarity, in float32 (``.float()``);
- ``torch-f64``: the same script in float64 (``.double()``), which a user who wants
  numbers they can compare writes: torch's float32 reductions over a 44M-element
  tensor are off by up to 6e-3;
- ``diffai-python``: ``diffai.diff_paths`` of the Rust-based ``diffai-python``
  0.5.2 from PyPI, whose module is also named ``diffai``: ``perf.py`` installs it
  in its own folder and puts that first on ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from typing import Any


def floor(base: str, cand: str) -> dict[str, Any]:
    import resource
    import struct

    import numpy as np

    dtypes = {"F32": np.float32, "F16": np.float16, "F64": np.float64}
    views = []
    for path in (base, cand):
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        data = np.memmap(path, np.uint8, mode="r", offset=8 + length)
        header.pop("__metadata__", None)
        tensors = {}
        for name, entry in header.items():
            start, end = entry["data_offsets"]
            tensors[name] = data[start:end].view(dtypes[entry["dtype"]])
        views.append(tensors)
    start, faults = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    total = 0
    for name, values in views[0].items():
        for side in (values, views[1][name]):
            np.add.reduce(side)
            total += side.nbytes
    return {
        "pass_seconds": time.perf_counter() - start,
        "bytes": total,
        "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults,
    }


def torch_script(base: str, cand: str, precision: str = "float") -> dict[str, Any]:
    import torch
    import torch.nn.functional as F
    from safetensors import safe_open

    start = time.perf_counter()
    tensors = {}
    with safe_open(base, framework="pt") as left, safe_open(cand, framework="pt") as right:
        for name in left.keys():  # noqa: SIM118 (safe_open is not a dict)
            a = getattr(left.get_tensor(name), precision)()
            b = getattr(right.get_tensor(name), precision)()
            stats = [a.mean(), a.std(), a.min(), a.max(), b.mean(), b.std(), b.min(), b.max()]
            relative_l2 = (a - b).norm() / a.norm()
            cosine = F.cosine_similarity(a.flatten(), b.flatten(), dim=0)
            tensors[name] = {
                "stats": [value.item() for value in stats],
                "relative_l2": relative_l2.item(),
                "cosine": cosine.item(),
            }
    return {
        "pass_seconds": time.perf_counter() - start,
        "threads": torch.get_num_threads(),
        "tensors": tensors,
    }


def diffai_python(base: str, cand: str) -> dict[str, Any]:
    import diffai

    start = time.perf_counter()
    records = diffai.diff_paths(base, cand)
    seconds = time.perf_counter() - start
    computed = Counter(record["path"].rsplit(".", 1)[-1] for record in records)
    return {
        "pass_seconds": seconds,
        "module": diffai.__file__,
        "records": len(records),
        "computed": dict(computed),
    }


def torch_script_f64(base: str, cand: str) -> dict[str, Any]:
    return torch_script(base, cand, "double")


TOOLS = {
    "floor": floor,
    "torch": torch_script,
    "torch-f64": torch_script_f64,
    "diffai-python": diffai_python,
}


def main() -> None:
    if len(sys.argv) != 4 or sys.argv[1] not in TOOLS:
        raise SystemExit(__doc__.split("\n\n")[1])
    json.dump(TOOLS[sys.argv[1]](sys.argv[2], sys.argv[3]), sys.stdout)


if __name__ == "__main__":
    main()
