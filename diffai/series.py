"""``diffai audit`` on the command line: a series of checkpoints, each step and the drift.

The seed's "monitor every epoch" loop as one command. Checkpoints are taken in
natural order (``epoch_2`` before ``epoch_10``, whatever the shell's glob gave),
and each one is compared twice: with the one before it (the **step**: did
something break in this epoch?) and with the first (the **drift**: how far has
training taken the model?). Both are full comparisons judged by the policy; only
their summary figures are kept, so memory holds one pair's comparison at a time
however long the series.

A figure's relative change is the one every report uses for a layer
(``layers.relative_change``: ‖c−b‖/‖b‖ over the weights taken as one vector),
over the whole model for ``model`` and per layer for ``layers``. The series'
verdict is the worst verdict of its steps: drift from the first checkpoint is
what training is for, so a drift verdict is reported but does not gate.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

from diffai.comparison import CompareOptions, compare_models, natural_key
from diffai.errors import UsageError
from diffai.formats import open_model
from diffai.layers import relative_change
from diffai.model import Model
from diffai.report import Gate, Report

SERIES_SCHEMA_VERSION = 1
VERDICT_ORDER = ("pass", "warn", "fail")
#: Layers whose trend the outputs show: the most drifted at the last checkpoint.
TREND_LAYERS = 8

#: Called before each pair is compared: (checkpoint number from 1, how many, its path).
OnCheckpoint = Callable[[int, int, str], None]


@dataclass(frozen=True)
class PairSummary:
    """One comparison of the series, reduced to what the trend needs."""

    verdict: str
    readiness: float | None
    model: float | None  # the weights' relative change, taken as one vector
    changed: int  # tensors not unchanged
    identical: bool  # tensors and scalars alike
    layers: dict[str, float | None]

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "readiness": self.readiness,
            "relative_change": self.model,
            "tensors_changed": self.changed,
            "identical": self.identical,
            "layers": self.layers,
        }


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint after the first: its step from the one before, its drift from the first."""

    path: str
    step: PairSummary
    drift: PairSummary


@dataclass(frozen=True)
class Series:
    first: str
    checkpoints: tuple[Checkpoint, ...]
    policy: str | None

    @property
    def verdict(self) -> str:
        verdicts = [checkpoint.step.verdict for checkpoint in self.checkpoints]
        return max(verdicts, key=VERDICT_ORDER.index)

    @property
    def identical(self) -> bool:
        return all(c.step.identical and c.drift.identical for c in self.checkpoints)

    def trend_layers(self, count: int = TREND_LAYERS) -> list[str]:
        """The layers most drifted from the first at the last checkpoint, most first."""
        last = self.checkpoints[-1].drift.layers
        measured = [name for name, value in last.items() if value is not None]
        return sorted(measured, key=lambda name: -last[name])[:count]  # type: ignore[operator]

    def to_document(self) -> dict[str, Any]:
        return {
            "schema_version": SERIES_SCHEMA_VERSION,
            "kind": "diffai-audit-series",
            "first": self.first,
            "policy": self.policy,
            "verdict": self.verdict,
            "trend_layers": self.trend_layers(),
            "checkpoints": [
                {"path": c.path, "step": c.step.to_json(), "drift": c.drift.to_json()}
                for c in self.checkpoints
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_document(), allow_nan=False) + "\n"


@cache
def series_schema() -> dict[str, Any]:
    """The JSON Schema of ``diffai audit --report``, shipped beside the report's."""
    return json.loads(files("diffai").joinpath("series.schema.json").read_text("utf-8"))


def natural_order(paths: Sequence[str]) -> list[str]:
    """``epoch_2`` before ``epoch_10``: the order the checkpoints were written in."""
    return sorted(paths, key=natural_key)


def audit_series(
    paths: Sequence[str],
    options: CompareOptions,
    gate: Gate,
    format: str | None = None,
    on_checkpoint: OnCheckpoint | None = None,
    policy_name: str | None = None,
) -> Series:
    """Each checkpoint against the one before and against the first, one pair at a time."""
    ordered = natural_order(paths)
    if len(ordered) < 2:
        raise UsageError("diffai audit needs at least two checkpoints")
    first = previous = open_model(ordered[0], format)
    checkpoints = []
    for number, path in enumerate(ordered[1:], start=2):
        if on_checkpoint is not None:
            on_checkpoint(number, len(ordered), path)
        current = open_model(path, format)
        step = summarize(Report.build(compare_models(previous, current, options), gate))
        drift = step if previous is first else _drift(first, current, options, gate)
        checkpoints.append(Checkpoint(path, step, drift))
        previous = current
    return Series(ordered[0], tuple(checkpoints), policy_name)


def _drift(first: Model, current: Model, options: CompareOptions, gate: Gate) -> PairSummary:
    return summarize(Report.build(compare_models(first, current, options), gate))


def summarize(report: Report) -> PairSummary:
    """A judged comparison's figures; the comparison itself is then let go."""
    document = report.document
    weights = [t for t in report.comparison.tensors if t.role == "weight"]
    change, size, measured = relative_change(weights)
    return PairSummary(
        verdict=report.verdict,
        readiness=document["deployment_readiness"].get("readiness"),
        model=change / size if measured and size else None,
        changed=sum(1 for t in report.comparison.tensors if t.status != "unchanged"),
        identical=report.identical,
        layers={layer["name"]: layer["relative_l2"] for layer in document["layers"]},
    )
