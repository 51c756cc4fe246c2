"""TensorFlow files read without TensorFlow, exactly as TensorFlow's own readers read them.

The fixtures are real: TensorFlow 2.21 wrote them, and the values its own readers
return (``tf.train.load_checkpoint``, ``tf.make_ndarray``) are stored beside them
(tests/data/tensorflow/README.md); every tensor diffai reads must equal those bit for bit.
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import diffai
from diffai.dtypes import numpy_dtype
from tests.tensorflow_files import TF_DATA, const_node, field, reference, set_tensor_bytes

MODULE, KERAS, FROZEN = TF_DATA / "module", TF_DATA / "keras", TF_DATA / "frozen.pb"


def bits(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array, array.dtype.newbyteorder("=")).tobytes()


def assert_reads_as_tensorflow(model: diffai.model.Model, expected: dict[str, np.ndarray]) -> None:
    assert sorted(model.tensors) == sorted(expected)
    for name, value in expected.items():
        ref = model.tensors[name]
        assert ref.shape == value.shape, name
        assert numpy_dtype(ref.dtype) == value.dtype.newbyteorder("<"), name
        assert bits(ref.array()) == bits(value), name


@pytest.mark.parametrize(
    ("path", "npz"),
    [
        pytest.param(MODULE, "module.npz", id="tf-module-folder"),
        pytest.param(MODULE / "saved_model.pb", "module.npz", id="saved-model-pb"),
        pytest.param(MODULE / "variables" / "variables.index", "module.npz", id="checkpoint"),
        pytest.param(KERAS, "keras.npz", id="keras-export"),
        pytest.param(FROZEN, "frozen.npz", id="frozen-graph"),
    ],
)
def test_tensorflow_files_read_as_tensorflow_reads_them(path: Path, npz: str) -> None:
    assert_reads_as_tensorflow(diffai.open_model(path), reference(npz))


def test_the_module_keeps_its_dtypes_nesting_and_version() -> None:
    model = diffai.open_model(MODULE)
    dtypes = {name: ref.dtype for name, ref in model.tensors.items()}
    assert dtypes == {
        "blocks.0": "f32", "blocks.1": "f32", "brain": "bf16", "counts": "i32", "half": "f16",
        "inner.w": "f32", "kernel": "f32", "mask": "bool", "scale": "f64", "step": "i64",
    }  # fmt: skip
    assert model.metadata == {"layout": "saved model", "tensorflow_version": "2.21.0", "shards": 1}


def test_the_frozen_graph_holds_typed_and_raw_constants() -> None:
    """A scalar Const keeps its value in float_val, an array in tensor_content."""
    model = diffai.open_model(FROZEN)
    assert model.tensors["Const"].shape == () and model.tensors["Const"].array() == 2.5
    assert list(model.tensors["sevens"].array()) == [7.0] * 4


PATHS = [pytest.param(MODULE, id="saved-model"), pytest.param(FROZEN, id="frozen-graph"),
         pytest.param(KERAS, id="keras-export")]  # fmt: skip


@pytest.mark.parametrize("path", PATHS)
def test_a_tensorflow_model_compared_with_itself_is_unchanged(
    run_cli, tmp_path: Path, validate_report, path: Path
) -> None:
    report = tmp_path / "report.json"
    result = run_cli(path, path, "--report", report)
    assert (result.code, result.err) == (0, "")
    document = json.loads(report.read_text())
    validate_report(document)
    assert document["summary"]["changed"] == 0 and document["summary"]["unchanged"] >= 4


def perturbed(values: np.ndarray, seed: int = 3) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, 0.01, values.shape)
    return (values + noise).astype(values.dtype)


def perturbed_saved_model(target: Path) -> tuple[np.ndarray, np.ndarray]:
    shutil.copytree(MODULE, target)
    kernel = reference("module.npz")["kernel"]
    changed = perturbed(kernel)
    set_tensor_bytes(target, kernel.tobytes(), changed.tobytes())
    return kernel, changed


def perturbed_frozen(target: Path) -> tuple[np.ndarray, np.ndarray]:
    kernel = reference("frozen.npz")["MatMul.ReadVariableOp.resource"]
    changed = perturbed(kernel)
    data = FROZEN.read_bytes()
    assert data.count(kernel.tobytes()) == 1
    target.write_bytes(data.replace(kernel.tobytes(), changed.tobytes()))
    return kernel, changed


@pytest.mark.parametrize(
    ("make", "name"),
    [
        pytest.param(perturbed_saved_model, "kernel", id="saved-model"),
        pytest.param(perturbed_frozen, "MatMul.ReadVariableOp.resource", id="frozen-graph"),
    ],
)
def test_a_perturbed_copy_is_measured_exactly(
    run_cli, tmp_path: Path, validate_report, make: Callable, name: str
) -> None:
    candidate = tmp_path / "candidate"
    before, after = make(candidate)
    baseline = MODULE if candidate.is_dir() else FROZEN
    report = tmp_path / "report.json"
    result = run_cli(baseline, candidate, "--report", report)
    assert result.code == 1, result.err
    document = json.loads(report.read_text())
    validate_report(document)
    entry = {entry["name"]: entry for entry in document["tensors"]}[name]
    exact, base = after.astype(np.float64), before.astype(np.float64)
    for key, value in {"mean": exact.mean(), "std": exact.std(), "min": exact.min(),
                       "max": exact.max()}.items():  # fmt: skip
        assert entry["candidate"][key] == pytest.approx(value, rel=1e-6), key
    l2 = np.sqrt(np.sum((exact - base) ** 2))
    assert entry["diff"]["l2"] == pytest.approx(l2, rel=1e-6)
    assert entry["diff"]["relative_l2"] == pytest.approx(l2 / np.sqrt(np.sum(base**2)), rel=1e-6)
    assert document["summary"]["changed"] == 1


@pytest.mark.parametrize("path", PATHS)
def test_tensorflow_files_read_without_torch(run_without_torch, path: Path) -> None:
    result = run_without_torch(path, path)
    assert (result.code, result.err) == (0, ""), result.err


def test_a_graph_def_is_found_by_its_content(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    shutil.copyfile(FROZEN, path)
    assert diffai.open_model(path).format == "tensorflow"


def test_typed_values_repeat_the_last_as_tensorflow_fills_them(tmp_path: Path) -> None:
    """Tensor::FromProto: fewer values than elements repeat the last; none means zeros."""
    floats = field(5, struct.pack("<2f", 1.5, -2.0))
    ints = field(7, b"".join(bytes([v]) for v in (3, 4)))  # packed varints
    graph = (const_node("f", 1, [2, 3], floats) + const_node("i", 3, [3], ints)
             + const_node("z", 9, [2], b""))  # fmt: skip
    path = tmp_path / "graph.pb"
    path.write_bytes(graph)
    model = diffai.open_model(path)
    assert model.tensors["f"].array().tolist() == [[1.5, -2.0, -2.0], [-2.0, -2.0, -2.0]]
    assert model.tensors["i"].array().tolist() == [3, 4, 4]
    assert model.tensors["z"].array().tolist() == [0, 0]


def test_format_tensorflow_is_a_choice(run_cli) -> None:
    result = run_cli(FROZEN, FROZEN, "--format", "tensorflow")
    assert (result.code, result.err) == (0, "")


def test_without_google_crc32c_the_error_says_what_to_install(run_cli, hide_module) -> None:
    hide_module("google_crc32c")
    result = run_cli(MODULE, MODULE)
    assert result.err == (
        f"diffai: error: {MODULE}: reading TensorFlow checkpoints needs google-crc32c; install "
        "it with: pip install 'diffai[tensorflow]'\n"
    )
