"""Reading a ``--map`` file: checked against the shipped ``map.schema.json``, one line per error.

The YAML is read as policy files are (``diffai.policy.load``: bounded size, no FIFOs,
no alias bombs, duplicate keys refused, lines kept), so an error reads like theirs:
``names.yaml:7: rules[1].pattern: not a regular expression: missing ), unterminated
subpattern at position 4``: the file, the line, the rule (from 0, as the key path
says) and what is wrong.
"""

from __future__ import annotations

import re
from typing import Any

from diffai.errors import MapError, PolicyError
from diffai.pairing.maps.rules import NameMap, Rule
from diffai.pairing.maps.transforms import RotaryPermutation, Transform, Transpose
from diffai.policy.load import _LineMap, _raise_first_problem, parse_yaml_mapping
from diffai.policy.schema import KeyPath, Problem, schema_problems, validator_for
from diffai.text import UNSHOWABLE


def load_map(path: str) -> NameMap:
    """The name map in a YAML file, every rule's regex compiled."""
    try:
        lines, document = parse_yaml_mapping(path, "name map", "version and rules")
        _raise_first_problem(path, lines, document, _problems(document))
    except PolicyError as exc:  # the policy loader's reading errors, said of the map file
        raise MapError(str(exc)) from None
    rules = tuple(_rule(lines, index, rule) for index, rule in enumerate(document["rules"]))
    return NameMap(path, "file", document.get("side", "candidate"), rules)


def _problems(document: dict[str, Any]) -> list[Problem]:
    problems = schema_problems(document, validator_for("diffai.pairing.maps", "map.schema.json"))
    if problems:
        return problems
    return [
        problem
        for index, rule in enumerate(document["rules"])
        for problem in _rule_problems(index, rule)
    ]


def _rule_problems(index: int, rule: dict[str, Any]) -> list[Problem]:
    """What the schema cannot say: the regex compiles, one transform, one way to count heads."""
    where: KeyPath = ("rules", index)
    problems = []
    try:
        re.compile(rule["pattern"])
    except re.error as exc:
        problems.append(Problem((*where, "pattern"), f"not a regular expression: {exc}"))
    if UNSHOWABLE.search(rule["replacement"]):  # a name goes on one line of every output
        problems.append(
            Problem(
                (*where, "replacement"),
                "holds a control or line-break character, which no tensor name may",
            )
        )
    transform = rule.get("transform", {})
    if len(transform) > 1:
        problems.append(
            Problem(
                (*where, "transform"), "give one transform per rule, not " + " and ".join(transform)
            )
        )
    rotary = transform.get("permute_rotary", {})
    if "from_metadata" in rotary and {"heads", "kv_heads"} & set(rotary):
        problems.append(
            Problem(
                (*where, "transform", "permute_rotary"),
                "give heads (and kv_heads) or from_metadata, not both",
            )
        )
    return problems


def _rule(lines: _LineMap, index: int, rule: dict[str, Any]) -> Rule:
    line = lines.line_of(Problem(("rules", index), ""))
    return Rule(
        re.compile(rule["pattern"]),
        rule["replacement"],
        _transform(rule.get("transform")),
        f"rules[{index}] at line {line}",
    )


def _transform(spec: dict[str, Any] | None) -> Transform | None:
    if not spec:
        return None
    if "transpose" in spec:
        return Transpose()
    return RotaryPermutation(**spec["permute_rotary"])
