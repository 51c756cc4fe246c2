"""Hostile torch checkpoints through the CLI: no pickle runs code, no archive bursts memory.

tests/test_format_pytorch.py refuses os.system in four protocols and checks
the reader's messages for damaged archives; tests/test_cross_format.py runs
one os.system pickle through the CLI. Here: every way a pickle can reach code
(each payload shown to be live when unpickled naively), chains through the
allow-listed names, legacy files, and archives built to exhaust memory or time.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from diffai.formats import flatten
from tests.hostile.conftest import Call, Refusal, assert_refused, declare_size, run_bounded


# A tiny assembler of the opcodes torch's weights-only unpickler reads (protocol 2's binary
# ones): hostile pickles are written by hand, not by a pickler.
def g(module: str, name: str) -> bytes:
    """GLOBAL: push ``module.name``."""
    return f"c{module}\n{name}\n".encode()


def s(text: str) -> bytes:
    """BINUNICODE: push a string."""
    encoded = text.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(encoded)) + encoded


def i(value: int) -> bytes:
    """BININT: push a signed 32-bit integer."""
    return b"J" + struct.pack("<i", value)


FALSE, TRUE = b"\x89", b"\x88"


def call(func: bytes, *args: bytes) -> bytes:
    """MARK args TUPLE REDUCE: push ``func(*args)``."""
    return func + b"(" + b"".join(args) + b"tR"


def program(body: bytes) -> bytes:
    return body + b"."


def archive(
    path: Path,
    data_pkl: bytes,
    storages: dict[str, bytes] | None = None,
    compressed: frozenset[str] = frozenset(),
    folder: str = "archive",
) -> Path:
    """torch.save's layout: ``<folder>/data.pkl``, ``<folder>/data/<key>`` per storage."""
    with zipfile.ZipFile(path, "w") as opened:
        opened.writestr(f"{folder}/data.pkl", data_pkl)
        opened.writestr(f"{folder}/version", "3\n")
        for key, payload in (storages or {}).items():
            method = zipfile.ZIP_DEFLATED if key in compressed else zipfile.ZIP_STORED
            opened.writestr(f"{folder}/data/{key}", payload, compress_type=method)
    return path


def tensor_pickle(
    storage: str, key: str, numel: int, size: tuple[int, ...], stride: tuple[int, ...]
):
    """``{"w": <tensor of ``size``/``stride`` on storage ``key``>}``, as torch pickles it."""

    class Record:
        def __init__(self) -> None:
            self.pid = ("storage", getattr(torch, storage), key, "cpu", numel)

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj: object) -> object:
            return obj.pid if isinstance(obj, Record) else None

    rebuild = Call(torch._utils._rebuild_tensor_v2, Record(), 0, size, stride, False, {})
    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump({"w": rebuild})
    return buffer.getvalue()


# --- pickles that would run code ---------------------------------------------------------


def attacks(sentinel: Path, nested: Path) -> dict[str, tuple[bytes, str]]:
    """name -> (data.pkl, the global refused first); each, unpickled naively, creates sentinel."""
    touch = s(f"touch {sentinel}")
    opens = s(f"open({str(sentinel)!r}, 'w').close()")
    os_module = call(g("importlib", "import_module"), s("os"))
    system = call(g("builtins", "getattr"), os_module, s("system"))
    pickle_module = call(g("builtins", "__import__"), s("pickle"))
    unsafe_load = call(g("torch", "load"), s(str(nested)), b"N", pickle_module)
    return {
        "os.system": (call(g("os", "system"), touch), "os.system"),
        "posix.system": (call(g("posix", "system"), touch), "posix.system"),
        "builtins.eval": (call(g("builtins", "eval"), opens), "builtins.eval"),
        "builtins.exec": (call(g("builtins", "exec"), opens), "builtins.exec"),
        "getattr-chain": (call(system, touch), "builtins.getattr"),
        "subprocess": (call(g("subprocess", "getoutput"), touch), "subprocess.getoutput"),
        "importlib": (call(g("importlib", "import_module"), s("os")), "importlib.import_module"),
        "torch.load-unsafe": (unsafe_load, "torch.load"),
        "torch.jit.load": (call(g("torch.jit", "load"), s(str(nested))), "torch.jit.load"),
    }  # fmt: skip


LIVE = {"os.system", "posix.system", "builtins.eval", "builtins.exec", "getattr-chain",
        "subprocess", "torch.load-unsafe"}  # fmt: skip
ATTACKS = list(attacks(Path("x"), Path("y")))


