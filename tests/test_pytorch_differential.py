"""diffai's PyTorch reader agrees with torch.load(weights_only=True), or refuses (issue 11).

Real torch-saved files (views, shared storages, strides, neg/conj metadata, sparse
layouts, a training checkpoint's numpy arrays and plain values,
nested checkpoints, every dtype, the real models in tests/data/real) and
seeded mutations of their pickles, storages and member lists: each one diffai
reads, torch loads to the same names, shapes, dtypes and bytes
(``tests/fuzz/differential.py``). ``fuzz_pytorch_differential.py`` runs the
same check on libFuzzer's mutations of whole files, for long runs.
"""

from __future__ import annotations

import io
import random
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from tests.fuzz.differential import Reference, check_agreement
from tests.fuzz.seed_corpus import harmless_checkpoint

#: Mutations may write a zip name twice, and zipfile warns as it does; torch warns of sparse.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Duplicate name:UserWarning"),
    pytest.mark.filterwarnings("ignore:Sparse:UserWarning"),
]

REAL = Path(__file__).parent / "data" / "real"
MUTATIONS_PER_SEED = 24


def seeds() -> dict[str, bytes]:
    weight = torch.arange(12, dtype=torch.float32).reshape(3, 4) / 7
    shared = torch.arange(8, dtype=torch.float64)
    complex_values = torch.tensor([1 + 2j, -3 + 0.5j], dtype=torch.complex64)
    objects = {
        "views": {"t": weight.t(), "row": weight[1], "strided": weight[:, ::2], "w": weight},
        "shared": {"a": shared, "b": shared[2:6], "c": shared.view(2, 4)},
        "bits": {"neg": torch._neg_view(weight), "conj": complex_values.conj()},
        "dtypes": {str(d): torch.ones(3, dtype=d) for d in (torch.bfloat16, torch.float16,
                   torch.int8, torch.uint8, torch.bool, torch.int64, torch.float8_e4m3fn)},
        "nested": {"model": OrderedDict(w=torch.nn.Parameter(weight), step=torch.tensor(3)),
                   "optimizer": {"state": {0: {"exp_avg": weight * 0}}, "param_groups": [
                       {"lr": 0.1, "params": [0]}]}, "epoch": 2},
        "module": torch.nn.Linear(4, 3).state_dict(),
        "sparse": {"coo": (weight * (weight > 0.8)).to_sparse(), "csr": weight.to_sparse_csr(),
                   "bsc": weight.to_sparse_bsc((1, 2)), "dense": weight,
                   "uncoalesced": torch.sparse_coo_tensor(torch.tensor([[1, 0, 1]]),
                                                          torch.tensor([1.0, 2.0, 3.0]), (3,))},
    }  # fmt: skip
    objects["harmless"] = harmless_checkpoint()
    files = {name: _saved(obj) for name, obj in objects.items()}
    files.update({path.name: path.read_bytes() for path in sorted(REAL.glob("*.pt"))})
    return files


def _saved(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _records(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as opened:
        return [(info.filename, opened.read(info)) for info in opened.infolist()]


def _zipped(records: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as opened:
        for name, data in records:
            opened.writestr(name, data)
    return buffer.getvalue()


def _bytes_edited(rng: random.Random, data: bytes) -> bytes:
    edited = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(edited) + 1)
        edit = rng.choice(["set", "insert", "cut"])
        chunk = rng.randbytes(rng.randint(1, 4))
        if edit == "insert":
            edited[at:at] = chunk
        elif edit == "cut":
            del edited[at : at + len(chunk)]
        else:
            edited[at : at + len(chunk)] = chunk
    return bytes(edited)


def _mutate_pickle(rng: random.Random, records: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    return [(n, _bytes_edited(rng, d) if n.endswith("data.pkl") else d) for n, d in records]


def _mutate_storage(
    rng: random.Random, records: list[tuple[str, bytes]]
) -> list[tuple[str, bytes]]:
    storages = [i for i, (n, d) in enumerate(records) if "/data/" in n and d]
    if storages:
        at = rng.choice(storages)
        records[at] = (records[at][0], _bytes_edited(rng, records[at][1]))
    return records


def _mutate_members(
    rng: random.Random, records: list[tuple[str, bytes]]
) -> list[tuple[str, bytes]]:
    """Duplicate, recase, drop or move one member."""
    at = rng.randrange(len(records))
    name, data = records[at]
    edit = rng.choice(["duplicate", "recase", "drop", "move"])
    if edit == "duplicate":
        records.insert(rng.randrange(len(records) + 1), (name, rng.randbytes(len(data))))
    elif edit == "recase":
        records.insert(rng.randrange(len(records) + 1), (name.upper(), data))
    elif edit == "drop":
        del records[at]
    else:
        records.insert(0, records.pop(at))
    return records


MUTATORS: list[Callable[[random.Random, list[tuple[str, bytes]]], list[tuple[str, bytes]]]] = [
    _mutate_pickle, _mutate_storage, _mutate_members,
]  # fmt: skip


def cases() -> Iterator[tuple[str, bytes]]:
    rng = random.Random(11)
    for name, data in seeds().items():
        yield name, data
        is_zip = zipfile.is_zipfile(io.BytesIO(data))
        for index in range(MUTATIONS_PER_SEED):
            if is_zip:
                yield f"{name}-{index}", _zipped(rng.choice(MUTATORS)(rng, _records(data)))
            else:  # a legacy file: its bytes are the pickle
                yield f"{name}-{index}", _bytes_edited(rng, data)


@pytest.fixture(scope="module")
def reference() -> Iterator[Reference]:
    loader = Reference()
    yield loader
    loader.close()


def test_every_seed_is_read_exactly_as_torch_reads_it(reference: Reference, tmp_path: Path) -> None:
    for name, data in seeds().items():
        path = tmp_path / f"{name}.pt"
        path.write_bytes(data)
        assert check_agreement(path, reference) == "agreed", name


def test_every_mutation_is_refused_or_read_as_torch_reads_it(
    reference: Reference, tmp_path: Path
) -> None:
    outcomes = {"agreed": 0, "refused": 0}
    for _name, data in cases():
        path = tmp_path / "case.pt"
        path.write_bytes(data)
        outcomes[check_agreement(path, reference)] += 1
    assert outcomes["agreed"] > 20 and outcomes["refused"] > 50, outcomes  # both sides reached
