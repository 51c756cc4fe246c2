"""The report: one JSON document, valid against the schema the package ships
(``diffai/report.schema.json``, :func:`report_schema`), built from a comparison.

Every report carries a verdict: from the given policy, else from the
documented default policy (docs/policy.md).

Renderers and CI code read this document, never the comparison objects, so
what a PR comment shows is exactly what the uploaded artifact says.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import operator
import os
import stat
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import IO, Any

from diffai import _records, jsontext
from diffai._version import __version__
from diffai.analyses import run_analyses
from diffai.change import RelativeChange
from diffai.comparison import STATUSES, Comparison, TensorComparison
from diffai.errors import ReportError
from diffai.layers import layer_records_of
from diffai.model import Model, Scalar
from diffai.pairing.confirm import inventory
from diffai.pairing.fingerprint import fingerprints_json
from diffai.policy import MetricsFile, Policy, default_policy, evaluate
from diffai.stats import DiffStats, TensorStats

SCHEMA_VERSION = 1


@cache
def report_schema() -> dict[str, Any]:
    """The report's JSON Schema (draft 2020-12): the contract other tools read reports by."""
    from importlib.resources import files  # here: a run that validates nothing skips it

    return json.loads(files("diffai").joinpath("report.schema.json").read_text("utf-8"))


@dataclass(frozen=True)
class Gate:
    """What the comparison is judged by: a policy (the default one unless given) and metrics."""

    policy: Policy = field(default_factory=default_policy)
    metrics_baseline: MetricsFile | None = None
    metrics_candidate: MetricsFile | None = None


@dataclass(frozen=True)
class Report:
    """A finished comparison, judged by a policy, and its report document."""

    comparison: Comparison
    document: dict[str, Any]

    @classmethod
    def build(
        cls,
        comparison: Comparison,
        gate: Gate | None = None,
        functional: dict[str, Any] | None = None,
        adapter: dict[str, Any] | None = None,
    ) -> Report:
        """Measure, analyse, then judge: the policy reads the finished analyses, how the
        models' outputs moved when they were run (``diffai.functional``) and the ``adapter``
        section of ``diffai.adapters`` when adapters were compared."""
        gate = gate or Gate()
        document = build_document(comparison)
        if functional is not None:
            document["functional"] = _finite(functional)
        if adapter is not None:
            document["adapter"] = _finite(adapter)
        judged = evaluate(gate.policy, document, gate.metrics_baseline, gate.metrics_candidate)
        document.update(_finite(judged))
        return cls(comparison, document)

    @property
    def identical(self) -> bool:
        return self.comparison.identical

    @property
    def verdict(self) -> str:
        return self.document["verdict"]

    def to_json(self) -> str:
        return self.to_json_bytes().decode("ascii")

    def to_json_bytes(self) -> bytes:
        """The report file's content, ASCII; no indent (``jq .`` pretty-prints it)."""
        return jsontext.encode_line(self.document)

    def write(self, path: str | Path) -> None:
        write_atomically(Path(path), self.to_json_bytes())


def build_document(comparison: Comparison) -> dict[str, Any]:
    baseline, candidate = comparison.baseline, comparison.candidate
    changes = comparison.relative_changes
    # Each a pass over the model's tensors (0.4 us per tensor here): counted once, used twice.
    parameters = baseline.parameters, candidate.parameters
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "diffai", "version": __version__},
        "baseline": _artifact(baseline, parameters[0]),
        "candidate": _artifact(candidate, parameters[1]),
        "options": dataclasses.asdict(comparison.options),
        "mapping": comparison.mapping.to_json(),
        "renamed": comparison.renames.to_json(comparison.tensors),
        "summary": _summary(comparison, parameters),
        "tensors": tensor_records(comparison.tensors, changes),
        "scalars": [
            {
                "name": s.name,
                "baseline": json_scalar(s.baseline),
                "candidate": json_scalar(s.candidate),
            }
            for s in comparison.scalars
        ],
        # Per module, its weights: a BatchNorm counter's 0 -> 100 is no change of the layer.
        "layers": layer_records_of(comparison.columns),
        "analyses": _finite(run_analyses(comparison)),
        **({"shard": shard_section(comparison)} if comparison.options.shard else {}),
    }


