"""Torch checkpoints that diffai could read differently from torch, and pickles that change state.

A gate must judge what ``torch.load(weights_only=True)`` loads: every file here
is one that the code before issue 11 read differently from torch (a reviewed
copy of a member, a lazily negated tensor), let one read change the next, let a
memo index past its guard, or crashed; now each is refused in one line, or read
exactly as torch reads it.
"""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from diffai.formats import open_model
from tests.hostile.conftest import Refusal, assert_refused, declare_size, run_bounded
from tests.hostile.test_pytorch_hostile import FALSE, TRUE, archive, call, g, i, program, s

#: The files are ambiguous on purpose: zipfile warns as it writes a name twice.
pytestmark = pytest.mark.filterwarnings("ignore:Duplicate name:UserWarning")

GOOD = {"w": torch.tensor([1.5, 2.0, 3.0, 4.0])}
EVIL = struct.pack("<4f", -150, -200, -300, -400)


def saved(obj: object, **kwargs: object) -> dict[str, bytes]:
    buffer = io.BytesIO()
    torch.save(obj, buffer, **kwargs)
    with zipfile.ZipFile(buffer) as opened:
        return {name: opened.read(name) for name in opened.namelist()}


def rezip(path: Path, records: list[tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as opened:
        for name, data in records:
            opened.writestr(name, data)
    return path


def with_storage(second: tuple[str, bytes], evil_first: bool) -> list[tuple[str, bytes]]:
    """GOOD's records, with ``second`` beside the real ``archive/data/0``."""
    records = []
    for name, data in saved(GOOD).items():
        pair = [second, (name, data)] if evil_first else [(name, data), second]
        records += pair if name == "archive/data/0" else [(name, data)]
    return records


def ambiguous_archives(folder: Path) -> dict[str, tuple[Path, str]]:
    good = saved(GOOD)
    renamed = [(name.replace("archive/", "other/"), data) for name, data in good.items()]
    nul = [(name + ("@x" if name.endswith("/data/0") else ""), data) for name, data in good.items()]
    concatenated = folder / "concatenated.pt"
    torch.save(GOOD, concatenated)
    evil = io.BytesIO()
    torch.save({"w": -GOOD["w"]}, evil)
    concatenated.write_bytes(concatenated.read_bytes() + evil.getvalue())
    cases = {
        "duplicate-evil-first": (with_storage(("archive/data/0", EVIL), True), "appears twice"),
        "duplicate-evil-last": (with_storage(("archive/data/0", EVIL), False), "appears twice"),
        "case-evil-last": (with_storage(("archive/DATA/0", EVIL), False), "differ only in case"),
        "two-prefixes": ([*good.items(), *renamed], "outside the archive's folder 'archive'"),
        "nul-in-name": (nul, "holds a NUL"),
        "no-version": ([(n, d) for n, d in good.items() if not n.endswith("/version")],
                       "has no version record, which torch refuses"),
    }  # fmt: skip
    files = {name: (rezip(folder / f"{name}.pt", records), problem)
             for name, (records, problem) in cases.items()}  # fmt: skip
    files["concatenated"] = (concatenated, "does not start at the file's first byte")
    with_nul = files["nul-in-name"][0]  # zipfile cuts names at a NUL when it writes them too
    with_nul.write_bytes(with_nul.read_bytes().replace(b"data/0@x", b"data/0\0x"))
    return files


CASES = [
    "duplicate-evil-first", "duplicate-evil-last", "case-evil-last", "two-prefixes",
    "nul-in-name", "no-version", "concatenated",
]  # fmt: skip


@pytest.mark.parametrize("name", CASES)
def test_an_archive_torch_may_read_differently_is_refused(
    refused: Callable[..., Refusal], tmp_path: Path, name: str
) -> None:
    hostile, problem = ambiguous_archives(tmp_path)[name]
    assert_refused(refused(hostile), problem)


# --- tensor metadata, requires_grad, storages -------------------------------------------


def test_neg_and_conj_bits_read_as_torch_resolves_them(tmp_path: Path) -> None:
    """torch.save keeps a lazily negated or conjugated view as metadata; the values are its
    resolved ones, bit for bit (before, diffai read the stored, unnegated bytes)."""
    complex_values = torch.tensor([1 + 2j, 3 - 4j, float("nan") + 1j])
    views = {
        "neg": torch._neg_view(torch.tensor([1.0, -2.0, float("inf")])),
        "conj": complex_values.conj(),
        "neg_conj": torch._neg_view(complex_values.conj()),
        "neg_i8": torch._neg_view(torch.tensor([1, -128], dtype=torch.int8)),
    }
    path = tmp_path / "views.pt"
    torch.save(views, path)
    model = open_model(path)
    for name, loaded in torch.load(path, weights_only=True).items():
        expected = loaded.resolve_conj().resolve_neg().numpy()
        assert model.tensors[name].array().tobytes() == expected.tobytes(), name


def tensor_call(metadata: bytes, requires_grad: bytes = FALSE, storage: str = "FloatStorage",
                key: str = "0", arguments: int = 7, numel: int = 4) -> bytes:  # fmt: skip
    record = b"(" + s("storage") + g("torch", storage) + s(key) + s("cpu") + i(numel) + b"tQ"
    args = [record, i(0), b"(" + i(4) + b"t", b"(" + i(1) + b"t", requires_grad, b"}", metadata]
    return call(g("torch._utils", "_rebuild_tensor_v2"), *args[:arguments])


def state_dict(*entries: tuple[str, bytes]) -> bytes:
    return program(b"}(" + b"".join(s(key) + value for key, value in entries) + b"u")


TENSOR_CHECKS = [
    pytest.param(tensor_call(b"}" + s("neg") + FALSE + b"s"),
                 "metadata {'neg': False} is ambiguous", id="neg-false"),
    pytest.param(tensor_call(b"}" + s("conj") + TRUE + b"s"),
                 "metadata {'conj': True} on a f32 tensor is not applied", id="conj-on-real"),
    pytest.param(tensor_call(b"}" + s("sign") + TRUE + b"s"), "metadata {'sign': True} on a f32",
                 id="unknown-metadata"),
    pytest.param(tensor_call(b"N", TRUE, "IntStorage"), "a i32 tensor cannot require gradients",
                 id="int-requires-grad"),
    pytest.param(tensor_call(b"N", arguments=4), "missing 2 required positional arguments",
                 id="too-few-arguments"),
]  # fmt: skip


@pytest.mark.parametrize(("tensor", "problem"), TENSOR_CHECKS)
def test_a_tensor_torch_builds_otherwise_is_refused(
    refused: Callable[..., Refusal], tmp_path: Path, tensor: bytes, problem: str
) -> None:
    hostile = archive(tmp_path / "hostile.pt", state_dict(("w", tensor)), {"0": EVIL})
    assert_refused(refused(hostile), problem)


def test_a_storage_named_twice_with_two_types_is_refused(
    refused: Callable[..., Refusal], tmp_path: Path
) -> None:
    """Torch keeps the first record of a key: the second tensor would be f32 to torch."""
    pickled = state_dict(("a", tensor_call(b"N")), ("b", tensor_call(b"N", storage="IntStorage")))
    hostile = archive(tmp_path / "hostile.pt", pickled, {"0": EVIL})
    assert_refused(refused(hostile), "storage '0' is named twice, as 4 x f32 and as 4 x i32")


# --- one read never changes the next ----------------------------------------------------

BUILDS = [
    pytest.param(g("torch", "FloatStorage") + b"(" + s("i32") + b"tb",
                 "BUILD cannot give state to the storage type of f32", id="storage-type-to-i32"),
    pytest.param(g("torch._utils", "_rebuild_tensor_v2") + b"}" + s("__defaults__") + b"N"
                 + b"sb", "BUILD cannot give state to torch._utils._rebuild_tensor_v2",
                 id="function-dict"),
    pytest.param(g("torch", "float32") + b"(" + s("int8") + b"tb",
                 "BUILD cannot give state to torch.float32", id="torch-dtype"),
    pytest.param(call(g("collections", "OrderedDict")) + b"}" + s("items")
                 + g("torch._utils", "_rebuild_parameter") + b"sb",
                 "BUILD may set only _metadata on an OrderedDict", id="ordered-dict-items"),
    pytest.param(tensor_call(b"N") + b"(" + s("object") + b"tb",
                 "BUILD cannot give state to a tensor", id="tensor-dtype-object"),
    pytest.param(tensor_call(b"N") + b"(" + i(7) + b"tb", "BUILD cannot give state to a tensor",
                 id="tensor-storage-7"),
]  # fmt: skip


@pytest.mark.parametrize(("built", "problem"), BUILDS)
def test_build_on_a_stand_in_is_refused_and_the_next_file_reads_alike(
    refused: Callable[..., Refusal], run_cli, tmp_path: Path, built: bytes, problem: str
) -> None:
    """Stand-ins serve every read of a process; BUILD made torch.FloatStorage read as i32."""
    hostile = archive(tmp_path / "hostile.pt", state_dict(("x", built)), {"0": EVIL})
    assert_refused(refused(hostile), problem)
    good = tmp_path / "good.pt"
    torch.save(GOOD, good)
    model = open_model(good)
    assert model.tensors["w"].dtype == "f32"
    np.testing.assert_array_equal(model.tensors["w"].array(), GOOD["w"].numpy())


# --- memory and the fallback, in a bounded child ------------------------------------------

#: ``PUT`` spellings CPython's C unpickler reads as 2**27 and the old guard did not.
PUT_SPELLINGS = {"plus": b"+134217728", "space": b" 134217728", "zeros": b"000134217728",
                 "underscore": b"134_217_728", "carriage-return": b"134217728\r"}  # fmt: skip


def write_memory_bombs(folder: Path) -> dict[str, tuple[Path, str]]:
    files = {
        f"put-{name}": (archive(folder / f"put-{name}.pt", b"\x80\x02}p" + digits + b"\n."),
                        "uses pickle opcode PUT, which torch.load(weights_only=True) does not read")
        for name, digits in PUT_SPELLINGS.items()
    }  # fmt: skip
    # A global torch reads and diffai does not, so the file would go to torch.load, whose
    # storage declares 4 GiB: torch would allocate it before failing.
    refused_by_diffai = g("torch", "Tensor") + b")R"  # allowed by torch, not by the allow-list
    pickled = state_dict(("c", refused_by_diffai), ("w", tensor_call(b"N")))
    fallback = archive(folder / "fallback.pt", pickled, {"0": EVIL}, compressed=frozenset("0"))
    declare_size(fallback, "archive/data/0", 2**32 - 4)
    files["fallback-bomb"] = (fallback, "not handed to torch.load")
    declared = state_dict(("c", refused_by_diffai), ("w", tensor_call(b"N", numel=3 << 28)))
    files["fallback-pickle-bomb"] = (archive(folder / "fallback-pickle.pt", declared, {"0": EVIL}),
                                     "its pickle declares storages of 3,221,225,472 bytes")
    # 150 bytes: torch zeroes 1 GiB, and diffai once showed it as a scalar (14.5 GiB, 231 s).
    zeros = state_dict(("b", call(g("builtins", "bytearray"), i(1 << 30))))
    files["fallback-bytearray"] = (archive(folder / "bytearray.pt", zeros),
                                   "it calls builtins.bytearray with a size (1,073,741,824)")
    files.update(legacy_bombs(folder))
    return files


def legacy_bombs(folder: Path) -> dict[str, tuple[Path, str]]:
    """Pre-zip files go to torch.load whole: torch allocated what the pickle declares (3 GiB
    here, from 368 bytes), and a lazily negated stride-0 view became a 2 GiB copy as its values
    were read (2.28 GiB and 21 s before the budget refused it)."""
    legacy = io.BytesIO()
    torch.save(GOOD, legacy, _use_new_zipfile_serialization=False)
    numel = b"X\x03\x00\x00\x00cpuq\x06K\x04N"  # location 'cpu', then the storage's 4 elements
    assert legacy.getvalue().count(numel) == 1
    declared = folder / "legacy-storage.pt"
    declared.write_bytes(legacy.getvalue().replace(numel, numel[:-3] + i(3 << 28) + b"N"))
    view = folder / "legacy-negated-view.pt"
    negated = torch._neg_view(torch.tensor([1.5]).expand(2**29))
    torch.save({"w": negated}, view, _use_new_zipfile_serialization=False)
    return {
        "legacy-storage-bomb": (declared, "its pickle declares storages of 3,221,225,472 bytes"),
        "legacy-view-bomb": (view, "torch loaded tensors of 2,147,483,648 bytes, over the limit"),
    }


@pytest.fixture(scope="module")
def memory_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Refusal, str]]:
    files = write_memory_bombs(tmp_path_factory.mktemp("memory"))
    results = run_bounded([path for path, _ in files.values()])
    return {name: (result, files[name][1]) for name, result in zip(files, results, strict=True)}


MEMORY_BOMBS = [*(f"put-{n}" for n in PUT_SPELLINGS), "fallback-bomb", "fallback-pickle-bomb",
                "fallback-bytearray", "legacy-storage-bomb", "legacy-view-bomb"]  # fmt: skip


@pytest.mark.parametrize("name", MEMORY_BOMBS)
def test_a_memory_bomb_is_refused_before_anything_allocates(
    memory_results: dict[str, tuple[Refusal, str]], name: str
) -> None:
    refusal, problem = memory_results[name]
    assert_refused(refusal, problem)


def test_a_legacy_meta_tensor_is_refused_by_name(
    refused: Callable[..., Refusal], tmp_path: Path
) -> None:
    """torch.load gives a meta tensor, which has no values to compare (was a TypeError)."""
    hostile = tmp_path / "meta.pt"
    torch.save({"w": torch.empty(2, device="meta")}, hostile, _use_new_zipfile_serialization=False)
    assert_refused(refused(hostile), "tensor 'w' is a meta tensor (one without values)")
