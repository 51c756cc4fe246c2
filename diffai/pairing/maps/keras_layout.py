"""``keras-layout``: a Keras 3 file's positional variable names as a legacy Keras file's names.

Keras 3 (``.keras``, ``*.weights.h5``) keeps no variable names, only each object's
variables in order, which diffai names ``dense.0``, ``dense.1`` (``formats.keras.layout``);
the legacy HDF5 layout (``model.save("x.h5")``, Keras 2 and Keras 3 alike) names them
``dense.kernel``, ``dense.bias``, in the same order (a layer's trainable then its
non-trainable weights, in both). So a model saved both ways pairs once each Keras 3
object ``P`` whose variables ``P.0`` ... ``P.<n-1>`` meet exactly ``n`` legacy weights
named ``P.<weight>``, of the same shapes in the same order: those are renamed to the
legacy names. Anything else stays as it is (added and removed, never guessed): Keras 3
paths are the objects' attribute names (``dense_1``) where legacy files use the layers'
own names (``head``), so a layer named by hand does not meet its weights by name, and a
nested model's variables sit under its sub-objects in one layout and its layer in the
other. The optimizer's variables are not mapped.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Collection
from typing import TYPE_CHECKING

from diffai.model import Model

if TYPE_CHECKING:
    from diffai.pairing.maps.rules import NameMap, Side

NAME = "keras-layout"
POSITIONAL = re.compile(r"(.+)\.(0|[1-9][0-9]*)")


def name_map(side: Side, model: Model, other: Model) -> NameMap:
    from diffai.pairing.maps.rules import NameMap, Rule  # here: as gguf_llama's

    rules = tuple(
        Rule(re.compile(re.escape(positional)), legacy.replace("\\", "\\\\"), None, legacy)
        for positional, legacy in _pairs(model, other).items()
    )
    return NameMap(NAME, "builtin", side, rules)


def applies(model: Model, other: Model) -> str | None:
    """Why this map fits ``model`` (Keras 3 layout) against ``other`` (legacy layout)."""
    layouts = model.metadata.get("layout"), other.metadata.get("layout")
    if (model.format, other.format) != ("keras", "keras") or layouts != ("keras3", "legacy"):
        return None
    if not _pairs(model, other):
        return None
    return "a Keras 3 file (variables by position) against a legacy Keras HDF5 file (by name)"


def _pairs(model: Model, other: Model) -> dict[str, str]:
    """Keras 3 name -> legacy name, for each object whose variables all meet theirs."""
    pairs: dict[str, str] = {}
    objects = _objects(model)
    under = _names_under(other, objects.keys())
    for path, variables in objects.items():
        legacy = under.get(path, [])
        shapes = [other.tensors[name].shape for name in legacy]
        if shapes == [model.tensors[name].shape for name in variables]:
            pairs.update(zip(variables, legacy, strict=True))
    return pairs


def _names_under(model: Model, paths: Collection[str]) -> dict[str, list[str]]:
    """Each of ``paths`` and the names beneath it (``path.*``), in file order: one pass over
    the names, where asking every object for its names scanned all of them each time."""
    under: dict[str, list[str]] = defaultdict(list)
    for name in model.tensors:
        dot = name.find(".")
        while dot != -1:
            if name[:dot] in paths:
                under[name[:dot]].append(name)
            dot = name.find(".", dot + 1)
    return under


def _objects(model: Model) -> dict[str, list[str]]:
    """Each object path and its variables' names, by index; not the optimizer's."""
    found: dict[str, dict[int, str]] = defaultdict(dict)
    for name in model.tensors:
        match = POSITIONAL.fullmatch(name)
        if match and match[1] != "optimizer":
            found[match[1]][int(match[2])] = name
    return {
        path: [variables[index] for index in range(len(variables))]
        for path, variables in found.items()
        if set(variables) == set(range(len(variables)))
    }
