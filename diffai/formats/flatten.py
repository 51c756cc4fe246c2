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


def flatten_checkpoint(
    obj: Any, is_tensor: Callable[[Any], bool]
) -> tuple[dict[str, Any], dict[str, Scalar]]:
    """Split a nested checkpoint into dotted-name tensors and scalars, in encounter order.

    Lists of plain scalars (``betas``, ``params``) stay one scalar value; lists
    holding tensors or dicts are indexed (``param_groups.0.lr``).
    """
    tensors: dict[str, Any] = {}
    scalars: dict[str, Scalar] = {}
    _walk(obj, "", is_tensor, tensors, scalars)
    return tensors, scalars


def _walk(
    obj: Any,
    prefix: str,
    is_tensor: Callable[[Any], bool],
    tensors: dict[str, Any],
    scalars: dict[str, Scalar],
) -> None:
    if is_tensor(obj):
        tensors[prefix or ROOT_NAME] = obj
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            _walk(value, _join(prefix, key), is_tensor, tensors, scalars)
    elif isinstance(obj, (list, tuple)) and not all(isinstance(v, _SCALAR_TYPES) for v in obj):
        for index, value in enumerate(obj):
            _walk(value, _join(prefix, index), is_tensor, tensors, scalars)
    else:
        scalars[prefix or ROOT_NAME] = _scalar(obj)


def _join(prefix: str, key: object) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _scalar(obj: Any) -> Scalar:
    if isinstance(obj, _SCALAR_TYPES):
        return obj
    if isinstance(obj, (list, tuple)):
        return list(obj)
    return repr(obj)
