"""``diffai merge``: shard reports (``--shard I/N``) back into the report one run would give.

Each shard report carries its tensors' measurements plus the full name order
and both models' inventories, which is all the analyses and the policy read;
so the merged comparison is rebuilt exactly and judged afresh.

Renames are paired here, never in a shard, so that a removed tensor in one shard and
an added one in another meet, and the result is the one run's: each shard report
carries the fingerprints of its removed and added tensors, the merge nominates pairs
from them, and confirms each by reading just that pair from the model files named in
the reports (``diffai.pairing.confirm``). Where the files cannot be read (the merge job
has only the reports) nothing is paired: the nominations are listed as
``renamed.unconfirmed`` and the tensors stay removed and added, since a fingerprint
alone is what a hostile file can forge.
"""

from __future__ import annotations

import binascii
import dataclasses
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from diffai.comparison import (
    CompareOptions,
    Comparison,
    ScalarChange,
    TensorComparison,
)
from diffai.errors import DiffaiError, UnreadableModel, UsageError
from diffai.model import Model, TensorRef
from diffai.pairing import Mapping
from diffai.pairing.confirm import files_reader
from diffai.pairing.fingerprint import Fingerprint
from diffai.pairing.renames import RenameSearch, pair_renames
from diffai.stats import DiffStats, TensorStats


def merge_parts(paths: list[str]) -> Comparison:
    parts = [_read_part(path) for path in paths]
    _check_parts(parts)
    return _rebuild(parts)


@dataclass(frozen=True)
class _Part:
    """One shard report, its values checked and its tensors and models built as read."""

    path: str
    document: dict[str, Any]
    tensors: list[TensorComparison]
    options: CompareOptions
    scalars: list[ScalarChange]
    mapping: Mapping


