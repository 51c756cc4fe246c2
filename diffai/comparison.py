"""Pair two models' tensors by name and measure every pair, large ones in parallel threads.

The stats kernel releases the GIL while it sums a chunk, so threads (one tensor
each) keep every core busy while memory stays bounded by one chunk per worker;
small pairs, whose cost is Python under the GIL, are measured in the calling thread
meanwhile, many to one kernel call.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

from diffai import _kernel
from diffai.change import RelativeChange
from diffai.change_columns import changes_by_name
from diffai.dtypes import is_complex
from diffai.errors import DiffaiError, UnreadableModel
from diffai.model import CHUNK_ELEMENTS, Model, Scalar, TensorRef, _once, mapped_view
from diffai.pair_columns import PairColumns
from diffai.pairing import Mapping, prepare
from diffai.pairing.confirm import find_renames
from diffai.pairing.fingerprint import Fingerprint, fingerprinter
from diffai.pairing.order import model_order
from diffai.pairing.order import natural_key as natural_key  # importers find it here
from diffai.pairing.renames import Rename, RenameSearch
from diffai.roles import Role, role_of
from diffai.shard import shard_members
from diffai.sources.plan import BLOCK_BYTES as PLAN_BLOCK_BYTES
from diffai.sources.plan import plan_reads, position
from diffai.stats import (
    DIFF_FIELDS,
    DIRECT_CODES,
    TENSOR_FIELDS,
    DiffStats,
    ProgressCallback,
    TensorStats,
    direct_chunk,
    measure_pair,
    measure_tensor,
)

#: A task measures tensors until it has this many bytes: large ones alone, small ones together.
BATCH_BYTES = 4 * 1024 * 1024
#: Pairs under this many bytes are measured in the calling thread (see ``_measure_all``).
SMALL_PAIR_BYTES = 64 * 1024

Status = Literal[
    "unchanged", "changed", "added", "removed", "shape_changed", "dtype_changed", "renamed"
]
STATUSES: tuple[Status, ...] = (
    "unchanged", "changed", "added", "removed", "shape_changed", "dtype_changed", "renamed",
)  # fmt: skip


@dataclass(frozen=True)
class TensorComparison:
    name: str
    status: Status
    baseline: TensorStats | None
    candidate: TensorStats | None
    diff: DiffStats | None
    #: The readers' role hint (``TensorRef.role_hint``), when both sides give the same one.
    role_hint: Role | None = None
    #: A removed or added tensor's content fingerprint, for rename detection (diffai.pairing).
    fingerprint: Fingerprint | None = field(default=None, compare=False, repr=False)
    #: A ``renamed`` pair's baseline name and how it was matched; ``name`` is the candidate's.
    rename: Rename | None = None

    @_once  # read 11 times a tensor by the report and analyses: 2.2 s at 100,000 tensors
    def role(self) -> Role:
        return role_of(self.name, self.role_hint)


#: The field orders diffai/_batch.c builds its objects in (its value arrays are literal):
#: a field added, removed or moved in a dataclass must be so there too.
_KERNEL_ORDERS = {
    TensorStats: ("shape", "dtype", "stored_dtype", "elements", "bytes", "mean", "std", "min",
                  "max", "nan", "inf", "zeros", "layout", "nnz", "quantization"),
    DiffStats: ("max_abs", "mean_abs", "l2", "relative_l2", "cosine", "changed",
                "changed_fraction", "baseline_l2", "candidate_l2"),
    TensorComparison: ("name", "status", "baseline", "candidate", "diff", "role_hint",
                       "fingerprint", "rename"),
}  # fmt: skip
for _kind, _order in _KERNEL_ORDERS.items():
    if tuple(field.name for field in dataclasses.fields(_kind)) != _order:
        raise RuntimeError(f"{_kind.__name__}'s fields are not in the order _batch.c builds")

_kernel.configure(
    TensorStats, TENSOR_FIELDS, DiffStats, DIFF_FIELDS, TensorComparison,
    _KERNEL_ORDERS[TensorComparison],
    ("unchanged", "changed", "dtype_changed"), mapped_view, DIRECT_CODES, direct_chunk,
    CHUNK_ELEMENTS,
)  # what measure_together's kernel builds, and how (diffai/_batch.c)  # fmt: skip


@dataclass(frozen=True)
class ScalarChange:
    """A non-tensor value that differs; ``None`` on a side where the key is absent."""

    name: str
    baseline: Scalar
    candidate: Scalar


@dataclass(frozen=True)
class CompareOptions:
    epsilon: float = 0.0
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    workers: int | None = None
    shard: tuple[int, int] | None = None  # (index from 1, count): measure one slice only
    strip_prefixes: Sequence[str] = ()  # taken off every name that has them (diffai.pairing)
    detect_prefixes: bool = True  # take off wrapper prefixes one side has throughout
    detect_renames: bool = True  # pair removed and added tensors by content (diffai.pairing)
    maps: Sequence[str] = ()  # name map files or built-in map names, applied first, in order
    auto_maps: bool = True  # with no maps given, a built-in map that fits one side


@dataclass(frozen=True)
class Comparison:
    baseline: Model
    candidate: Model
    tensors: list[TensorComparison]
    scalars: list[ScalarChange]
    options: CompareOptions
    #: Every selected tensor name in model order; a shard measures only some of them.
    names: tuple[str, ...] = ()
    #: What pairing did to the names before they were matched.
    mapping: Mapping = field(default_factory=Mapping)
    #: What rename detection did (off: ``enabled`` false; a shard leaves it to the merge).
    renames: RenameSearch = field(default_factory=RenameSearch)

    @property
    def identical(self) -> bool:
        return not self.scalars and all(t.status == "unchanged" for t in self.tensors)

    @cached_property
    def columns(self) -> PairColumns:
        """The pairs as columns (diffai.pair_columns), read once for the relative changes,
        the layer records and the analyses."""
        return PairColumns.of(self.tensors)

    @cached_property
    def relative_changes(self) -> dict[str, RelativeChange]:
        """Each measured pair's relative change (diffai.change), for report and analyses alike."""
        return changes_by_name(self.columns)


