"""The numpy reader: .npy and .npz read exactly and lazily, pickles refused by name."""

from __future__ import annotations

import tracemalloc
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from diffai.errors import MalformedModel, UnreadableModel
from diffai.formats import numpy as numpy_reader
from diffai.formats import open_model
from diffai.model import Model

DTYPES = {
    "f64": "<f8", "f32": "<f4", "f16": "<f2",
    "i64": "<i8", "i32": "<i4", "i16": "<i2", "i8": "i1",
    "u64": "<u8", "u32": "<u4", "u16": "<u2", "u8": "u1",
    "bool": "?", "c64": "<c8", "c128": "<c16",
}  # fmt: skip


def is_mapped(array: np.ndarray) -> bool:
    """The values come from a map of the file, not a copy read into memory."""
    while array is not None and not isinstance(array, np.memmap):
        array = array.base
    return array is not None


def _sample(dtype: str, shape: tuple[int, ...] = (3, 4)) -> np.ndarray:
    values = np.random.default_rng(0).standard_normal(shape) * 50
    return (values + 1j * values if np.dtype(dtype).kind == "c" else values).astype(dtype)


def _peak_bytes(action: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture
def save_npz(tmp_path: Path) -> Callable[..., Path]:
    def save(name: str, compressed: bool = False, **arrays: np.ndarray) -> Path:
        path = tmp_path / name
        (np.savez_compressed if compressed else np.savez)(path, **arrays)
        return path

    return save


def test_npy_is_one_tensor_named_tensor(tmp_path: Path) -> None:
    path = tmp_path / "w.npy"
    np.save(path, _sample("<f4"))
    model = open_model(path)
    assert model.format == "numpy"
    assert model.size_bytes == path.stat().st_size
    assert list(model.tensors) == ["tensor"]
    assert (model.tensors["tensor"].shape, model.tensors["tensor"].dtype) == ((3, 4), "f32")
    np.testing.assert_array_equal(model.tensors["tensor"].array(), _sample("<f4"))
    assert is_mapped(model.tensors["tensor"].array())


@pytest.mark.parametrize("canonical", DTYPES)
@pytest.mark.parametrize("byte_order", ["<", ">"])
def test_every_dtype_and_byte_order_in_npy_and_npz(
    tmp_path: Path, canonical: str, byte_order: str
) -> None:
    array = _sample(np.dtype(DTYPES[canonical]).newbyteorder(byte_order))
    np.save(tmp_path / "a.npy", array)
    np.savez(tmp_path / "a.npz", a=array)
    for model in (open_model(tmp_path / "a.npy"), open_model(tmp_path / "a.npz")):
        tensor = next(iter(model.tensors.values()))
        assert (tensor.dtype, tensor.shape) == (canonical, (3, 4))
        np.testing.assert_array_equal(tensor.array(), array)
        assert tensor.array().dtype == array.dtype


@pytest.mark.parametrize("compressed", [False, True], ids=["savez", "savez_compressed"])
def test_npz_members_are_tensors_by_name(save_npz: Callable[..., Path], compressed: bool) -> None:
    arrays = {
        "fc1.weight": _sample("<f4", (4, 3)),
        "fc1.bias": _sample("<f2", (4,)),
        "nested/step": np.array(7, np.int64),
        "empty": np.zeros((0, 5), np.float32),
        "fortran": np.asfortranarray(_sample("<f8", (3, 5))),
    }
    model = open_model(save_npz("m.npz", compressed, **arrays))
    assert list(model.tensors) == list(arrays)
    assert model.scalars == {} and model.metadata == {}
    for name, array in arrays.items():
        tensor = model.tensors[name]
        assert tensor.name == name and tensor.shape == array.shape
        np.testing.assert_array_equal(tensor.array(), array)
    assert model.tensors["nested/step"].dtype == "i64"
    assert model.tensors["fortran"].array().flags.f_contiguous


def test_stored_npz_members_are_mapped_not_copied(save_npz: Callable[..., Path]) -> None:
    path = save_npz("big.npz", big=np.ones((1024, 1024), np.float64))
    model = open_model(path)
    array = model.tensors["big"].array()
    assert is_mapped(array)
    assert _peak_bytes(lambda: model.tensors["big"].array().sum()) < 1024 * 1024


def test_compressed_npz_is_inflated_on_load_not_at_open(save_npz: Callable[..., Path]) -> None:
    path = save_npz("big.npz", compressed=True, big=np.zeros((1024, 1024), np.float64))
    assert _peak_bytes(lambda: open_model(path)) < 1024 * 1024
    model = open_model(path)
    assert _peak_bytes(lambda: model.tensors["big"].array()) >= 8 * 1024 * 1024
    np.testing.assert_array_equal(model.tensors["big"].array(), np.zeros((1024, 1024)))


def test_content_wins_over_extension(tmp_path: Path, save_npz: Callable[..., Path]) -> None:
    npz = save_npz("m.npz", w=np.arange(3.0))
    renamed = npz.rename(tmp_path / "pytorch_model.bin")
    np.save(tmp_path / "t.npy", np.arange(3))
    npy = (tmp_path / "t.npy").rename(tmp_path / "t.weights")
    assert open_model(renamed).format == "numpy"
    assert list(open_model(renamed).tensors) == ["w"]
    np.testing.assert_array_equal(open_model(npy).tensors["tensor"].array(), np.arange(3))


def test_torch_zip_is_not_claimed(tmp_path: Path) -> None:
    """A torch.save zip (data.pkl plus storages) is the PyTorch reader's, even with .npy members."""
    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        archive.writestr("archive/extra.npy", b"")
    assert not numpy_reader.matches(path, path.read_bytes()[:1024])


def test_empty_npz_is_an_empty_model(save_npz: Callable[..., Path]) -> None:
    model: Model = open_model(save_npz("empty.npz"))
    assert (model.format, model.tensors) == ("numpy", {})


REFUSED_DTYPES = [
    pytest.param(
        np.array([1, "x", None], dtype=object),
        "holds an object array (dtype '|O'); object arrays need pickle, which diffai never runs",
        id="object",
    ),
    pytest.param(
        np.zeros(2, dtype=[("a", "<f4"), ("b", "O")]),
        "holds an object array",
        id="structured-with-object",
    ),
    pytest.param(
        np.zeros(2, dtype=[("a", "<f4"), ("b", "<i4")]),
        "has dtype '|V8' ([('a', '<f4'), ('b', '<i4')]), not a numeric type diffai compares",
        id="structured",
    ),
    pytest.param(np.array(["ab", "c"]), "has dtype '<U2'", id="unicode"),
    pytest.param(np.array(["2024-01-01"], "datetime64[D]"), "has dtype '<M8[D]'", id="datetime"),
]


@pytest.mark.parametrize(("array", "message"), REFUSED_DTYPES)
def test_unsupported_dtypes_are_refused_by_member(
    save_npz: Callable[..., Path], array: np.ndarray, message: str
) -> None:
    path = save_npz("m.npz", ok=np.ones(2), bad=array)
    with pytest.raises(UnreadableModel) as caught:
        open_model(path)
    assert str(caught.value).startswith(f"{path}: member 'bad.npy' ")
    assert message in str(caught.value)


def test_object_npy_is_refused_without_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "o.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(UnreadableModel, match="the array holds an object array"):
        open_model(path)


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        pytest.param(-4, "header promises 96 bytes of data, found 92", id="truncated"),
        pytest.param(+4, "header promises 96 bytes of data, found 100", id="trailing"),
    ],
)
def test_npy_data_length_must_match_header(tmp_path: Path, cut: int, message: str) -> None:
    path = tmp_path / "w.npy"
    np.save(path, _sample("<f8"))
    data = path.read_bytes()
    path.write_bytes(data[:cut] if cut < 0 else data + b"\0" * cut)
    with pytest.raises(MalformedModel, match=f"the array: {message}"):
        open_model(path)


