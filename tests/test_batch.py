"""The batch of small pairs built in C (``_kernel.measure_pairs``, diffai/_batch.c): mapped
safetensors sides read in place, the comparisons those the Python path builds, the figures
bit for bit, and a span it cannot read left to the path that names the tensor."""

from __future__ import annotations

import dataclasses
import struct
from functools import partial
from typing import Any

import ml_dtypes
import numpy as np
import pytest

from diffai import _kernel
from diffai.comparison import CompareOptions, TensorComparison, compare_models, measure_together
from diffai.errors import UnreadableModel
from diffai.formats import open_model
from diffai.model import CHUNK_ELEMENTS, Model, TensorRef, layout, mapped_view
from diffai.stats import measure_pair

RNG = np.random.default_rng(7)
DTYPES = {"f64": np.float64, "f32": np.float32, "f16": np.float16, "bf16": ml_dtypes.bfloat16}


def bits(record: Any) -> dict[str, Any]:
    """Every field, floats by their bits: -0.0 is not 0.0 and NaN equals NaN."""
    return {
        name: struct.pack("<d", value) if isinstance(value, float) else value
        for name, value in vars(record).items()
    }


def _values(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    values = RNG.standard_normal(shape)
    values.flat[::7] = 0.0
    return values.astype(DTYPES[dtype])


@pytest.fixture
def mapped_pair(write_safetensors) -> tuple[Model, Model]:
    """Every dtype the kernel reads, one changed, one unchanged, one retyped tensor each."""
    base: dict[str, np.ndarray] = {}
    cand: dict[str, np.ndarray] = {}
    for dtype in DTYPES:
        for shape in [(3,), (8, 8), (513,)]:
            name = f"{dtype}.{len(shape)}.{shape[0]}"
            base[f"{name}.moved"] = _values(dtype, shape)
            cand[f"{name}.moved"] = _values(dtype, shape)
            base[f"{name}.same"] = cand[f"{name}.same"] = _values(dtype, shape)
    base["retyped"], cand["retyped"] = _values("f32", (4, 4)), _values("f16", (4, 4))
    paths = write_safetensors("base.safetensors", base), write_safetensors("cand.safetensors", cand)
    return open_model(paths[0]), open_model(paths[1])


def test_mapped_sides_give_the_comparisons_of_the_python_path(mapped_pair) -> None:
    baseline, candidate = mapped_pair
    batch = [(name, ref, candidate.tensors[name]) for name, ref in baseline.tensors.items()]
    assert all(isinstance(ref.load, partial) and ref.load.func is mapped_view
               for _, ref, _ in batch)  # fmt: skip
    measured = measure_together(batch, 0.0)
    for (name, base, cand), tensor in zip(batch, measured, strict=True):
        assert tensor is not None, name
        alone = measure_pair(base, cand, 0.0)
        assert [bits(part) for part in alone] == [
            bits(tensor.baseline), bits(tensor.candidate), bits(tensor.diff)
        ], name
        expected = "dtype_changed" if name == "retyped" else name.rsplit(".", 1)[1]
        assert tensor.status == {"moved": "changed", "same": "unchanged"}.get(expected, expected)
        assert tensor.name == name and tensor.role_hint is None and tensor.fingerprint is None


def test_built_comparisons_are_dataclasses_like_any_other(mapped_pair) -> None:
    baseline, candidate = mapped_pair
    name = next(iter(baseline.tensors))
    (built,) = measure_together([(name, baseline.tensors[name], candidate.tensors[name])], 0.0)
    assert isinstance(built, TensorComparison)
    init = TensorComparison(**{field.name: getattr(built, field.name)
                               for field in dataclasses.fields(TensorComparison)})  # fmt: skip
    assert list(vars(built)) == list(vars(init)) and built == init
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.status = "changed"  # type: ignore[misc]


def test_pairs_the_kernel_does_not_take_are_none() -> None:
    values = np.ones((2, 2), np.float32)
    ref = TensorRef("t", (2, 2), "f32", load=lambda: values)
    other = TensorRef("t", (4,), "f32", load=lambda: values.ravel())
    ints = TensorRef("t", (2, 2), "i32", load=lambda: values.astype(np.int32))
    streamed = TensorRef("t", (2, 2), "f32", stream=lambda: iter([values.ravel()]))
    large = np.ones(CHUNK_ELEMENTS + 1, np.float32)  # more than one chunk
    big = TensorRef("t", large.shape, "f32", load=lambda: large)
    pairs = [("t", ref, None), ("t", None, ref), ("t", ref, other), ("t", ints, ints),
             ("t", streamed, streamed), ("t", ref, streamed), ("t", big, big)]  # fmt: skip
    assert _kernel.measure_pairs(pairs, 0.0) == [None] * 7


def _spanned(name: str, data: np.ndarray, begin: int, end: int) -> TensorRef:
    shaped = layout("f32", (2, 2))
    return TensorRef(name, (2, 2), "f32", load=partial(mapped_view, data, begin, end, shaped))


@pytest.mark.parametrize("begin, end", [(0, 20), (8, 24), (-16, 0), (8, 4)])
def test_a_span_that_is_not_its_tensor_is_refused(begin, end) -> None:
    """A span past the mapped bytes, or not the tensor's size, is never read by the kernel."""
    data = np.zeros(16, np.uint8)
    pair = ("t", _spanned("t", data, begin, end), _spanned("t", data, 0, 16))
    with pytest.raises(ValueError):
        _kernel.measure_pairs([pair], 0.0)


def test_a_batch_with_an_unreadable_span_names_the_tensor() -> None:
    data = np.zeros(16, np.uint8)
    good = _spanned("good", data, 0, 16)
    models = [
        Model("m", "safetensors", 16, {"good": good, "bad": _spanned("bad", data, 8, 24)})
        for _ in range(2)
    ]
    with pytest.raises(UnreadableModel, match="'bad'"):
        compare_models(*models, CompareOptions(detect_renames=False))


def test_an_encoding_a_reader_states_is_what_the_python_path_reports() -> None:
    """stored dtype and bytes, sparsity, quantization and role hints, read from the refs' fields
    in C, are those the properties and ``measure_pair`` give."""
    from diffai.model import Sparsity

    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    moved = values + np.float32(0.5)
    kinds: list[dict[str, Any]] = [
        {"stored_as": "q8_0", "stored_size": 5, "quantization": {"scheme": "q8_0"}},
        {"sparse": Sparsity("coo", 4), "role_hint": "buffer"},
        {"stored_as": "", "stored_size": None},
    ]
    for fields in kinds:
        base = TensorRef("t", (2, 3), "f32", load=lambda: values, **fields)
        cand = TensorRef("t", (2, 3), "f32", load=lambda: moved, **fields)
        (tensor,) = measure_together([("t", base, cand)], 0.0)
        assert tensor is not None
        alone = measure_pair(base, cand, 0.0)
        assert [bits(tensor.baseline), bits(tensor.candidate)] == [bits(alone[0]), bits(alone[1])]
        assert tensor.baseline.stored_dtype == base.stored_dtype
        assert tensor.baseline.bytes == base.stored_bytes
        assert tensor.role_hint == fields.get("role_hint")
    retyped = TensorRef("t", (2, 3), "f32", load=lambda: values, stored_as="q4_0")
    plain = TensorRef("t", (2, 3), "f32", load=lambda: values)
    (tensor,) = measure_together([("t", plain, retyped)], 0.0)
    assert tensor is not None and tensor.status == "dtype_changed"


@pytest.mark.parametrize("candidate_order", [["a", "b", "c"], ["c", "a", "b"]])
def test_pairs_match_by_name_whether_stored_alike_or_not(tmp_path, candidate_order) -> None:
    """Names stored alike zip as stored; stored otherwise, each is looked up: either way each
    pair's sides are its own name's (each tensor a distinct constant tells them apart)."""
    values = {name: np.full(4, float(i + 1), np.float32) for i, name in enumerate("abc")}
    np.savez(tmp_path / "base.npz", **values)
    np.savez(tmp_path / "cand.npz", **{name: values[name] * 2 for name in candidate_order})
    baseline, candidate = open_model(tmp_path / "base.npz"), open_model(tmp_path / "cand.npz")
    assert list(candidate.tensors) == candidate_order
    compared = compare_models(baseline, candidate, CompareOptions())
    means = {t.name: (t.baseline.mean, t.candidate.mean) for t in compared.tensors}
    assert means == {"a": (1.0, 2.0), "b": (2.0, 4.0), "c": (3.0, 6.0)}
