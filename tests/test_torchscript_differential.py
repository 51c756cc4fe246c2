"""What diffai reads of a mutated TorchScript archive, torch.jit.load loads to the same state dict.

Seeded mutations of the fuzz target's valid archive (its data.pkl, and its
code/ file): every one diffai reads goes to ``torch.jit.load`` in one child
process, whose ``state_dict()`` must hold the same names, shapes, dtypes and
bytes. Files diffai refuses are not handed to torch (it need not survive them).
The one way they part: diffai never compiles code/, so a mutated code file that
torch cannot compile (a method's body or signature broken) is read by diffai and
refused by torch (docs/security.md, known limits); a mutated data.pkl never is.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

import diffai
from diffai.errors import DiffaiError
from tests.fuzz.targets import SCRIPT_CODE, SCRIPT_PICKLE, script_zip

MUTATIONS = 150
_TORCH_SIDE = """
import hashlib, json, sys, warnings
import torch
warnings.simplefilter("ignore")
out = {}
for path in sys.argv[1:]:
    try:
        state = torch.jit.load(path).state_dict()
    except Exception as exc:
        out[path] = str(exc)[:200]
        continue
    out[path] = {k: [list(t.shape), str(t.dtype), hashlib.sha256(t.contiguous().numpy().tobytes())
                     .hexdigest()] for k, t in state.items()}
print(json.dumps(out))
"""
_DTYPES = {"f32": "torch.float32", "f64": "torch.float64", "i64": "torch.int64"}


def mutate(data: bytes, rng: random.Random) -> bytes:
    edited = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(edited))
        edited[at : at + 1] = bytes([rng.randrange(256)]) if rng.random() < 0.8 else b""
    return bytes(edited)


def diffai_view(path: Path) -> dict[str, list] | None:
    try:
        model = diffai.open_model(path)
    except DiffaiError:
        return None
    return {
        name: [
            list(ref.shape),
            _DTYPES[ref.dtype],
            hashlib.sha256(ref.array().tobytes()).hexdigest(),
        ]
        for name, ref in model.tensors.items()
    }


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_every_mutation_diffai_reads_loads_alike_in_torch(tmp_path: Path) -> None:
    rng = random.Random(12)
    code = SCRIPT_CODE.encode()
    read: dict[str, dict[str, list]] = {}
    for index in range(MUTATIONS):
        pickle_mode = index % 2 == 0
        data_pkl = mutate(SCRIPT_PICKLE, rng) if pickle_mode else SCRIPT_PICKLE
        path = tmp_path / f"m{index}.jit"
        path.write_bytes(script_zip(data_pkl, code if pickle_mode else mutate(code, rng)))
        view = diffai_view(path)
        if view is not None:
            read[str(path)] = view
    assert read, "no mutation was read: the test checks nothing"
    command = [sys.executable, "-c", _TORCH_SIDE, *read]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
    torch_views = json.loads(done.stdout)
    loaded_otherwise = {
        path: (view, torch_views[path])
        for path, view in read.items()
        if isinstance(torch_views[path], dict) and torch_views[path] != view
    }
    refused_by_torch = {path: torch_views[path] for path in read
                        if not isinstance(torch_views[path], dict)}  # fmt: skip
    assert not loaded_otherwise, loaded_otherwise
    in_pickle_mode = [path for path in refused_by_torch if int(Path(path).stem[1:]) % 2 == 0]
    assert not in_pickle_mode, in_pickle_mode
    print(f"{len(read)} of {MUTATIONS} read; torch refuses {len(refused_by_torch)} of them:")
    for path, reason in refused_by_torch.items():
        print(f"  {Path(path).name}: {reason.splitlines()[0] if reason else reason!r}")
