"""diffai reads real pretrained files and real training checkpoints as their own loaders do.

The fixtures themselves are checked too (hashes, the facts the README states,
what ``fine_tune`` and friends do), since later verdict tests lean on them.
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import diffai
from diffai.dtypes import numpy_dtype
from tests.real_models import (
    EARLY_STOPPING_KEY,
    GGUF_FILES,
    KERAS_FILES,
    MODEL_CHECKPOINT_KEY,
    ONNX_FILES,
    REAL,
    SAFETENSORS_FILES,
    TFLITE_FILES,
    TORCH_FILES,
    TORCHSCRIPT_FILES,
    fine_tune,
    lightning_checkpoint,
    load_real,
    load_reference,
    permute_rows,
    reinitialise,
    training_checkpoint,
)

READABLE = SAFETENSORS_FILES + TORCH_FILES + TORCHSCRIPT_FILES + ONNX_FILES
MINILM = "all-MiniLM-L6-v2.slice.safetensors"


def _native(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("="))


def assert_agrees(path: Path, reference: dict[str, np.ndarray]) -> diffai.model.Model:
    """diffai's view of ``path`` equals the reference loader's: names, shapes, dtypes, bits."""
    model = diffai.open_model(path)
    assert sorted(model.tensors) == sorted(reference)
    for name, expected in reference.items():
        ref = model.tensors[name]
        values = ref.array()
        assert ref.shape == expected.shape, name
        assert np.dtype(numpy_dtype(ref.dtype)) == expected.dtype.newbyteorder("="), name
        assert values.shape == expected.shape, name
        assert _native(values).tobytes() == _native(expected).tobytes(), name
    return model


# --- the committed files ------------------------------------------------------------------


def _readme_hashes() -> dict[str, str]:
    rows = re.findall(
        r"^\| `([^`]+)` \|[^|]*\|[^|]*\| `([0-9a-f]{64})` \|$",
        (REAL / "README.md").read_text(),
        flags=re.MULTILINE,
    )
    return dict(rows)


def test_every_committed_file_is_listed_with_its_hash_and_is_small() -> None:
    hashes = _readme_hashes()
    files = sorted(p.name for p in REAL.iterdir() if p.name != "README.md")
    assert sorted(hashes) == files == sorted(READABLE + KERAS_FILES + GGUF_FILES + TFLITE_FILES)
    for name, digest in hashes.items():
        data = (REAL / name).read_bytes()
        assert len(data) < 3_000_000, name
        assert hashlib.sha256(data).hexdigest() == digest, name


@pytest.mark.parametrize("name", READABLE)
def test_diffai_reads_real_file_as_reference_loader(name: str) -> None:
    assert_agrees(REAL / name, load_real(name))


@pytest.mark.parametrize("name", READABLE)
def test_real_file_compared_with_itself_exits_zero(name: str, run_cli: Callable) -> None:
    result = run_cli(REAL / name, REAL / name)
    assert result.code == 0, result.err


def test_minilm_slice_keeps_the_real_zero_bias_and_integer_buffer() -> None:
    model = diffai.open_model(REAL / MINILM)
    assert len(model.tensors) == 18
    assert model.metadata.get("format") == "pt"
    zero = [name for name, ref in model.tensors.items() if not np.any(ref.array())]
    assert zero == ["pooler.dense.bias"]
    positions = model.tensors["embeddings.position_ids"]
    assert positions.dtype == "i64"
    assert np.array_equal(positions.array(), np.arange(512)[None, :])
    assert {ref.dtype for name, ref in model.tensors.items() if "position_ids" not in name} == {
        "f32"
    }


@pytest.mark.parametrize("name", TORCH_FILES)
def test_mtcnn_files_are_legacy_pickles_with_strided_kernels(name: str) -> None:
    """So the agreement test above really covers the legacy path and non-contiguous tensors."""
    path = REAL / name
    assert not zipfile.is_zipfile(path)
    assert diffai.open_model(path).metadata["torch_format"] == "legacy"
    assert not load_real(name)["conv1.weight"].flags.c_contiguous


# --- the derived candidates ---------------------------------------------------------------


def test_fine_tune_moves_every_float_element_a_little_zero_bias_included() -> None:
    base = load_real(MINILM)
    tuned = fine_tune(base, steps=20, lr=1e-5, seed=0)
    assert list(tuned) == list(base)
    assert {k: v.dtype for k, v in tuned.items()} == {k: v.dtype for k, v in base.items()}
    assert np.array_equal(tuned["embeddings.position_ids"], base["embeddings.position_ids"])
    bias = np.abs(tuned["pooler.dense.bias"].astype(np.float64))
    assert bias.min() > 1e-5 and bias.max() < 3e-4  # Adam: about lr per step, 20 steps
    for name, array in base.items():
        if array.dtype.kind == "f":
            delta = tuned[name].astype(np.float64) - array
            assert np.all(delta != 0), name
            assert np.abs(delta).max() < 3e-4, name
    query = "encoder.layer.0.attention.self.query.weight"
    relative = np.linalg.norm(tuned[query] - base[query]) / np.linalg.norm(base[query])
    assert 1e-4 < relative < 1e-2


def test_fine_tune_is_seeded() -> None:
    base = load_real("pnet.pt")
    first, again = fine_tune(base, seed=3), fine_tune(base, seed=3)
    other = fine_tune(base, seed=4)
    assert all(np.array_equal(first[k], again[k]) for k in base)
    assert not np.array_equal(first["conv1.weight"], other["conv1.weight"])


def test_permute_rows_keeps_the_statistics_but_not_the_rows() -> None:
    base = load_real(MINILM)
    name = "encoder.layer.0.attention.self.value.weight"
    scrambled = permute_rows(base, name, seed=0)
    assert not np.array_equal(scrambled[name], base[name])
    assert np.array_equal(np.sort(scrambled[name], axis=None), np.sort(base[name], axis=None))
    assert scrambled["pooler.dense.weight"] is base["pooler.dense.weight"]
    assert np.array_equal(permute_rows(base, name, seed=0)[name], scrambled[name])


def test_reinitialise_keeps_std_and_loses_direction() -> None:
    base = load_real(MINILM)
    name = "encoder.layer.0.attention.self.key.weight"
    fresh = reinitialise(base, name, seed=0)[name]
    old = base[name].astype(np.float64)
    assert fresh.dtype == base[name].dtype and fresh.shape == old.shape
    assert np.std(fresh) == pytest.approx(np.std(old), rel=0.01)
    cosine = float((fresh * old).sum() / np.linalg.norm(fresh) / np.linalg.norm(old))
    assert abs(cosine) < 0.05


# --- real training checkpoints ------------------------------------------------------------


def test_training_checkpoint_reads_as_torch_loads_it(tmp_path: Path, run_cli: Callable) -> None:
    path = training_checkpoint(tmp_path / "ckpt.pt", steps=4, seed=0)
    assert zipfile.is_zipfile(path)
    model = assert_agrees(path, load_reference(path))
    tensors = model.tensors
    for name in ("conv.weight", "bn.running_mean", "bn.running_var", "fc.bias"):
        assert tensors[f"model_state_dict.{name}"].dtype == "f32"
    counter = tensors["model_state_dict.bn.num_batches_tracked"]
    assert (counter.dtype, counter.shape, int(counter.array())) == ("i64", (), 4)
    assert tensors["optimizer_state_dict.state.0.exp_avg"].shape == (8, 3, 3, 3)
    assert tensors["optimizer_state_dict.state.5.exp_avg_sq"].shape == (4,)
    assert float(tensors["optimizer_state_dict.state.0.step"].array()) == 4.0
    assert (tensors["rng_state"].dtype, tensors["rng_state"].shape) == ("u8", (5056,))
    scalars = model.scalars
    assert (scalars["epoch"], scalars["step"]) == (2, 4)
    assert isinstance(scalars["loss"], float)
    assert scalars["scheduler_state_dict.last_epoch"] == 4
    assert scalars["optimizer_state_dict.param_groups.0.lr"] == pytest.approx(2.5e-4)
    assert run_cli(path, path).code == 0


def test_training_checkpoint_is_seeded_and_really_trained(tmp_path: Path) -> None:
    first = load_reference(training_checkpoint(tmp_path / "a.pt", steps=3, seed=1))
    again = load_reference(training_checkpoint(tmp_path / "b.pt", steps=3, seed=1))
    longer = load_reference(training_checkpoint(tmp_path / "c.pt", steps=6, seed=1))
    assert all(np.array_equal(first[k], again[k]) for k in first)
    weight = "model_state_dict.conv.weight"
    assert not np.array_equal(first[weight], longer[weight])
    assert np.any(first["model_state_dict.bn.running_mean"] != 0)  # BN saw real batches


def test_lightning_checkpoint_reads_as_torch_loads_it(tmp_path: Path, run_cli: Callable) -> None:
    path = lightning_checkpoint(tmp_path / "epoch=1.ckpt", steps=4, seed=0)
    model = assert_agrees(path, load_reference(path))
    tensors, scalars = model.tensors, model.scalars
    assert tensors["state_dict.model.bn.num_batches_tracked"].dtype == "i64"
    assert tensors["optimizer_states.0.state.0.exp_avg"].shape == (8, 3, 3, 3)
    callback = f"callbacks.{MODEL_CHECKPOINT_KEY}"
    best_k = "best_k_models./ckpt/epoch=1.ckpt"
    for key in ("best_model_score", "current_score", "kth_value", best_k):
        assert tensors[f"{callback}.{key}"].shape == (), key
    assert tensors[f"callbacks.{EARLY_STOPPING_KEY}.best_score"].dtype == "f32"
    assert scalars[f"{callback}.best_model_path"] == "/ckpt/epoch=1.ckpt"
    assert (scalars["epoch"], scalars["global_step"]) == (1, 4)
    assert scalars["pytorch-lightning_version"] == "2.5.1"
    assert scalars["hparams_name"] == "kwargs"
    assert scalars["hyper_parameters.lr"] == 1e-3
    assert scalars["lr_schedulers.0.last_epoch"] == 4
    loop = "loops.fit_loop.epoch_loop.automatic_optimization.optim_progress.optimizer.step"
    assert scalars[f"{loop}.total.completed"] == 4
    assert run_cli(path, path).code == 0
