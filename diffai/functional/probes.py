"""Probe inputs, built once from the baseline's declared signature and given to both models.

Each input is filled by the first rule that applies (docs/policy.md, "Probe inputs"):

| input | probes |
|---|---|
| a value given (``--probe-value sr=16000``, ``inputs.sr.value``) | that value everywhere |
| a 0-d input without one | refused: a setting (a sample rate, a temperature) has no random value |
| a name with ``state``, ``hidden``, ``cell``, ``past``, ``cache``, ``memory`` | zeros (recurrent) |
| a name with ``mask`` | ones |
| integers | token ids in 0 .. vocab-1 (``inputs.ids.vocab``, else the rows of the embedding
  table the graph indexes with it, else 100) |
| booleans | fair coin flips |
| floats | standard normal |

Shapes: the batch axis (the axis named like the first input's first symbolic axis,
else an input's first unknown axis) takes ``batch_size`` probes per run; other
symbolic axes are 16 unless a shape is given (``--probe-shape x=1x3x224x224``).
Runs are drawn in order from one seeded generator and written to files both children
read, so the same bytes reach both models; their SHA-256 is in the report.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffai.dtypes import numpy_dtype
from diffai.errors import UsageError
from diffai.formats import numpy as npy
from diffai.functional.graph import Dim, Port
from diffai.policy.functional import FunctionalPolicy, InputSpec

#: Symbolic axes other than the batch axis, when no shape is given.
DEFAULT_AXIS = 16
#: Token ids of an integer input that names no vocabulary and indexes no table.
DEFAULT_VOCAB = 100
STATE_NAMES = re.compile(r"state|hidden|cell|past|cache|memory|^h0$|^c0$", re.IGNORECASE)
MASK_NAMES = re.compile(r"mask", re.IGNORECASE)
#: The input names, in the order of each run's files.
NAMES = "names.json"
#: Bytes of probes a run may hold; a larger batch is cut to fit.
MAX_RUN_BYTES = 256 << 20


@dataclass(frozen=True)
class Filled:
    """How one input's probes are made: its dtype, the shape of one probe, its batch axis."""

    port: Port
    shape: tuple[int, ...]
    batch_axis: int | None
    rule: str
    value: float | None = None
    vocab: int | None = None


@dataclass(frozen=True)
class Plan:
    inputs: tuple[Filled, ...]
    runs: tuple[int, ...]  # probes per run
    seed: int
    given: Path | None = None  # the .npz file the probes come from, if any

    @property
    def source(self) -> str:
        return "random" if self.given is None else str(self.given)

    @property
    def probes(self) -> int:
        return sum(self.runs)


def plan(
    ports: tuple[Port, ...], policy: FunctionalPolicy, specs: Mapping[str, InputSpec],
    vocabularies: Mapping[str, int],
) -> Plan:  # fmt: skip
    """How each input is filled; ``specs`` are the policy's and the command line's, merged."""
    unknown = sorted(set(specs) - {port.name for port in ports})
    if unknown:
        names = ", ".join(port.name for port in ports)
        raise UsageError(
            f"probe input {unknown[0]!r} is not an input of the model (it has {names})"
        )
    batch = _batch_symbol(ports)
    filled = tuple(
        _filled(port, specs.get(port.name, InputSpec()), batch, vocabularies) for port in ports
    )
    return Plan(filled, _runs(filled, policy), policy.seed)


def _batch_symbol(ports: tuple[Port, ...]) -> Dim:
    for port in ports:
        if port.dims and not isinstance(port.dims[0], int):
            return port.dims[0]
    return None


def _filled(port: Port, spec: InputSpec, batch: Dim, vocabularies: Mapping[str, int]) -> Filled:
    if port.dtype is None or port.dims is None:
        raise UsageError(
            f"input {port.described()} is not a tensor of known rank; diffai cannot probe it"
        )
    axis = _batch_axis(port.dims, batch)
    if spec.value is not None:
        return Filled(port, _shape(port, spec, axis), axis, "value", value=spec.value)
    if port.dims == ():
        raise UsageError(
            f"input {port.name!r} is a scalar, a setting rather than data; give its value with "
            f"--probe-value {port.name}=VALUE or regression_test.functional.inputs"
        )
    shape = _shape(port, spec, axis)
    vocab = spec.vocab or vocabularies.get(port.name) or DEFAULT_VOCAB
    return Filled(port, shape, axis, _rule(port), vocab=vocab)


def _rule(port: Port) -> str:
    if STATE_NAMES.search(port.name):
        return "zeros"
    if MASK_NAMES.search(port.name):
        return "ones"
    kind = numpy_dtype(port.dtype or "f32").kind
    return {"i": "token_ids", "u": "token_ids", "b": "coin"}.get(kind, "normal")


