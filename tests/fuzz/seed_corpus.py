"""Write the seed corpus: ``python tests/fuzz/seed_corpus.py`` (needs torch and safetensors).

Seeds are small valid files (every branch a mutation should start from) and a
few crafted attacks, whose mutations probe the allow-list. The fuzzer adds
what it finds to the same folders; only these seeds are committed.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import io
import json
import os
import pathlib
import pickle
import struct
import subprocess
import sys
import tempfile
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.fuzz.targets import PEFT_CONFIG, SCRIPT_CODE, SCRIPT_PICKLE, SENTINEL, peft_factors

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
    legacy_views = {**views, "neg": torch._neg_view(weight)}
    seeds = {
        "checkpoint": WHOLE_FILE + _torch_save(checkpoint),
        "views": WHOLE_FILE + _torch_save(views),
        "legacy": WHOLE_FILE + _torch_save({"w": weight}, _use_new_zipfile_serialization=False),
        # Records deflated, as zip tools rewrite them: torch's zip reader inflates them too.
        "deflated": WHOLE_FILE + _deflated(_torch_save(checkpoint)),
        "legacy-views": WHOLE_FILE
        + _torch_save(legacy_views, _use_new_zipfile_serialization=False),
        "state-dict-pickle": PICKLE_ONLY + _data_pkl(_torch_save(checkpoint)),
        "parameter-pickle": PICKLE_ONLY
        + _data_pkl(_torch_save({"p": torch.nn.Parameter(weight), "i": torch.tensor(7)})),
    }
    seeds["sparse"] = WHOLE_FILE + _torch_save(_sparse_checkpoint(weight))
    seeds["harmless"] = WHOLE_FILE + _torch_save(harmless_checkpoint())
    seeds.update(_quantized_seeds())
    attacks = {"os-system": (os.system, f"touch {SENTINEL}"), "eval": (eval, "1"),
               "subprocess": (subprocess.call, ["touch", str(SENTINEL)])}  # fmt: skip
    for name, call in attacks.items():
        seeds[f"attack-{name}"] = PICKLE_ONLY + _pickled_call(*call)
    return seeds | _build_seeds()


def _build_seeds() -> dict[str, bytes]:
    """BUILD on stand-ins and a legacy meta tensor: once internal errors (issue 11, item 6),
    seeded so that mutations keep reaching those paths."""
    from tests.hostile.test_pytorch_ambiguity_hostile import BUILDS, state_dict
    from tests.hostile.test_pytorch_hostile import program

    seeds = {
        f"build-{case.id}": PICKLE_ONLY + program(state_dict(("x", case.values[0])))
        for case in BUILDS
    }
    meta = _torch_save({"w": torch.empty(2, device="meta")}, _use_new_zipfile_serialization=False)
    seeds["legacy-meta-tensor"] = WHOLE_FILE + meta
    return seeds


def _sparse_checkpoint(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    matrix = weight.reshape(2, 2)
    uncoalesced = torch.sparse_coo_tensor(torch.tensor([[1, 0, 1]]), weight[:3], (3,))
    return {"coo": matrix.to_sparse(), "uncoalesced": uncoalesced, "csr": matrix.to_sparse_csr(),
            "bsc": matrix.to_sparse_bsc((1, 2)), "dense": weight}  # fmt: skip


def harmless_checkpoint() -> dict[str, object]:
    """What a training checkpoint holds besides tensors, read as data (issue 12)."""
    when = datetime.datetime(2026, 12, 1, 9, 30, tzinfo=datetime.UTC)
    return {
        "rng": np.random.RandomState(0).get_state(), "args": argparse.Namespace(lr=0.1),
        "path": pathlib.PurePosixPath("/runs/1"), "at": when, "day": when.date(),
        "took": datetime.timedelta(seconds=5), "device": torch.device("cuda", 0),
        "counts": collections.Counter(a=2),  # no deque: torch's weights-only APPENDS refuses it
    }  # fmt: skip


def _quantized_seeds() -> dict[str, bytes]:
    """Quantized tensors of each scheme, and a dynamic LSTM's packed ``torch.ScriptObject``."""
    x = torch.linspace(-1, 1, 12).reshape(3, 4)
    scales, points = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64), torch.tensor([0, 1, 2])
    tensors = {
        "pt": torch.quantize_per_tensor(x, 0.05, 3, torch.qint8),
        "pc": torch.quantize_per_channel(x, scales, points, 0, torch.quint8),
        "q4": torch.quantize_per_channel(x, scales.float(), points.float(), 0, torch.quint4x2),
    }
    with warnings.catch_warnings():  # torch's deprecation notes on torch.ao.quantization
        warnings.simplefilter("ignore")
        lstm = torch.ao.quantization.quantize_dynamic(torch.nn.LSTM(2, 2), {torch.nn.LSTM})
        return {
            "quantized": WHOLE_FILE + _torch_save(tensors),
            "dynamic-lstm": WHOLE_FILE + _torch_save(lstm.state_dict()),
        }


def _torch_save(obj: object, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, **kwargs)
    return buffer.getvalue()