def _read_part(path: str) -> _Part:
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnreadableModel(path, f"cannot read the shard report: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("shard"), dict):
        raise UsageError(f"{path}: not a shard report (run diffai with --shard I/N --report FILE)")
    try:
        return _part(path, document)
    except _Malformed as exc:
        raise UnreadableModel(path, f"not a shard report diffai can merge: {exc}") from None


class _Malformed(Exception):
    """Where a shard report departs from what diffai writes, and how."""


def _part(path: str, document: dict[str, Any]) -> _Part:
    """A hand-edited or truncated shard report is refused here, naming the value: each one
    the merge reads is checked as it is read, so none of the wrong type reaches the
    analyses or the outputs as an internal error.

    By hand, not with the report schema: jsonschema took 24 s over the 9,552 tensor
    records of the MoE bench pair, fastjsonschema 1.1 s, these checks a few ms."""
    shard = document["shard"]
    for key in ("index", "count"):
        _require(type(shard.get(key)) is int and shard[key] >= 1, f"shard.{key}", "a count")
    _require(_strings(shard.get("names")), "shard.names", "a list of names")
    _require(isinstance(shard.get("inventory"), dict), "shard.inventory", "an object")
    _require(isinstance(document.get("tensors"), list), "tensors", "a list")
    prints = _fingerprints(shard.get("fingerprints", {}))  # an older shard report has none
    for side in ("baseline", "candidate"):
        _check_side(document, side)
    records = enumerate(document["tensors"])
    tensors = [_tensor(record, f"tensors[{number}]", prints) for number, record in records]
    return _Part(
        path, document, tensors, _options(document.get("options")),
        _scalars(document.get("scalars")), _mapping(document.get("mapping")),
    )  # fmt: skip


def _require(holds: bool, where: str, expected: str) -> None:
    if not holds:
        raise _Malformed(f"{where} is not {expected}")


def _strings(values: Any) -> bool:
    return isinstance(values, list) and all(isinstance(value, str) for value in values)


def _is_shape(value: Any) -> bool:
    return isinstance(value, list) and all(type(size) is int and size >= 0 for size in value)


def _check_parts(parts: list[_Part]) -> None:
    first = parts[0]
    count = first.document["shard"]["count"]
    indexes = sorted(part.document["shard"]["index"] for part in parts)
    if indexes != list(range(1, count + 1)):
        raise UsageError(f"merge needs shards 1..{count} exactly once each, got {indexes}")
    for part in parts[1:]:
        for key in ("schema_version", "baseline", "candidate", "scalars"):
            if part.document.get(key) != first.document.get(key):
                raise UsageError(f"{part.path}: its {key} differs from {first.path}'s; not one run")
        if _same_run(part) != _same_run(first):
            raise UsageError(f"{part.path}: options or tensor names differ from {first.path}'s")


def _same_run(part: _Part) -> tuple[Any, ...]:
    shard = part.document["shard"]
    options = dataclasses.replace(part.options, shard=None)
    return options, shard["count"], shard["names"], shard["inventory"]


def _rebuild(parts: list[_Part]) -> Comparison:
    first = parts[0]
    measured = {tensor.name: tensor for part in parts for tensor in part.tensors}
    names = first.document["shard"]["names"]
    missing = [name for name in names if name not in measured]
    if missing:
        raise UsageError(f"no shard measured tensor {missing[0]!r}; were all parts given?")
    options = dataclasses.replace(first.options, shard=None)
    tensors = [measured[name] for name in names]
    renames = RenameSearch(enabled=False)
    if options.detect_renames:
        reader = files_reader(first.document["baseline"]["path"],
                              first.document["candidate"]["path"], options,
                              first.document["shard"]["inventory"])  # fmt: skip
        tensors, renames = pair_renames(tensors, reader, options.epsilon)
    return Comparison(
        baseline=_model(first.document, "baseline"),
        candidate=_model(first.document, "candidate"),
        tensors=tensors,
        scalars=first.scalars,
        options=options,
        names=tuple(names),
        mapping=first.mapping,
        renames=renames,
    )


def _options(record: Any) -> CompareOptions:
    """The shard's options; lists back to the tuples ``CompareOptions`` holds."""
    _require(isinstance(record, dict), "options", "an object")
    known = {field.name for field in dataclasses.fields(CompareOptions)}
    _require(record.keys() <= known, "options", "made of " + ", ".join(sorted(known)))
    lists = {key: tuple(value) for key, value in record.items() if isinstance(value, list)}
    shard = record.get("shard")
    _require(shard is None or (_is_shape(shard) and len(shard) == 2), "options.shard", "[I, N]")
    return CompareOptions(**{**record, **lists, "shard": tuple(shard) if shard else None})


def _check_side(document: dict[str, Any], side: str) -> None:
    """A side's artifact and inventory as ``_model`` reads them (every part is checked; the
    model is built once, from the first: ``_check_parts`` holds the others equal)."""
    artifact, inventory = document.get(side), document["shard"]["inventory"].get(side)
    _require(isinstance(artifact, dict) and isinstance(artifact.get("path"), str)
             and isinstance(artifact.get("format"), str) and type(artifact.get("bytes")) is int,
             side, "an artifact with path, format and bytes")  # fmt: skip
    _require(
        isinstance(inventory, list)
        and all(isinstance(row, list) and len(row) == 3 and isinstance(row[0], str)
                and _is_shape(row[1]) and isinstance(row[2], str) for row in inventory),
        f"shard.inventory.{side}", "a list of [name, shape, dtype]",
    )  # fmt: skip


def _model(document: dict[str, Any], side: str) -> Model:
    artifact, inventory = document[side], document["shard"]["inventory"][side]
    tensors = {
        name: TensorRef(name, tuple(shape), dtype, _values_unavailable)
        for name, shape, dtype in inventory
    }
    return Model(
        path=artifact["path"],
        format=artifact["format"],
        size_bytes=artifact["bytes"],
        tensors=tensors,
        metadata=artifact.get("metadata", {}),
    )


def _scalars(records: Any) -> list[ScalarChange]:
    named = isinstance(records, list) and all(
        isinstance(record, dict) and isinstance(record.get("name"), str) for record in records
    )
    _require(named, "scalars", "a list of named values")
    return [ScalarChange(r["name"], r.get("baseline"), r.get("candidate")) for r in records]


def _mapping(record: Any) -> Mapping:
    try:
        return Mapping.from_json(record)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise _Malformed(f"mapping is not as diffai writes it ({exc!r})") from None


def _fingerprints(records: Any) -> dict[str, Fingerprint]:
    _require(isinstance(records, dict), "shard.fingerprints", "an object")
    try:
        return {name: Fingerprint.from_json(record) for name, record in records.items()}
    except (KeyError, TypeError, AttributeError, ValueError, binascii.Error) as exc:
        raise _Malformed(f"shard.fingerprints is not as diffai writes it ({exc!r})") from None


def _values_unavailable() -> Any:
    raise DiffaiError("a merged report holds measurements only, not tensor values")


def _tensor(record: Any, where: str, prints: dict[str, Fingerprint]) -> TensorComparison:
    _require(isinstance(record, dict) and isinstance(record.get("name"), str), where,
             "a tensor record with a name")  # fmt: skip
    where = f"tensor {record['name']!r}:"
    status = record.get("status")
    _require(status in _MEASURED, f"{where} status", "one of " + ", ".join(_MEASURED))
    _require(isinstance(record.get("role"), str), f"{where} role", "a string")
    for part, expected in zip(("baseline", "candidate", "diff"), _MEASURED[status], strict=True):
        if expected is not None:
            _require((record.get(part) is not None) == expected, f"{where} {part}",
                     f"{'present' if expected else 'null'} for a {status} tensor")  # fmt: skip
    return TensorComparison(
        name=record["name"],
        status=status,
        baseline=_stats(record.get("baseline"), f"{where} baseline"),
        candidate=_stats(record.get("candidate"), f"{where} candidate"),
        diff=_diff(record.get("diff"), f"{where} diff"),
        role_hint=record["role"],  # decided when the shard was measured, by name or hint
        fingerprint=prints.get(record["name"]),
    )


#: What a shard measures for a tensor of each status: baseline, candidate, difference
#: (None: either). No shard pairs renames: the merge does.
_MEASURED: dict[str, tuple[bool | None, ...]] = {
    "unchanged": (True, True, True),
    "changed": (True, True, True),
    "added": (False, True, False),
    "removed": (True, False, False),
    "shape_changed": (True, True, False),
    "dtype_changed": (True, True, None),  # complex against real has no element-wise difference
}


def _diff(record: Any, where: str) -> DiffStats | None:
    """The measured fields; the relative change is derived again from the whole comparison."""
    return None if record is None else DiffStats(**_fields(record, DiffStats, where))


def _stats(record: Any, where: str) -> TensorStats | None:
    if record is None:
        return None
    _require(isinstance(record, dict), where, "an object or null")
    fields = _fields({"stored_dtype": record.get("dtype"), **record}, TensorStats, where)
    return TensorStats(**{**fields, "shape": tuple(fields["shape"])})


def _fields(record: Any, kind: type, where: str) -> dict[str, Any]:
    """The record's values of ``kind``'s fields, each of the JSON type the field holds."""
    _require(isinstance(record, dict), where, "an object or null")
    values = {}
    for name, (expected, holds) in _field_types(kind).items():
        if name not in record:
            _require(name in _defaulted(kind), f"{where}.{name}", "present")
            continue
        _require(holds(record[name]), f"{where}.{name}", expected)
        values[name] = record[name]
    return values


#: What a field of each Python type holds in a report, and the test of a JSON value for it.
_JSON_TYPES: dict[Any, tuple[str, Callable[[Any], bool]]] = {
    float: ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    int: ("a count", lambda v: type(v) is int and v >= 0),
    str: ("a string", lambda v: isinstance(v, str)),
    dict: ("an object", lambda v: isinstance(v, dict)),
    tuple: ("a list of sizes", _is_shape),
}


@cache
def _field_types(kind: type) -> dict[str, tuple[str, Callable[[Any], bool]]]:
    """Each field's expectation, from the dataclass's own annotations (one definition)."""
    expected = {}
    for name, hint in typing.get_type_hints(kind).items():
        options = typing.get_args(hint) if typing.get_origin(hint) in _UNIONS else (hint,)
        (plain,) = (option for option in options if option is not type(None))
        what, holds = _JSON_TYPES[typing.get_origin(plain) or plain]
        if type(None) in options:
            what, holds = f"{what} or null", _or_null(holds)
        expected[name] = what, holds
    return expected


_UNIONS = (typing.Union, type(int | None))


def _or_null(holds: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or holds(value)


@cache
def _defaulted(kind: type) -> frozenset[str]:
    return frozenset(
        field.name for field in dataclasses.fields(kind)
        if field.default is not dataclasses.MISSING
    )  # fmt: skip
