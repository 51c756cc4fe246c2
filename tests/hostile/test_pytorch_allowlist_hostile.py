"""What stays refused once the allow-list reads sparse tensors, numpy arrays and plain values.

Issue 12 widened the allow-list; each trick against a wider list is here, as a
crafted file beside its genuine twin (which the code before issue 12 refused,
and which now reads): a lookalike of an allowed name, an allowed callable
given hostile arguments, ``BUILD`` on an allowed class with state it must not
take, and what needs code to rebuild (a whole ``nn.Module``, a ``__main__``
class) hidden behind values that are now read.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from diffai.formats import open_model, pytorch
from tests.hostile.conftest import Call, Refusal, assert_refused, run_bounded
from tests.hostile.test_pytorch_hostile import FALSE, TRUE, archive, call, g, i, program, s

pytestmark = pytest.mark.filterwarnings("ignore:Sparse:UserWarning")

ALLOW_LIST = "(not on the allow-list)"


def raw(data: bytes) -> bytes:
    """``bytes`` as protocol 2 spells them: ``_codecs.encode(text, 'latin1')``."""
    return call(g("_codecs", "encode"), s(data.decode("latin1")), s("latin1"))


def long(value: int) -> bytes:
    """LONG1: an integer of any size."""
    encoded = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(encoded)]) + encoded


def numbers(*values: int) -> bytes:
    return b"(" + b"".join(long(v) for v in values) + b"t"


def numpy_dtype(code: str = "f4") -> bytes:
    state = b"(" + i(3) + s("<") + b"NNN" + i(-1) + i(-1) + i(0) + b"t"
    return call(g("numpy", "dtype"), s(code), FALSE, TRUE) + state + b"b"


def numpy_array(
    shape: tuple[int, ...] = (4,),
    data: bytes = bytes(16),
    dtype: bytes | None = None,
    reconstruct: bytes | None = None,
    builds: int = 1,
) -> bytes:
    """``np.zeros(4, np.float32)`` as numpy pickles it, each part replaceable."""
    start = reconstruct or call(
        g("numpy._core.multiarray", "_reconstruct"), g("numpy", "ndarray"), numbers(0), raw(b"b")
    )
    state = b"(" + i(1) + numbers(*shape) + (dtype or numpy_dtype()) + FALSE + raw(data) + b"t"
    return start + (state + b"b") * builds


def namespace(state: bytes = b"}" + s("lr") + i(1) + b"s", builds: int = 1) -> bytes:
    """``argparse.Namespace(lr=1)``: NEWOBJ, then BUILD of its attributes."""
    return g("argparse", "Namespace") + b")\x81" + (state + b"b") * builds


def entry(value: bytes) -> bytes:
    return program(b"}" + s("x") + value + b"s")


GENUINE: dict[str, bytes] = {
    "numpy-array": entry(numpy_array()),
    "namespace": entry(namespace()),
    "attribute-dict": entry(g("lightning.fabric.utilities.data", "AttributeDict") + b")\x81("
                            + s("lr") + i(1) + b"u"),
    "device": entry(call(g("torch", "device"), s("cuda"), i(0))),
    "layout": entry(call(g("torch.serialization", "_get_layout"), s("torch.sparse_coo"))),
}  # fmt: skip


@pytest.fixture
def genuine_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Reads a genuine twin with the allow-list alone (no torch.load to fall back on)."""
    monkeypatch.setattr(pytorch, "_import_torch", lambda: None)

    def check(name: str) -> None:
        model = open_model(archive(tmp_path / f"{name}.pt", GENUINE[name]), "pytorch")
        assert model.tensors or model.scalars, name

    return check


@pytest.mark.parametrize("name", GENUINE)
def test_the_genuine_twins_read_without_torch(genuine_reads: Callable[[str], None], name) -> None:
    """What each trick below departs from: read now, refused before issue 12."""
    genuine_reads(name)


