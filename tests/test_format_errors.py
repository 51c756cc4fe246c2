"""Files diffai must name rather than misparse: Git LFS pointers, and formats it does not read yet.

Every case runs through the real CLI and must get exit 2, one stderr line of
exactly the expected text, and no traceback. The files are real where a library
writes them (onnx, gguf, safetensors, numpy) and built to their specs
where none is installed (TFLite, Core ML, ExecuTorch).
"""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import gguf
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import save_file

import diffai
from diffai.formats.identify import FOREIGN, HEAD_BYTES, probe
from tests.test_format_matlab import write_v73

LFS_POINTER = (
    "version https://git-lfs.github.com/spec/v1\n"
    "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
    "size {size}\n"
)
LFS_FIX = "run git lfs pull, or in GitHub Actions give actions/checkout with: {lfs: true}"
LFS_12345 = (
    "this is a Git LFS pointer, not the model: the real file (12,345 bytes) was never "
    f"downloaded; {LFS_FIX}"
)


def assert_one_error(result, path: Path, problem: str) -> None:
    assert result.code == 2, result
    assert result.err == f"diffai: error: {path}: {problem}\n"
    assert result.out == ""


def foreign_problem(what: str) -> str:
    """The message of the FOREIGN entry for ``what``, so each test names the format it expects."""
    (entry,) = [foreign for foreign in FOREIGN if foreign.what == what]
    return entry.problem


def lfs_pointer(path: Path, size: int = 12345) -> Path:
    path.write_text(LFS_POINTER.format(size=size))
    return path


# --- Git LFS pointers -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["model.safetensors", "model.pt", "model.npz", "weights"])
def test_an_lfs_pointer_is_named_whatever_its_name(run_cli, tmp_path: Path, name: str) -> None:
    pointer = lfs_pointer(tmp_path / name)
    assert_one_error(run_cli(pointer, pointer), pointer, LFS_12345)


@pytest.mark.parametrize("format", ["safetensors", "pytorch", "numpy", "matlab", "folder"])
def test_an_lfs_pointer_is_named_under_a_forced_format(run_cli, tmp_path, format: str) -> None:
    pointer = lfs_pointer(tmp_path / "model.safetensors")
    assert_one_error(run_cli(pointer, pointer, "--format", format), pointer, LFS_12345)


def test_an_lfs_pointer_shard_is_named(run_cli, tmp_path: Path) -> None:
    """The shard is named, not the index: it is the file the checkout failed to fetch."""
    save_file({"a": np.ones(2, np.float32)}, tmp_path / "model-00001-of-00002.safetensors")
    pointer = lfs_pointer(tmp_path / "model-00002-of-00002.safetensors")
    weight_map = {"a": "model-00001-of-00002.safetensors", "b": pointer.name}
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 12}, "weight_map": weight_map}))
    assert_one_error(run_cli(index, index), pointer, LFS_12345)
    assert_one_error(run_cli(tmp_path, tmp_path), pointer, LFS_12345)


def test_an_lfs_pointer_as_a_folder_s_only_model_file_is_named(run_cli, tmp_path: Path) -> None:
    pointer = lfs_pointer(tmp_path / "model.safetensors")
    assert_one_error(run_cli(tmp_path, tmp_path), pointer, LFS_12345)


def test_a_large_file_s_pointer_says_its_size_in_gib(run_cli, tmp_path: Path) -> None:
    pointer = lfs_pointer(tmp_path / "model.safetensors", size=14_500_000_000)
    problem = LFS_12345.replace("12,345 bytes", "14,500,000,000 bytes, 13.5 GiB")
    assert_one_error(run_cli(pointer, pointer), pointer, problem)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(LFS_POINTER.format(size=1) + "x" * 1024, id="too-large-for-a-pointer"),
        pytest.param("version https://git-lfs.github.com/spec/v2\nsize 1\n", id="other-spec"),
        pytest.param(" " + LFS_POINTER.format(size=1), id="not-the-first-line"),
    ],
)
def test_text_that_is_not_strictly_a_pointer_is_not_called_one(run_cli, tmp_path, text) -> None:
    path = tmp_path / "notes.txt"
    path.write_text(text)
    problem = "unrecognized model format; force one with --format (folder, gguf, keras, matlab, "
    problem += "numpy, onnx, peft, pytorch, safetensors, tensorflow, tflite, torchscript)"
    assert_one_error(run_cli(path, path), path, problem)


# --- formats diffai does not read yet --------------------------------------------------------


