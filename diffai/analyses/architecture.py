"""architecture_comparison: same family, same size, and can the old loader take the new weights?

The family comes from tensor names and shapes (attention projections ->
transformer, recurrent ``weight_ih``/``weight_hh`` -> rnn, 3-5-D kernels -> cnn,
2-D matrices only -> feedforward). ``migration`` answers whether code that
loads the baseline loads the candidate: ``easy`` when names and shapes match
(dtype casts load), ``moderate`` when tensors were only added or removed (a
non-strict load works but leaves gaps), ``hard`` when a shape changed or the
family did.

Each model is read as columns (names, shapes, roles, elements in model order),
each ref and pair read once (``Model.columns``, ``Comparison.columns``): the dict of shapes a
side and the regex a name they replaced cost 4.4 us a tensor pair at 100,000 pairs (see
``analyze``).
"""

from __future__ import annotations

import re
from collections import Counter
from itertools import compress
from typing import Any, NamedTuple

from diffai.analyses.common import ratio
from diffai.comparison import Comparison
from diffai.model import Model
from diffai.ref_columns import RefColumns
from diffai.roles import MODEL_ROLES, Role

SIMILAR_PARAMETERS = 0.05  # within ±5% parameters counts as similar complexity
_ATTENTION = re.compile(
    r"(^|[._])(attn|attention|self_attn|cross_attn|q_proj|k_proj|v_proj|query|key|value|c_attn|wq|wk|wv)([._]|$)"
)
_RECURRENT = re.compile(r"(^|[._])(weight_ih|weight_hh|lstm|gru|rnn)")
_BLOCK_INDEX = re.compile(r"^(.*?)\.(\d+)\.")
#: ``_BLOCK_INDEX`` over names one a line, a match taking with it the lines that follow with
#: the same block prefix and index: a model's names come a block at a time, so 100,000
#: names are ~500 matches, 10 ms against 72 ms for a match a name. A following line that
#: starts with the first's ``prefix.index.`` has that smallest prefix too (a shorter one
#: would lie inside the shared start, so the first line would have had it).
_BLOCK_RUNS = re.compile(r"^(.*?)\.(\d+)\.[^\n]*(?:\n\1\.\2\.[^\n]*)*", re.MULTILINE)
READINESS = {"easy": "ready", "moderate": "review", "hard": "not_drop_in"}


class Loadable(NamedTuple):
    """What a state-dict loader sees of a model (weights, buffers and counters, not the
    training state), as columns in model order, and its parameters (``Model.parameters``)."""

    names: list[str]
    shapes: list[tuple[int, ...]]
    parameters: int


def analyze(comparison: Comparison) -> dict[str, Any]:
    base_refs, cand_refs = comparison.baseline.columns, comparison.candidate.columns
    base_roles, cand_roles = _roles(comparison, base_refs, cand_refs)
    base = _loadable(comparison.baseline, base_refs, base_roles)
    cand = _loadable(comparison.candidate, cand_refs, cand_roles)
    same = _same(base, cand)  # the usual case: no second description nor sets of names
    type1, depth1 = _describe(base)
    type2, depth2 = (type1, depth1) if same else _describe(cand)
    params1, params2 = base.parameters, cand.parameters
    added, removed, reshaped = ([], [], []) if same else _differences(base, cand)
    migration = _migration(type1 != type2, bool(added or removed), bool(reshaped))
    return {
        "type1": type1,
        "type2": type2,
        "complexity": _complexity(params1, params2),
        "migration": migration,
        "deployment_readiness": READINESS[migration],
        "parameters_baseline": params1,
        "parameters_candidate": params2,
        "parameter_change": ratio(params2 - params1, params1),
        "depth_baseline": depth1,
        "depth_candidate": depth2,
        "added": added,
        "removed": removed,
        "reshaped": reshaped,
    }


