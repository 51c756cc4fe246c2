"""The TFLite reader: constant tensors, dequantized as TFLite dequantizes them.

There is no TensorFlow here, so the expected values come from an independent walk of
the FlatBuffer written below with ``struct`` alone (``_independent``), and from
models built by ``tests.tflite_files``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import diffai
from diffai.model import CHUNK_ELEMENTS
from tests.conftest import CliResult
from tests.real_models import REAL
from tests.tflite_files import (
    Blob,
    Constant,
    Numbers,
    Scalar,
    Table,
    Tables,
    build,
    dequantize,
    tflite_model,
)

EMOTION = REAL / "emotion_model_quantized.tflite"


def _independent(data: bytes, tensor_name: str) -> tuple[int, int, np.ndarray, np.ndarray, int]:
    """(buffer start, length, scales, zero points, axis) of a tensor, by plain struct reads."""

    def table(at: int) -> Callable[[int], int | None]:
        vtable = at - struct.unpack_from("<i", data, at)[0]
        size = struct.unpack_from("<H", data, vtable)[0]

        def field(index: int) -> int | None:
            if 4 + 2 * index >= size:
                return None
            offset = struct.unpack_from("<H", data, vtable + 4 + 2 * index)[0]
            return at + offset if offset else None

        return field

    def deref(at: int) -> int:
        return at + struct.unpack_from("<I", data, at)[0]

    def vector(at: int) -> tuple[int, int]:
        start = deref(at)
        return start + 4, struct.unpack_from("<I", data, start)[0]

    model = table(deref(0))
    buffers_start, _ = vector(model(4))
    subgraph = table(deref(vector(model(2))[0]))
    tensors_start, count = vector(subgraph(0))
    for index in range(count):
        tensor = table(deref(tensors_start + 4 * index))
        start, length = vector(tensor(3))
        if data[start : start + length].decode() != tensor_name:
            continue
        buffer = table(deref(buffers_start + 4 * struct.unpack_from("<I", data, tensor(2))[0]))
        quantization = table(deref(tensor(4)))
        scales_at, scales_count = vector(quantization(2))
        zeros_at, _ = vector(quantization(3))
        axis = struct.unpack_from("<i", data, quantization(6))[0] if quantization(6) else 0
        return (
            *vector(buffer(0)),
            np.frombuffer(data, "<f4", scales_count, scales_at),
            np.frombuffer(data, "<i8", scales_count, zeros_at),
            axis,
        )
    raise KeyError(tensor_name)


def report_of(run_cli: Callable[..., CliResult], tmp_path: Path, *models: Path) -> dict:
    report = tmp_path / "report.json"
    result = run_cli(*models, "--report", report)
    assert result.code in (0, 1), result.err
    return json.loads(report.read_text())


def test_the_real_int8_model_reads_its_44_constants() -> None:
    model = diffai.open_model(EMOTION)
    assert len(model.tensors) == 44
    quantized = {name: ref for name, ref in model.tensors.items() if ref.stored_dtype == "i8"}
    assert len(quantized) == 9 and {ref.dtype for ref in quantized.values()} == {"f32"}
    assert model.tensors["arith.constant3"].dtype == "i32"
    data = EMOTION.read_bytes()
    for name, ref in quantized.items():
        start, length, scales, zeros, axis = _independent(data, name)
        q = np.frombuffer(data, np.int8, length, start).reshape(ref.shape)
        shape = [1] * q.ndim
        shape[axis] = scales.size
        expected = scales.astype(np.float64).reshape(shape) * (q - zeros.reshape(shape))
        assert np.array_equal(ref.array(), expected.astype(np.float32)), name
        assert ref.stored_bytes == length


def test_the_real_model_compares_unchanged_with_itself(run_cli, tmp_path: Path) -> None:
    document = report_of(run_cli, tmp_path, EMOTION, EMOTION)
    assert document["summary"]["unchanged"] == 44


def test_a_perturbed_weight_buffer_has_float64_exact_statistics(run_cli, tmp_path, validate_report):
    name = "tfl.pseudo_qconst1"
    data = bytearray(EMOTION.read_bytes())
    start, length, scales, zeros, axis = _independent(bytes(data), name)
    rng = np.random.default_rng(5)
    for at in rng.choice(length, 300, replace=False):
        data[start + at] = (data[start + at] + int(rng.integers(1, 255))) % 256
    candidate = tmp_path / "perturbed.tflite"
    candidate.write_bytes(bytes(data))
    document = report_of(run_cli, tmp_path, EMOTION, candidate)
    validate_report(document)
    (changed,) = [t for t in document["tensors"] if t["status"] != "unchanged"]
    assert changed["name"] == name and changed["candidate"]["stored_dtype"] == "i8"

    def values(raw: bytes) -> np.ndarray:
        q = np.frombuffer(raw, np.int8, length, start).reshape(128, -1).astype(np.float64)
        return (scales.astype(np.float64)[:, None] * (q - zeros[:, None])).astype(np.float32)

    assert axis == 0
    b, c = values(EMOTION.read_bytes()).astype(np.float64), values(bytes(data)).astype(np.float64)
    assert changed["candidate"]["mean"] == pytest.approx(c.mean(), rel=1e-6)
    assert changed["candidate"]["std"] == pytest.approx(c.std(), rel=1e-6)
    assert changed["diff"]["l2"] == pytest.approx(np.linalg.norm(c - b), rel=1e-6)
    assert changed["diff"]["relative_l2"] == pytest.approx(
        np.linalg.norm(c - b) / np.linalg.norm(b), rel=1e-6
    )
    assert changed["diff"]["changed"] == int(np.count_nonzero(c != b))


@pytest.mark.parametrize(
    "constant",
    [
        pytest.param(
            Constant("per_tensor", np.arange(-6, 6, dtype=np.int8).reshape(3, 4), [0.5], [2]),
            id="per-tensor",
        ),
        pytest.param(
            Constant(
                "per_axis_1",
                np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
                [0.1, 0.2, 0.3],
                [1, 2, 3],
                axis=1,
            ),
            id="per-axis-1",
        ),
        pytest.param(
            Constant(
                "big",
                np.arange(CHUNK_ELEMENTS + 10, dtype=np.int32).reshape(-1, 2) % 251,
                [1e-3, 2e-3],
                [0, 5],
                axis=1,
            ),
            id="several-chunks",
        ),
    ],
)
def test_quantized_constants_are_dequantized_along_their_axis(tmp_path, constant) -> None:
    path = tmp_path / "m.tflite"
    path.write_bytes(tflite_model([constant]))
    ref = diffai.open_model(path).tensors[constant.name]
    assert ref.shape == constant.values.shape
    assert np.array_equal(ref.array(), dequantize(constant).astype(np.float32))


def test_float_constants_are_views_and_activations_are_left_out(tmp_path: Path) -> None:
    values = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    path = tmp_path / "f.tflite"
    path.write_bytes(tflite_model([Constant("w", values)], activations=3))
    model = diffai.open_model(path)
    assert list(model.tensors) == ["w"]
    assert np.array_equal(model.tensors["w"].array(), values)
    assert model.metadata == {"tflite_version": 3, "description": "test", "subgraphs": 1}


def test_tflite_reads_without_torch(run_without_torch) -> None:
    result = run_without_torch(EMOTION, EMOTION)
    assert (result.code, result.err) == (0, ""), result.err


def test_a_buffer_0_with_data_is_read_as_tflite_reads_it(tmp_path: Path) -> None:
    """Buffer 0 is empty by convention only: TFLite's interpreter takes a tensor's data
    from whichever buffer it names, so diffai must not skip buffer 0 when it holds bytes."""
    values = np.arange(6, dtype=np.float32)
    tensor = Table([Numbers("<i", [6]), Scalar("<b", 0), Scalar("<I", 0), Blob(b"w")])
    buffers = Tables([Table([Blob(values.tobytes())])])
    root = Table([Scalar("<I", 3), None, Tables([Table([Tables([tensor])])]), None, buffers])
    path = tmp_path / "b0.tflite"
    path.write_bytes(build(root))
    assert np.array_equal(diffai.open_model(path).tensors["w"].array(), values)


def test_float_constants_compare_identical_to_the_same_safetensors(
    run_cli, tmp_path: Path, write_safetensors
) -> None:
    values = np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4)
    path = tmp_path / "m.tflite"
    path.write_bytes(tflite_model([Constant("dense/kernel", values)]))
    other = write_safetensors("m.safetensors", {"dense/kernel": values})
    document = report_of(run_cli, tmp_path, other, path)
    assert document["summary"]["unchanged"] == 1 and document["summary"]["tensors_compared"] == 1
