"""Stand-ins for the sparse tensors ``torch.save`` pickles: a layout and the tensors it names.

Torch 2.13 pickles every sparse layout the same way,
``_rebuild_sparse_tensor(_get_layout('torch.sparse_csr'), (…))``, with the
layout's parts as ordinary tensors: COO ``(indices, values, size,
is_coalesced)``, the compressed layouts ``(compressed_indices, plain_indices,
values, size)``. These stand-ins only record what the pickle says; the parts
are checked and the dense values they stand for are built in ``densify.py``,
once the parts are known to be tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from diffai.formats.pytorch.standins import refuse_state

#: Torch's spelling of each sparse layout -> diffai's short name for it.
SPARSE_LAYOUTS = {
    "torch.sparse_coo": "coo",
    "torch.sparse_csr": "csr",
    "torch.sparse_csc": "csc",
    "torch.sparse_bsr": "bsr",
    "torch.sparse_bsc": "bsc",
}
#: How many parts each layout's data tuple holds; COO's fourth (``is_coalesced``) is optional.
_PARTS = {"coo": (3, 4), "csr": (4,), "csc": (4,), "bsr": (4,), "bsc": (4,)}


@dataclass(frozen=True, slots=True)
class _Layout:
    """Stand-in for ``torch.sparse_coo`` and kin, as ``_get_layout`` returns them."""

    name: str
    __setstate__ = refuse_state

    def __repr__(self) -> str:
        return f"the layout {self.name}"


_LAYOUT_STAND_INS = {torch_name: _Layout(name) for torch_name, name in SPARSE_LAYOUTS.items()}


@dataclass(frozen=True, slots=True, eq=False)
class PickledSparse:
    """A sparse tensor as the pickle describes it: its layout, its parts (tensors, unchecked
    here), its dense size and, for COO, whether the file says its indices are coalesced."""

    layout: str
    parts: tuple[Any, ...]
    size: Any
    coalesced: Any = None
    __setstate__ = refuse_state

    def __repr__(self) -> str:
        return f"a sparse {self.layout} tensor"


def _get_layout(name: Any) -> _Layout:
    """``torch.serialization._get_layout``: the sparse layouts only (a strided tensor never
    pickles its layout)."""
    layout = _LAYOUT_STAND_INS.get(name) if isinstance(name, str) else None
    if layout is None:
        raise ValueError(f"layout {name!r:.40} is not a sparse layout torch saves")
    return layout


def _rebuild_sparse_tensor(layout: Any, data: Any) -> PickledSparse:
    """``torch._utils._rebuild_sparse_tensor(layout, data)``."""
    if not isinstance(layout, _Layout):
        raise ValueError(f"_rebuild_sparse_tensor needs a layout, not {layout!r:.40}")
    if not (isinstance(data, tuple) and len(data) in _PARTS[layout.name]):
        raise ValueError(f"a sparse {layout.name} tensor's data is not the tuple torch saves")
    if layout.name == "coo":
        return PickledSparse("coo", data[:2], data[2], data[3] if len(data) == 4 else None)
    return PickledSparse(layout.name, data[:3], data[3])


SPARSE_FUNCTIONS: dict[tuple[str, str], Callable[..., Any]] = {
    ("torch._utils", "_rebuild_sparse_tensor"): _rebuild_sparse_tensor,
    ("torch.serialization", "_get_layout"): _get_layout,
}
