"""Keras files read as Keras saved them: the real fer model (Keras 2 HDF5) and Keras 3's own.

Keras 3 files are saved by Keras itself (torch backend, ``tests/keras_models.py``)
together with the values Keras held; every tensor diffai reads must equal them
bit for bit, under the names ``diffai.formats.keras.layout`` documents.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

import diffai
from diffai.dtypes import numpy_dtype
from diffai.roles import role_of
from tests.keras_models import keras_values, make_keras_models
from tests.real_models import REAL

FER = REAL / "emotion_model.hdf5"
#: diffai's name for each Keras 3 variable (``Variable.path``): the saved keys are Keras's
#: own (class-derived: ``dense``, ``dense_1``), whatever the user named the layers.
KERAS3_NAMES = {
    "dense.0": "first/kernel", "dense.1": "first/bias",
    "batch_normalization.0": "bn/gamma", "batch_normalization.1": "bn/beta",
    "batch_normalization.2": "bn/moving_mean", "batch_normalization.3": "bn/moving_variance",
    "sequential.dense.0": "block/inner/kernel", "sequential.dense.1": "block/inner/bias",
    "sequential.layer_normalization.0": "block/norm/gamma",
    "sequential.layer_normalization.1": "block/norm/beta",
    "dense_1.0": "head/kernel", "dense_1.1": "head/bias",
}  # fmt: skip
LEGACY_NAMES = {
    "first.kernel": "first/kernel", "first.bias": "first/bias",
    "bn.gamma": "bn/gamma", "bn.beta": "bn/beta",
    "bn.moving_mean": "bn/moving_mean", "bn.moving_variance": "bn/moving_variance",
    "block.inner.kernel": "block/inner/kernel", "block.inner.bias": "block/inner/bias",
    "block.norm.gamma": "block/norm/gamma", "block.norm.beta": "block/norm/beta",
    "head.kernel": "head/kernel", "head.bias": "head/bias",
}  # fmt: skip
OPTIMIZER_VARIABLES = 22


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_keras_models(tmp_path_factory.mktemp("keras"))


def bits(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array, array.dtype.newbyteorder("=")).tobytes()


def assert_values(model: diffai.model.Model, expected: dict[str, np.ndarray]) -> None:
    """Each tensor's bits are the reference's (bf16 compared through its uint16 bits)."""
    for name, reference in expected.items():
        ref = model.tensors[name]
        assert ref.shape == reference.shape, name
        assert numpy_dtype(ref.dtype).itemsize == reference.dtype.itemsize, name
        assert bits(ref.array()) == bits(reference), name


def optimizer_reference(values: dict[str, np.ndarray]) -> list[np.ndarray]:
    return [values[f"optimizer/{index}"] for index in range(OPTIMIZER_VARIABLES)]


@pytest.mark.parametrize("file", ["model.keras", "model.weights.h5"])
def test_keras3_files_read_as_keras_saved_them(saved: Path, file: str) -> None:
    model = diffai.open_model(saved / "net" / file)
    values = keras_values(saved / "net")
    optimizer = [f"optimizer.{index}" for index in range(OPTIMIZER_VARIABLES)]
    assert list(model.tensors) == sorted(KERAS3_NAMES) + optimizer
    assert_values(model, {name: values[path] for name, path in KERAS3_NAMES.items()})
    assert_values(model, dict(zip(optimizer, optimizer_reference(values), strict=True)))
    assert model.tensors["dense_1.0"].dtype == "bf16"
    assert model.tensors["optimizer.0"].dtype == "i32"  # the iteration counter
    assert model.metadata["layout"] == "keras3"


def test_a_keras_archive_says_its_keras_version(saved: Path) -> None:
    metadata = diffai.open_model(saved / "net" / "model.keras").metadata
    assert metadata["keras_version"].startswith("3.")
    assert set(metadata) == {"keras_version", "date_saved", "layout"}


def test_a_legacy_h5_of_keras3_reads_as_keras_saved_it(saved: Path) -> None:
    model = diffai.open_model(saved / "net32" / "legacy.h5")
    values = keras_values(saved / "net32")
    optimizer = [name for name in model.tensors if name.startswith("optimizer.")]
    assert list(model.tensors)[: len(LEGACY_NAMES)] == list(LEGACY_NAMES)
    # optimizer.<its Keras name, adam_1 for the second model made in one process>.<weight>
    leaves = [name.split(".", 2)[2] for name in optimizer[:3]]
    assert leaves == ["iteration", "learning_rate", "first_kernel_momentum"]
    assert_values(model, {name: values[path] for name, path in LEGACY_NAMES.items()})
    assert_values(model, dict(zip(optimizer, optimizer_reference(values), strict=True)))
    assert model.metadata == {"keras_version": model.metadata["keras_version"],
                              "backend": "torch", "layout": "legacy"}  # fmt: skip


def test_a_legacy_h5_keeps_bf16_unmarked_and_is_refused(run_cli, saved: Path) -> None:
    path = saved / "net" / "legacy.h5"
    result = run_cli(path, path)
    assert result.code == 2
    assert result.err == (
        f"diffai: error: {path}: weight 'head.kernel' stores 2-byte elements that diffai does "
        "not read as numbers (a subarray, a compound, a string, or opaque bytes without Keras "
        "3's dtype mark, as legacy .h5 files keep bfloat16)\n"
    )


def test_the_real_fer_model_reads_as_its_weight_names_say() -> None:
    """Keras 2.0.5: layer groups hold ``<layer>_1/<weight>:0``; optimizer Adam's moments."""
    model = diffai.open_model(FER)
    names = list(model.tensors)
    assert len(names) == 185 and sum(name.startswith("optimizer.") for name in names) == 105
    assert names[:3] == ["conv2d_1.kernel", "batch_normalization_1.gamma",
                         "batch_normalization_1.beta"]  # fmt: skip
    with h5py.File(FER) as handle:
        layers = handle["model_weights"]
        expected = {
            "conv2d_1.kernel": layers["conv2d_1/conv2d_1_1/kernel:0"][()],
            "batch_normalization_1.moving_variance": layers[
                "batch_normalization_1/batch_normalization_1_1/moving_variance:0"
            ][()],
            "separable_conv2d_1.depthwise_kernel": layers[
                "separable_conv2d_1/separable_conv2d_1_1/depthwise_kernel:0"
            ][()],
            "optimizer.iterations_1": handle["optimizer_weights/iterations_1:0"][()],
        }
    assert_values(model, expected)
    assert role_of("batch_normalization_1.moving_mean") == "buffer"
    assert role_of("optimizer.Variable_104") == "optimizer_state"


