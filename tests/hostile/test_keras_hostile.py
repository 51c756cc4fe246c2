"""Hostile Keras files through the CLI: HDF5 that reaches outside itself, loops, nests,
lies about its elements or sizes, and .keras archives that are ambiguous or bombs.

Each file is crafted with h5py (and zipfile) in the layouts Keras writes
(``diffai.formats.keras.layout``); the HDF5 parsing runs in the isolated child,
so these also check that its refusals come back as one line.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.hostile.conftest import Refusal, assert_refused, declare_size, run_bounded


def keras3(path: Path, build: Callable[[h5py.File], None]) -> Path:
    """A Keras 3 weights file (``layers/<layer>/vars/<i>``), one good layer, then ``build``."""
    with h5py.File(path, "w") as handle:
        handle.create_dataset("layers/dense/vars/0", data=np.ones((2, 2), np.float32))
        build(handle)
    return path


def legacy(path: Path, weight_names: list[str], build: Callable[[h5py.Group], None]) -> Path:
    """A Keras 2 full-model file with one layer ``dense`` listing ``weight_names``."""
    with h5py.File(path, "w") as handle:
        layers = handle.create_group("model_weights")
        layers.attrs["layer_names"] = np.array([b"dense"])
        layer = layers.create_group("dense")
        layer.attrs["weight_names"] = np.array([name.encode() for name in weight_names])
        build(layer)
    return path


def keras_zip(path: Path, weights: Path, *, twice: bool = False) -> Path:
    """A .keras archive around ``weights``; ``twice`` stores the weights member two times."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        archive.writestr("config.json", json.dumps({"class_name": "Functional"}))
        archive.write(weights, "model.weights.h5")
        if twice:
            archive.writestr(zipfile.ZipInfo("model.weights.h5"), b"\x89HDF\r\n\x1a\n")
    return path


def external_link(handle: h5py.File) -> None:
    handle["layers/dense_1/vars/0"] = h5py.ExternalLink("/etc/passwd", "/w")


def soft_link(handle: h5py.File) -> None:
    handle["layers/dense_1/vars/0"] = h5py.SoftLink("/layers/dense/vars/0")


def huge_subarray(handle: h5py.File) -> None:
    """One element of 1 GiB: four of them in a file of a few kilobytes."""
    handle.create_dataset("layers/dense_1/vars/0", (4,), np.dtype((np.float32, (1 << 28,))))


def claimed_terabytes(handle: h5py.File) -> None:
    """2**40 float32 elements, chunked and never written: the file stays small."""
    handle.create_dataset("layers/dense_1/vars/0", (1 << 40,), np.float32, chunks=(1 << 20,))


def group_loop(handle: h5py.File) -> None:
    handle["layers/dense/again"] = handle["layers/dense"]  # a hard link: the group holds itself


def deep_groups(handle: h5py.File) -> None:
    handle.create_group("layers/" + "/".join(["g"] * 150))


def odd_variable_key(handle: h5py.File) -> None:
    handle.create_dataset("layers/dense_1/vars/kernel", data=np.ones(2, np.float32))


def newline_name(handle: h5py.File) -> None:
    handle.create_dataset("layers/x\n::error::forged/vars/0", data=np.ones(2, np.float32))


KERAS3_CASES = [
    pytest.param(external_link, "'/layers/dense_1/vars/0' is an HDF5 link to '/w', which diffai "
                 "does not follow", id="external-link"),
    pytest.param(soft_link, "is an HDF5 link to '/layers/dense/vars/0', which diffai does not "
                 "follow", id="soft-link"),
    pytest.param(huge_subarray, "weight 'dense_1.0' stores 1,073,741,824-byte elements that "
                 "diffai does not read as numbers", id="huge-subarray-element"),
    pytest.param(claimed_terabytes, "its tensors add up to 4,398,046,511,120 bytes",
                 id="2**40-elements"),
    pytest.param(group_loop, "HDF5 group '/layers/dense/again' is reached twice (an HDF5 hard "
                 "link), which Keras never writes", id="hard-link-loop"),
    pytest.param(deep_groups, "nests deeper than 100 levels", id="150-nested-groups"),
    pytest.param(odd_variable_key, "'/layers/dense_1/vars' holds 'kernel', not a variable index "
                 "0 to 0", id="vars-key-not-an-index"),
    pytest.param(newline_name, "tensor name 'x\\n::error::forged.0' contains '\\n'",
                 id="newline-in-a-name"),
]  # fmt: skip


