"""The bounded child of ``diffai.formats.isolated``: every way it can fail is one line.

The misbehaviours are real (tests/misbehaving_reader.py runs in the real child):
a segfault, a hang past the wall clock, a CPU spin, a flood of writes, an
allocation past the address-space limit, and answers a compromised child could
leave. Where the real limits would take long to reach (10 s, a gigabyte
written), the same child runs under smaller ones.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from diffai.errors import UnreadableModel
from diffai.formats import isolated
from tests.misbehaving_reader import VALUES

READER = "tests.misbehaving_reader"


def behaving(tmp_path: Path, behaviour: str) -> Path:
    path = tmp_path / f"{behaviour}.bin"
    path.write_text(behaviour)
    return path


def refusal(path: Path) -> str:
    with pytest.raises(UnreadableModel) as caught:
        isolated.read_isolated(path, READER, "the test reader")
    assert "\n" not in str(caught.value)
    return caught.value.problem


def test_a_well_behaved_child_hands_back_its_model(tmp_path: Path) -> None:
    model = isolated.read_isolated(behaving(tmp_path, "ok"), READER, "the test reader")
    assert model.scalars == {"epoch": 3} and model.format == "misbehaving"
    np.testing.assert_array_equal(model.tensors["w"].array(), VALUES)


@pytest.mark.parametrize(
    ("behaviour", "problem"),
    [
        ("segfault", "the test reader crashed on this file (signal 11)"),
        ("exit", "the test reader failed on this file (exit status 3)"),
        ("spin", "the test reader used up its CPU time on this file"),
        ("allocate", "reading it needs more memory than the reader may use"),
        ("huge-answer", "the test reader gave an answer diffai cannot use (its answer is over "
                        "67,108,864 bytes)"),
        ("answer-not-json", "the test reader gave an answer diffai cannot use (its answer is "
                            "unreadable: "),
        ("answer-a-list", "(its answer is not a JSON object)"),
        ("answer-without-scalars", "(its answer lacks tensors, scalars or metadata)"),
        ("answer-key-twice", "(its answer is unreadable: "),
        ("array-of-objects", "(its array for 'w' is unreadable: "),  # never unpickled
    ],
)  # fmt: skip
def test_a_child_gone_wrong_is_one_line(tmp_path: Path, behaviour: str, problem: str) -> None:
    assert problem in refusal(behaving(tmp_path, behaviour))


def run_limited(tmp_path: Path, behaviour: str, limits: isolated.ChildLimits) -> str:
    folder = tmp_path / "answer"
    folder.mkdir()
    with pytest.raises(UnreadableModel) as caught:
        path = behaving(tmp_path, behaviour)
        args = [READER, str(path), str(folder), json.dumps(dataclasses.asdict(limits))]
        isolated.run_child(path, "the test reader", limits, args)
    return caught.value.problem


def test_a_child_past_its_wall_clock_is_stopped(tmp_path: Path) -> None:
    limits = isolated.ChildLimits(memory_bytes=4 << 30, seconds=2, file_bytes=1 << 20)
    problem = run_limited(tmp_path, "sleep", limits)
    assert problem == "the test reader took over 2 s on this file and was stopped"


def test_a_child_that_floods_the_disk_is_stopped_at_its_limit(tmp_path: Path) -> None:
    limits = isolated.ChildLimits(memory_bytes=4 << 30, seconds=20, file_bytes=4 << 20)
    problem = run_limited(tmp_path, "flood", limits)
    assert problem == "the test reader wrote more than 4,194,304 bytes for this file"
    assert (tmp_path / "answer" / "flood").stat().st_size <= 4 << 20

