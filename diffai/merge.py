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

import dataclasses
import json
from pathlib import Path
from typing import Any

from diffai.comparison import CompareOptions, Comparison, ScalarChange, TensorComparison
from diffai.errors import DiffaiError, UnreadableModel, UsageError
from diffai.model import Model, TensorRef
from diffai.pairing import Mapping
from diffai.pairing.confirm import files_reader
from diffai.pairing.fingerprint import Fingerprint
from diffai.pairing.renames import RenameSearch, pair_renames
from diffai.stats import DiffStats, TensorStats


def merge_parts(paths: list[str]) -> Comparison:
    documents = [_read_part(path) for path in paths]
    _check_parts(documents, paths)
    return _rebuild(documents)


def _read_part(path: str) -> dict[str, Any]:
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnreadableModel(path, f"cannot read the shard report: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("shard"), dict):
        raise UsageError(f"{path}: not a shard report (run diffai with --shard I/N --report FILE)")
    return document


def _check_parts(documents: list[dict[str, Any]], paths: list[str]) -> None:
    count = documents[0]["shard"]["count"]
    indexes = sorted(d["shard"]["index"] for d in documents)
    if indexes != list(range(1, count + 1)):
        raise UsageError(f"merge needs shards 1..{count} exactly once each, got {indexes}")
    for path, document in zip(paths[1:], documents[1:], strict=True):
        for key in ("schema_version", "baseline", "candidate", "scalars"):
            if document[key] != documents[0][key]:
                raise UsageError(f"{path}: its {key} differs from {paths[0]}'s; not one run")
        if _same_run(document) != _same_run(documents[0]):
            raise UsageError(f"{path}: options or tensor names differ from {paths[0]}'s")


def _same_run(document: dict[str, Any]) -> tuple[Any, ...]:
    options = {k: v for k, v in document["options"].items() if k != "shard"}
    shard = document["shard"]
    return options, shard["count"], shard["names"], shard["inventory"]


def _rebuild(documents: list[dict[str, Any]]) -> Comparison:
    first = documents[0]
    records = {t["name"]: t for document in documents for t in document["tensors"]}
    names = first["shard"]["names"]
    missing = [name for name in names if name not in records]
    if missing:
        raise UsageError(f"no shard measured tensor {missing[0]!r}; were all parts given?")
    options = {**first["options"], "shard": None}
    prints = {n: p for document in documents for n, p in _fingerprints(document).items()}
    compare_options = CompareOptions(
            **{
                **options,
                "include": tuple(options["include"]),
                "exclude": tuple(options["exclude"]),
                "strip_prefixes": tuple(options.get("strip_prefixes", ())),
                "maps": tuple(options.get("maps", ())),
            }
        )
    tensors = [_tensor(records[name], prints.get(name)) for name in names]
    renames = RenameSearch(enabled=False)
    if compare_options.detect_renames:
        reader = files_reader(first["baseline"]["path"], first["candidate"]["path"],
                              compare_options, first["shard"]["inventory"])  # fmt: skip
        tensors, renames = pair_renames(tensors, reader, compare_options.epsilon)
    return Comparison(
        baseline=_model(first["baseline"], first["shard"]["inventory"]["baseline"]),
        candidate=_model(first["candidate"], first["shard"]["inventory"]["candidate"]),
        tensors=tensors,
        scalars=[ScalarChange(s["name"], s["baseline"], s["candidate"]) for s in first["scalars"]],
        options=compare_options,
        names=tuple(names),
        mapping=Mapping.from_json(first.get("mapping")),
        renames=renames,
    )


def _fingerprints(document: dict[str, Any]) -> dict[str, Fingerprint]:
    records = document["shard"].get("fingerprints", {})  # an older shard report has none
    return {name: Fingerprint.from_json(record) for name, record in records.items()}


def _model(artifact: dict[str, Any], inventory: list[list[Any]]) -> Model:
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


def _values_unavailable() -> Any:
    raise DiffaiError("a merged report holds measurements only, not tensor values")


def _tensor(record: dict[str, Any], fingerprint: Fingerprint | None) -> TensorComparison:
    return TensorComparison(
        name=record["name"],
        status=record["status"],
        baseline=_stats(record["baseline"]),
        candidate=_stats(record["candidate"]),
        diff=_diff(record["diff"]),
        role_hint=record["role"],  # decided when the shard was measured, by name or hint
        fingerprint=fingerprint,
    )


def _diff(record: dict[str, Any] | None) -> DiffStats | None:
    """The measured fields; the relative change is derived again from the whole comparison."""
    if record is None:
        return None
    return DiffStats(**{f.name: record[f.name] for f in dataclasses.fields(DiffStats)})


def _stats(record: dict[str, Any] | None) -> TensorStats | None:
    return (
        None
        if record is None
        else TensorStats(
            **{"stored_dtype": record["dtype"], **record, "shape": tuple(record["shape"])}
        )
    )