KINDS = [
    pytest.param(lambda saved: saved / "net" / "model.keras", id="keras"),
    pytest.param(lambda saved: saved / "net" / "model.weights.h5", id="weights-h5"),
    pytest.param(lambda saved: saved / "net32" / "legacy.h5", id="legacy-h5"),
    pytest.param(lambda saved: FER, id="real-fer"),
]


@pytest.mark.parametrize("where", KINDS)
def test_a_keras_file_compared_with_itself_is_unchanged(
    run_cli, saved: Path, tmp_path: Path, validate_report, where: Callable[[Path], Path]
) -> None:
    path = where(saved)
    report = tmp_path / "report.json"
    result = run_cli(path, path, "--report", report)
    assert (result.code, result.err) == (0, "")
    document = json.loads(report.read_text())
    validate_report(document)
    assert document["summary"]["changed"] == 0 and document["summary"]["unchanged"] > 10


def perturb_h5(path: Path, seed: int = 7) -> dict[str, np.ndarray]:
    """Add seeded noise to every float32 dataset in place; the new values by HDF5 path."""
    rng = np.random.default_rng(seed)
    changed: dict[str, np.ndarray] = {}

    def visit(name: str, item: object) -> None:
        if isinstance(item, h5py.Dataset) and item.dtype == np.float32 and item.size:
            values = item[()] + rng.normal(0, 0.01, item.shape).astype(np.float32)
            item[...] = values
            changed[name] = values

    with h5py.File(path, "r+") as handle:
        handle.visititems(visit)
    return changed


def perturbed_keras(source: Path, target: Path) -> dict[str, np.ndarray]:
    """The archive again, its weights member perturbed, the other members as they were."""
    weights = target.with_name("model.weights.h5")
    with zipfile.ZipFile(source) as archive:
        weights.write_bytes(archive.read("model.weights.h5"))
        others = {name: archive.read(name) for name in archive.namelist() if name != weights.name}
    changed = perturb_h5(weights)
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in others.items():
            archive.writestr(name, data)
        archive.write(weights, "model.weights.h5")
    return changed


