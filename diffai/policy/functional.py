"""``regression_test.functional``: run both ONNX models on probe inputs and judge their outputs.

Only a policy with this section runs anything (docs/security.md says what
running means). The thresholds judge each output's drift (``docs/policy.md``);
a threshold left out is not checked, but ``atol``/``rtol`` always define the
measured mismatch fraction (Polygraphy's element-wise rule, 1e-5 each).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from diffai.policy.model import Override

Severity = Literal["error", "warning"]

#: Probes per model run by default: enough for a top-1 agreement to 0.4% resolution.
DEFAULT_PROBES = 256
DEFAULT_BATCH = 32
DEFAULT_TIMEOUT_SECONDS = 300
DEFAULT_MEMORY_MB = 4096
DEFAULT_TOLERANCE = 1e-5


@dataclass(frozen=True, kw_only=True)
class OutputRules:
    """The limits one output is judged by; a ``None`` limit is not checked."""

    atol: float = DEFAULT_TOLERANCE
    rtol: float = DEFAULT_TOLERANCE
    max_mismatch_fraction: float | None = None
    max_relative_l2: float | None = None
    min_cosine: float | None = None
    max_abs_diff: float | None = None
    min_top1_agreement: float | None = None
    max_kl_divergence: float | None = None
    fail_on_nonfinite: bool = True
    severity: Severity = "error"


@dataclass(frozen=True, kw_only=True)
class InputSpec:
    """What the policy fixes about one input's probes: a shape, a constant, a vocabulary."""

    shape: tuple[int, ...] | None = None
    value: float | None = None
    vocab: int | None = None


@dataclass(frozen=True)
class ProbeOptions:
    """What the command line fixes about the probes, on top of the policy's ``inputs``.

    Here, not in ``diffai.functional``, so that a run whose policy runs no model
    builds it without importing the runner (25 ms of start-up).
    """

    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    values: Mapping[str, float] = field(default_factory=dict)
    inputs_file: Path | None = None


@dataclass(frozen=True, kw_only=True)
class FunctionalPolicy:
    probes: int = DEFAULT_PROBES
    batch_size: int = DEFAULT_BATCH
    seed: int = 0
    probe_inputs: Path | None = None
    inputs: dict[str, InputSpec] = field(default_factory=dict)
    allow_contrib_ops: bool = False
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    memory_mb: int = DEFAULT_MEMORY_MB
    rules: OutputRules = field(default_factory=OutputRules)
    overrides: tuple[Override, ...] = ()  # each with OutputRules

    def rules_for(self, output: str) -> tuple[str, OutputRules]:
        """The rule path prefix and the rules of the first override matching ``output``."""
        from fnmatch import fnmatchcase

        for index, override in enumerate(self.overrides):
            if fnmatchcase(output, override.match):
                return f"regression_test.functional.overrides[{index}]", override.rules
        return "regression_test.functional", self.rules


RUN_KEYS = ("probes", "batch_size", "seed", "allow_contrib_ops", "timeout_seconds", "memory_mb")


def build_functional(section: dict[str, Any] | None, folder: Path) -> FunctionalPolicy | None:
    """The section of a schema-checked policy; None when the policy has none (nothing runs)."""
    from diffai.policy.model import Override  # model imports this module

    if section is None:
        return None
    top = _rules(OutputRules(), section)
    inputs = {name: _input(spec or {}) for name, spec in (section.get("inputs") or {}).items()}
    probe_file = section.get("probe_inputs")
    return FunctionalPolicy(
        **{key: section[key] for key in RUN_KEYS if key in section},
        probe_inputs=None if probe_file is None else folder / probe_file,
        inputs=inputs,
        rules=top,
        overrides=tuple(
            Override(match=item["match"], rules=_rules(top, item))
            for item in section.get("overrides", ())
        ),
    )


def _rules(rules: OutputRules, section: dict[str, Any]) -> OutputRules:
    names = {f.name for f in dataclasses.fields(OutputRules)}
    return dataclasses.replace(rules, **{k: v for k, v in section.items() if k in names})


def _input(spec: dict[str, Any]) -> InputSpec:
    shape = spec.get("shape")
    return InputSpec(
        shape=None if shape is None else tuple(shape), value=spec.get("value"),
        vocab=spec.get("vocab"),
    )  # fmt: skip