def _npy_with_header(path: Path, header: str) -> Path:
    """An npy file with a hand-written header dict, padded as numpy pads it."""
    text = header.encode("latin-1")
    text += b" " * (-(10 + len(text) + 1) % 64) + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text)
    return path


@pytest.mark.parametrize(
    ("header", "message"),
    [
        pytest.param("{'descr': 'oops'", "EOF in multi-line statement", id="unterminated"),
        pytest.param("[1, 2]", "Header is not a dictionary", id="not-a-dict"),
        pytest.param("__import__('os')", "malformed node", id="code"),
        pytest.param(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-2,)}",
            r"negative size in shape \(-2,\)",
            id="negative-shape",
        ),
    ],
)
def test_bad_npy_header_is_malformed(tmp_path: Path, header: str, message: str) -> None:
    path = _npy_with_header(tmp_path / "w.npy", header)
    with pytest.raises(MalformedModel, match=f"the array: bad npy header: .*{message}"):
        open_model(path)


def test_unsupported_npy_version_is_named(tmp_path: Path) -> None:
    path = tmp_path / "w.npy"
    path.write_bytes(b"\x93NUMPY\x03\x00" + b"\0" * 64)
    with pytest.raises(MalformedModel, match=r"npy format version \(3, 0\) is not supported"):
        open_model(path)


def test_member_that_is_not_npy_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.npz"
    np.savez(path, w=np.ones(2))
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("notes.txt", b"hidden")
    with pytest.raises(UnreadableModel, match=r"npz member 'notes\.txt' is not an \.npy array"):
        open_model(path)


def test_repeated_member_is_refused(tmp_path: Path) -> None:
    """Only one of two same-named members would be read; the other would go unseen."""
    path = tmp_path / "m.npz"
    np.savez(path, w=np.ones(2))
    np.save(tmp_path / "other.npy", np.zeros(2))
    with warnings.catch_warnings(), zipfile.ZipFile(path, "a") as archive:
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns about the duplicate name
        archive.writestr("w.npy", (tmp_path / "other.npy").read_bytes())
    with pytest.raises(MalformedModel, match=r"npz member 'w\.npy' appears more than once"):
        open_model(path)


def test_corrupt_compressed_member_is_malformed(tmp_path: Path) -> None:
    path = tmp_path / "m.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("w.npy", b"\x93NUMPY")
    data = bytearray(path.read_bytes())
    start = data.index(b"w.npy") + len("w.npy")
    data[start : start + 6] = b"\xff" * 6
    path.write_bytes(bytes(data))
    with pytest.raises(MalformedModel, match=r"member 'w\.npy'"):
        open_model(path)
