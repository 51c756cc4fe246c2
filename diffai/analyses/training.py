"""training_progress: the checkpoint scalars that tell the training story.

Epoch and step counters, learning rates and losses that differ between the
checkpoints, each with its relative change (c − b)/|b|, so a reviewer sees
"lr 0.001->0.0005 (-50%)" beside the weight changes it explains.
"""

from __future__ import annotations

import re
from typing import Any

from diffai.comparison import Comparison, ScalarChange
from diffai.text import scalar_text

_KINDS = (
    ("progress", re.compile(r"^(epochs?|step|global_step|iteration|iter|steps)$")),
    ("learning_rate", re.compile(r"^(lr|learning_rate|initial_lr)$")),
    ("loss", re.compile(r"(^|_)loss($|_)")),
    ("metric", re.compile(r"^(val_|eval_|test_|best_)?(acc|accuracy|f1|auc|perplexity|ppl|bleu)$")),
)


def analyze(comparison: Comparison) -> dict[str, Any]:
    changes = [
        _change(scalar, kind) for scalar in comparison.scalars if (kind := scalar_kind(scalar.name))
    ]
    return {"changes": changes, "story": ", ".join(_story(c) for c in changes)}


def scalar_kind(name: str) -> str | None:
    leaf = name.rpartition(".")[2].lower()
    return next((kind for kind, pattern in _KINDS if pattern.search(leaf)), None)


def _change(scalar: ScalarChange, kind: str) -> dict[str, Any]:
    return {
        "name": scalar.name,
        "kind": kind,
        "baseline": scalar.baseline,
        "candidate": scalar.candidate,
        "relative_change": _relative(scalar.baseline, scalar.candidate),
    }


def _relative(before: Any, after: Any) -> float | None:
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (before, after))
    return (after - before) / abs(before) if numeric and before else None


def _story(change: dict[str, Any]) -> str:
    text = f"{change['name']} {scalar_text(change['baseline'])}->{scalar_text(change['candidate'])}"
    relative = change["relative_change"]
    if relative is not None and change["kind"] != "progress":
        text += f" ({relative:+.0%})"
    return text
