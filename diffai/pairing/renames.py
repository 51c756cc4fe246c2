"""Renames: removed and added tensors that hold the same values become one ``renamed`` pair.

After names pair, what is left is removed (baseline only) and added (candidate only).
Each of them was fingerprinted in the pass that measured it (``fingerprint``). Three
ways a removed tensor ``o`` and an added tensor ``n`` are the same tensor, each
*confirmed element-wise* by a bounded second read of just that pair before it is trusted,
since a hostile file can give unrelated tensors the same fingerprint or statistics:

- ``exact``: same role, dtype and shape, same hash; confirmed when no element differs.
- ``transposed``: 2-D, shape (r, c) against (c, r) (or square), same hash (it is
  order-free); confirmed when ``oᵀ`` equals ``n`` element by element, read through a
  transposed view in chunks (a memory map's strided view; a streamed tensor up to
  ``TRANSPOSE_BYTES`` assembled, beyond that not tried).
- ``near`` (renamed *and* fine-tuned): same role, dtype and shape, all values finite,
  at least ``NEAR_MIN_ELEMENTS``; candidates come from a locality-sensitive hash of the
  centred samples (``_lsh``), ranked by sample correlation; confirmed when the pair's
  element-wise diff has cosine ≥ ``NEAR_MIN_COSINE``, relative L2 ≤
  ``NEAR_MAX_RELATIVE_L2`` and Pearson correlation ≥ ``NEAR_MIN_CORRELATION``. The
  correlation is what rejects tensors that merely sit near the same constant (two
  layers' LayerNorm weights, all ≈ 1, have cosine 0.999 but are unrelated around it).
  Confidence = min(cosine, correlation); exact and transposed pairs have 1.

A pair is made only when it is the *only* confirmed match of both its tensors: two
look-alikes that both pass are ambiguous and left removed and added (listed in the
report's ``renamed.ambiguous``), never guessed. Tensors under ``MIN_ELEMENTS`` values are
not matched: that few equal values are too likely to be a coincidence.

Cost stays linear in the number of tensors (bar a sort): one dict of hash buckets, and
per shape the LSH bands as sorted arrays; a bucket with more than ``BUCKET_CAP`` tensors
on a side is ambiguous without a read, an LSH band entry with more than ``BAND_CAP`` is
ignored, and each removed tensor has at most ``NEAR_CANDIDATES`` near candidates
confirmed; so confirmation reads at most ``BUCKET_CAP + NEAR_CANDIDATES`` pairs per
removed tensor, whatever the file does.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from diffai.pairing.fingerprint import MIN_ELEMENTS, SAMPLE
from diffai.stats import DiffStats, TensorStats

if TYPE_CHECKING:  # comparison imports this module: types only
    from diffai.comparison import TensorComparison

Match = Literal["exact", "transposed", "near"]

BUCKET_CAP = 4
NEAR_MIN_ELEMENTS = 64
NEAR_MIN_COSINE = 0.9
NEAR_MAX_RELATIVE_L2 = 0.5
NEAR_MIN_CORRELATION = 0.9
#: Sample correlation a near candidate needs to be confirmed at all; unrelated tensors sit
#: at 0 ± 0.09 (128 samples), confirmed pairs at ≥ 0.9 ± 0.02.
NEAR_SAMPLE_FLOOR = 0.5
NEAR_CANDIDATES = 4
BAND_CAP = 32
BANDS, BAND_BITS = 16, 16
#: Nominated pairs scored at a time: two 8 MiB blocks of samples.
SCORE_BLOCK = 8192
#: A streamed tensor (no memory map) is assembled whole to be read transposed up to this.
TRANSPOSE_BYTES = 64 * 1024 * 1024

#: Reads the pair (removed name, added name), the removed one transposed or not, at an
#: epsilon: their diff, or None when the values cannot be had (``diffai merge``).
Confirm = Callable[[str, str, bool, float], "DiffStats | None"]


@dataclass(frozen=True)
class Rename:
    """How a ``renamed`` tensor was paired: its baseline name, the match, the confidence."""

    baseline_name: str
    match: Match
    confidence: float

    def to_json(self) -> dict[str, Any]:
        return {"from": self.baseline_name, "match": self.match, "confidence": self.confidence}


@dataclass(frozen=True)
class Candidates:
    """Tensors content matching could not tell apart (ambiguous), or could not read."""

    baseline: tuple[str, ...]
    candidate: tuple[str, ...]
    match: Match

    def to_json(self) -> dict[str, Any]:
        return {"baseline": list(self.baseline), "candidate": list(self.candidate),
                "match": self.match}  # fmt: skip


@dataclass(frozen=True)
class RenameSearch:
    """What rename detection did, for the report's ``renamed`` section."""

    enabled: bool = True
    ambiguous: tuple[Candidates, ...] = ()
    #: Pairs a fingerprint or the statistics nominated and the element-wise read refused.
    rejected: int = 0
    confirmations: int = 0
    #: Pairs ``diffai merge`` could not confirm without the model files: not paired.
    unconfirmed: tuple[Candidates, ...] = ()

    def to_json(self, tensors: Iterable[TensorComparison]) -> dict[str, Any]:
        pairs = [
            {"baseline": t.rename.baseline_name, "candidate": t.name,
             "match": t.rename.match, "confidence": t.rename.confidence}
            for t in tensors
            if t.rename is not None
        ]
        return {
            "enabled": self.enabled,
            "pairs": pairs,
            "ambiguous": [c.to_json() for c in self.ambiguous],
            "unconfirmed": [c.to_json() for c in self.unconfirmed],
            "rejected": self.rejected,
            "confirmations": self.confirmations,
        }


