"""Which datasets of a Keras HDF5 file are its weights, and the names diffai gives them.

Two layouts, read the way Keras's own loaders read them, so the gate sees what
``keras.saving.load_model`` / ``load_weights`` load and nothing else:

- **Keras 3** (``model.weights.h5`` inside a ``.keras`` zip, or ``*.weights.h5``):
  each object's variables are the datasets ``0``, ``1`` ... of a ``vars`` group at
  the object's path, e.g. ``layers/dense/vars/0``, ``layers/functional/layers/
  dense_1/vars/1``, ``optimizer/vars/3``. The file keeps no variable names, only
  their order. Named by the path without its ``layers`` containers and ``vars``:
  ``dense.0``, ``functional.dense_1.1``, ``optimizer.3``.
- **legacy** (Keras 2 / tf.keras ``model.save("x.h5")``, with ``model_weights`` and
  ``optimizer_weights`` groups, or ``save_weights("x.h5")``, the layers at the
  root): the ``layer_names`` attribute lists the layers, each layer group's
  ``weight_names`` its datasets (``conv2d_1/conv2d_1_1/kernel:0``). Named
  ``<layer>.<weight>``, the weight being its path after the layer's own name
  (Keras 3's ``block/inner/kernel`` in layer ``block``: ``block.inner.kernel``),
  else its last segment without TensorFlow's ``:0`` (``conv2d_1.kernel``), else,
  where those repeat within a layer (a nested model of Keras 2), its whole path
  with dots; the
  optimizer's as ``optimizer.<weight path>`` (``optimizer.adam.iteration``).

Names are dotted like every other format's, so layers, roles and policy globs
(``dense.*``) work on them. A file that names two weights alike is refused as
ambiguous rather than one of them dropped.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType
from typing import Any

from diffai.errors import MalformedModel, UnreadableModel
from diffai.formats import hdf5
from diffai.formats.limits import MAX_TENSORS, check_tensor_count

#: Segments of a Keras 3 path that are containers, not objects (2.13 wrote the second).
CONTAINERS = frozenset({"layers", "_layer_checkpoint_dependencies"})
VARS = "vars"
#: Keras models nest a few levels; a deeper file is built to exhaust the walk.
MAX_DEPTH = 100
MAX_GROUPS = MAX_TENSORS
#: TensorFlow's output index on a variable name (``kernel:0``).
OUTPUT_INDEX = re.compile(r":\d+$")
#: Where Keras's legacy full-model files keep the layers, and what the root says otherwise.
LEGACY_MODEL = "model_weights"
LEGACY_OPTIMIZER = "optimizer_weights"
#: Keras 3 writes a model's own weights (outside any layer) here in a legacy file.
TOP_LEVEL = "top_level_model_weights"
#: A names attribute lists at most this many; Keras splits long ones as name0, name1 ...
MAX_NAMES = MAX_TENSORS


def weights(path: Path, h5py: ModuleType, handle: Any) -> tuple[str, dict[str, Any]]:
    """(layout, name -> dataset) in the order Keras loads them."""
    if LEGACY_MODEL in handle or "layer_names" in handle.attrs:
        return "legacy", _Legacy(path, h5py).weights(handle)
    if any(key in handle for key in (*CONTAINERS, VARS, "optimizer")):
        return "keras3", _Keras3(path, h5py).weights(handle)
    raise UnreadableModel(
        path,
        "this HDF5 file is not a Keras model: it has no layer_names attribute and no "
        "model_weights, layers or vars group",
    )


class _Named:
    """Weights collected under unique names; a second weight of one name is refused."""

    def __init__(self, path: Path, h5py: ModuleType) -> None:
        self.path, self.h5py = path, h5py
        self.found: dict[str, Any] = {}

    def add(self, name: str, where: str, dataset: Any) -> None:
        if not isinstance(dataset, self.h5py.Dataset):
            raise MalformedModel(
                self.path, f"{where[:200]!r} is an HDF5 {type(dataset).__name__}, not a dataset"
            )
        if name in self.found:
            raise MalformedModel(
                self.path, f"two weights are named {name!r} (one at {where[:200]!r}); "
                "refused as ambiguous",
            )  # fmt: skip
        check_tensor_count(self.path, "it holds over", len(self.found))
        self.found[name] = dataset

    def children(self, where: str, group: Any) -> list[tuple[str, Any]]:
        return hdf5.hard_children(self.path, self.h5py, group, lambda key: repr(f"{where}/{key}"))


class _Keras3(_Named):
    """``vars`` groups wherever they are, each group reached once (no hard-link loops)."""

    def weights(self, handle: Any) -> dict[str, Any]:
        self._seen: set[Any] = set()
        self._walk("", [], handle)
        return self.found

    def _walk(self, where: str, names: list[str], group: Any) -> None:
        self._enter(where, group, len(names))
        for key, child in self.children(where, group):
            inside = f"{where}/{key}"
            if key == VARS and isinstance(child, self.h5py.Group):
                self._variables(inside, names, child)
            elif isinstance(child, self.h5py.Group):
                self._walk(inside, names if key in CONTAINERS else [*names, key], child)

    def _enter(self, where: str, group: Any, depth: int) -> None:
        problem = ""
        if group.id in self._seen:
            problem = "is reached twice (an HDF5 hard link), which Keras never writes"
        elif depth > MAX_DEPTH:
            problem = f"nests deeper than {MAX_DEPTH} levels"
        elif len(self._seen) >= MAX_GROUPS:
            problem = f"is one group too many: the file holds over {MAX_GROUPS:,}"
        if problem:
            raise MalformedModel(self.path, f"HDF5 group {where[:200] or '/'!r} {problem}")
        self._seen.add(group.id)

    def _variables(self, where: str, names: list[str], group: Any) -> None:
        """Keras reads ``vars/0`` ... ``vars/<n-1>``: any other key makes its loader fail."""
        members = dict(self.children(where, group))
        if set(members) != {str(index) for index in range(len(members))}:
            odd = sorted(set(members) - {str(index) for index in range(len(members))})
            raise MalformedModel(
                self.path, f"{where[:200]!r} holds {odd[0][:100]!r}, not a variable index "
                f"0 to {len(members) - 1}",
            )  # fmt: skip
        for index in range(len(members)):
            self.add(".".join([*names, str(index)]), f"{where}/{index}", members[str(index)])


class _Legacy(_Named):
    """Keras 2's ``layer_names`` and ``weight_names`` attributes, as its loader follows them."""

    def weights(self, handle: Any) -> dict[str, Any]:
        self.children("", handle)  # model_weights and optimizer_weights: no links
        layers = handle.get(LEGACY_MODEL, handle)
        self._check_group(LEGACY_MODEL, layers)
        layer_names = self._names(layers, "layer_names")
        if TOP_LEVEL in layers and TOP_LEVEL not in layer_names:
            layer_names.append(TOP_LEVEL)
        for layer in layer_names:
            self._layer(layers, layer)
        if LEGACY_OPTIMIZER in handle:
            self._optimizer(handle[LEGACY_OPTIMIZER])
        return self.found

    def _layer(self, layers: Any, layer: str) -> None:
        group = self._member(layers, layer, layer)
        self._check_group(layer, group)
        weight_names = self._names(group, "weight_names")
        names = [_within(layer, weight) for weight in weight_names]
        if len(set(names)) < len(names):  # a nested model of Keras 2: last segments repeat
            names = [_dotted(weight) for weight in weight_names]
        for weight, name in zip(weight_names, names, strict=True):
            self.add(f"{layer}.{name}", f"{layer}/{weight}", self._member(group, weight, layer))

    def _optimizer(self, group: Any) -> None:
        self._check_group(LEGACY_OPTIMIZER, group)
        for weight in self._names(group, "weight_names"):
            where = f"{LEGACY_OPTIMIZER}/{weight}"
            self.add(f"optimizer.{_dotted(weight)}", where, self._member(group, weight, where))

    def _check_group(self, where: str, group: Any) -> None:
        if not isinstance(group, self.h5py.Group):
            raise MalformedModel(self.path, f"{where[:200]!r} is not an HDF5 group")

    def _member(self, group: Any, key: str, where: str) -> Any:
        """``group[key]``, a path of hard links only, each segment checked as Keras 3 does."""
        item = group
        for segment in key.split("/"):
            if not isinstance(item, self.h5py.Group) or segment not in item:
                raise MalformedModel(
                    self.path, f"weight {key[:200]!r} of {where[:200]!r} is missing"
                )
            item = hdf5.hard_member(
                self.path, self.h5py, item, segment, lambda key: repr(f"{where}/{key}")
            )
        return item

    def _names(self, group: Any, attribute: str) -> list[str]:
        """Keras's ``load_attributes_from_hdf5_group``: ``name``, or ``name0``, ``name1`` ..."""
        if attribute in group.attrs:
            return self._decoded(group, attribute)
        names: list[str] = []
        chunk = 0
        while f"{attribute}{chunk}" in group.attrs:
            names.extend(self._decoded(group, f"{attribute}{chunk}"))
            chunk += 1
        return names

    def _decoded(self, group: Any, attribute: str) -> list[str]:
        values = group.attrs[attribute]
        items = list(values.ravel()) if hasattr(values, "ravel") else [values]
        if len(items) > MAX_NAMES:
            raise MalformedModel(
                self.path, f"attribute {attribute!r} lists over {MAX_NAMES:,} names"
            )
        if not all(isinstance(item, (bytes, str)) for item in items):
            raise MalformedModel(self.path, f"attribute {attribute!r} holds something but names")
        return [
            item.decode("utf-8", "replace") if isinstance(item, bytes) else item for item in items
        ]


def _within(layer: str, weight: str) -> str:
    """The weight's path after its layer's own name (Keras 3's ``block/inner/kernel`` in layer
    ``block``), else its last segment (Keras 2's ``conv2d_1_1/kernel:0`` in ``conv2d_1``)."""
    segments = OUTPUT_INDEX.sub("", weight).split("/")
    after = len(segments) - segments[::-1].index(layer) if layer in segments[:-1] else -1
    return ".".join(segments[after:])


def _dotted(weight: str) -> str:
    return OUTPUT_INDEX.sub("", weight).replace("/", ".")