@pytest.mark.parametrize(("build", "problem"), KERAS3_CASES)
def test_a_hostile_keras3_weights_file_is_refused(
    refused: Callable[..., Refusal], tmp_path: Path, build: Callable, problem: str
) -> None:
    assert_refused(refused(keras3(tmp_path / "model.weights.h5", build)), problem)


def no_dataset(layer: h5py.Group) -> None:
    layer.create_group("dense")


def two_outputs(layer: h5py.Group) -> None:
    layer.create_dataset("dense/kernel:0", data=np.ones(2, np.float32))
    layer.create_dataset("dense/kernel:1", data=np.ones(2, np.float32))


def soft_weight(layer: h5py.Group) -> None:
    layer.create_dataset("real", data=np.ones(2, np.float32))
    layer["dense"] = h5py.SoftLink("/model_weights/dense/real")


LEGACY_CASES = [
    pytest.param(["dense/kernel:0"], no_dataset,
                 "weight 'dense/kernel:0' of 'dense' is missing", id="missing-weight"),
    pytest.param(["dense/kernel:0", "dense/kernel:1"], two_outputs,
                 "two weights are named 'dense.dense.kernel'", id="two-weights-one-name"),
    pytest.param(["dense/kernel:0"], soft_weight,
                 "'dense/dense' is an HDF5 link to '/model_weights/dense/real'", id="soft-link"),
]  # fmt: skip


@pytest.mark.parametrize(("names", "build", "problem"), LEGACY_CASES)
def test_a_hostile_legacy_keras_file_is_refused(
    refused: Callable[..., Refusal], tmp_path: Path, names: list[str], build, problem: str
) -> None:
    assert_refused(refused(legacy(tmp_path / "model.h5", names, build)), problem)


def test_external_storage_is_refused_and_the_outside_file_never_read(
    run_cli, tmp_path: Path
) -> None:
    """HDF5 can keep a dataset's bytes in any file: its values would leak into the PR comment."""
    secret = tmp_path / "secret.env"
    secret.write_bytes(b"GITHUB_TOKEN=ghs_0123456789abcdef0123456789abcdef0123\n")
    size = secret.stat().st_size

    def outside(layer: h5py.Group) -> None:
        layer.create_dataset("dense/kernel:0", (size,), "u1", external=[(secret, 0, size)])

    hostile = legacy(tmp_path / "model.h5", ["dense/kernel:0"], outside)
    report = tmp_path / "report.json"
    result = run_cli(hostile, hostile, "--report", report, "-o", "json")
    assert result.code == 2 and not report.exists()
    assert result.err == (
        f"diffai: error: {hostile}: weight 'dense.kernel' keeps its data in another file (HDF5 "
        "external storage or a virtual dataset); diffai reads only the file it is given\n"
    )
    assert "ghs_" not in result.out + result.err


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    return keras3(tmp_path / "model.weights.h5", lambda handle: None)


def test_a_keras_archive_with_its_weights_twice_is_refused(
    refused: Callable[..., Refusal], tmp_path: Path, weights: Path
) -> None:
    with pytest.warns(UserWarning, match="Duplicate name"):
        hostile = keras_zip(tmp_path / "model.keras", weights, twice=True)
    assert_refused(
        refused(hostile),
        "zip member 'model.weights.h5' appears twice, and Keras and other zip readers need not "
        "read the same copy; refused as ambiguous",
    )


def test_a_keras_archive_whose_weights_lie_about_their_size_is_refused(
    refused: Callable[..., Refusal], tmp_path: Path, weights: Path
) -> None:
    hostile = declare_size(keras_zip(tmp_path / "model.keras", weights), "model.weights.h5", 64)
    assert_refused(refused(hostile), "cannot read zip member 'model.weights.h5'")


def test_a_keras_archive_zip_bomb_is_refused_uninflated(tmp_path: Path, weights: Path) -> None:
    """A deflated member declaring 4 GiB (a zip bomb's shape) is refused before a byte is
    inflated, in a child limited to 1.5 GiB."""
    hostile = keras_zip(tmp_path / "model.keras", weights)
    declare_size(hostile, "model.weights.h5", 2**32 - 1)
    (refusal,) = run_bounded([hostile])
    assert_refused(
        refusal,
        "zip member 'model.weights.h5' declares 4,294,967,295 bytes, over the limit of",
    )