@dataclass(frozen=True)
class _Edge:
    old: TensorComparison
    new: TensorComparison
    diff: DiffStats
    match: Match
    confidence: float


@dataclass
class _Search:
    confirm: Confirm
    epsilon: float
    edges: list[_Edge] = dataclasses.field(default_factory=list)
    ambiguous: list[Candidates] = dataclasses.field(default_factory=list)
    unconfirmed: list[Candidates] = dataclasses.field(default_factory=list)
    rejected: int = 0
    confirmations: int = 0
    #: Each unpaired tensor's role, decided once (``role_of`` runs five patterns).
    roles: dict[str, str] = dataclasses.field(default_factory=dict)

    def read(self, old: str, new: str, transposed: bool, epsilon: float) -> DiffStats | None:
        self.confirmations += 1
        return self.confirm(old, new, transposed, epsilon)


def pair_renames(
    tensors: list[TensorComparison], confirm: Confirm, epsilon: float
) -> tuple[list[TensorComparison], RenameSearch]:
    """``tensors`` with each confirmed rename as one ``renamed`` record in the removed one's
    place, and what the search did."""
    search = _Search(confirm, epsilon)
    one_sided = _one_sided(tensors)
    removed, added = _unpaired(one_sided, "removed"), _unpaired(one_sided, "added")
    search.roles = {t.name: t.role for t in (*removed, *added)}
    paired = _exact(removed, added, search)
    # A pair already made, or one merge could not read, is not looked at again as near-equal.
    taken = {t.name for edge in paired for t in (edge.old, edge.new)}
    taken |= {name for c in search.unconfirmed for name in (*c.baseline, *c.candidate)}
    near = _near(_left(removed, taken), _left(added, taken), search)
    result = _merged(tensors, [*paired, *near])
    return result, RenameSearch(True, tuple(search.ambiguous), search.rejected,
                                search.confirmations, tuple(search.unconfirmed))  # fmt: skip


