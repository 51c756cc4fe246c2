"""Objects the kernel builds and reads through their attribute storage (diffai/_instances.c):
what ``object.__setattr__`` and ``getattr`` would give, whatever the class's keys hold or the
reference's class defines."""

from __future__ import annotations

from typing import Any

import numpy as np

from diffai import _kernel
from diffai.comparison import measure_together
from diffai.model import TensorRef


class _Plain:
    """A class whose instances set their attributes in another order than ``frozen`` is given."""

    def __init__(self) -> None:
        self.first, self.second = 1, 2


def test_a_class_whose_keys_lead_otherwise_is_built_in_the_order_given() -> None:
    _Plain()
    built = _kernel.frozen(_Plain, ("second", "first"), ("b", "a"))
    assert list(vars(built).items()) == [("second", "b"), ("first", "a")]


class _Guarded:
    """A class whose field is a property: ``object.__setattr__`` calls its setter."""

    def __init__(self) -> None:
        self.plain, self.guarded = 1, 2

    @property
    def guarded(self) -> int:
        return self.__dict__["guarded"]  # type: ignore[no-any-return]

    @guarded.setter
    def guarded(self, value: int) -> None:
        self.__dict__["guarded"] = value * 10


def test_a_field_the_class_guards_is_set_through_its_setter() -> None:
    _Guarded()
    built = _kernel.frozen(_Guarded, ("plain", "guarded"), (3, 4))
    assert built.guarded == 40 and vars(built) == {"plain": 3, "guarded": 40}


class _Hinted(TensorRef):
    """A reference whose class makes a field a property: ``getattr`` takes the property."""

    @property  # type: ignore[override]
    def role_hint(self) -> str:  # type: ignore[override]
        return "buffer"


def _in_dict(kind: type, attributes: dict[str, Any]) -> TensorRef:
    """A reference whose fields are all in its own dict (a library caller's may be so)."""
    ref = object.__new__(kind)
    object.__setattr__(ref, "__dict__", attributes)
    return ref  # type: ignore[no-any-return]


def test_fields_read_from_a_dict_are_those_getattr_gives() -> None:
    values = np.arange(4, dtype=np.float32)
    base = _in_dict(TensorRef, {"name": "t", "shape": (4,), "dtype": "f32", "load": lambda: values,
                                "elements": 4, "nbytes": 16})  # fmt: skip
    stated = {"name": "t", "shape": (4,), "dtype": "f32", "load": lambda: values + 1,
              "stored_as": "q8_0", "stored_size": 3, "role_hint": "weight"}  # fmt: skip
    hinted = _in_dict(_Hinted, dict(stated))
    for cand in [_in_dict(TensorRef, stated), hinted]:
        (tensor,) = measure_together([("t", base, cand)], 0.0)
        assert tensor is not None
        assert (tensor.candidate.stored_dtype, tensor.candidate.bytes) == ("q8_0", 3)
        assert tensor.baseline.stored_dtype == "f32" and tensor.baseline.bytes == 16
        assert tensor.role_hint is None  # the sides' hints differ: None
    (tensor,) = measure_together([("t", hinted, _in_dict(_Hinted, dict(stated)))], 0.0)
    assert tensor is not None and tensor.role_hint == "buffer"


class _Widened(TensorRef):
    """A reference whose class makes ``dtype`` a property: the batch must read what getattr
    reads (its dict says f32; the values are f64)."""

    @property  # type: ignore[override]
    def dtype(self) -> str:  # type: ignore[override]
        return "f64"


def test_a_dtype_the_class_computes_is_the_one_measured() -> None:
    values = np.array([1.0, 2.0], np.float64)
    base = _in_dict(TensorRef, {"name": "t", "shape": (2,), "dtype": "f64", "load": lambda: values,
                                "elements": 2, "nbytes": 16})  # fmt: skip
    stated = {"name": "t", "shape": (2,), "dtype": "f32", "load": lambda: values * 2,
              "elements": 2, "nbytes": 16}  # fmt: skip
    cand = _in_dict(_Widened, stated)
    (tensor,) = measure_together([("t", base, cand)], 0.0)
    assert tensor is not None and tensor.status == "changed"
    assert (tensor.candidate.dtype, tensor.candidate.mean) == ("f64", 3.0)
