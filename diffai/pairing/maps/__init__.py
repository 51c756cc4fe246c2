"""Name maps: one side's tensor names rewritten (and values transformed) before pairing.

A map is a ``--map FILE`` (``load``: YAML rules, regex -> replacement, plus a transform)
or a built-in one, one module each, registered in ``BUILTINS``: given by name
(``--map gguf-llama``) or chosen automatically when no ``--map`` is given and the
inputs make it unambiguous (the map fits exactly one side). Maps see the names as the
files store them; prefix normalisation (``diffai.pairing.prefixes``) comes after. The
report's ``mapping.maps`` states each map applied, why, and every tensor it renamed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

from diffai.errors import MapError
from diffai.model import Model
from diffai.pairing.maps import gguf_llama, keras_layout

if TYPE_CHECKING:
    from diffai.pairing.maps.rules import AppliedMap, NameMap, Side

#: Built-in maps by name; each module has ``name_map(side, model, other)`` (the map for
#: ``model``, on that side, against ``other``) and ``applies(model, other)``.
BUILTINS: dict[str, ModuleType] = {module.NAME: module for module in (gguf_llama, keras_layout)}

Chosen = tuple[Literal["given", "automatic"], "NameMap", str]

__all__ = ["BUILTINS", "AppliedMap", "MappedName", "apply_maps", "check_maps"]


def __getattr__(name: str) -> Any:
    """``AppliedMap`` and ``MappedName``, from ``rules`` on first use (PEP 562): a run that
    applies no map imports neither the rules nor the transforms (8 ms of its start)."""
    if name not in ("AppliedMap", "MappedName"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from diffai.pairing.maps import rules

    return getattr(rules, name)


def check_maps(specs: Sequence[str]) -> None:
    """Every map file read and checked before any model is, so a typo fails in a second."""
    for spec in specs:
        if spec not in BUILTINS:
            _load(spec)


def apply_maps(
    baseline: Model, candidate: Model, specs: Sequence[str] = (), automatic: bool = True
) -> tuple[Model, Model, tuple[AppliedMap, ...]]:
    """Both models under their mapped names, and what each map did, in the order applied."""
    models = {"baseline": baseline, "candidate": candidate}
    applied = []
    for chosen, name_map, reason in _chosen(baseline, candidate, specs, automatic):
        from diffai.pairing.maps.rules import apply_map  # here: see __getattr__

        models[name_map.side], record = apply_map(name_map, models[name_map.side], chosen, reason)
        applied.append(record)
    return models["baseline"], models["candidate"], tuple(applied)


def _chosen(
    baseline: Model, candidate: Model, specs: Sequence[str], automatic: bool
) -> list[Chosen]:
    if specs:
        return [_given(spec, baseline, candidate) for spec in specs]
    if not automatic:
        return []
    return [
        ("automatic", *fits[0])
        for builtin in BUILTINS.values()
        if len(fits := list(_fitting(builtin, baseline, candidate))) == 1
    ]


def _given(spec: str, baseline: Model, candidate: Model) -> Chosen:
    if spec not in BUILTINS:
        return "given", _load(spec), ""
    fits = list(_fitting(BUILTINS[spec], baseline, candidate))
    if len(fits) != 1:
        raise MapError(
            f"--map {spec}: the built-in map fits {'both' if fits else 'neither'} of "
            f"the inputs ({_needs(spec)})"
        )
    return "given", *fits[0]


def _fitting(
    builtin: ModuleType, baseline: Model, candidate: Model
) -> Iterator[tuple[NameMap, str]]:
    """The built-in map for each side it fits, and why it fits."""
    models: dict[Side, Model] = {"baseline": baseline, "candidate": candidate}
    for side, other in zip(models, reversed(models), strict=True):
        reason = builtin.applies(models[side], models[other])
        if reason:
            yield builtin.name_map(side, models[side], models[other]), f"the {side} is {reason}"


def _load(path: str) -> NameMap:
    from diffai.pairing.maps.load import load_map  # here: YAML and jsonschema cost 60 ms

    return load_map(path)


def _needs(spec: str) -> str:
    return (BUILTINS[spec].__doc__ or "").strip().splitlines()[0].rstrip(".")
