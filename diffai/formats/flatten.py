"""Nested checkpoints flattened into one dotted namespace of tensors and scalars.

``{"model_state_dict": {"fc.weight": T}, "epoch": 3}`` becomes the tensor
``model_state_dict.fc.weight`` and the scalar ``epoch``, whatever the format.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from diffai.model import Scalar

T = TypeVar("T")

#: The name of a tensor saved on its own, not inside a dict (``torch.save(t)``, one ``.npy``).
ROOT_NAME = "tensor"

_SCALAR_TYPES = (type(None), bool, int, float, str)


#: A large checkpoint holds a few hundred thousand tensors and values; a few bytes of pickle
#: per entry could list tens of millions, each to be compared and reported.
MAX_ENTRIES = 1_000_000


class TooManyEntries(ValueError):
    def __init__(self) -> None:
        super().__init__(f"the checkpoint holds over {MAX_ENTRIES:,} tensors, values and lists")


def flatten_checkpoint(
    obj: Any, is_tensor: Callable[[Any], bool]
) -> tuple[dict[str, Any], dict[str, Scalar]]:
    """Split a nested checkpoint into dotted-name tensors and scalars, in encounter order.

    Lists of plain scalars (``betas``, ``params``) stay one scalar value; lists
    holding tensors or dicts are indexed (``param_groups.0.lr``). ``TooManyEntries``
    past ``MAX_ENTRIES``.
    """
    walk = _Walk(is_tensor)
    walk.visit(obj, "")
    return walk.tensors, walk.scalars


class _Walk:
    def __init__(self, is_tensor: Callable[[Any], bool]) -> None:
        self.is_tensor = is_tensor
        self.tensors: dict[str, Any] = {}
        self.scalars: dict[str, Scalar] = {}
        self.entries = 0

    def visit(self, obj: Any, prefix: str) -> None:
        self.entries += 1
        if self.entries > MAX_ENTRIES:
            raise TooManyEntries
        if self.is_tensor(obj):
            self.tensors[prefix or ROOT_NAME] = obj
        elif isinstance(obj, Mapping):
            for key, value in obj.items():
                self.visit(value, _join(prefix, key))
        elif isinstance(obj, (list, tuple)) and not all(isinstance(v, _SCALAR_TYPES) for v in obj):
            for index, value in enumerate(obj):
                self.visit(value, _join(prefix, index))
        else:
            self.scalars[prefix or ROOT_NAME] = _scalar(obj)


def _join(prefix: str, key: object) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _scalar(obj: Any) -> Scalar:
    if isinstance(obj, _SCALAR_TYPES):
        return obj
    if isinstance(obj, (list, tuple)):
        return list(obj)
    return repr(obj)
