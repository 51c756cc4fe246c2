"""Each mapped safetensors tensor's view: the values the reference loader reads, read-only."""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
from safetensors.numpy import load_file, save_file

from diffai.formats import open_model


def test_views_hold_the_reference_values_at_any_offset_and_shape(tmp_path: Path) -> None:
    tensors = {
        "a_odd": np.arange(3, dtype=np.float16),  # 6 bytes: the next tensor starts unaligned
        "b_f32": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4),
        "c_scalar": np.array(2.5, dtype=np.float64),
        "d_empty": np.zeros((2, 0, 3), dtype=np.float32),
        "e_bf16": np.arange(5, dtype=np.float32).astype(ml_dtypes.bfloat16),
        "f_i8": np.arange(-4, 4, dtype=np.int8).reshape(2, 2, 2),
        "g_bool": np.array([True, False, True]),
    }
    path = tmp_path / "views.safetensors"
    save_file(tensors, str(path))
    expected = load_file(str(path))
    model = open_model(path)
    assert list(model.tensors) == list(expected)
    for name, ref in model.tensors.items():
        view = ref.load()  # type: ignore[misc]
        assert view.shape == ref.shape == expected[name].shape
        assert view.dtype == expected[name].dtype
        assert view.tobytes() == expected[name].tobytes()
        assert not view.flags.writeable


def test_a_file_of_empty_tensors_maps_no_data(tmp_path: Path) -> None:
    path = tmp_path / "empty.safetensors"
    save_file({"x": np.zeros((0,), np.float32), "y": np.zeros((4, 0), np.int64)}, str(path))
    model = open_model(path)
    shapes = {name: ref.load().shape for name, ref in model.tensors.items()}  # type: ignore[misc]
    assert shapes == {"x": (0,), "y": (4, 0)}