LOOKALIKES = [
    pytest.param("numpy-array", b"_reconstruct\n", b"_reconstructx\n",
                 "numpy._core.multiarray._reconstructx", id="reconstructx"),
    pytest.param("numpy-array", b"numpy._core.", b"numpy._core_.",
                 "numpy._core_.multiarray._reconstruct", id="numpy-core-underscore"),
    pytest.param("namespace", b"cargparse\n", b"cargparse \n", "argparse .Namespace",
                 id="argparse-space"),
    pytest.param("namespace", b"\nNamespace\n", b"\nnamespace\n", "argparse.namespace",
                 id="namespace-lowercase"),
    pytest.param("device", b"ctorch\ndevice", b"ctorch.cuda\ndevice", "torch.cuda.device",
                 id="torch-cuda-device"),
    pytest.param("layout", b".serialization\n", b".serialisation\n",
                 "torch.serialisation._get_layout", id="serialisation"),
    pytest.param("attribute-dict", b".data\n", b"\n", "lightning.fabric.utilities.AttributeDict",
                 id="attribute-dict-module"),
]  # fmt: skip


@pytest.mark.parametrize(("genuine", "old", "new", "global_name"), LOOKALIKES)
def test_a_lookalike_of_an_allowed_name_is_refused(
    refused: Callable[..., Refusal], genuine_reads: Callable[[str], None], tmp_path: Path,
    genuine: str, old: bytes, new: bytes, global_name: str,
) -> None:  # fmt: skip
    genuine_reads(genuine)
    hostile = archive(tmp_path / "hostile.pt", GENUINE[genuine].replace(old, new))
    assert_refused(refused(hostile), f"pickled global {global_name!r} {ALLOW_LIST}")


ARGUMENTS = [
    pytest.param(entry(numpy_array(shape=(2**40,))),
                 "shape [1099511627776] and dtype float32 needs 4,398,046,511,104 bytes, "
                 "its state holds 16", id="array-huge-shape"),
    pytest.param(entry(numpy_array(data=bytes(12))), "needs 16 bytes, its state holds 12",
                 id="array-short-bytes"),
    pytest.param(entry(numpy_array(dtype=numpy_dtype("O"))),
                 "numpy dtype 'O' is not a plain number type", id="array-object-dtype"),
    pytest.param(entry(numpy_array(dtype=numpy_dtype("V8"))),
                 "numpy dtype 'V8' is not a plain number type", id="array-void-dtype"),
    pytest.param(entry(numpy_array(reconstruct=call(g("numpy._core.multiarray", "_reconstruct"),
                                                     g("numpy", "ndarray"), numbers(4),
                                                     raw(b"b")))),
                 "is not how numpy pickles an array", id="reconstruct-shape"),
    pytest.param(entry(numpy_array(reconstruct=call(g("numpy.core.multiarray", "_reconstruct"),
                                                     g("torch", "FloatStorage"), numbers(0),
                                                     raw(b"b")))),
                 "_reconstruct(the storage type of f32", id="reconstruct-class"),
    pytest.param(entry(numpy_array(shape=(-4,))), "unexpected numpy array state",
                 id="array-negative-shape"),
    pytest.param(entry(call(g("torch.serialization", "_get_layout"), s("torch.strided"))),
                 "layout 'torch.strided' is not a sparse layout torch saves", id="layout-strided"),
    pytest.param(entry(call(g("torch", "device"), s("cuda"), i(-1))),
                 "torch.device('cuda', -1), which torch refuses", id="device-index"),
    pytest.param(entry(call(g("datetime", "date"), raw(b"\x07\xe8\x0d\x01"))),
                 "month must be in 1..12", id="date-month-13"),
    pytest.param(entry(call(g("pathlib", "PosixPath"), i(7))), "a path of (7,), not of strings",
                 id="path-of-int"),
    pytest.param(entry(call(g("collections", "deque"), b"]" + i(1) + b"a")),
                 "is not how a deque pickles", id="deque-items-as-argument"),
]  # fmt: skip