def _one_sided(tensors: list[TensorComparison]) -> list[TensorComparison]:
    """The removed and added tensors; none, as in a fine-tune, told by one pass in C over the
    statuses (two comprehensions took 0.2 us a pair at 100,000)."""
    if _ONE_SIDED.isdisjoint(map(_status, tensors)):
        return []
    return [t for t in tensors if t.status in _ONE_SIDED]


_ONE_SIDED = frozenset({"removed", "added"})
_status = operator.attrgetter("status")


def _unpaired(tensors: list[TensorComparison], status: str) -> list[TensorComparison]:
    return [
        t for t in tensors
        if t.status == status and t.fingerprint is not None and _side(t).elements >= MIN_ELEMENTS
    ]  # fmt: skip


def _left(tensors: list[TensorComparison], taken: set[str]) -> list[TensorComparison]:
    return [t for t in tensors if t.name not in taken]


def _side(tensor: TensorComparison) -> TensorStats:
    side = tensor.baseline or tensor.candidate
    assert side is not None  # a removed or added tensor has its one side
    return side


# --- exact and transposed: a hash join ---------------------------------------------------


def _exact_key(tensor: TensorComparison, role: str) -> tuple[Any, ...]:
    side = _side(tensor)
    shape = tuple(sorted(side.shape)) if len(side.shape) == 2 else side.shape
    assert tensor.fingerprint is not None
    return role, side.dtype, shape, tensor.fingerprint.hash


def _exact(
    removed: list[TensorComparison], added: list[TensorComparison], search: _Search
) -> list[_Edge]:
    buckets: dict[tuple[Any, ...], tuple[list[TensorComparison], list[TensorComparison]]]
    buckets = defaultdict(lambda: ([], []))
    for side, tensors in enumerate((removed, added)):
        for tensor in tensors:
            buckets[_exact_key(tensor, search.roles[tensor.name])][side].append(tensor)
    edges: list[_Edge] = []
    for olds, news in buckets.values():
        if olds and news:
            edges += _exact_bucket(olds, news, search)
    return edges


def _exact_bucket(
    olds: list[TensorComparison], news: list[TensorComparison], search: _Search
) -> list[_Edge]:
    if len(olds) > BUCKET_CAP or len(news) > BUCKET_CAP:
        search.ambiguous.append(_candidates(olds, news, "exact"))
        return []
    found = [edge for old in olds for new in news if (edge := _same(old, new, search))]
    return _unique(found, search)


def _same(old: TensorComparison, new: TensorComparison, search: _Search) -> _Edge | None:
    """The exact or transposed match of the pair, read element by element, if it holds."""
    old_shape, new_shape = _side(old).shape, _side(new).shape
    tries: list[tuple[bool, Match]] = []
    if old_shape == new_shape:
        tries.append((False, "exact"))
    if len(old_shape) == 2 and old_shape[::-1] == new_shape:
        tries.append((True, "transposed"))
    for transposed, match in tries:
        diff = search.read(old.name, new.name, transposed, 0.0)
        if diff is None:
            search.unconfirmed.append(_candidates([old], [new], match))
            return None
        if diff.changed == 0:
            return _Edge(old, new, diff, match, 1.0)
    search.rejected += 1
    return None


def _unique(edges: list[_Edge], search: _Search) -> list[_Edge]:
    """The edges whose two tensors have no other edge; the rest reported as ambiguous."""
    degree: dict[int, int] = defaultdict(int)
    for edge in edges:
        degree[id(edge.old)] += 1
        degree[id(edge.new)] += 1
    alone = [degree[id(e.old)] == 1 and degree[id(e.new)] == 1 for e in edges]
    unique = [edge for edge, single in zip(edges, alone, strict=True) if single]
    tangled = [edge for edge, single in zip(edges, alone, strict=True) if not single]
    if tangled:
        olds = list({id(e.old): e.old for e in tangled}.values())
        news = list({id(e.new): e.new for e in tangled}.values())
        search.ambiguous.append(_candidates(olds, news, tangled[0].match))
    return unique