def compare_models(
    baseline: Model,
    candidate: Model,
    options: CompareOptions | None = None,
    on_bytes: ProgressCallback | None = None,
) -> Comparison:
    """Compare every tensor and scalar the filters select; results in model order."""
    options = options or CompareOptions()
    baseline, candidate, mapping = prepare(baseline, candidate, options)
    names, pairs = _pairs(baseline, candidate, options)
    tensors = _measure_all(pairs, options, on_bytes)
    tensors, renames = find_renames(tensors, baseline, candidate, options)
    scalars = _scalar_changes(baseline.scalars, candidate.scalars, options)
    return Comparison(
        baseline, candidate, tensors, scalars, options, tuple(names), mapping, renames
    )


def bytes_to_read(baseline: Model, candidate: Model, options: CompareOptions) -> int:
    """Total tensor bytes ``compare_models`` will stream, for a progress bar."""
    baseline, candidate, _ = prepare(baseline, candidate, options)
    return sum(_pair_bytes(base, cand) for _, base, cand in _pairs(baseline, candidate, options)[1])


Pair = tuple[str, "TensorRef | None", "TensorRef | None"]


def _pairs(
    baseline: Model, candidate: Model, options: CompareOptions
) -> tuple[list[str], list[Pair]]:
    """The selected names, and the pairs this run (or this shard) measures.

    Column-wise (``map``, ``zip``): 100,000 names took 2.7 us a pair as comprehensions of
    ``_selected`` and ``dict.get`` calls, 1.9 this way (CPU time, load 4.5, interleaved).
    When both models store the same names in the same order (a fine-tune and its base) and
    those are the names in model order, their references zip as they are: two lookups a
    name and the candidate's subset test took 1.3-1.6 us a pair, this 0.3-0.5."""
    base, cand = baseline.tensors, candidate.tensors
    stored = list(base)
    alike = len(cand) == len(stored) and list(cand) == stored
    names = model_order(base) if alike else _ordered_names(base, cand)
    if options.include or options.exclude:
        names = [name for name in names if _selected(name, options)]
    if alike and names == stored:
        pairs = list(zip(names, base.values(), cand.values(), strict=True))
    else:
        pairs = list(zip(names, map(base.get, names), map(cand.get, names), strict=True))
    if options.shard:
        members = shard_members(((n, _pair_bytes(b, c)) for n, b, c in pairs), *options.shard)
        pairs = [pair for pair in pairs if pair[0] in members]
    return names, pairs