def _deflated(archive: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as opened, zipfile.ZipFile(buffer, "w") as out:
        for name in opened.namelist():
            out.writestr(name, opened.read(name), compress_type=zipfile.ZIP_DEFLATED)
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


def torchscript_seeds() -> dict[str, bytes]:
    """The target's valid pickle and code file (odd and even first byte), and an attack."""
    touch = f"touch {SENTINEL}".encode()
    attack = b"\x80\x02cos\nsystem\n(X" + len(touch).to_bytes(4, "little") + touch + b"tR."
    return {
        "pickle": PICKLE_ONLY + SCRIPT_PICKLE,
        "code": WHOLE_FILE + SCRIPT_CODE.encode(),
        "os-system": PICKLE_ONLY + attack,
    }


def onnx_seeds() -> dict[str, bytes]:
    """Every storage field, a subgraph with constants, external data naming ``w.data``."""
    import ml_dtypes
    from onnx import TensorProto, helper, numpy_helper

    from tests.onnx_models import field, model_bytes, model_of

    typed = [
        helper.make_tensor("f", TensorProto.FLOAT, [2], [1.5, -2.0]),
        helper.make_tensor("i", TensorProto.INT64, [2], [-1, 2**40]),
        helper.make_tensor("h", TensorProto.FLOAT16, [2], np.array([1, 2], np.float16)),
        helper.make_tensor("d", TensorProto.DOUBLE, [1], [0.5]),
        numpy_helper.from_array(np.array([-8, 7, 3], ml_dtypes.int4), "q"),
        numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "raw"),
    ]
    then = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.ones(2)))],
        "then", [], [], initializer=[numpy_helper.from_array(np.ones(3, np.float32), "w")],
    )  # fmt: skip
    nodes = [
        helper.make_node("Constant", [], ["axes"], value_ints=[0, 1]),
        helper.make_node("If", ["x"], ["y"], name="If_0", then_branch=then, else_branch=then),
    ]
    entries = b"".join(
        field(13, field(1, key) + field(2, value))
        for key, value in ((b"location", b"w.data"), (b"offset", b"16"), (b"length", b"32"))
    )
    external = field(1, 8) + field(2, 1) + field(8, b"e") + entries + field(14, 1)
    return {
        "typed-fields": model_of(typed).SerializeToString(),
        "subgraphs": model_of([], nodes).SerializeToString(),
        "external-data": model_bytes(field(5, external)),
    }


def gguf_seeds() -> dict[str, bytes]:
    """Plain, quantized (Q8_0, Q4_1, a K-quant, an IQ type) and metadata-only GGUF files."""
    from tests.gguf_files import Q, k_quant_blocks, write_gguf

    rng = np.random.default_rng(0)
    values = rng.standard_normal((2, 64)).astype(np.float32)
    keys = {"general.name": "seed", "llama.context_length": 128, "tokens": ["a", "b", "c"]}
    layouts = {
        "plain": {"w": values, "h": values.astype(np.float16), "i": np.arange(4, dtype=np.int32)},
        "quantized": {"q8": (values, Q.Q8_0), "q41": (values, Q.Q4_1)},
        "k-quants": {"q6k": (k_quant_blocks(Q.Q6_K, 1, 1), Q.Q6_K),
                     "iq4": (k_quant_blocks(Q.IQ4_XS, 1, 1), Q.IQ4_XS)},
        "vocab": {},
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        return {
            name: write_gguf(Path(folder) / f"{name}.gguf", tensors, keys).read_bytes()
            for name, tensors in layouts.items()
        }


def name_maps_seeds() -> dict[str, bytes]:
    """A Llama GGUF file as llama.cpp writes one: Q/K permuted (4 and 2 heads), Q8_0 and f32."""
    from tests.gguf_files import Q, write_gguf
    from tests.test_name_maps_gguf import rotary_permuted

    rng = np.random.default_rng(0)
    q, k = rng.standard_normal((8, 32), np.float32), rng.standard_normal((4, 32), np.float32)
    tensors = {"token_embd.weight": (rng.standard_normal((8, 32), np.float32), Q.Q8_0),
               "blk.0.attn_q.weight": (rotary_permuted(q, 4), Q.Q8_0),
               "blk.0.attn_k.weight": rotary_permuted(k, 2),
               "blk.0.attn_norm.weight": np.ones(32, np.float32)}  # fmt: skip
    keys = {"llama.attention.head_count": 4, "llama.attention.head_count_kv": 2}
    with tempfile.TemporaryDirectory() as folder:
        return {"llama": write_gguf(Path(folder) / "llama.gguf", tensors, keys).read_bytes()}


def tflite_seeds() -> dict[str, bytes]:
    """A float and a per-axis int8 constant, and the real int8 model (93 KB)."""
    from tests.real_models import REAL
    from tests.tflite_files import Constant, tflite_model

    weights = np.arange(-12, 12, dtype=np.int8).reshape(4, 6)
    return {
        "built": tflite_model([
            Constant("f", np.linspace(-1, 1, 6, dtype=np.float32)),
            Constant("q", weights, [0.1, 0.2, 0.3, 0.4], [0, 1, 0, -1], axis=0),
        ]),
        "emotion": (REAL / "emotion_model_quantized.tflite").read_bytes(),
    }  # fmt: skip


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


def peft_seeds() -> dict[str, bytes]:
    """The target's valid config (odd first byte) and factors (even)."""
    return {"config": b"\x01" + PEFT_CONFIG, "factors": b"\x00" + peft_factors()}


SEEDS = {
    "safetensors": safetensors_seeds, "pytorch": pytorch_seeds, "policy": policy_seeds,
    "matlab": matlab_seeds, "torchscript": torchscript_seeds, "onnx": onnx_seeds,
    "gguf": gguf_seeds, "tflite": tflite_seeds, "keras": keras_seeds, "peft": peft_seeds,
    "name_maps": name_maps_seeds,
}  # fmt: skip


def main() -> None:
    for target, seeds in SEEDS.items():
        folder = CORPUS / target
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in seeds().items():
            (folder / name).write_bytes(data)


if __name__ == "__main__":
    main()
