"""The shipped policy schema, and its errors said the way a person fixing a YAML file needs.

``policy.schema.json`` is the one definition of the format: editors complete and
check policy files with it, and :func:`schema_problems` checks every file with
it too, so the two never disagree. jsonschema's own messages speak JSON
(``'abc' is not of type 'number', 'null'``); each is translated here into one
:class:`Problem` naming the key path, with the nearest valid key for a typo.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jsonschema
    from jsonschema.exceptions import ValidationError

KeyPath = tuple[str | int, ...]

TYPE_WORDS = {
    "number": "a number",
    "integer": "an integer",
    "string": "a string",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a policy: where (a key path) and what, in words."""

    path: KeyPath
    text: str
    at_key: bool = False  # point at the key itself (unknown, duplicate) rather than its value
    absent: bool = False  # something missing, often explained by a misspelt key nearby


@cache
def shipped_schema(package: str, name: str) -> dict[str, Any]:
    """A JSON Schema shipped in the package, such as ``diffai/policy/policy.schema.json``."""
    from importlib.resources import files  # here: the default policy needs no schema

    return json.loads(files(package).joinpath(name).read_text("utf-8"))


def policy_schema() -> dict[str, Any]:
    return shipped_schema("diffai.policy", "policy.schema.json")


def _finite_number(checker: Any, instance: Any) -> bool:
    """A number, as in JSON: YAML's ``.nan`` would silently pass every comparison, and
    ``1e400`` (infinity once read) turn a limit someone meant to set into none."""
    import jsonschema

    number = jsonschema.Draft202012Validator.TYPE_CHECKER.is_type(instance, "number")
    return number and not (isinstance(instance, float) and not math.isfinite(instance))


@cache
def validator_for(package: str, name: str) -> jsonschema.protocols.Validator:
    """A shipped schema's validator, numbers finite (policy files, name map files)."""
    # Imported here: it costs 60 ms of start-up, and only policy and map files need it.
    import jsonschema

    checker = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("number", _finite_number)
    cls = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=checker)
    return cls(shipped_schema(package, name))


def schema_problems(
    document: Any, validator: jsonschema.protocols.Validator | None = None
) -> list[Problem]:
    """Every schema violation of ``document``, one ``Problem`` each (unknown keys one per key);
    against the policy schema unless another ``validator`` is given."""
    chosen = validator or validator_for("diffai.policy", "policy.schema.json")
    return [
        problem
        for error in chosen.iter_errors(document)
        for problem in _translate(error, _key_path(document, error.absolute_path))
    ]


def _key_path(document: Any, raw: Any) -> KeyPath:
    """jsonschema's path with mapping keys as text and list positions as ints."""
    path: list[str | int] = []
    node = document
    for step in raw:
        path.append(step if isinstance(node, list) else str(step))
        node = node[step]
    return tuple(path)


def _translate(error: ValidationError, path: KeyPath) -> Iterator[Problem]:
    if error.validator == "additionalProperties":
        yield from _unknown_keys(error, path)
    elif error.validator == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        yield Problem((*path, missing[0]), "required key is missing", absent=True)
    else:
        absent = error.validator == "anyOf"
        yield Problem(path, MESSAGES[str(error.validator)](error), absent=absent)


def _unknown_keys(error: ValidationError, path: KeyPath) -> Iterator[Problem]:
    known = list(error.schema.get("properties", {}))
    for key in error.instance:
        if key not in known:
            yield Problem((*path, str(key)), _unknown_key_text(str(key), known), at_key=True)


def _unknown_key_text(key: str, known: list[str]) -> str:
    import difflib  # here: only a misspelt key needs it

    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return f"unknown key, did you mean {close[0]}?"
    home = key_homes().get(key)
    if home is not None:
        return f"unknown key here, it belongs under {home}"
    return f"unknown key (valid keys: {', '.join(known)})"


@cache
def key_homes() -> dict[str, str]:
    """Each key of the format and the first section it belongs in, for keys at the wrong level."""
    homes: dict[str, str] = {}
    _collect_homes(policy_schema(), "", homes)
    return homes


def _collect_homes(schema: dict[str, Any], where: str, homes: dict[str, str]) -> None:
    for key, sub in schema.get("properties", {}).items():
        homes.setdefault(key, where or "the top level")
        sub = _resolve(sub)
        inner = f"{where}.{key}" if where else key
        _collect_homes(sub, inner, homes)
        if "items" in sub:
            _collect_homes(_resolve(sub["items"]), f"{inner}[]", homes)


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref", "")
    return policy_schema()["$defs"][ref.rsplit("/", 1)[1]] if ref else schema


def shown(value: Any) -> str:
    """A value as the user wrote it in YAML: strings quoted, containers by kind."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _either(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def _type_text(error: ValidationError) -> str:
    wanted = error.validator_value
    wanted = wanted if isinstance(wanted, list) else [wanted]
    # null only means "not checked", so it is not offered as something to write
    words = [TYPE_WORDS[t] for t in wanted if t != "null" or len(wanted) == 1]
    if isinstance(error.instance, float) and "number" in wanted:  # .inf, .nan, 1e400
        return f"expected a finite number, got {shown(error.instance)}"
    return f"expected {_either(words)}, got {shown(error.instance)}"


def _enum_text(error: ValidationError) -> str:
    options = _either([str(v) for v in error.validator_value])
    return f"expected {options}, got {shown(error.instance)}"


def _any_of_text(error: ValidationError) -> str:
    keys = [key for option in error.validator_value for key in option.get("required", ())]
    return f"set at least one of {_either(keys)}"


#: One translation per keyword the schema uses (a test keeps the two in step).
MESSAGES: dict[str, Callable[[ValidationError], str]] = {
    "type": _type_text,
    "enum": _enum_text,
    "const": lambda e: f"expected {shown(e.validator_value)}, got {shown(e.instance)}",
    "minimum": lambda e: f"{shown(e.instance)} is below the minimum {e.validator_value}",
    "maximum": lambda e: f"{shown(e.instance)} is above the maximum {e.validator_value}",
    "minLength": lambda e: "must not be empty",
    "minItems": lambda e: "must not be empty",
    "maxItems": lambda e: f"holds {len(e.instance)} items, over the {e.validator_value} allowed",
    "anyOf": _any_of_text,
}


def format_path(path: KeyPath) -> str:
    """``("regression_test", "overrides", 0, "match")`` -> ``regression_test.overrides[0].match``"""
    text = ""
    for step in path:
        text += f"[{step}]" if isinstance(step, int) else f".{step}" if text else step
    return text