def _ordered_names(base: dict[str, TensorRef], cand: dict[str, TensorRef]) -> list[str]:
    """Baseline order, then the candidate's new names in its order."""
    base_names = model_order(base)
    if cand.keys() <= base.keys():  # the usual case: no sort of the candidate's names
        return base_names
    return base_names + [name for name in model_order(cand) if name not in base]


def _selected(name: str, options: CompareOptions) -> bool:
    if options.include and not any(fnmatch.fnmatchcase(name, p) for p in options.include):
        return False
    return not any(fnmatch.fnmatchcase(name, p) for p in options.exclude)


def _measure_all(
    pairs: list[Pair],
    options: CompareOptions,
    on_bytes: ProgressCallback | None,
) -> list[TensorComparison]:
    """Large pairs in worker threads, largest first, small ones in this thread meanwhile,
    many to a kernel call (``measure_together``).

    The kernel releases the GIL while it sums, so large pairs keep every core busy; a small
    pair's cost is mostly reading refs and building results under the GIL. Small batches in
    two workers were no faster on the 9,552-pair MoE pair at load 4-7 on 2 cores (0.27-0.33 s
    wall against 0.25-0.31 here), the sums being ~half of their kernel call's time.

    Remote pairs up to two plan blocks are read in this thread too, in file order, after
    telling each file what will be read (``sources.plan``): its touching ranges then come as
    a few large requests, where a request each made many small tensors latency-bound.
    """
    workers = options.workers or min(8, os.cpu_count() or 1)
    # _pair_bytes inline: its call was 0.1 us a pair at 100,000 (timeit)
    sizes = [(b.nbytes if b else 0) + (c.nbytes if c else 0) for _, b, c in pairs]
    large, small = _split(sizes)
    if large and _remote(pairs[large[0]]):
        large, small = _planned(pairs, sizes, large, small)
    measured: list[TensorComparison | None] = [None] * len(pairs)

    def measure(batch: list[int]) -> None:
        batched = list(map(pairs.__getitem__, batch))
        tensors = _measure_batch(batched, options.epsilon, on_bytes, options.detect_renames)
        for index, tensor in zip(batch, tensors, strict=True):
            measured[index] = tensor

    if small and _remote(pairs[small[0]]):
        small = _in_file_order(pairs, small)
        plan_reads(ref for index in small for ref in pairs[index][1:] if ref is not None)
    if not large:
        # No thread to start: no pool, nor concurrent.futures and the logging it imports
        # (6 ms of the start-up of a run of small tensors only).
        for batch in _batches(small, sizes):
            measure(batch)
        return measured  # type: ignore[return-value]  # every index is in one batch
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        tasks = [pool.submit(measure, batch) for batch in _batches(large, sizes)]
        for batch in _batches(small, sizes):
            measure(batch)
        for task in tasks:
            task.result()
    return measured  # type: ignore[return-value]  # every index is in one batch


def _split(sizes: list[int]) -> tuple[list[int], list[int]]:
    """The large pairs largest first, so one huge tensor does not start last and run alone,
    and the small ones in model order (their sort was 0.3 us a pair at 100,000). Pairs all
    small, as a MoE model's, are told by one ``max``: the two passes took 0.3 us a pair."""
    if max(sizes, default=0) < SMALL_PAIR_BYTES:
        return [], list(range(len(sizes)))
    large = [index for index, size in enumerate(sizes) if size >= SMALL_PAIR_BYTES]
    large.sort(key=sizes.__getitem__, reverse=True)
    return large, [index for index, size in enumerate(sizes) if size < SMALL_PAIR_BYTES]