def write_onnx(path: Path) -> Path:
    weight = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [weight],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, producer_name="diffai-test"), path)
    return path


def write_gguf(path: Path) -> Path:
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("w", np.ones((2, 2), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def flatbuffer(identifier: bytes) -> bytes:
    """A root table offset, then the 4-byte file identifier, as FlatBuffers lay a file out."""
    return struct.pack("<I", 16) + identifier + bytes(24)


def proto_field(number: int, payload: bytes | int) -> bytes:
    """One protobuf field: a varint, or length-delimited bytes (field numbers here < 2048)."""
    tag = number << 3 | (0 if isinstance(payload, int) else 2)
    tag_bytes = bytes([tag & 0x7F | 0x80, tag >> 7]) if tag > 0x7F else bytes([tag])
    if isinstance(payload, int):
        return tag_bytes + bytes([payload])
    return tag_bytes + bytes([len(payload)]) + payload


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def coreml_model(path: Path) -> Path:
    """Model.proto: specificationVersion, a description, then a neuralNetwork (field 500)."""
    description = proto_field(1, proto_field(1, b"input"))
    return write_bytes(
        path, proto_field(1, 7) + proto_field(2, description) + proto_field(500, b"")
    )


PICKLE = "a plain Python pickle (pickle.dump, joblib, scikit-learn)"
FOREIGN_FILES = [
    pytest.param("model.bin", coreml_model, "a Core ML model", id="coreml"),
    pytest.param(
        "model.pte", lambda p: write_bytes(p, flatbuffer(b"ET12")),
        "an ExecuTorch program", id="executorch",
    ),
    pytest.param(
        "ggml-model.bin", lambda p: write_bytes(p, b"tjgg" + struct.pack("<I", 3) + bytes(64)),
        "a GGML model from before GGUF (llama.cpp)", id="ggml-ggjt",
    ),
    pytest.param(
        "model.engine", lambda p: write_bytes(p, b"ftrt" + bytes(60)),
        "a TensorRT engine", id="tensorrt",
    ),
    pytest.param(
        "model.joblib", lambda p: write_bytes(p, pickle.dumps({"w": [1.0]}, protocol=4)),
        PICKLE, id="pickle",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("name", "write", "what"), FOREIGN_FILES)
def test_a_format_diffai_does_not_read_is_named(run_cli, tmp_path, name, write, what) -> None:
    path = write(tmp_path / name)
    assert_one_error(run_cli(path, path), path, foreign_problem(what))


@pytest.mark.parametrize("name", ["model.onnx", "model.safetensors", "model.bin"])
def test_an_onnx_file_is_read_by_its_content_whatever_its_name(run_cli, tmp_path, name) -> None:
    path = write_onnx(tmp_path / name)
    assert (run_cli(path, path).code, diffai.open_model(path).format) == (0, "onnx")


@pytest.mark.parametrize(
    ("build", "what"),
    [
        pytest.param(
            lambda p: (p / "Data").mkdir(parents=True) or write_bytes(p / "Manifest.json", b"{}"),
            "a Core ML model package", id="mlpackage",
        ),
    ],
)  # fmt: skip
def test_a_foreign_folder_is_named(run_cli, tmp_path: Path, build, what: str) -> None:
    folder = tmp_path / "model"
    build(folder)
    assert_one_error(run_cli(folder, folder), folder, foreign_problem(what))


def test_identification_reads_only_the_head(tmp_path: Path) -> None:
    """Past HEAD_BYTES nothing is read: a file there is not read."""
    assert HEAD_BYTES <= 4096
    big = tmp_path / "big.onnx"
    write_onnx(big)
    with big.open("ab") as handle:
        handle.truncate(1 << 30)  # sparse: a read of it all would take seconds and 1 GiB
    assert len(probe(big).head) == HEAD_BYTES


def test_a_mat_v73_file_is_still_read(run_cli, tmp_path: Path) -> None:
    """MATLAB v7.3 files are HDF5, and the MATLAB reader, not the Keras reader, takes them."""
    path = write_v73(tmp_path / "model.mat", {"w": np.ones((2, 3))})
    result = run_cli(path, path)
    assert (result.code, result.err) == (0, "")


def test_a_forced_format_is_obeyed_for_a_foreign_file(run_cli, tmp_path: Path) -> None:
    """--format says what the user believes; the reader then says what is wrong with that."""
    path = write_gguf(tmp_path / "model.gguf")
    result = run_cli(path, path, "--format", "safetensors")
    assert result.code == 2 and result.err.startswith(f"diffai: error: {path}: safetensors")
