"""The PyTorch reader: real torch.save files read exactly without torch, hostile pickles refused."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
import torch
from torch import nn

from diffai.errors import MalformedModel, MissingExtra, UnreadableModel, UnsafePickle
from diffai.formats import open_model, pytorch
from diffai.model import TensorRef

DTYPES = {
    "f64": torch.float64, "f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16,
    "f8_e4m3": torch.float8_e4m3fn, "f8_e5m2": torch.float8_e5m2,
    "i64": torch.int64, "i32": torch.int32, "i16": torch.int16, "i8": torch.int8,
    "u64": torch.uint64, "u32": torch.uint32, "u16": torch.uint16, "u8": torch.uint8,
    "bool": torch.bool, "c64": torch.complex64, "c128": torch.complex128,
}  # fmt: skip
NUMPY_LACKS = (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2)


def save(tmp_path: Path, obj: Any, name: str = "model.pt", **kwargs: Any) -> Path:
    path = tmp_path / name
    torch.save(obj, path, **kwargs)
    return path


def expected(tensor: torch.Tensor) -> np.ndarray:
    """What the values must be; numpy has no bf16/f8, so those compare as float32."""
    tensor = tensor.detach()
    return tensor.float().numpy() if tensor.dtype in NUMPY_LACKS else tensor.numpy()


def actual(ref: TensorRef) -> np.ndarray:
    array = ref.array()
    return array.astype(np.float32) if ref.dtype in ("bf16", "f8_e4m3", "f8_e5m2") else array


def assert_tensor(ref: TensorRef, tensor: torch.Tensor) -> None:
    assert ref.shape == tuple(tensor.shape)
    np.testing.assert_array_equal(actual(ref), expected(tensor), strict=True)


def sample(dtype: torch.dtype) -> torch.Tensor:
    values = np.array([[0, 1, 2, 3], [100, 7, 5, 250]], dtype=np.int64)
    if dtype.is_floating_point or dtype.is_complex:
        return (torch.from_numpy(values).to(torch.float64) / 8 - 3).to(dtype)
    if dtype == torch.bool:
        return torch.from_numpy(values % 3 == 0)
    if dtype == torch.int8:
        values = values - 120
    return torch.from_numpy(values).to(dtype)


class Call:
    """Pickles as ``func(*args)``: how a hand-made checkpoint (or an attack) spells a call."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


class StorageRecord:
    """Pickles as torch's persistent id for the ``data/<key>`` member."""

    def __init__(self, storage_type: Any, key: str, numel: int) -> None:
        self.pid = ("storage", storage_type, key, "cpu", numel)


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:
        return obj.pid if isinstance(obj, StorageRecord) else None


def tensor_call(storage: StorageRecord, offset: int, size: tuple, stride: tuple) -> Call:
    return Call(
        torch._utils._rebuild_tensor_v2, storage, offset, size, stride, False, OrderedDict()
    )


def write_archive(
    path: Path, obj: Any, storages: dict[str, bytes], byteorder: bytes | None = b"little"
) -> Path:
    """A zip with torch's layout around a pickle we wrote ourselves (or raw pickle bytes)."""
    payload = io.BytesIO()
    if isinstance(obj, bytes):
        payload.write(obj)
    else:
        TorchPickler(payload, protocol=2).dump(obj)
    records = {"archive/data.pkl": payload.getvalue(), "archive/version": b"3\n"}
    if byteorder is not None:
        records["archive/byteorder"] = byteorder
    records.update({f"archive/data/{key}": data for key, data in storages.items()})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in records.items():
            archive.writestr(name, data)
    return path


# --- reading what torch.save writes --------------------------------------------------------


@pytest.mark.parametrize("name", list(DTYPES))
def test_every_dtype_reads_exactly(tmp_path: Path, name: str) -> None:
    tensor = sample(DTYPES[name])
    model = open_model(save(tmp_path, {"w": tensor}))
    assert model.format == "pytorch"
    assert model.tensors["w"].dtype == name
    assert_tensor(model.tensors["w"], tensor)


def test_views_slices_and_shared_storage_are_strided_maps(tmp_path: Path) -> None:
    weight = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    views = {
        "w": weight,
        "wt": weight.t(),
        "rows": weight[1:3],
        "column": weight[:, 2],
        "expanded": torch.tensor([1.0, -2.0, 3.0]).expand(2, 3),
    }
    model = open_model(save(tmp_path, views))
    for name, tensor in views.items():
        assert_tensor(model.tensors[name], tensor)
    transposed = model.tensors["wt"].array()
    assert transposed.strides == (4, 16) and not transposed.flags.writeable
    assert np.shares_memory(model.tensors["w"].array(), model.tensors["column"].array())