@pytest.fixture
def nested(tmp_path: Path, sentinel: Path) -> Path:
    """A torch.save file that runs ``touch sentinel`` when loaded without weights_only."""
    path = tmp_path / "nested.pt"
    torch.save(Call(os.system, f"touch {sentinel}"), path)
    return path


@pytest.mark.parametrize("name", ATTACKS)
def test_a_pickle_that_reaches_code_is_refused_and_nothing_runs(
    refused: Callable[..., Refusal], tmp_path: Path, sentinel: Path, nested: Path, name: str
) -> None:
    data_pkl, refused_global = attacks(sentinel, nested)[name]
    hostile = archive(tmp_path / "hostile.pt", program(data_pkl))
    refusal = refused(hostile)
    assert_refused(refusal, f"refused to load pickled global {refused_global!r}")
    assert "torch.load(weights_only=True) refused it too" in refusal.err
    assert not sentinel.exists()


@pytest.mark.parametrize("name", sorted(LIVE))
def test_each_payload_is_live_when_unpickled_naively(
    sentinel: Path, nested: Path, name: str
) -> None:
    """So the refusals above refuse real attacks, not broken pickles."""
    data_pkl, _ = attacks(sentinel, nested)[name]
    pickle.loads(program(data_pkl))
    assert sentinel.exists()