def _candidates(
    olds: list[TensorComparison], news: list[TensorComparison], match: Match
) -> Candidates:
    return Candidates(tuple(t.name for t in olds), tuple(t.name for t in news), match)


# --- near-equal: locality-sensitive hashing of the samples, then the element-wise diff ---

@functools.cache
def _planes() -> np.ndarray:
    """The random hyperplanes of ``_lsh``, fixed by their seed. Made on first use: importing
    ``numpy.random`` was 20 ms of every run's start, and most runs hash no sample."""
    return np.random.default_rng(15).standard_normal((BANDS * BAND_BITS, SAMPLE))


def _near_ready(tensor: TensorComparison) -> bool:
    side = _side(tensor)
    assert tensor.fingerprint is not None
    return (
        tensor.fingerprint.sample is not None
        and side.elements >= NEAR_MIN_ELEMENTS
        and side.nan == 0
        and side.inf == 0
        and bool(side.std)
    )


def _near(
    removed: list[TensorComparison], added: list[TensorComparison], search: _Search
) -> list[_Edge]:
    groups: dict[tuple[Any, ...], tuple[list[TensorComparison], list[TensorComparison]]]
    groups = defaultdict(lambda: ([], []))
    for side, tensors in enumerate((removed, added)):
        for tensor in filter(_near_ready, tensors):
            key = search.roles[tensor.name], _side(tensor).dtype, _side(tensor).shape
            groups[key][side].append(tensor)
    edges: list[_Edge] = []
    for olds, news in groups.values():
        if olds and news:
            edges += _unique(_near_group(olds, news, search), search)
    return edges


def _near_group(
    olds: list[TensorComparison], news: list[TensorComparison], search: _Search
) -> list[_Edge]:
    old_samples, new_samples = _centred(olds), _centred(news)
    pairs = _band_pairs(_lsh(old_samples), _lsh(new_samples))
    scores = _scores(old_samples, new_samples, pairs)
    edges = []
    for old, new in _best(pairs, scores):
        if edge := _close(olds[old], news[new], search):
            edges.append(edge)
    return edges


def _centred(tensors: list[TensorComparison]) -> np.ndarray:
    """Each tensor's sample, centred and scaled to unit norm: dot products are correlations."""
    samples = np.stack([t.fingerprint.sample for t in tensors])  # type: ignore[union-attr]
    samples = samples - samples.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(samples, axis=1, keepdims=True)
    return np.divide(samples, norms, out=np.zeros_like(samples), where=norms > 0)


def _lsh(samples: np.ndarray) -> np.ndarray:
    """``BANDS`` keys of ``BAND_BITS`` random-hyperplane signs each (SimHash), per row.

    Two samples with correlation r agree on a sign with probability p = 1 − arccos(r)/π, so
    they share at least one band with probability 1 − (1 − p¹⁶)¹⁶: 0.99997 at r = 0.99,
    0.96 at 0.95, 0.76 at 0.9; an unrelated pair 0.0002.
    """
    signs = samples @ _planes()[:, : samples.shape[1]].T > 0
    packed = np.packbits(signs.reshape(len(samples), BANDS, BAND_BITS), axis=2)
    return packed.view(">u2").reshape(len(samples), BANDS)


def _band_pairs(old_keys: np.ndarray, new_keys: np.ndarray) -> np.ndarray:
    """(old, new) index pairs sharing a band key (once per band shared); a key that more than
    ``BAND_CAP`` new tensors share nominates nobody. Sorted arrays and ``searchsorted``."""
    found = [np.empty((0, 2), np.int64)]
    for band in range(BANDS):
        order = np.argsort(new_keys[:, band], kind="stable")
        keys = new_keys[order, band]
        low = np.searchsorted(keys, old_keys[:, band], "left")
        counts = np.searchsorted(keys, old_keys[:, band], "right") - low
        counts[counts > BAND_CAP] = 0
        olds = np.repeat(np.arange(len(old_keys)), counts)
        starts = np.repeat(low, counts) + _ranks(counts)
        found.append(np.stack([olds, order[starts]], axis=1))
    return np.concatenate(found)


