"""architecture_comparison: same family, same size, and can the old loader take the new weights?

The family comes from tensor names and shapes (attention projections ->
transformer, recurrent ``weight_ih``/``weight_hh`` -> rnn, 3-5-D kernels -> cnn,
2-D matrices only -> feedforward). ``migration`` answers whether code that
loads the baseline loads the candidate: ``easy`` when names and shapes match
(dtype casts load), ``moderate`` when tensors were only added or removed (a
non-strict load works but leaves gaps), ``hard`` when a shape changed or the
family did.
"""

from __future__ import annotations

import re
from typing import Any

from diffai.analyses.common import ratio
from diffai.comparison import Comparison
from diffai.model import Model
from diffai.roles import MODEL_ROLES, role_of

SIMILAR_PARAMETERS = 0.05  # within ±5% parameters counts as similar complexity
_ATTENTION = re.compile(
    r"(^|[._])(attn|attention|self_attn|cross_attn|q_proj|k_proj|v_proj|query|key|value|c_attn|wq|wk|wv)([._]|$)"
)
_RECURRENT = re.compile(r"(^|[._])(weight_ih|weight_hh|lstm|gru|rnn)")
_BLOCK_INDEX = re.compile(r"^(.*?)\.(\d+)\.")
READINESS = {"easy": "ready", "moderate": "review", "hard": "not_drop_in"}


def analyze(comparison: Comparison) -> dict[str, Any]:
    base, cand = _shapes(comparison.baseline), _shapes(comparison.candidate)
    same = cand == base  # the usual case: no second regex a name (0.8 us) nor sets of names
    type1, depth1 = _describe(base)
    type2, depth2 = (type1, depth1) if same else _describe(cand)
    params1, params2 = comparison.baseline.parameters, comparison.candidate.parameters
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


def _describe(shapes: dict[str, tuple[int, ...]]) -> tuple[str, int]:
    return model_family(shapes), model_depth(shapes)


def _differences(
    base: dict[str, tuple[int, ...]], cand: dict[str, tuple[int, ...]]
) -> tuple[list[str], list[str], list[str]]:
    """The names added, removed and reshaped, each sorted."""
    common = base.keys() & cand.keys()
    return (
        sorted(cand.keys() - base.keys()),
        sorted(base.keys() - cand.keys()),
        sorted(n for n in common if base[n] != cand[n]),
    )


def model_family(shapes: dict[str, tuple[int, ...]]) -> str:
    if any(_ATTENTION.search(name.lower()) for name in shapes):  # lowered as they are searched
        return "transformer"
    if any(_RECURRENT.search(name.lower()) for name in shapes):
        return "rnn"
    if any(3 <= len(shape) <= 5 for shape in shapes.values()):
        return "cnn"
    if any(len(shape) == 2 for shape in shapes.values()):
        return "feedforward"
    return "unknown"


def model_depth(shapes: dict[str, tuple[int, ...]]) -> int:
    """Repeated blocks (``layer.0`` … ``layer.11`` -> 12), else the number of weight matrices."""
    blocks: dict[str, set[str]] = {}
    for name in shapes:
        match = _BLOCK_INDEX.match(name)
        if match:
            blocks.setdefault(match[1], set()).add(match[2])
    if blocks:
        return max(len(indices) for indices in blocks.values())
    return sum(1 for shape in shapes.values() if len(shape) >= 2)


def _shapes(model: Model) -> dict[str, tuple[int, ...]]:
    """What a state-dict loader sees: weights, buffers and counters, not the training state."""
    return {n: r.shape for n, r in model.tensors.items() if role_of(n, r.role_hint) in MODEL_ROLES}


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
