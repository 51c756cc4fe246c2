"""A name map as data: rules (a full-match regex, its replacement, a transform) for one side.

Applying one renames every tensor of its side that a rule matches, the first rule that
matches winning, and transforms its values lazily (``transforms``). Two names that
become one are refused, naming both and the rules that made them: keeping one would
judge a tensor under a name the file gives another. What was renamed is kept for the
report (``AppliedMap``), so a reviewer can tell which stored tensor was judged as which.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from diffai.errors import MapError
from diffai.model import Model, TensorRef
from diffai.pairing.maps.transforms import Transform, TransformError

Side = Literal["baseline", "candidate"]
SIDES: tuple[Side, Side] = ("baseline", "candidate")


@dataclass(frozen=True)
class Rule:
    pattern: re.Pattern[str]
    replacement: str
    transform: Transform | None = None
    #: How errors name the rule: ``rules[1] at line 7``.
    label: str = "rule"


@dataclass(frozen=True)
class NameMap:
    """A map file's rules, or a built-in map's; ``source`` is its path or its name."""

    source: str
    kind: Literal["file", "builtin"]
    side: Side
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class MappedName:
    """One tensor a map renamed or transformed: its name now, as stored, and what was done."""

    name: str
    stored_name: str
    transform: str | None = None


@dataclass(frozen=True)
class AppliedMap:
    """A map as the report states it (``mapping.maps``)."""

    source: str
    kind: Literal["file", "builtin"]
    side: Side
    chosen: Literal["given", "automatic"]
    reason: str = ""
    tensors: tuple[MappedName, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record["tensors"] = [dataclasses.asdict(tensor) for tensor in self.tensors]
        return record

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> AppliedMap:
        tensors = tuple(MappedName(**tensor) for tensor in record["tensors"])
        return cls(**{**record, "tensors": tensors})


def apply_map(
    name_map: NameMap, model: Model, chosen: Literal["given", "automatic"], reason: str = ""
) -> tuple[Model, AppliedMap]:
    """The model under the map's names, and what the map did to it."""
    tensors: dict[str, TensorRef] = {}
    made_by: dict[str, tuple[str, str]] = {}  # new name -> (stored name, how)
    mapped: list[MappedName] = []
    for stored, ref in model.tensors.items():
        rule = _first_match(name_map, stored)
        name = stored if rule is None else _expand(name_map, rule, stored)
        how = "not renamed" if rule is None else f"by {rule.label}"
        if name in tensors:
            raise _collision(name_map, model, name, made_by[name], (stored, how))
        tensors[name], made_by[name] = _renamed(name_map, rule, ref, name, model), (stored, how)
        if rule is not None and (name != stored or rule.transform is not None):
            mapped.append(MappedName(name, stored, _described(rule)))
    renamed = dataclasses.replace(model, tensors=tensors)
    return renamed, AppliedMap(
        name_map.source, name_map.kind, name_map.side, chosen, reason, tuple(mapped)
    )


def _first_match(name_map: NameMap, name: str) -> Rule | None:
    return next((rule for rule in name_map.rules if rule.pattern.fullmatch(name)), None)


def _expand(name_map: NameMap, rule: Rule, stored: str) -> str:
    match = rule.pattern.fullmatch(stored)
    assert match is not None  # _first_match chose the rule by this match
    try:
        return match.expand(rule.replacement)
    except (re.error, IndexError) as exc:
        raise MapError(
            f"{name_map.source}: {rule.label}: replacement {rule.replacement!r} "
            f"does not fit its pattern: {exc}"
        ) from exc


def _renamed(
    name_map: NameMap, rule: Rule | None, ref: TensorRef, name: str, model: Model
) -> TensorRef:
    ref = dataclasses.replace(ref, name=name) if name != ref.name else ref
    if rule is None or rule.transform is None:
        return ref
    try:
        return rule.transform.apply(ref, model)
    except TransformError as exc:
        raise MapError(f"{name_map.source}: {rule.label}: {exc}") from exc


def _described(rule: Rule) -> str | None:
    return None if rule.transform is None else rule.transform.describe()


def _collision(
    name_map: NameMap, model: Model, name: str, first: tuple[str, str], second: tuple[str, str]
) -> MapError:
    return MapError(
        f"{name_map.source}: tensors {first[0]!r} ({first[1]}) and {second[0]!r} ({second[1]}) "
        f"of {model.path} would both be named {name!r}; refused, as pairing either would "
        "judge a tensor the file does not hold under that name"
    )