def shard_section(comparison: Comparison) -> dict[str, Any]:
    """What ``diffai merge`` needs beyond this shard's tensors to rebuild the whole comparison."""
    index, count = comparison.options.shard  # type: ignore[misc]
    return {
        "index": index,
        "count": count,
        "names": list(comparison.names),
        "fingerprints": fingerprints_json(comparison.tensors),
        "inventory": {
            "baseline": inventory(comparison.baseline),
            "candidate": inventory(comparison.candidate),
        },
    }


def _artifact(model: Model, parameters: int) -> dict[str, Any]:
    return {
        "path": model.path,
        "format": model.format,
        "bytes": model.size_bytes,
        "tensors": len(model.tensors),
        "parameters": parameters,
        "metadata": _finite(model.metadata),
        **({"source": model.source} if model.source else {}),
    }


def _summary(comparison: Comparison, parameters: tuple[int, int]) -> dict[str, int]:
    """The counts per status, in one pass over the tensors."""
    counted = Counter(map(_status, comparison.tensors))
    return {
        "tensors_compared": len(comparison.tensors),
        **{status: counted[status] for status in STATUSES},
        "scalars_changed": len(comparison.scalars),
        "parameters_baseline": parameters[0],
        "parameters_candidate": parameters[1],
    }


_status = operator.attrgetter("status")


def tensor_records(
    tensors: list[TensorComparison], changes: dict[str, RelativeChange]
) -> list[dict[str, Any]]:
    """Every tensor's record, as ``tensor_record`` gives it, built in C (``diffai/_records.c``)
    for all but the few it leaves to ``tensor_record`` (renamed, sparse, quantized ...).

    At 100,000 pairs the Python loop took 10.4 us a pair, 30,000 instructions (callgrind), this
    6.2 us and 12,500 (process time, interleaved, load 3): the same dicts made the same way,
    without the interpreter around them.
    """
    return _records.tensor_records(tensors, changes, _SIDE_FORM, _DIFF_FORM, tensor_record)


def tensor_record(tensor: TensorComparison, change: RelativeChange | None) -> dict[str, Any]:
    """A tensor's record; a renamed tensor's ``rename`` goes last."""
    record = {
        "name": tensor.name,
        "status": tensor.status,
        "role": tensor.role,
        "baseline": stats_record(tensor.baseline),
        "candidate": stats_record(tensor.candidate),
        "diff": diff_record(tensor.diff, change),
    }
    if tensor.rename is not None:
        record["rename"] = tensor.rename.to_json()
    return record


def stats_record(stats: TensorStats | None) -> dict[str, Any] | None:
    if stats is None:
        return None
    record = vars(stats).copy()
    record["shape"] = list(stats.shape)
    if stats.layout is None:  # a dense tensor: the sparse fields are left out
        del record["layout"], record["nnz"]
    if stats.quantization is not None:
        record["quantization"] = _finite(stats.quantization)
    else:  # only dequantized tensors carry the key
        del record["quantization"]
    return _strict(record, _STATS_FLOATS)


def diff_record(diff: DiffStats | None, change: RelativeChange | None) -> dict[str, Any] | None:
    if diff is None:
        return None
    record = vars(diff).copy()
    if change is None:
        record["relative_change"], record["relative_basis"] = None, "none"
    else:
        record["relative_change"], record["relative_basis"] = change.value, change.basis
    return _strict(record, _DIFF_FLOATS)


FloatGetter = Callable[[dict[str, Any]], tuple[Any, ...]]