# Chains that use only allow-listed names, hoping one of them calls something on their behalf.
CHAINS = [
    pytest.param(
        call(g("numpy.core.multiarray", "scalar"), call(g("numpy", "dtype"), s("O"), FALSE + TRUE),
             s("an object")),
        "numpy dtype 'O' is not a plain number type", id="numpy-object-scalar",
    ),
    pytest.param(call(g("_codecs", "encode"), s("import os"), s("rot13")),
                 "_codecs.encode is allowed only for latin1 strings", id="codecs-other-codec"),
    pytest.param(call(g("torch._utils", "_rebuild_parameter"), s("os.system"), FALSE, b"}"),
                 "a Parameter must wrap a tensor", id="parameter-of-a-string"),
    pytest.param(
        call(g("torch._utils", "_rebuild_tensor_v2"), call(g("collections", "OrderedDict")),
             i(0), b"(t", b"(t", FALSE, b"}"),
        "_rebuild_tensor_v2 needs a typed storage", id="tensor-of-a-dict",
    ),
    pytest.param(
        call(g("collections", "OrderedDict"))
        + b"(N}" + s("__class__") + g("torch", "Size") + b"stb",
        "BUILD may set only _metadata on an OrderedDict", id="build-sets-class",
    ),
    pytest.param(
        call(g("numpy", "dtype"), s("f8"), FALSE + TRUE)
        + b"(" + i(3) + s("?") + b"NNN" + i(-1) + i(-1) + i(0) + i(0) + b"tb",
        "unexpected numpy dtype state", id="numpy-dtype-bad-state",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("data_pkl", "problem"), CHAINS)
def test_a_chain_through_allowed_names_is_refused(
    refused: Callable[..., Refusal], tmp_path: Path, data_pkl: bytes, problem: str
) -> None:
    """The stand-ins check their arguments, so nothing can make them call anything else."""
    hostile = archive(tmp_path / "hostile.pt", program(data_pkl))
    assert_refused(refused(hostile), problem)


def test_a_legacy_file_that_runs_code_at_load_is_refused(
    refused: Callable[..., Refusal], tmp_path: Path, sentinel: Path
) -> None:
    """Pre-zip files go to torch.load(weights_only=True), which refuses the global too."""
    hostile = tmp_path / "legacy.pt"
    torch.save(Call(os.system, f"touch {sentinel}"), hostile, _use_new_zipfile_serialization=False)
    assert_refused(refused(hostile), "refused to load pickled global 'posix.system'")
    assert not sentinel.exists()


# --- archives that lie about their members --------------------------------------------------

FLOATS = {"storage": "FloatStorage", "key": "0", "numel": 4, "size": (4,), "stride": (1,)}


def tensor_archive(path: Path, storages: dict[str, bytes], **changes: object) -> Path:
    return archive(path, tensor_pickle(**{**FLOATS, **changes}), storages)


@pytest.mark.parametrize(
    ("changes", "storages", "problem"),
    [
        pytest.param({"numel": 1000}, {"0": bytes(16)}, "storage '0' holds 16 bytes, the pickle "
                     "says 4000", id="numel-exceeds-member"),
        pytest.param({}, {}, "zip member 'archive/data/0' is missing", id="missing-member"),
        pytest.param({"key": "../../../../etc/passwd"}, {"0": bytes(16)},
                     "zip member 'archive/data/../../../../etc/passwd' is missing",
                     id="key-climbs-out"),
        pytest.param({"key": "/etc/passwd"}, {"0": bytes(16)},
                     "zip member 'archive/data//etc/passwd' is missing", id="absolute-key"),
        pytest.param({"size": (2**20, 2**20), "stride": (0, 0)}, {"0": bytes(16)},
                     "its tensors add up to 4,398,046,511,104 bytes", id="stride-0-terabytes"),
    ],
)  # fmt: skip
def test_an_archive_that_lies_about_its_storages_is_refused(
    refused: Callable[..., Refusal],
    tmp_path: Path,
    changes: dict[str, object],
    storages: dict[str, bytes],
    problem: str,
) -> None:
    hostile = tensor_archive(tmp_path / "hostile.pt", storages, **changes)
    assert_refused(refused(hostile), problem)


@pytest.mark.parametrize("folder", ["../../outside", "/absolute"])
def test_member_names_outside_the_archive_are_never_paths(
    refused: Callable[..., Refusal], tmp_path: Path, folder: str
) -> None:
    """Members are looked up in the zip, never on disk: such a file has no data.pkl of torch's."""
    hostile = archive(
        tmp_path / "hostile.pt", tensor_pickle(**FLOATS), {"0": bytes(16)}, folder=folder
    )
    assert_refused(refused(hostile), "zip archive has no data.pkl member")
    assert not (tmp_path.parent / "outside").exists()


def test_a_compressed_storage_is_inflated_and_read(run_cli, tmp_path: Path) -> None:
    """Compression is not an attack by itself: within the budget, values read exactly."""
    values = struct.pack("<4f", 1.0, 2.0, 3.0, 4.5)
    pickled = tensor_pickle(**FLOATS)
    plain = archive(tmp_path / "plain.pt", pickled, {"0": values})
    packed = archive(tmp_path / "packed.pt", pickled, {"0": values}, compressed=frozenset("0"))
    assert run_cli(plain, packed).code == 0


def test_a_pickle_of_too_many_entries_is_refused(
    refused: Callable[..., Refusal], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A byte of pickle per entry (an empty dict) could list tens of millions of them; the
    limit is lowered here so that the test need not build a million."""
    monkeypatch.setattr(flatten, "MAX_ENTRIES", 1000)
    hostile = archive(tmp_path / "hostile.pt", b"\x80\x02](" + b"}" * 1001 + b"e.")
    assert_refused(refused(hostile), "the checkpoint holds over 1,000 tensors, values and lists")


def test_a_deeply_nested_pickle_is_refused(refused: Callable[..., Refusal], tmp_path: Path) -> None:
    hostile = archive(tmp_path / "hostile.pt", b"\x80\x02" + b"]" * 100_000 + b"a" * 99_999 + b".")
    assert_refused(refused(hostile), "the checkpoint nests too deeply to read")


# Built to exhaust memory or time: read in a child process with both bounded.
BOMB_PROBLEMS = {
    "memo-index": "memo index 1,479,017,329",
    "17MiB-pickle": "declares 17,825,796 bytes, over the limit of 16,777,216",
    "pickle-bomb": "declares 4,294,967,295 bytes, over the limit of 16,777,216",
    "storage-bomb": "declares 4,294,967,292 bytes, over the limit of",
}


def write_bombs(folder: Path) -> dict[str, Path]:
    compressed = tensor_pickle(**{**FLOATS, "numel": 2**30 - 1})
    files = {
        # LONG_BINPUT 1479017329: C's unpickler would allocate and zero a 23 GB memo.
        "memo-index": archive(folder / "memo.pt", b"\x80\x02}q\x00r\x71\x03\x28\x58."),
        "17MiB-pickle": archive(folder / "big.pt", b"\x80\x02]" + b"N" * (17 << 20) + b"."),
        "pickle-bomb": archive(folder / "pickle-bomb.pt", b"\x80\x02N."),
        "storage-bomb": archive(
            folder / "storage-bomb.pt", compressed, {"0": bytes(16)}, compressed=frozenset("0")
        ),
    }
    declare_size(files["pickle-bomb"], "archive/data.pkl", 2**32 - 1)
    declare_size(files["storage-bomb"], "archive/data/0", 2**32 - 4)
    return files


@pytest.fixture(scope="module")
def bomb_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Refusal]:
    files = write_bombs(tmp_path_factory.mktemp("bombs"))
    return dict(zip(files, run_bounded(list(files.values())), strict=True))


@pytest.mark.parametrize("name", list(BOMB_PROBLEMS))
def test_a_bomb_is_refused_in_bounded_memory_and_time(
    bomb_results: dict[str, Refusal], name: str
) -> None:
    assert_refused(bomb_results[name], BOMB_PROBLEMS[name])
