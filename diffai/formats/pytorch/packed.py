"""The packed parameters of quantized layers, named as the tensors they hold.

A dynamic or static quantized ``Linear`` saves ``<module>._packed_params._packed_params``
as the tuple ``(weight, bias)`` (torch's ``LinearPackedParams._save_to_state_dict``):
its entries are named ``<module>.weight`` and ``<module>.bias``, as the float
layer's are and as ``qlinear.weight()`` calls them, so a quantized model pairs with
its float original. A dynamic ``LSTM`` saves each layer's weights as a
``torch.ScriptObject``: ``NEWOBJ`` then one ``BUILD`` whose state names a C++ class
(``CellParamsBase``, ``LinearPackedParamsBase``) and holds what that class's
``__getstate__`` returns. Only those two classes are read, as data; their entries
are named ``weight_ih``, ``bias_ih``, ``weight_hh``, ``bias_hh``. No name in the
file is looked up, nothing is called.
"""

from __future__ import annotations

import re
from typing import Any, NoReturn

from diffai.errors import MalformedModel
from diffai.formats.pytorch.opcodes import PickleRefused
from diffai.formats.pytorch.quantized import PickledQTensor
from diffai.formats.pytorch.unpickler import PickledTensor
from diffai.model import Scalar

LINEAR = "__torch__.torch.classes.quantized.LinearPackedParamsBase"
CELL = "__torch__.torch.classes.rnn.CellParamsBase"
#: The kinds of LSTM cell ``CellParamsBase`` packs that hold only linear packed parameters.
_DYNAMIC_CELLS = {"quantized_dynamic": 1, "quantized_fp16": 0}  # -> longs allowed (reduce_range)


class _Sealed(type):
    """A class NEWOBJ can make instances of, and that BUILD (or anything) cannot change."""

    def __setattr__(cls, name: str, value: Any) -> NoReturn:
        raise ValueError(
            f"BUILD cannot give state to {cls.__name__}; diffai's stand-ins are immutable"
        )

    def __delattr__(cls, name: str) -> NoReturn:
        raise ValueError(f"{cls.__name__} is immutable")


class ScriptObject(metaclass=_Sealed):
    """``torch.ScriptObject``: made empty by NEWOBJ, given its state once by BUILD."""

    __slots__ = ("entries", "kind")

    def __new__(cls, *args: Any) -> ScriptObject:
        if args:
            raise ValueError("torch.ScriptObject takes no arguments")
        return super().__new__(cls)

    def __init__(self, *_args: Any) -> None:
        """Only REDUCE calls a class (NEWOBJ does not), and torch cannot construct one so."""
        raise ValueError("torch.ScriptObject cannot be called, which torch refuses")

    def __setstate__(self, state: Any) -> None:
        if hasattr(self, "kind"):
            raise ValueError("BUILD gave a torch.ScriptObject its state twice")
        if not (isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], str)):
            raise ValueError(f"unexpected torch.ScriptObject state {state!r:.80}")
        reader = _CLASSES.get(state[1])
        if reader is None:
            raise PickleRefused(
                f"it holds a TorchScript object of class {state[1]!r:.120}, which diffai does "
                "not read; nothing was executed"
            )
        self.entries = reader(state[0])
        self.kind = state[1]

    def __repr__(self) -> str:
        return "a torch.ScriptObject"


def _linear(state: Any) -> dict[str, Any]:
    """``LinearPackedParamsBase.__getstate__``: ``(weight, bias or None)``; the weight is
    quantized (dynamic qint8) or float32 (dynamic float16 keeps it unpacked)."""
    if not (
        isinstance(state, tuple)
        and len(state) == 2
        and isinstance(state[0], (PickledQTensor, PickledTensor))
        and (state[1] is None or isinstance(state[1], PickledTensor))
    ):
        raise ValueError(f"linear packed parameters {state!r:.80} are not (weight, bias)")
    return {"weight": state[0], "bias": state[1]}