def _strict(record: dict[str, Any], floats: FloatGetter) -> dict[str, Any]:
    """``record`` with its non-finite floats made None, so the document stays strict JSON.

    The common case is one ``sum``: it is finite exactly when every float field is, and a
    ``None`` among them (no value to measure) stops it with a ``TypeError`` (per record
    0.15 µs, against 1.0 µs for filtering the ``None`` out first). Each side and diff is
    judged as it is built, its values in the cache: one sum over every tensor's records
    after they were built read them again (1.9 us a pair at 100,000 pairs).
    """
    try:
        if math.isfinite(sum(floats(record))):
            return record
    except TypeError:  # a None among them: look at each
        pass
    for key, value in record.items():
        if isinstance(value, float) and not math.isfinite(value):
            record[key] = None
    return record


@cache
def _float_names(kind: type) -> tuple[str, ...]:
    """A record type's float fields (``float`` or ``float | None``)."""
    return tuple(f.name for f in dataclasses.fields(kind) if f.type in _FLOAT_TYPES)


@cache
def _float_fields(kind: type) -> FloatGetter:
    """The getter of a record type's float fields, as a tuple."""
    names = _float_names(kind)
    getter = operator.itemgetter(*names)
    return getter if len(names) > 1 else lambda record: (getter(record),)


_FLOAT_TYPES = frozenset({"float", "float | None"})
_STATS_FLOATS = _float_fields(TensorStats)
_DIFF_FLOATS = _float_fields(DiffStats)

#: What ``_records.c`` does with a field: keeps it, keeps it as a float field (``_strict``
#: judges those), makes it a list, or leaves it out, as None (else ``tensor_record`` builds).
AS_IS, FLOAT, LISTED, DROPPED = 0, 1, 2, 3
#: A kind of record ``_records.c`` builds: the fields in order, what it does with each.
Form = tuple[tuple[str, ...], tuple[int, ...]]


def _form(kind: type, dropped: frozenset[str]) -> Form:
    names = tuple(f.name for f in dataclasses.fields(kind))
    floats = _float_names(kind)
    return names, tuple(_kind(name, dropped, floats) for name in names)


def _kind(name: str, dropped: frozenset[str], floats: tuple[str, ...]) -> int:
    if name in dropped:
        return DROPPED
    if name == "shape":
        return LISTED
    return FLOAT if name in floats else AS_IS


#: A dense side without quantization, what ``stats_record`` leaves out of it.
_SIDE_FORM = _form(TensorStats, frozenset({"layout", "nnz", "quantization"}))
_DIFF_FORM = _form(DiffStats, frozenset())


def json_scalar(value: Scalar) -> Any:
    """A checkpoint scalar for strict JSON: non-finite floats become strings (``"nan"``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list):
        return [json_scalar(v) for v in value]
    return value


def _finite(value: Any) -> Any:
    """Replace non-finite floats by None so the document stays strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_atomically(path: Path, content: str | bytes) -> bool:
    """Write via a temporary file in the same folder, so readers never see half a report.

    Returns whether a file was put at ``path``. A FIFO or a character device
    (``/dev/stdout``, ``/dev/full``) has no folder entry to replace: it is written
    in place, and False returned. Whatever stops the write (a full disk, SIGINT,
    SIGTERM) removes the temporary file before the exception goes on.
    """
    if _is_stream(path):
        _write_stream(path, content)
        return False
    temp = None
    try:
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with _opened(handle, content) as out:
            out.write(content)
        os.chmod(temp, 0o644)  # mkstemp's 0600 would hide the artifact from other CI users
        os.replace(temp, path)
        temp = None
    except OSError as exc:
        raise ReportError(f"{path}: cannot write: {exc.strerror or exc}") from exc
    finally:
        if temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(temp)
    return True


def _is_stream(path: Path) -> bool:
    """Replacing ``/dev/stdout`` with a file (as root may) would break it for everyone after."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)


def _write_stream(path: Path, content: str | bytes) -> None:
    try:
        with _opened(path, content) as out:
            out.write(content)
    except OSError as exc:
        raise ReportError(f"{path}: cannot write: {exc.strerror or exc}") from exc


def _opened(file: int | Path, content: str | bytes) -> IO[Any]:
    """``file`` opened for writing ``content``: bytes as they are, text as UTF-8."""
    if isinstance(content, bytes):
        return open(file, "wb")
    return open(file, "w", encoding="utf-8")
