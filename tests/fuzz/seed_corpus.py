"""Write the seed corpus: ``python tests/fuzz/seed_corpus.py`` (needs torch and safetensors).

Seeds are small valid files (every branch a mutation should start from) and a
few crafted attacks, whose mutations probe the allow-list. The fuzzer adds
what it finds to the same folders; only these seeds are committed.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.fuzz.targets import SENTINEL

CORPUS = Path(__file__).resolve().parent / "corpus"
WHOLE_FILE, PICKLE_ONLY = b"\x00", b"\x01"  # the pytorch target's first byte


def safetensors_seeds() -> dict[str, bytes]:
    every_dtype = {
        f"{dtype}.w": np.arange(6).astype(dtype).reshape(2, 3)
        for dtype in ("float64", "float32", "float16", "int64", "int8", "uint8", "bool")
    }
    return {
        "every-dtype": save(every_dtype, metadata={"format": "pt"}),
        "scalar-and-empty": save({"s": np.array(1.5, np.float32), "e": np.zeros((0, 4))}),
        "no-tensors": _raw_safetensors(b'{"__metadata__": {"k": "v"}}'),
        "bf16": _raw_safetensors(
            json.dumps({"h": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}).encode(),
            b"\x80\x3f\x00\x40",
        ),
    }


def _raw_safetensors(header: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header)) + header + data


def pytorch_seeds() -> dict[str, bytes]:
    """Whole files torch wrote, and pickles that name the target's storages (16 and 8 bytes)."""
    weight = torch.arange(4, dtype=torch.float32)
    checkpoint = {
        "model": OrderedDict(w=weight, step=torch.tensor(3)),
        "epoch": 2,
        "lr": np.float64(0.1),
    }
    views = {"t": weight.reshape(2, 2).t(), "half": torch.ones(2, dtype=torch.bfloat16)}
    seeds = {
        "checkpoint": WHOLE_FILE + _torch_save(checkpoint),
        "views": WHOLE_FILE + _torch_save(views),
        "legacy": WHOLE_FILE + _torch_save({"w": weight}, _use_new_zipfile_serialization=False),
        "state-dict-pickle": PICKLE_ONLY + _data_pkl(_torch_save(checkpoint)),
        "parameter-pickle": PICKLE_ONLY
        + _data_pkl(_torch_save({"p": torch.nn.Parameter(weight), "i": torch.tensor(7)})),
    }
    attacks = {"os-system": (os.system, f"touch {SENTINEL}"), "eval": (eval, "1"),
               "subprocess": (subprocess.call, ["touch", str(SENTINEL)])}  # fmt: skip
    for name, call in attacks.items():
        seeds[f"attack-{name}"] = PICKLE_ONLY + _pickled_call(*call)
    return seeds


def _torch_save(obj: object, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, **kwargs)
    return buffer.getvalue()


def _data_pkl(archive: bytes) -> bytes:
    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        return opened.read(next(n for n in opened.namelist() if n.endswith("/data.pkl")))


class _Call:
    def __init__(self, func: object, arg: object) -> None:
        self.func, self.arg = func, arg

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.func, (self.arg,)


def _pickled_call(func: object, arg: object) -> bytes:
    return pickle.dumps({"w": _Call(func, arg)}, protocol=2)


def policy_seeds() -> dict[str, bytes]:
    return {
        "policy": b"""version: 1
regression_test:
  max_relative_change: 0.05
  min_cosine_similarity: 0.995
  fail_on_nan: true
  ignore: ["*.num_batches_tracked"]
  overrides:
    - &head {match: "classifier.*", max_relative_change: 0.5, severity: warning}
    - {<<: *head, match: "head.*"}
  metrics:
    baseline: eval/baseline.json
    candidate: eval/candidate.json
    rules:
      - metric: accuracy
        greater_is_better: true
        threshold: 0.80
        max_degradation: 0.01
deployment_readiness:
  min_readiness: 0.8
  max_quantization_error: 1e-3
  require_no_anomalies: true
""",
        "metrics-json": b'{"accuracy": 0.91, "eval": {"loss": 0.25, "f1": [0.5, 1e3]}}',
        "metrics-yaml": b"accuracy: 0.9\neval:\n  loss: .nan\n  steps: 0x10\n",
    }


def matlab_seeds() -> dict[str, bytes]:
    """v5 plain, compressed, with structs, cells, chars and logicals; v7.3 in MATLAB's layout."""
    import scipy.io

    from tests.test_format_matlab import VARIABLES, write_v73

    nested = {"s": {"a": np.arange(4.0), "c": np.array([np.ones(2), "txt"], dtype=object)},
              "name": "hello", "mask": np.array([True, False])}  # fmt: skip
    seeds = {}
    for name, variables, compress in [
        ("v5-plain", {"w": np.arange(6.0).reshape(2, 3), "b": np.ones(3, np.float32)}, False),
        ("v5-nested", nested, False),
        ("v5-compressed", nested, True),
    ]:
        buffer = io.BytesIO()
        scipy.io.savemat(buffer, variables, do_compression=compress)
        seeds[name] = buffer.getvalue()
    with tempfile.TemporaryDirectory() as folder:
        seeds["v73"] = write_v73(Path(folder) / "v73.mat", VARIABLES).read_bytes()
    return seeds


def keras_seeds() -> dict[str, bytes]:
    """Keras 3 weights (zip-wrapped: first byte odd), a legacy full model (whole: even)."""
    import h5py

    seeds = {}
    with tempfile.TemporaryDirectory() as folder:
        keras3, legacy = Path(folder) / "k3.h5", Path(folder) / "legacy.h5"
        with h5py.File(keras3, "w") as handle:
            handle.create_dataset("layers/dense/vars/0", data=np.ones((2, 3), np.float32))
            handle.create_dataset("layers/dense/vars/1", data=np.zeros(3, np.float32))
            handle.create_dataset("optimizer/vars/0", data=np.int64(3))
        with h5py.File(legacy, "w") as handle:
            layers = handle.create_group("model_weights")
            layers.attrs["layer_names"] = np.array([b"dense"])
            layers.create_dataset("dense/dense/kernel:0", data=np.arange(6.0).reshape(2, 3))
            layers["dense"].attrs["weight_names"] = np.array([b"dense/kernel:0"])
        seeds["keras3-in-zip"] = b"\x01" + keras3.read_bytes()
        seeds["legacy-h5"] = b"\x00" + legacy.read_bytes()
    return seeds


SEEDS = {
    "safetensors": safetensors_seeds, "pytorch": pytorch_seeds, "policy": policy_seeds,
    "matlab": matlab_seeds, "keras": keras_seeds,
}  # fmt: skip


def main() -> None:
    for target, seeds in SEEDS.items():
        folder = CORPUS / target
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in seeds().items():
            (folder / name).write_bytes(data)


if __name__ == "__main__":
    main()