@pytest.mark.parametrize(("pickled", "problem"), ARGUMENTS)
def test_an_allowed_callable_with_hostile_arguments_is_refused(
    refused: Callable[..., Refusal], tmp_path: Path, pickled: bytes, problem: str
) -> None:
    assert_refused(refused(archive(tmp_path / "hostile.pt", pickled)), problem)


BUILDS = [
    pytest.param(entry(namespace(b"}" + i(1) + i(2) + b"s")),
                 "BUILD may give a Namespace only named attributes", id="namespace-int-key"),
    pytest.param(entry(namespace(b"(" + s("lr") + b"t")),
                 "BUILD may give a Namespace only named attributes", id="namespace-tuple-state"),
    pytest.param(entry(namespace(builds=2)), "BUILD gave an argparse.Namespace its state twice",
                 id="namespace-twice"),
    pytest.param(entry(numpy_array(builds=2)), "BUILD gave a numpy array its state twice",
                 id="array-twice"),
    pytest.param(entry(numpy_array(builds=0)),
                 "a numpy array without the state numpy pickles with it", id="array-never-built"),
    pytest.param(entry(g("numpy", "ndarray") + b"}" + s("shape") + i(1) + b"sb"),
                 "BUILD cannot give state to numpy.ndarray", id="ndarray-type"),
    pytest.param(entry(call(g("torch.serialization", "_get_layout"), s("torch.sparse_csr"))
                       + b"(" + s("coo") + b"tb"),
                 "BUILD cannot give state to the layout csr", id="layout"),
    pytest.param(entry(g("lightning.fabric.utilities.data", "AttributeDict") + b")\x81"
                       + b"}" + s("__class__") + i(1) + b"sb"),
                 "BUILD cannot give state to {}", id="attribute-dict"),
    pytest.param(entry(call(g("collections", "deque"), b")", i(2)) + b"N}" + s("_maxlen")
                       + i(9) + b"s\x86b"),
                 "BUILD cannot give state to []", id="deque-maxlen-slot"),
    pytest.param(entry(g("argparse", "Namespace") + b"}" + s("lr") + i(1) + b"sb"),
                 "malformed pickle", id="namespace-class-itself"),
]  # fmt: skip


@pytest.mark.parametrize(("pickled", "problem"), BUILDS)
def test_build_on_an_allowed_class_with_state_it_must_not_take_is_refused(
    refused: Callable[..., Refusal], tmp_path: Path, pickled: bytes, problem: str
) -> None:
    assert_refused(refused(archive(tmp_path / "hostile.pt", pickled)), problem)
    assert open_model(archive(tmp_path / "next.pt", GENUINE["namespace"])).scalars == {"x.lr": 1}


# --- sparse tensors whose parts lie ---------------------------------------------------------


def _coo(indices: list[list[int]], values: list[float], size: tuple[int, ...], coalesced=False):
    rebuild = torch._utils._rebuild_sparse_tensor
    parts = (torch.tensor(indices), torch.tensor(values), torch.Size(size), coalesced)
    return Call(rebuild, torch.sparse_coo, parts)


def _csr(crow: list[int], col: list[int], values: list[float], size: tuple[int, int]):
    parts = (torch.tensor(crow), torch.tensor(col), torch.tensor(values), torch.Size(size))
    return Call(torch._utils._rebuild_sparse_tensor, torch.sparse_csr, parts)