def _scores(old_samples: np.ndarray, new_samples: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Each pair's sample correlation, ``SCORE_BLOCK`` pairs at a time (bounded memory)."""
    scores = np.empty(len(pairs))
    for start in range(0, len(pairs), SCORE_BLOCK):
        block = pairs[start : start + SCORE_BLOCK]
        olds, news = old_samples[block[:, 0]], new_samples[block[:, 1]]
        scores[start : start + SCORE_BLOCK] = np.einsum("ij,ij->i", olds, news)
    return scores


def _ranks(counts: np.ndarray) -> np.ndarray:
    """0, 1, … within each run of ``np.repeat(…, counts)``."""
    ends = np.cumsum(counts)
    return np.arange(ends[-1] if len(ends) else 0) - np.repeat(ends - counts, counts)


def _best(pairs: np.ndarray, scores: np.ndarray) -> list[tuple[int, int]]:
    """Per removed tensor, its ``NEAR_CANDIDATES`` best-scoring pairs at ``NEAR_SAMPLE_FLOOR``
    or more, best first."""
    keep = scores >= NEAR_SAMPLE_FLOOR  # few pass: only they are made unique
    pairs, index = np.unique(pairs[keep], axis=0, return_index=True)
    scores = scores[keep][index]
    order = np.lexsort((-scores, pairs[:, 0]))
    pairs = pairs[order]
    counts = np.unique(pairs[:, 0], return_counts=True)[1]
    top = _ranks(counts) < NEAR_CANDIDATES
    return [(int(old), int(new)) for old, new in pairs[top]]


def _close(old: TensorComparison, new: TensorComparison, search: _Search) -> _Edge | None:
    diff = search.read(old.name, new.name, False, search.epsilon)
    if diff is None:
        search.unconfirmed.append(_candidates([old], [new], "near"))
        return None
    correlation = _correlation(diff, _side(old), _side(new))
    cosine, relative = diff.cosine, diff.relative_l2
    if (
        cosine is not None and cosine >= NEAR_MIN_COSINE
        and relative is not None and relative <= NEAR_MAX_RELATIVE_L2
        and correlation is not None and correlation >= NEAR_MIN_CORRELATION
    ):  # fmt: skip
        return _Edge(old, new, diff, "near", min(cosine, correlation))
    search.rejected += 1
    return None


def _correlation(diff: DiffStats, base: TensorStats, cand: TensorStats) -> float | None:
    """Pearson's r from the pair's sums: (Σbc − n·m_b·m_c) / (n·s_b·s_c), all values finite."""
    if None in (diff.cosine, diff.baseline_l2, diff.candidate_l2, base.std, cand.std):
        return None
    dot = diff.cosine * diff.baseline_l2 * diff.candidate_l2  # type: ignore[operator]
    count = base.elements
    value = (dot - count * base.mean * cand.mean) / (count * base.std * cand.std)  # type: ignore[operator]
    return max(-1.0, min(1.0, value)) if math.isfinite(value) else None


# --- the result -----------------------------------------------------------------------------


def _merged(tensors: list[TensorComparison], edges: list[_Edge]) -> list[TensorComparison]:
    if not edges:  # the usual case: the id() pass took 0.2 us a tensor at 100,000
        return tensors
    by_old = {id(edge.old): edge for edge in edges}
    gone = {id(edge.new) for edge in edges}
    return [
        _renamed(by_old[id(t)]) if id(t) in by_old else t for t in tensors if id(t) not in gone
    ]


def _renamed(edge: _Edge) -> TensorComparison:
    rename = Rename(edge.old.name, edge.match, edge.confidence)
    return dataclasses.replace(
        edge.new, status="renamed", baseline=edge.old.baseline, diff=edge.diff, rename=rename
    )