def _cell(state: Any) -> dict[str, Any]:
    """``CellParamsBase.__getstate__``: ``(kind, tensors, doubles, longs, packed)``. The dynamic
    kinds hold two packed linears; ``tensors`` repeats their biases (``quantized_dynamic``)."""
    if not (isinstance(state, tuple) and len(state) == 5):
        raise ValueError(f"LSTM cell parameters {state!r:.80} are not torch's five")
    kind, tensors, doubles, longs, packed = state
    if kind not in _DYNAMIC_CELLS:
        raise PickleRefused(
            f"it holds LSTM cell parameters of kind {kind!r:.40}, which diffai does not read; "
            "nothing was executed"
        )
    if not (isinstance(packed, list) and len(packed) == 2 and all(map(_is_linear, packed))):
        raise ValueError("LSTM cell parameters need two linear packed parameters")
    ih, hh = (linear.entries for linear in packed)
    biases = [ih["bias"], hh["bias"]] if _DYNAMIC_CELLS[kind] else []
    if not (isinstance(tensors, list) and len(tensors) == len(biases)):
        raise ValueError(f"LSTM cell parameters of kind {kind} hold {tensors!r:.60}")
    if not all(tensor is bias for tensor, bias in zip(tensors, biases, strict=True)):
        raise ValueError(
            "an LSTM cell's biases are not its packed weights' own; refused as ambiguous"
        )
    if not (isinstance(doubles, list) and not doubles and _are_flags(longs, _DYNAMIC_CELLS[kind])):
        raise ValueError(f"unexpected LSTM cell options {doubles!r:.40}, {longs!r:.40}")
    return {"weight_ih": ih["weight"], "bias_ih": ih["bias"], "weight_hh": hh["weight"],
            "bias_hh": hh["bias"]}  # fmt: skip


def _is_linear(value: Any) -> bool:
    return isinstance(value, ScriptObject) and getattr(value, "kind", None) == LINEAR


def _are_flags(values: Any, most: int) -> bool:
    return (
        isinstance(values, list)
        and len(values) <= most
        and all(type(value) is int and value in (0, 1) for value in values)
    )


_CLASSES = {LINEAR: _linear, CELL: _cell}


def is_script_object(value: Any) -> bool:
    return isinstance(value, ScriptObject)


# --- names ---------------------------------------------------------------------------------

#: ``<module>._packed_params._packed_params.<i>``, as a checkpoint flattens the tuple.
_PACKED_TUPLE = re.compile(r"(?P<module>(?:.*\.)?)_packed_params\._packed_params\.0")
_TUPLE = "_packed_params._packed_params"


def expand_packed(
    path: Any, found: dict[str, Any], scalars: dict[str, Scalar]
) -> tuple[dict[str, Any], dict[str, Scalar]]:
    """Script objects as their entries (``<name>.weight_ih`` ...), and each packed Linear's
    ``(weight, bias)`` under the names the float layer gives them."""
    tensors: dict[str, Any] = {}
    scalars = dict(scalars)
    for name, value in found.items():
        if not isinstance(value, ScriptObject):
            tensors[name] = value
            continue
        if not hasattr(value, "entries"):
            raise MalformedModel(path, f"{name!r} is a torch.ScriptObject without state")
        for key, entry in value.entries.items():
            (tensors if entry is not None else scalars)[f"{name}.{key}"] = entry
    return named_packed_tuples(path, tensors, scalars)


def named_packed_tuples(
    path: Any, tensors: dict[str, Any], scalars: dict[str, Scalar]
) -> tuple[dict[str, Any], dict[str, Scalar]]:
    """``fc._packed_params._packed_params.0`` and ``.1`` as ``fc.weight`` and ``fc.bias``."""
    renamed: dict[str, str] = {}
    for name in tensors:
        matched = _PACKED_TUPLE.fullmatch(name)
        if matched and _is_pair(matched["module"], tensors, scalars):
            module = matched["module"]
            renamed[name] = f"{module}weight"
            renamed[f"{module}{_TUPLE}.1"] = f"{module}bias"
    if not renamed:
        return tensors, scalars
    _check_unique(path, renamed, tensors, scalars)
    return _renamed(tensors, renamed), _renamed(scalars, renamed)


def _is_pair(module: str, tensors: dict[str, Any], scalars: dict[str, Scalar]) -> bool:
    """The tuple held exactly a weight and a bias (a tensor, or None)."""
    bias, third = f"{module}{_TUPLE}.1", f"{module}{_TUPLE}.2"
    has_bias = bias in tensors or (bias in scalars and scalars[bias] is None)
    return has_bias and third not in tensors and third not in scalars


def _check_unique(
    path: Any, renamed: dict[str, str], tensors: dict[str, Any], scalars: dict[str, Scalar]
) -> None:
    for source, target in renamed.items():
        if target in tensors or target in scalars:
            raise MalformedModel(
                path,
                f"{target!r} is named twice: on its own and as the {target.rpartition('.')[2]} "
                f"in {source.rpartition('.')[0]!r}; refused as ambiguous",
            )


def _renamed(entries: dict[str, Any], renamed: dict[str, str]) -> dict[str, Any]:
    return {renamed.get(name, name): value for name, value in entries.items()}


#: ``torch.ScriptObject`` is sealed and makes a fresh instance per NEWOBJ: nothing is shared.
PACKED_GLOBALS: dict[tuple[str, str], Any] = {("torch", "ScriptObject"): ScriptObject}
