"""The bounded second read that confirms a rename: just the pair, from the models' files.

``renames`` decides which pairs to read; this module reads them: the removed tensor
(transposed through a view when asked) against the added one, in the same chunked
pass as any pair (``stats.measure_pair``), so memory stays one chunk per side.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from diffai.errors import DiffaiError, UnreadableModel
from diffai.model import Model, TensorRef
from diffai.pairing.renames import TRANSPOSE_BYTES, Confirm, RenameSearch, pair_renames
from diffai.stats import DiffStats, measure_pair

if TYPE_CHECKING:
    from diffai.comparison import CompareOptions, TensorComparison


def find_renames(
    tensors: list[TensorComparison], baseline: Model, candidate: Model, options: CompareOptions
) -> tuple[list[TensorComparison], RenameSearch]:
    """Pair renames, unless turned off or this is a shard (``diffai merge`` pairs across them)."""
    if not options.detect_renames:
        return tensors, RenameSearch(enabled=False)
    if options.shard:
        return tensors, RenameSearch()
    return pair_renames(tensors, model_reader(baseline, candidate), options.epsilon)


def model_reader(baseline: Model, candidate: Model) -> Confirm:
    def confirm(old: str, new: str, transposed: bool, epsilon: float) -> DiffStats | None:
        base = baseline.tensors[old]
        view = transposed_view(base) if transposed else base
        if view is None:
            return None
        return read_pair(view, candidate.tensors[new], epsilon)

    return confirm


def files_reader(
    baseline_path: str, candidate_path: str, options: CompareOptions, measured: dict[str, Any]
) -> Confirm:
    """For ``diffai merge``: pairs read from the model files the shard reports name, opened
    on the first confirmation; None for every pair when they cannot be opened or are not
    the files the shards measured (another inventory of names, shapes and dtypes)."""
    models: list[tuple[Model, Model] | None] = []

    def confirm(old: str, new: str, transposed: bool, epsilon: float) -> DiffStats | None:
        if not models:
            models.append(_reopened(baseline_path, candidate_path, options, measured))
        opened = models[0]
        return None if opened is None else model_reader(*opened)(old, new, transposed, epsilon)

    return confirm


def _reopened(
    baseline_path: str, candidate_path: str, options: CompareOptions, measured: dict[str, Any]
) -> tuple[Model, Model] | None:
    from diffai.formats import open_model  # the readers only when a merge confirms a rename

    try:
        baseline, candidate = open_model(baseline_path), open_model(candidate_path)
    except DiffaiError:
        return None
    from diffai.pairing import prepare  # the maps too: the shards measured mapped names

    baseline, candidate, _ = prepare(baseline, candidate, options)
    same = [inventory(baseline), inventory(candidate)] == [measured["baseline"],
                                                          measured["candidate"]]  # fmt: skip
    return (baseline, candidate) if same else None


def inventory(model: Model) -> list[list[Any]]:
    """Each tensor's [name, shape, dtype]: what a shard report says the files hold."""
    return [[name, list(ref.shape), ref.dtype] for name, ref in model.tensors.items()]


def transposed_view(ref: TensorRef) -> TensorRef | None:
    """A 2-D tensor read as its transpose, chunk by chunk; None when that needs it whole and
    it is over ``TRANSPOSE_BYTES`` (a streamed tensor: deflated, dequantized, remote)."""
    load = ref.load
    if load is not None:
        return TensorRef(ref.name, ref.shape[::-1], ref.dtype, load=lambda: load().T)
    if ref.nbytes > TRANSPOSE_BYTES:
        return None
    return TensorRef(ref.name, ref.shape[::-1], ref.dtype, load=lambda: ref.array().T)


def read_pair(base: TensorRef, cand: TensorRef, epsilon: float) -> DiffStats:
    try:
        return measure_pair(base, cand, epsilon)[2]
    except DiffaiError:
        raise
    except (OSError, ValueError, TypeError) as exc:
        names = f"tensors {base.name!r} and {cand.name!r}"
        raise UnreadableModel(names, f"cannot read their values: {exc}") from exc
