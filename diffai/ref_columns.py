"""A model's tensor references as columns, read once a model (``Model.columns``).

Why: the memory and architecture analyses each read every ref's encoding, hint and shape,
and a pass over 100,000 refs costs ~25 ms whatever it reads (cache misses and ``getattr``),
so the fields are read together in one pass (``diffai/_attributes.c``) the first time one
asks, and the model keeps them: nothing is shared between models, nor kept past one. The
columns are the refs' own values: nothing is recomputed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from diffai import _attributes

if TYPE_CHECKING:
    from diffai.model import TensorRef
    from diffai.roles import Role

_FIELDS = ("role_hint", "shape", "stored_as", "stored_size", "dtype", "nbytes")


class RefColumns(NamedTuple):
    """A model's tensors as columns, in model order: their names, role hints and shapes, and
    the fields their stored encoding comes from (``TensorRef.stored_dtype``/``stored_bytes``)."""

    names: list[str]
    hints: list[Role | None]
    shapes: list[tuple[int, ...]]
    stored_as: list[str | None]
    stored_size: list[int | None]
    dtypes: list[str]
    nbytes: list[int]

    @classmethod
    def of(cls, tensors: dict[str, TensorRef]) -> RefColumns:
        return cls(list(tensors), *_attributes.objects(tensors.values(), _FIELDS))