def test_zero_dim_empty_and_parameter(tmp_path: Path) -> None:
    weight = torch.arange(6, dtype=torch.float16).reshape(2, 3)
    tensors = {
        "scalar": torch.tensor(2.5, dtype=torch.bfloat16),
        "empty": torch.zeros(0, 3),
        "empty_tail": weight[2:],
        "param": nn.Parameter(torch.tensor([1.5, -0.25])),
        "tagged_param": nn.Parameter(torch.tensor([3.0])),  # saved _with_state
    }
    tensors["tagged_param"].tag = "frozen"
    model = open_model(save(tmp_path, tensors))
    for name, tensor in tensors.items():
        assert_tensor(model.tensors[name], tensor)
    assert model.tensors["scalar"].shape == () and model.tensors["empty"].nbytes == 0


def test_nested_checkpoint_names_and_scalars(tmp_path: Path) -> None:
    """Adam's state_dict layout, built by hand: a real optimizer costs 1.5 s of torch imports."""
    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict(fc1=nn.Linear(3, 2)))
    moments = {
        i: {"step": torch.tensor(1.0), "exp_avg": w.detach() / 10, "exp_avg_sq": w.detach() ** 2}
        for i, w in enumerate(net.parameters())
    }
    group = {"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-08, "amsgrad": False, "foreach": None}
    checkpoint = {
        "epoch": 3,
        "model_state_dict": net.state_dict(),
        "optimizer_state_dict": {"state": moments, "param_groups": [{**group, "params": [0, 1]}]},
        "loss": 0.5,
    }
    model = open_model(save(tmp_path, checkpoint, "checkpoint.pt"))
    state = "optimizer_state_dict.state"
    assert list(model.tensors) == [
        "model_state_dict.fc1.weight", "model_state_dict.fc1.bias",
        *(f"{state}.{i}.{key}" for i in (0, 1) for key in ("step", "exp_avg", "exp_avg_sq")),
    ]  # fmt: skip
    assert_tensor(model.tensors["model_state_dict.fc1.weight"], net.fc1.weight)
    assert_tensor(model.tensors[f"{state}.1.exp_avg_sq"], moments[1]["exp_avg_sq"])
    groups = "optimizer_state_dict.param_groups.0"
    assert model.scalars == {
        "epoch": 3,
        f"{groups}.lr": 0.01, f"{groups}.betas": [0.9, 0.999], f"{groups}.eps": 1e-08,
        f"{groups}.amsgrad": False, f"{groups}.foreach": None, f"{groups}.params": [0, 1],
        "loss": 0.5,
    }  # fmt: skip


def test_numpy_scalars_and_torch_objects_become_scalars(tmp_path: Path) -> None:
    """torch's weights_only refuses numpy scalars; our stand-ins read them as plain numbers."""
    checkpoint = {
        "loss": np.float64(0.25),
        "step": np.int64(7),
        "best": np.float32(1.5),
        "done": np.bool_(True),
        "shape": torch.Size([2, 3]),
        "dtype": torch.bfloat16,
    }
    model = open_model(save(tmp_path, checkpoint))
    assert model.scalars == {
        "loss": 0.25, "step": 7, "best": 1.5, "done": True,
        "shape": [2, 3], "dtype": "torch.bfloat16",
    }  # fmt: skip
    assert model.tensors == {}


def test_metadata_and_size(tmp_path: Path) -> None:
    path = save(tmp_path, {"w": torch.ones(2)})
    model = open_model(path)
    assert model.metadata == {"torch_format": "zip", "byteorder": "little"}
    assert model.size_bytes == path.stat().st_size


def test_big_endian_archive(tmp_path: Path) -> None:
    values = np.array([[1.5, -2.0], [3.25, 1e-3]], dtype=np.float32)
    halves = values.astype(ml_dtypes.bfloat16)
    storages = {
        "0": values.astype(">f4").tobytes(),
        "1": halves.view(np.uint16).astype(">u2").tobytes(),
    }
    checkpoint = {
        "f32": tensor_call(StorageRecord(torch.FloatStorage, "0", 4), 0, (2, 2), (1, 2)),
        "bf16": tensor_call(StorageRecord(torch.BFloat16Storage, "1", 4), 1, (3,), (1,)),
    }
    model = open_model(write_archive(tmp_path / "big.pt", checkpoint, storages, b"big"))
    assert model.metadata["byteorder"] == "big"
    np.testing.assert_array_equal(model.tensors["f32"].array(), values.T)
    bf16 = model.tensors["bf16"].array()
    assert bf16.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(bf16.astype(np.float32), halves.ravel()[1:].astype(np.float32))


# --- the torch fallback and life without torch ----------------------------------------------


def test_legacy_file_reads_through_torch(tmp_path: Path) -> None:
    weight = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    tensors = {"w": weight, "wt": weight.t(), "h": torch.tensor([1.0, 2.5], dtype=torch.bfloat16)}
    path = save(tmp_path, {"net": tensors, "epoch": 2}, _use_new_zipfile_serialization=False)
    assert pytorch.matches(path, path.read_bytes()[:64])
    model = open_model(path)
    assert model.metadata == {"torch_format": "legacy"} and model.scalars == {"epoch": 2}
    for name, tensor in tensors.items():
        assert_tensor(model.tensors[f"net.{name}"], tensor)
    assert model.tensors["net.h"].dtype == "bf16"


def test_without_torch_legacy_needs_the_extra(tmp_path: Path) -> None:
    path = save(tmp_path, {"w": torch.ones(2)}, _use_new_zipfile_serialization=False)
    with pytest.raises(MissingExtra) as caught:
        pytorch.torch_fallback(path, None, None)
    assert caught.value.extra == "torch" and "legacy (pre-zip)" in str(caught.value)


def test_without_torch_a_refusal_stands(tmp_path: Path) -> None:
    refused = UnsafePickle(tmp_path / "m.pt", "__main__.Net", "hint")
    with pytest.raises(UnsafePickle) as caught:
        pytorch.torch_fallback(tmp_path / "m.pt", None, refused)
    assert caught.value is refused


def test_a_process_without_torch(tmp_path: Path) -> None:
    """torch made unimportable: zip files still read, the rest fail with the reason."""
    zip_file = save(tmp_path, {"w": torch.tensor([1.0, 2.0])})
    legacy = save(tmp_path, {"w": torch.ones(1)}, "legacy.pt", _use_new_zipfile_serialization=False)
    evil = write_archive(tmp_path / "evil.pt", Call(os.system, "true"), {})
    script = (
        "import json, sys\n"
        "sys.modules['torch'] = None\n"
        "from diffai.errors import DiffaiError\n"
        "from diffai.formats import open_model\n"
        "out = []\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        out.append(open_model(path).tensors['w'].array().tolist())\n"
        "    except DiffaiError as exc:\n"
        "        out.append(type(exc).__name__ + ': ' + str(exc))\n"
        "print(json.dumps(out))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(zip_file), str(legacy), str(evil)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    read, missing, unsafe = json.loads(run.stdout)
    assert read == [1.0, 2.0]
    assert missing.startswith("MissingExtra:") and "pip install 'diffai[torch]'" in missing
    assert unsafe.startswith("UnsafePickle:") and "system'" in unsafe


# --- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_os_system_is_refused_and_never_runs(tmp_path: Path, protocol: int) -> None:
    """Through our allow-list and then torch's weights_only loader: neither runs the command.
    Protocols 4 and 5 name the global through opcodes torch does not read, refused first."""
    marker = tmp_path / "MARKER"
    attack = pickle.dumps(Call(os.system, f"touch {marker}"), protocol=protocol)
    path = write_archive(tmp_path / "evil.pt", attack, {})
    assert pytorch.matches(path, path.read_bytes()[:64])
    with pytest.raises(UnreadableModel) as caught:
        open_model(path)
    if protocol < 4:
        assert caught.value.global_name in ("os.system", "posix.system")
        assert "torch.load(weights_only=True) refused it too" in str(caught.value)
    else:
        assert "uses pickle opcode FRAME, which torch.load(weights_only=True) does not read" in str(
            caught.value
        )
    assert not marker.exists()
    pickle.loads(attack)  # the same bytes, unpickled naively, do run the command
    assert marker.exists()


def test_builtins_are_refused(tmp_path: Path) -> None:
    path = write_archive(tmp_path / "evil.pt", {"w": Call(eval, "1 + 1")}, {})
    with pytest.raises(UnsafePickle, match="nothing was executed") as caught:
        open_model(path)
    assert caught.value.global_name == "__builtin__.eval"  # protocol 2 spells builtins so


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_a_whole_module_is_refused(tmp_path: Path, zip_format: bool) -> None:
    path = save(tmp_path, nn.Linear(2, 2), _use_new_zipfile_serialization=zip_format)
    with pytest.raises(UnsafePickle) as caught:
        open_model(path)
    assert caught.value.global_name == "torch.nn.modules.linear.Linear"
    assert "save model.state_dict() instead" in str(caught.value)


def test_npz_and_other_zips_are_not_claimed(tmp_path: Path) -> None:
    npz = tmp_path / "arrays.npz"
    np.savez(npz, w=np.ones(2))
    torch_file = save(tmp_path, {"w": torch.ones(2)})
    assert not pytorch.matches(npz, npz.read_bytes()[:64])
    assert pytorch.matches(torch_file, torch_file.read_bytes()[:64])


# --- damaged files -----------------------------------------------------------------------------


def read_damaged(path: Path) -> str:
    with pytest.raises(UnreadableModel) as caught:
        open_model(path, format="pytorch")
    assert str(caught.value).startswith(f"{path}: ")
    return caught.value.problem


def test_truncated_file(tmp_path: Path) -> None:
    path = save(tmp_path, {"w": torch.ones(100)})
    path.write_bytes(path.read_bytes()[:300])
    assert "not a readable zip archive" in read_damaged(path)


def test_truncated_legacy_file(tmp_path: Path) -> None:
    path = save(tmp_path, {"w": torch.ones(100)}, _use_new_zipfile_serialization=False)
    path.write_bytes(path.read_bytes()[:-100])
    assert read_damaged(path).endswith("has 100 elements, but the file does not hold them")


def test_zip_without_data_pkl(tmp_path: Path) -> None:
    path = tmp_path / "notes.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/notes.txt", "hello")
    assert "no data.pkl member" in read_damaged(path)


def test_missing_storage_member(tmp_path: Path) -> None:
    checkpoint = {"w": tensor_call(StorageRecord(torch.FloatStorage, "0", 2), 0, (2,), (1,))}
    path = write_archive(tmp_path / "m.pt", checkpoint, {})
    assert read_damaged(path) == "zip member 'archive/data/0' is missing"


def test_storage_size_disagrees_with_pickle(tmp_path: Path) -> None:
    checkpoint = {"w": tensor_call(StorageRecord(torch.FloatStorage, "0", 3), 0, (2,), (1,))}
    path = write_archive(tmp_path / "m.pt", checkpoint, {"0": bytes(8)})
    assert read_damaged(path) == "storage '0' holds 8 bytes, the pickle says 12"


@pytest.mark.parametrize(
    ("offset", "size", "stride"),
    [(3, (2,), (1,)), (0, (2, 2), (1, 3)), (5, (0,), (1,))],
    ids=["offset", "stride", "empty-offset"],
)
def test_tensor_outside_its_storage(
    tmp_path: Path, offset: int, size: tuple, stride: tuple
) -> None:
    storage = StorageRecord(torch.FloatStorage, "0", 4)
    path = write_archive(
        tmp_path / "m.pt", {"w": tensor_call(storage, offset, size, stride)}, {"0": bytes(16)}
    )
    problem = read_damaged(path)
    assert problem.startswith("tensor 'w': needs bytes") and problem.endswith("which holds 16")


def test_oversized_shape(tmp_path: Path) -> None:
    storage = StorageRecord(torch.FloatStorage, "0", 1)
    checkpoint = {"w": tensor_call(storage, 0, (1, 2**70), (0, 0))}
    path = write_archive(tmp_path / "m.pt", checkpoint, {"0": bytes(4)})
    assert read_damaged(path).startswith("tensor 'w': ")


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"\x80\x02}q\x00(X\x01", "archive/data.pkl: malformed pickle"),
        (b"\x80\x02X\x03\x00\x00\x00abcQ.", "unexpected persistent id 'abc'"),
        (b"\x80\x02" + b"]" * 100_000 + b"a" * 99_999 + b".", "nests too deeply"),
    ],
    ids=["truncated", "persistent-id", "deep"],
)
def test_malformed_pickle(tmp_path: Path, payload: bytes, problem: str) -> None:
    assert problem in read_damaged(write_archive(tmp_path / "m.pt", payload, {}))


def test_neither_zip_nor_legacy(tmp_path: Path) -> None:
    path = tmp_path / "random.bin"
    path.write_bytes(b"\x80\x02not a torch file")
    with pytest.raises(MalformedModel, match="neither a zip archive nor a legacy torch pickle"):
        open_model(path, format="pytorch")