def _roles(
    comparison: Comparison, base: RefColumns, cand: RefColumns
) -> tuple[list[Role], list[Role]]:
    """Each side's roles (``role_of(name, hint)``), in model order.

    When the comparison paired every tensor by its name with the hint both sides give it
    (the usual case), a pair's role is each side's: read from the comparison. Else each
    model's own (``Model.roles``, which ``Model.parameters`` counts by): a merged report's
    pairs hint the role their shard decided, which its models' tensors do not hold."""
    if len(comparison.tensors) == len(base.names) and cand.names == base.names:
        pairs = comparison.columns
        if pairs.names == base.names and pairs.hints == base.hints == cand.hints:
            return pairs.roles, pairs.roles
    return comparison.baseline.roles, comparison.candidate.roles


def _loadable(model: Model, refs: RefColumns, roles: list[Role]) -> Loadable:
    names, shapes = refs.names, refs.shapes
    if not MODEL_ROLES.issuperset(roles):
        loaded = [role in MODEL_ROLES for role in roles]
        names, shapes = list(compress(names, loaded)), list(compress(shapes, loaded))
    return Loadable(names, shapes, model.parameters)  # counted once a model, for the report too


def _same(base: Loadable, cand: Loadable) -> bool:
    """The same names with the same shapes, in any order."""
    if base.names == cand.names and base.shapes == cand.shapes:
        return True
    return _by_name(base) == _by_name(cand)


def _by_name(side: Loadable) -> dict[str, tuple[int, ...]]:
    return dict(zip(side.names, side.shapes, strict=True))


def _describe(side: Loadable) -> tuple[str, int]:
    return model_family(side), model_depth(side)


def _differences(base: Loadable, cand: Loadable) -> tuple[list[str], list[str], list[str]]:
    """The names added, removed and reshaped, each sorted."""
    before, after = _by_name(base), _by_name(cand)
    common = before.keys() & after.keys()
    return (
        sorted(after.keys() - before.keys()),
        sorted(before.keys() - after.keys()),
        sorted(n for n in common if before[n] != after[n]),
    )


def model_family(side: Loadable) -> str:
    if any(_ATTENTION.search(name.lower()) for name in side.names):  # lowered as searched
        return "transformer"
    if any(_RECURRENT.search(name.lower()) for name in side.names):
        return "rnn"
    if any(3 <= len(shape) <= 5 for shape in side.shapes):
        return "cnn"
    if any(len(shape) == 2 for shape in side.shapes):
        return "feedforward"
    return "unknown"


def model_depth(side: Loadable) -> int:
    """Repeated blocks (``layer.0`` … ``layer.11`` -> 12), else the number of weight matrices."""
    blocks = Counter(prefix for prefix, _ in _block_indices(side.names))
    if blocks:
        return max(blocks.values())
    return sum(1 for shape in side.shapes if len(shape) >= 2)


def _block_indices(names: list[str]) -> set[tuple[str, str]]:
    """The distinct (block prefix, index) pairs ``_BLOCK_INDEX`` finds in the names.

    Names are matched one a line (``_BLOCK_RUNS``); names holding a newline, which would
    split their line, are matched alone."""
    text = "\n".join(names)
    if text.count("\n") > max(len(names) - 1, 0):
        text = "\n".join(name for name in names if "\n" not in name)
        matches = (_BLOCK_INDEX.match(name) for name in names if "\n" in name)
        return set(_BLOCK_RUNS.findall(text)) | {(m[1], m[2]) for m in matches if m}
    return set(_BLOCK_RUNS.findall(text))


def _complexity(params1: int, params2: int) -> str:
    change = ratio(params2 - params1, params1)
    if change is None:
        return "similar_complexity" if params2 == 0 else "increased_complexity"
    if abs(change) <= SIMILAR_PARAMETERS:
        return "similar_complexity"
    return "increased_complexity" if change > 0 else "reduced_complexity"


def _migration(family_changed: bool, names_changed: bool, reshaped: bool) -> str:
    if family_changed or reshaped:
        return "hard"
    return "moderate" if names_changed else "easy"