def _remote(pair: Pair) -> bool:
    """Whether the pair's values come by ranges a read plan can join (``sources.plan``)."""
    return any(ref is not None and position(ref) is not None for ref in pair[1:])


def _planned(
    pairs: list[Pair], sizes: list[int], large: list[int], small: list[int]
) -> tuple[list[int], list[int]]:
    """Remote pairs whose sides fit a plan's block go with the small ones, read in this
    thread by the plan: in worker threads each cost a round trip of its own."""
    joined = [index for index in large if sizes[index] < 2 * PLAN_BLOCK_BYTES]
    return [index for index in large if sizes[index] >= 2 * PLAN_BLOCK_BYTES], small + joined


def _in_file_order(pairs: list[Pair], indices: list[int]) -> list[int]:
    """Pairs ordered by where their values lie in the files, so a plan's touching ranges
    are read one after another (a safetensors file is in name order, models in natural)."""

    def where(index: int) -> tuple[int, int]:
        _, base, cand = pairs[index]
        return position(base if base is not None else cand) or (0, 0)  # type: ignore[arg-type]

    return sorted(indices, key=where)


def _batches(indices: list[int], sizes: list[int]) -> list[list[int]]:
    """Small tensors several to a task: one task each cost 1 of 5 s on 10,000 tiny tensors."""
    batches: list[list[int]] = []
    current: list[int] = []
    size = 0
    for index in indices:
        current.append(index)
        size += sizes[index]
        if size >= BATCH_BYTES:
            batches.append(current)
            current, size = [], 0
    return [*batches, current] if current else batches


def _measure_batch(
    batch: list[Pair], epsilon: float, on_bytes: ProgressCallback | None, fingerprint: bool
) -> list[TensorComparison]:
    """The batch's pairs, those the kernel takes in one call (``measure_together``), the others
    alone; a batch the kernel fails on is measured alone, which names the tensor."""
    try:
        together = measure_together(batch, epsilon)
    except (OSError, ValueError, TypeError):
        together = [None] * len(batch)
    _report_taken(batch, together, on_bytes)  # outside the try: a callback's error is its own
    if all(together):  # every pair taken, the usual case: no second pass (0.1 us a pair)
        return together  # type: ignore[return-value]  # no None among them
    return [
        tensor or _measure_alone(pair, epsilon, on_bytes, fingerprint)
        for pair, tensor in zip(batch, together, strict=True)
    ]


def _measure_alone(
    pair: Pair, epsilon: float, on_bytes: ProgressCallback | None, fingerprint: bool
) -> TensorComparison:
    """A pair the batch's one kernel call did not take, its read errors naming the tensor."""
    name, base, cand = pair
    try:
        status, *stats, print_ = _classify(base, cand, epsilon, on_bytes, fingerprint)
    except DiffaiError:
        raise
    except (OSError, ValueError, TypeError) as exc:
        raise UnreadableModel(f"tensor {name!r}", f"cannot read its values: {exc}") from exc
    return TensorComparison(name, status, *stats, _role_hint(base, cand), print_)


def measure_together(
    batch: list[Pair], epsilon: float, on_bytes: ProgressCallback | None = None
) -> list[TensorComparison | None]:
    """The batch's small same-shaped pairs measured and built in one kernel call
    (``_kernel.measure_pairs``, diffai/_batch.c); None for a pair to measure alone.

    On 100,000 pairs of 8 x 8 the Python around the kernel's figures took ~18 us a pair (a
    numpy view per side, three frozen dataclasses, the status); this call took 4.7 us, the
    whole of ``compare_models`` 7.6 (CPU time, load 3, the measure stage's branch).
    """
    measured: list[TensorComparison | None] = _kernel.measure_pairs(batch, epsilon)
    _report_taken(batch, measured, on_bytes)
    return measured