SPARSE = {
    "index-out-of-range": (_coo([[0, 7]], [1.0, 2.0], (3,)),
                           "COO index 7 is out of range for an axis of size 3"),
    "negative-index": (_coo([[0, -1]], [1.0, 2.0], (3,)),
                       "COO index -1 is out of range for an axis of size 3"),
    "nnz-lying": (_coo([[0, 1, 2]], [1.0, 2.0], (3,)),
                  "COO values of shape [2] do not fit 3 indices"),
    "coalesced-lying": (_coo([[2, 0]], [1.0, 2.0], (3,), coalesced=True),
                        "its indices are marked coalesced but are not sorted and unique; "
                        "refused as ambiguous"),
    "int32-coo-indices": (Call(torch._utils._rebuild_sparse_tensor, torch.sparse_coo, (
        torch.tensor([[0]], dtype=torch.int32), torch.tensor([1.0]), torch.Size((3,)), False)),
        "sparse indices of dtype i32, which torch refuses"),
    "csr-pointers-past-nnz": (_csr([0, 1, 3], [0, 1], [1.0, 2.0], (2, 2)),
                              "csr compressed indices are not nondecreasing from 0 to nnz 2"),
    "csr-columns-unsorted": (_csr([0, 2, 2], [1, 0], [1.0, 2.0], (2, 2)),
                             "csr plain indices are not sorted and unique in each compressed row"),
    "csr-column-out-of-range": (_csr([0, 1, 2], [0, 5], [1.0, 2.0], (2, 2)),
                                "csr plain index 5 is out of range for an axis of size 2"),
    "too-large-to-index": (_coo([[0]], [1.0], (2**40, 2**40)),
                           "a sparse tensor of shape [1099511627776, 1099511627776] is too large"),
}  # fmt: skip


@pytest.fixture(scope="module")
def sparse_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Refusal]:
    """In one bounded child: a dense shape of 2**40 elements must not be allocated."""
    folder = tmp_path_factory.mktemp("sparse")
    cases = {**SPARSE, "dense-2-to-the-40": (_coo([[0], [0]], [1.0], (2**20, 2**20)), "")}
    paths = []
    for name, (rebuild, _) in cases.items():
        paths.append(folder / f"{name}.pt")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.save({"w": rebuild, "dense": torch.ones(2)}, paths[-1])
    return dict(zip(cases, run_bounded(paths), strict=True))


@pytest.mark.parametrize("name", SPARSE)
def test_a_sparse_tensor_whose_parts_lie_is_refused(
    sparse_results: dict[str, Refusal], name: str
) -> None:
    assert_refused(sparse_results[name], f"tensor 'w': {SPARSE[name][1]}")


def test_a_sparse_tensor_of_2_to_the_40_elements_is_refused_unallocated(
    sparse_results: dict[str, Refusal],
) -> None:
    assert_refused(
        sparse_results["dense-2-to-the-40"], "its tensors add up to 4,398,046,511,112 bytes"
    )


# --- what needs code, behind what is now read ----------------------------------------------


def _beside_harmless(path: Path, hostile: object) -> Path:
    """The hostile object after values the code before issue 12 refused first."""
    harmless = {"rng": np.random.get_state(), "args": argparse.Namespace(lr=0.1)}
    torch.save({**harmless, "hostile": hostile}, path)
    return path


class _Net:
    """A user's class, as a script's ``__main__`` would define it."""


_Net.__module__ = "__main__"


def test_a_whole_module_beside_harmless_values_is_refused_by_its_name(
    refused: Callable[..., Refusal], tmp_path: Path
) -> None:
    hostile = _beside_harmless(tmp_path / "hostile.pt", torch.nn.Linear(2, 2))
    name = "torch.nn.modules.linear.Linear"
    assert_refused(refused(hostile), f"pickled global {name!r} {ALLOW_LIST}: the file is a whole")


def test_a_main_class_beside_harmless_values_is_refused_by_its_name(
    refused: Callable[..., Refusal], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import __main__

    monkeypatch.setattr(__main__, "_Net", _Net, raising=False)
    hostile = _beside_harmless(tmp_path / "hostile.pt", _Net())
    assert_refused(refused(hostile), f"pickled global '__main__._Net' {ALLOW_LIST}")


def test_the_harmless_values_alone_read(tmp_path: Path) -> None:
    """The twin of the two above, without the hostile object."""
    path = tmp_path / "harmless.pt"
    torch.save({"rng": np.random.get_state(), "args": argparse.Namespace(lr=0.1)}, path)
    model = open_model(path)
    assert model.tensors["rng.1"].dtype == "u32" and model.scalars["args.lr"] == 0.1
