"""The library entry point: ``diffai.compare(baseline, candidate, ...) -> Report``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import diffai.adapters
import diffai.policy
from diffai.comparison import CompareOptions, Comparison, compare_models
from diffai.errors import UsageError
from diffai.pairing import check_maps
from diffai.policy import MetricsFile, Policy, default_policy, policy_metric_files
from diffai.policy.metrics import require_known_metrics
from diffai.report import Gate, Report
from diffai.stats import ProgressCallback

if TYPE_CHECKING:
    from diffai.policy.functional import ProbeOptions


def compare(
    baseline: str | Path,
    candidate: str | Path,
    *,
    epsilon: float = 0.0,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    format: str | None = None,
    workers: int | None = None,
    shard: tuple[int, int] | None = None,
    strip_prefixes: Sequence[str] = (),
    detect_prefixes: bool = True,
    detect_renames: bool = True,
    maps: Sequence[str] = (),
    auto_maps: bool = True,
    policy: str | Path | Policy | None = None,
    metrics_baseline: str | Path | None = None,
    metrics_candidate: str | Path | None = None,
    on_bytes: ProgressCallback | None = None,
    probes: ProbeOptions | None = None,
    base: str | Path | None = None,
    adapter: str | Path | None = None,
) -> Report:
    """Compare two model artifacts (files or folders, any supported format) tensor by tensor.

    ``epsilon`` is the absolute difference above which an element counts as
    changed; ``include``/``exclude`` are glob patterns on tensor and scalar
    names; ``shard`` = (i, n) measures only the i-th of n slices (see
    ``diffai.merge``); ``strip_prefixes`` are taken off the names before they pair, and
    ``detect_prefixes`` takes off wrapper prefixes such as DDP's ``module.`` that one
    side has on every tensor (``diffai.pairing``); ``detect_renames`` pairs removed and
    added tensors holding the same values as ``renamed``; ``maps`` are name map files or
    built-in map names (``gguf-llama``) applied first, and ``auto_maps`` picks a built-in
    map that fits one side when none is given (``diffai.pairing.maps``); ``policy`` is a
    policy file or a loaded ``Policy`` (default: the documented default policy);
    ``metrics_*`` override the policy's metrics files; ``on_bytes`` is called with byte
    counts as tensors are read;
    ``probes`` fixes probe shapes and values when the policy runs the models.
    PEFT adapter folders compare by their updates (``diffai.adapters``): ``base`` sizes two
    adapters' updates against a base model, and ``adapter`` verifies that ``candidate`` is
    ``baseline`` with that adapter merged in.
    Raises ``DiffaiError`` subclasses for anything wrong with the inputs.
    """
    options = compare_options(
        epsilon, include, exclude, workers, shard, strip_prefixes, detect_prefixes,
        detect_renames, maps, auto_maps,
    )  # fmt: skip
    gate = load_gate(policy, metrics_baseline, metrics_candidate)
    base_model, cand_model, adapter_section = diffai.adapters.open_models(
        baseline, candidate, format, base, adapter, bool(shard)
    )
    comparison = compare_models(base_model, cand_model, options, on_bytes)
    return build_report(comparison, gate, probes, adapter_section)


def build_report(
    comparison: Comparison,
    gate: Gate,
    probes: ProbeOptions | None = None,
    adapter: dict[str, Any] | None = None,
) -> Report:
    """The comparison judged; first both models run, when the policy asks for it
    (``regression_test.functional``, ONNX models only)."""
    policy = gate.policy.regression_test.functional
    if policy is None:
        return Report.build(comparison, gate, adapter=adapter)
    from diffai.functional import functional_section  # the runner: only when models run
    from diffai.policy.functional import ProbeOptions

    baseline, candidate = comparison.baseline, comparison.candidate
    section = functional_section(baseline, candidate, policy, probes or ProbeOptions())
    return Report.build(comparison, gate, functional=section, adapter=adapter)


def compare_options(
    epsilon: float,
    include: Sequence[str],
    exclude: Sequence[str],
    workers: int | None,
    shard: tuple[int, int] | None = None,
    strip_prefixes: Sequence[str] = (),
    detect_prefixes: bool = True,
    detect_renames: bool = True,
    maps: Sequence[str] = (),
    auto_maps: bool = True,
) -> CompareOptions:
    if not epsilon >= 0.0:
        raise UsageError(f"epsilon must be a non-negative number, got {epsilon}")
    if workers is not None and workers < 1:
        raise UsageError(f"workers must be at least 1, got {workers}")
    if any(not prefix for prefix in strip_prefixes):
        raise UsageError("--strip-prefix needs a prefix, such as 'module.'")
    check_maps(maps)
    return CompareOptions(
        epsilon, tuple(include), tuple(exclude), workers, shard, tuple(strip_prefixes),
        detect_prefixes, detect_renames, tuple(maps), auto_maps,
    )  # fmt: skip


def load_gate(
    policy: str | Path | Policy | None,
    metrics_baseline: str | Path | None = None,
    metrics_candidate: str | Path | None = None,
) -> Gate:
    """The policy and its metrics files, loaded and checked before any model is read."""
    if policy is None:
        policy = default_policy()
    elif not isinstance(policy, Policy):
        policy = diffai.policy.load_policy(policy)  # imports YAML only now
    named_baseline, named_candidate = policy_metric_files(policy)
    gate = Gate(
        policy=policy,
        metrics_baseline=_metrics(metrics_baseline or named_baseline),
        metrics_candidate=_metrics(metrics_candidate or named_candidate),
    )
    # A misspelt metric is caught here too, not only once the models have been read.
    require_known_metrics(
        policy.regression_test.metrics, gate.metrics_baseline, gate.metrics_candidate
    )
    return gate


def _metrics(path: str | Path | None) -> MetricsFile | None:
    return None if path is None else diffai.policy.load_metrics(path)
