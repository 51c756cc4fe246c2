"""Properties over generated inputs, on a small budget: a model or a DiffaiError, never a crash.

The same targets as the atheris harnesses in tests/fuzz (``tests/fuzz/targets.py``):
each returns a usable model (every tensor loads with its promised shape and
dtype, and compares and reports) or raises a one-line DiffaiError; anything
else propagates and fails the example, and so does a process, a socket or the
sentinel file a crafted pickle creates. The committed crashes the fuzzers
found are replayed too, in a child process with bounded memory and time.
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.targets import (
    TARGETS,
    onnx_input,
    policy_input,
    pytorch_input,
    safetensors_input,
    torchscript_input,
)
from tests.hostile.conftest import TIME_LIMIT, limit_memory

REGRESSIONS = Path(__file__).parent / "regressions"
CORPUS = Path(__file__).parents[1] / "fuzz" / "corpus"
#: Accepted models are compared and reported in full, so an example costs up to 50 ms.
FAST = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture]}
#: The committed seeds; what a fuzzer adds to the folders is named by its SHA-1 and left out.
SEED_BYTES = {
    target: [
        path.read_bytes()
        for path in sorted((CORPUS / target).iterdir())
        if not re.fullmatch("[0-9a-f]{40}", path.name)
    ]
    for target in TARGETS
}


def mutated(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    """A seed with a few bytes overwritten, inserted or cut: mostly valid, broken somewhere."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(st.sampled_from(seeds)))
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(data)))
            edit = draw(st.sampled_from(["set", "insert", "cut"]))
            chunk = draw(st.binary(min_size=1, max_size=8))
            if edit == "insert":
                data[at:at] = chunk
            elif edit == "cut":
                del data[at : at + len(chunk)]
            else:
                data[at : at + len(chunk)] = chunk
        return bytes(data)

    return build()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)


@st.composite
def safetensors_headers(draw: st.DrawFn) -> bytes:
    """A header of arbitrary JSON, or of entries with arbitrary fields, and arbitrary data."""
    entry = st.fixed_dictionaries(
        {"dtype": st.sampled_from(["F32", "I8", "BF16", "F4", 1]) | json_values,
         "shape": st.lists(st.integers(-2, 2**64), max_size=3) | json_values,
         "data_offsets": st.lists(st.integers(-1, 2**64), max_size=3) | json_values},
    )  # fmt: skip
    header = draw(st.dictionaries(st.text(max_size=6), entry | json_values, max_size=4))
    encoded = json.dumps(header).encode()
    length = draw(st.sampled_from([len(encoded), len(encoded) + 1, 0, 2**62]))
    return struct.pack("<Q", length) + encoded + draw(st.binary(max_size=64))


@settings(max_examples=60, **FAST)
@given(data=safetensors_headers() | mutated(SEED_BYTES["safetensors"]) | st.binary(max_size=64))
def test_safetensors_parser_never_crashes(tmp_path: Path, data: bytes) -> None:
    safetensors_input(data, tmp_path)


@settings(max_examples=60, **FAST)
@given(data=mutated(SEED_BYTES["pytorch"]) | st.binary(max_size=64).map(lambda b: b"\x01" + b))
def test_allow_list_unpickler_never_crashes_nor_runs_code(tmp_path: Path, data: bytes) -> None:
    """Mutated pickles (some of them attacks) inside a torch zip, and mutated whole files."""
    pytorch_input(data, tmp_path)


@settings(max_examples=60, **FAST)
@given(data=mutated(SEED_BYTES["torchscript"]))
def test_torchscript_reader_never_crashes_nor_runs_code(tmp_path: Path, data: bytes) -> None:
    """Mutated data.pkl beside valid class declarations, and mutated declarations."""
    torchscript_input(data, tmp_path)


yaml_text = st.text(
    alphabet=st.sampled_from(list("version: 1\n-[]{}&*!|>'\"#,.e0x~<")), max_size=80
)


@settings(max_examples=100, **FAST)
@given(data=mutated(SEED_BYTES["onnx"]) | st.binary(max_size=64))
def test_onnx_walker_never_crashes(tmp_path: Path, data: bytes) -> None:
    """Mutated ONNX files (typed fields, subgraphs, external data) through the wire walker."""
    onnx_input(data, tmp_path)


@settings(max_examples=100, **FAST)
@given(data=mutated(SEED_BYTES["policy"]) | yaml_text.map(str.encode))
def test_policy_loader_never_crashes(tmp_path: Path, data: bytes) -> None:
    policy_input(data, tmp_path)


_REPLAY = """
import sys, tempfile
from pathlib import Path
from tests.fuzz.targets import TARGETS
for path in sys.argv[1:]:
    target = Path(path).parent.name
    TARGETS[target](Path(path).read_bytes(), Path(tempfile.mkdtemp()))
"""


def test_every_committed_fuzz_crash_is_fixed() -> None:
    """Replayed in a bounded child: one of them once made the unpickler allocate 23 GB."""
    crashes = sorted(path for path in REGRESSIONS.glob("*/*") if path.parent.name in TARGETS)
    assert crashes
    subprocess.run(
        [sys.executable, "-c", _REPLAY, *map(str, crashes)],
        cwd=Path(__file__).parents[2],
        timeout=TIME_LIMIT * 2,
        preexec_fn=limit_memory,
        check=True,
    )


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_seed_is_accepted_or_refused_cleanly(tmp_path: Path, target: str) -> None:
    for seed in SEED_BYTES[target]:
        TARGETS[target](seed, tmp_path)
