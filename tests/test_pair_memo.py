"""Both sides of a pair whose safetensors headers are the same bytes: parsed once, read alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from diffai.formats import open_model, open_models, safetensors
from diffai.formats.pairmemo import once_per_pair, opening_a_pair


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The headers ``safetensors._entries`` parsed, in order."""
    seen: list[bytes] = []
    entries = safetensors._entries

    def counted(path: str | Path, raw: bytes, data_len: int) -> safetensors.Entries:
        seen.append(raw)
        return entries(path, raw, data_len)

    monkeypatch.setattr(safetensors, "_entries", counted)
    return seen


def saved(path: Path, scale: float, metadata: dict[str, str] | None = None) -> Path:
    tensors = {"b": np.arange(3, dtype=np.float32) * scale, "a": np.ones((2, 2), np.float16)}
    save_file(tensors, str(path), metadata)
    return path


def described(path: Path) -> list[tuple[str, tuple[int, ...], str, list[float]]]:
    model = open_model(path)
    return [(n, r.shape, r.dtype, r.array().ravel().tolist()) for n, r in model.tensors.items()]


def test_the_same_header_is_parsed_once_and_each_side_reads_its_own_values(
    tmp_path: Path, parses: list[bytes]
) -> None:
    base, cand = saved(tmp_path / "base.safetensors", 1.0), saved(tmp_path / "c.safetensors", 2.0)
    pair = open_models(base, cand)
    assert len(parses) == 1
    parses.clear()
    for path, model in zip((base, cand), pair, strict=True):
        expected = described(path)
        got = [(n, r.shape, r.dtype, r.array().ravel().tolist()) for n, r in model.tensors.items()]
        assert got == expected
        assert model.path == str(path)
    assert len(parses) == 2  # opened alone, each side is parsed


def test_a_header_that_differs_is_parsed_for_its_own_side(
    tmp_path: Path, parses: list[bytes]
) -> None:
    base = saved(tmp_path / "base.safetensors", 1.0)
    cand = saved(tmp_path / "cand.safetensors", 1.0, {"note": "tuned"})
    pair = open_models(base, cand)
    assert len(parses) == 2 and parses[0] != parses[1]
    assert pair[1].metadata == {"note": "tuned"} and pair[0].metadata == {}


def test_answers_are_kept_only_while_a_pair_is_opened() -> None:
    calls: list[int] = []

    def compute() -> int:
        calls.append(1)
        return len(calls)

    with opening_a_pair():
        assert once_per_pair(("k", b"x"), compute) == 1
        assert once_per_pair(("k", b"x"), compute) == 1
        assert once_per_pair(("k", b"y"), compute) == 2
    assert once_per_pair(("k", b"x"), compute) == 3
    with opening_a_pair():
        assert once_per_pair(("k", b"x"), compute) == 4