def assert_stats(entry: dict, values: np.ndarray, baseline: np.ndarray) -> None:
    """float64 references, to 1e-6 relative, of the candidate's statistics and the diff."""
    exact, before = values.astype(np.float64), baseline.astype(np.float64)
    delta = exact - before
    expected = {
        "mean": exact.mean(), "std": exact.std(), "min": exact.min(), "max": exact.max(),
    }  # fmt: skip
    for key, value in expected.items():
        assert entry["candidate"][key] == pytest.approx(value, rel=1e-6, abs=1e-12), key
    l2 = np.sqrt(np.sum(delta**2))
    assert entry["diff"]["l2"] == pytest.approx(l2, rel=1e-6)
    assert entry["diff"]["max_abs"] == pytest.approx(np.abs(delta).max(), rel=1e-6)
    assert entry["diff"]["relative_l2"] == pytest.approx(l2 / np.sqrt(np.sum(before**2)), rel=1e-6)


#: Datasets of each perturbed file checked against float64, by HDF5 path and diffai name.
PERTURBED = {
    "real-fer": {
        "model_weights/conv2d_1/conv2d_1_1/kernel:0": "conv2d_1.kernel",
        "model_weights/batch_normalization_1/batch_normalization_1_1/gamma:0":
            "batch_normalization_1.gamma",
        "optimizer_weights/Variable_104:0": "optimizer.Variable_104",
    },
    "keras": {
        "layers/dense/vars/0": "dense.0",
        "layers/sequential/layers/layer_normalization/vars/1": "sequential.layer_normalization.1",
        "optimizer/vars/2": "optimizer.2",
    },
}  # fmt: skip


@pytest.mark.parametrize("kind", list(PERTURBED))
def test_a_perturbed_copy_is_measured_exactly(
    run_cli, saved: Path, tmp_path: Path, validate_report, kind: str
) -> None:
    if kind == "real-fer":
        baseline, candidate = FER, tmp_path / "emotion_model.hdf5"
        shutil.copyfile(FER, candidate)
        changed = perturb_h5(candidate)
    else:
        baseline, candidate = saved / "net" / "model.keras", tmp_path / "model.keras"
        changed = perturbed_keras(baseline, candidate)
    report = tmp_path / "report.json"
    result = run_cli(baseline, candidate, "--report", report)
    assert result.code == 1, result.err
    document = json.loads(report.read_text())
    validate_report(document)
    entries = {entry["name"]: entry for entry in document["tensors"]}
    before = diffai.open_model(baseline)
    for h5_name, name in PERTURBED[kind].items():
        assert_stats(entries[name], changed[h5_name], before.tensors[name].array())
    assert document["summary"]["changed"] == len(changed)


def test_a_keras_archive_reads_without_torch(run_without_torch, saved: Path) -> None:
    path = saved / "net" / "model.keras"
    result = run_without_torch(path, path)
    assert (result.code, result.err) == (0, ""), result.err


@pytest.mark.parametrize(
    ("where", "name"),
    [
        pytest.param(lambda saved: saved / "net" / "model.keras", "model.bin", id="keras-as-bin"),
        pytest.param(lambda saved: FER, "weights.pt", id="h5-as-pt"),
    ],
)
def test_a_misnamed_keras_file_is_read_by_its_content(
    saved: Path, tmp_path: Path, where: Callable[[Path], Path], name: str
) -> None:
    path = tmp_path / name
    shutil.copyfile(where(saved), path)
    assert diffai.open_model(path).format == "keras"


def test_format_keras_is_a_choice(run_cli) -> None:
    result = run_cli(FER, FER, "--format", "keras")
    assert (result.code, result.err) == (0, "")


def test_an_hdf5_file_that_is_not_keras_is_named(run_cli, tmp_path: Path) -> None:
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("x", data=np.ones(3))
    result = run_cli(path, path)
    assert result.err == (
        f"diffai: error: {path}: this HDF5 file is not a Keras model: it has no layer_names "
        "attribute and no model_weights, layers or vars group\n"
    )


def test_without_h5py_the_error_says_what_to_install(run_cli, hide_module) -> None:
    hide_module("h5py")
    result = run_cli(FER, FER)
    assert result.err == (
        f"diffai: error: {FER}: reading Keras files needs h5py; install it with: "
        "pip install 'diffai[keras]'\n"
    )
