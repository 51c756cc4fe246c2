"""Models made of an adapter: its updates alone, or a base model with the adapter applied.

Both are lazy like every reader's model: a ΔW is streamed in row blocks from its
factors (``LoraModule.blocks``), never held whole, and W + ΔW is streamed chunk by
chunk beside the base weight's chunks.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from diffai.adapters.factors import LoraModule
from diffai.adapters.folder import Adapter, AdapterModel, adapter_of
from diffai.dtypes import numpy_dtype
from diffai.errors import UnreadableModel
from diffai.model import Model, TensorRef


def delta_ref(module: LoraModule) -> TensorRef:
    """ΔW as a float64 tensor named after the weight it updates; stored: the two factors."""
    return TensorRef(
        name=module.weight_name,
        shape=module.shape,
        dtype="f64",
        stream=module.blocks,
        stored_size=module.a.stored_bytes + module.b.stored_bytes,
    )


def delta_model(model: AdapterModel) -> Model:
    """The adapter as the updates it makes: ΔW per module, and the modules it saves whole."""
    adapter = adapter_of(model)
    tensors = {name: delta_ref(module) for name, module in adapter.modules.items()}
    tensors.update(adapter.saved)
    return Model(model.path, f"{model.format} (ΔW)", model.size_bytes, tensors, {}, model.metadata)


def applied_model(base: Model, model: AdapterModel) -> Model:
    """The base model as merging the adapter makes it: W + ΔW in W's dtype, saved modules
    in place of theirs (what PEFT's ``merge_and_unload`` computes)."""
    adapter = adapter_of(model)
    tensors = dict(base.tensors)
    for name, module in adapter.modules.items():
        weight = base_weight(base, adapter, name, module.shape)
        tensors[name] = _applied_ref(weight, delta_ref(module))
    for name, saved in adapter.saved.items():
        base_weight(base, adapter, name, saved.shape)
        tensors[name] = saved
    metadata = {**base.metadata, "adapter": model.path}
    return Model(model.path, f"{base.format} + {model.format}", model.size_bytes + base.size_bytes,
                 tensors, base.scalars, metadata)  # fmt: skip


def base_weight(base: Model, adapter: Adapter, name: str, shape: tuple[int, ...]) -> TensorRef:
    """The base tensor an adapter tensor updates or replaces, of the shape it must have."""
    weight = base.tensors.get(name)
    if weight is None:
        raise UnreadableModel(
            adapter.path, f"the base model {base.path} has no tensor {name!r} for the adapter"
        )
    if weight.shape != shape:
        raise UnreadableModel(
            adapter.path,
            f"its update of {name!r} has shape {list(shape)} but the base model's tensor has "
            f"{list(weight.shape)}: an adapter for another model",
        )
    return weight


def _applied_ref(weight: TensorRef, delta: TensorRef) -> TensorRef:
    target = numpy_dtype(weight.dtype)

    def stream() -> Iterator[np.ndarray]:
        for w, d in aligned_chunks(weight, delta):
            yield (w + d).astype(target)

    return TensorRef(weight.name, weight.shape, weight.dtype, stream=stream,
                     role_hint=weight.role_hint)  # fmt: skip


def aligned_chunks(*refs: TensorRef) -> Iterator[tuple[np.ndarray, ...]]:
    """Same-shaped tensors' chunks side by side, in float64."""
    for chunks in zip(*(ref.chunks() for ref in refs), strict=True):
        yield tuple(np.asarray(chunk, dtype=np.float64) for chunk in chunks)