def _batch_axis(dims: tuple[Dim, ...], batch: Dim) -> int | None:
    if batch is not None and batch in dims:
        return dims.index(batch)
    return next((axis for axis, dim in enumerate(dims) if not isinstance(dim, int)), None)


def _shape(port: Port, spec: InputSpec, axis: int | None) -> tuple[int, ...]:
    """One probe's shape: the given one, else the declared sizes and 16 for symbolic axes."""
    dims = port.dims or ()
    wanted = spec.shape or tuple(d if isinstance(d, int) else DEFAULT_AXIS for d in dims)
    fits = len(wanted) == len(dims) and all(
        not isinstance(dim, int) or dim == size for dim, size in zip(dims, wanted, strict=False)
    )
    if not fits:
        shown = "x".join(map(str, wanted))
        raise UsageError(f"probe shape {shown} does not fit input {port.described()}")
    return tuple(1 if i == axis else size for i, size in enumerate(wanted))


def _runs(filled: tuple[Filled, ...], policy: FunctionalPolicy) -> tuple[int, ...]:
    batched = [f for f in filled if f.batch_axis is not None]
    if not batched:
        return (1,) * policy.probes
    row_bytes = sum(_bytes(f.port, f.shape) for f in batched)
    size = max(1, min(policy.batch_size, MAX_RUN_BYTES // max(row_bytes, 1)))
    full, rest = divmod(policy.probes, size)
    return (size,) * full + ((rest,) if rest else ())


def _bytes(port: Port, shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64)) * numpy_dtype(port.dtype or "f32").itemsize


def write_runs(plan: Plan, folder: Path) -> str:
    """Each run's inputs as ``folder/<run>/<input>.npy``; returns the SHA-256 of them all."""
    digest = hashlib.sha256()
    folder.mkdir()
    names = [filled.port.name for filled in plan.inputs]
    (folder / NAMES).write_text(json.dumps(names), encoding="utf-8")
    for run, arrays in enumerate(_arrays(plan)):
        (folder / str(run)).mkdir(parents=True)
        for index, (filled, array) in enumerate(zip(plan.inputs, arrays, strict=True)):
            np.save(folder / str(run) / f"{index}.npy", array, allow_pickle=False)
            digest.update(f"{filled.port.name}|{array.dtype.str}|{array.shape}|".encode())
            digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def _arrays(plan: Plan) -> Iterator[list[np.ndarray]]:
    rng = np.random.default_rng(plan.seed)
    given_arrays = _given(plan, plan.given) if plan.given else {}
    start = 0
    for count in plan.runs:
        yield [
            _given_run(given_arrays[f.port.name], start, count) if f.port.name in given_arrays
            else _made(f, count, rng)
            for f in plan.inputs
        ]  # fmt: skip
        start += count


def _made(filled: Filled, count: int, rng: np.random.Generator) -> np.ndarray:
    shape = list(filled.shape)
    if filled.batch_axis is not None:
        shape[filled.batch_axis] = count
    dtype = numpy_dtype(filled.port.dtype or "f32")
    return MAKERS[filled.rule](filled, tuple(shape), dtype, rng)


MAKERS = {
    "value": lambda f, shape, dtype, rng: np.full(shape, f.value, dtype),
    "zeros": lambda f, shape, dtype, rng: np.zeros(shape, dtype),
    "ones": lambda f, shape, dtype, rng: np.ones(shape, dtype),
    "token_ids": lambda f, shape, dtype, rng: rng.integers(0, f.vocab, shape).astype(dtype),
    "coin": lambda f, shape, dtype, rng: rng.integers(0, 2, shape).astype(dtype),
    "normal": lambda f, shape, dtype, rng: rng.standard_normal(shape).astype(dtype),
}


def _given(plan: Plan, path: Path) -> dict[str, np.ndarray]:
    """The .npz's arrays (read by diffai's own reader: no pickle), probes on the first axis."""
    model = npy.read(path)
    names = {f.port.name: f for f in plan.inputs}
    arrays = {}
    for name, ref in model.tensors.items():
        if name not in names:
            raise UsageError(f"{path}: array {name!r} is not an input of the model")
        arrays[name] = ref.array()
    return arrays


def _given_run(array: np.ndarray, start: int, count: int) -> np.ndarray:
    return np.ascontiguousarray(array[start : start + count])


def given_plan(plan: Plan, path: Path) -> Plan:
    """``plan`` with the probe count of the .npz file at ``path`` (every array's first axis)."""
    counts = {name: ref.shape[0] for name, ref in npy.read(path).tensors.items() if ref.shape}
    if len(set(counts.values())) != 1:
        raise UsageError(f"{path}: its arrays do not hold the same number of probes ({counts})")
    total = next(iter(counts.values()))
    size = plan.runs[0] if plan.runs else 1
    full, rest = divmod(total, size)
    return Plan(plan.inputs, (size,) * full + ((rest,) if rest else ()), plan.seed, path)