def _report_taken(
    batch: list[Pair], measured: list[TensorComparison | None], on_bytes: ProgressCallback | None
) -> None:
    """The bytes of the pairs the kernel measured; a None pair's are reported by the
    ``measure_pair`` that reads it."""
    if on_bytes is not None:
        taken = (pair for pair, tensor in zip(batch, measured, strict=True) if tensor)
        on_bytes(sum(_pair_bytes(base, cand) for _, base, cand in taken))


def _comparable(base: TensorRef, cand: TensorRef) -> bool:
    """Whether the pair has an element-wise difference: same shape, both complex or neither."""
    return base.shape == cand.shape and is_complex(base.dtype) == is_complex(cand.dtype)


def _role_hint(base: TensorRef | None, cand: TensorRef | None) -> Role | None:
    """A hint one side lacks is no hint: a constant that became a weight is judged as one."""
    if base is None or cand is None:
        return (cand if base is None else base).role_hint  # type: ignore[union-attr]
    return base.role_hint if base.role_hint == cand.role_hint else None


def _pair_bytes(base: TensorRef | None, cand: TensorRef | None) -> int:
    return (base.nbytes if base else 0) + (cand.nbytes if cand else 0)


#: A status and what was measured: baseline stats, candidate stats, difference, and a
#: removed or added tensor's fingerprint.
Measured = tuple[
    Status, "TensorStats | None", "TensorStats | None", "DiffStats | None", "Fingerprint | None"
]


def _classify(
    base: TensorRef | None,
    cand: TensorRef | None,
    epsilon: float,
    on_bytes: ProgressCallback | None,
    fingerprint: bool = False,
) -> Measured:
    """``fingerprint``: fingerprint a removed or added tensor for rename detection."""
    if base is None and cand is not None:
        stats, print_ = _one_side(cand, on_bytes, fingerprint)
        return "added", None, stats, None, print_
    if cand is None and base is not None:
        stats, print_ = _one_side(base, on_bytes, fingerprint)
        return "removed", stats, None, None, print_
    assert base is not None and cand is not None
    if not _comparable(base, cand):
        status: Status = "shape_changed" if base.shape != cand.shape else "dtype_changed"
        return status, measure_tensor(base, on_bytes), measure_tensor(cand, on_bytes), None, None
    base_stats, cand_stats, diff = measure_pair(base, cand, epsilon, on_bytes)
    return _status(base_stats, cand_stats, diff), base_stats, cand_stats, diff, None


def _status(base: TensorStats, cand: TensorStats, diff: DiffStats) -> Status:
    """A same-shaped pair's status, from its statistics (which hold the refs' dtypes: the
    refs' ``stored_dtype`` property cost 0.7 us a pair)."""
    if base.stored_dtype != cand.stored_dtype or base.dtype != cand.dtype:
        return "dtype_changed"
    return "changed" if diff.changed else "unchanged"


def _one_side(
    ref: TensorRef, on_bytes: ProgressCallback | None, fingerprint: bool
) -> tuple[TensorStats, Fingerprint | None]:
    """A removed or added tensor's statistics, fingerprinted in the same pass when asked."""
    printer = fingerprinter(ref) if fingerprint else None
    if printer is None:
        return measure_tensor(ref, on_bytes), None
    return measure_tensor(ref, on_bytes, printer), printer.result()


def _scalar_changes(
    base: dict[str, Scalar], cand: dict[str, Scalar], options: CompareOptions
) -> list[ScalarChange]:
    names = [n for n in list(base) + [n for n in cand if n not in base] if _selected(n, options)]
    return [
        ScalarChange(name, base.get(name), cand.get(name))
        for name in names
        if not _same_scalar(base.get(name), cand.get(name)) or (name in base) != (name in cand)
    ]


def _same_scalar(left: Scalar, right: Scalar) -> bool:
    if isinstance(left, float) and isinstance(right, float) and math.isnan(left):
        return math.isnan(right)
    return type(left) is type(right) and left == right
