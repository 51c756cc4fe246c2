"""The functional comparison: both ONNX models run on the same probes, each output's drift.

Only a policy with ``regression_test.functional`` gets here. In order: both
files pass ``graph.admit`` (standard operator domains, external data beside the
model) before anything runs; the probes are built from the baseline's declared
inputs (``probes``) and written once; the baseline, then the candidate, runs in
its own bounded child (``runner``), so the two sessions never share memory;
then the outputs are compared run by run (``drift``). The section this returns
is the report's ``functional``; ``diffai.policy.output_checks`` judges it.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

from diffai.errors import UnreadableModel
from diffai.functional import probes
from diffai.functional.drift import Drift
from diffai.functional.graph import Port, Signature, admit
from diffai.functional.runner import THREADS, Outputs, require_runner, run_model
from diffai.model import Model
from diffai.policy.functional import FunctionalPolicy, InputSpec, ProbeOptions

RUNNABLE = "onnx"


def functional_section(
    baseline: Model, candidate: Model, policy: FunctionalPolicy, options: ProbeOptions
) -> dict[str, Any]:
    """The report's ``functional`` section; raises for refused graphs and a failing baseline."""
    formats = baseline.format, candidate.format
    if formats != (RUNNABLE, RUNNABLE):
        return {"status": "not_run", "reason": _not_runnable(formats)}
    paths = Path(baseline.path), Path(candidate.path)
    require_runner(paths[0])
    signatures = [admit(path, policy.allow_contrib_ops) for path in paths]
    changed = input_change(*signatures)
    if changed:
        return {"status": "inputs_changed", "reason": changed}
    plan = _plan(signatures[0], policy, options)
    with tempfile.TemporaryDirectory(prefix="diffai-functional-") as folder:
        return _run_both(paths, plan, Path(folder), policy)


def _not_runnable(formats: tuple[str, str]) -> str:
    sides = [
        f"the {side} is {fmt}"
        for side, fmt in zip(("baseline", "candidate"), formats, strict=True)
        if fmt != RUNNABLE
    ]
    return f"{' and '.join(sides)}, which holds no graph to run; only ONNX models run"


def input_change(baseline: Signature, candidate: Signature) -> str | None:
    """One line on how the candidate's declared inputs differ, or None when they do not."""
    before = {port.name: port for port in baseline.inputs}
    after = {port.name: port for port in candidate.inputs}
    lines = [f"{name!r} removed" for name in before if name not in after]
    lines += [f"{after[name].described()} added" for name in after if name not in before]
    lines += [
        f"{before[name].described()} is now {after[name].described()}"
        for name in before
        if name in after and not _same_port(before[name], after[name])
    ]
    if not lines:
        return None
    shown = "; ".join(lines[:3]) + (f"; and {len(lines) - 3} more" if len(lines) > 3 else "")
    return (
        f"the candidate's inputs differ from the baseline's ({shown}), so the same probes "
        "cannot run both"
    )


def _same_port(before: Port, after: Port) -> bool:
    if before.dtype != after.dtype or len(before.dims or ()) != len(after.dims or ()):
        return False
    pairs = zip(before.dims or (), after.dims or (), strict=True)
    return all(a == b or not (isinstance(a, int) and isinstance(b, int)) for a, b in pairs)


def _plan(signature: Signature, policy: FunctionalPolicy, options: ProbeOptions) -> probes.Plan:
    specs = dict(policy.inputs)
    for name, shape in options.shapes.items():
        specs[name] = dataclasses.replace(specs.get(name, InputSpec()), shape=shape)
    for name, value in options.values.items():
        specs[name] = dataclasses.replace(specs.get(name, InputSpec()), value=value)
    plan = probes.plan(signature.inputs, policy, specs, signature.vocabularies)
    given = options.inputs_file or policy.probe_inputs
    return probes.given_plan(plan, given) if given else plan


def _run_both(
    paths: tuple[Path, Path], plan: probes.Plan, folder: Path, policy: FunctionalPolicy
) -> dict[str, Any]:
    digest = probes.write_runs(plan, folder / "probes")
    section = _probes_record(plan, digest)
    started = time.monotonic()
    base = _every_run(paths[0], "baseline", folder, policy, plan)
    seconds = {"baseline": time.monotonic() - started}
    try:
        cand = _every_run(paths[1], "candidate", folder, policy, plan)
    except UnreadableModel as exc:
        reason = f"the candidate did not run: {exc.problem}"
        return {**section, "status": "candidate_failed", "reason": reason}
    seconds["candidate"] = time.monotonic() - started - seconds["baseline"]
    memory = {"baseline": base.peak_rss_bytes, "candidate": cand.peak_rss_bytes}
    measured = {"status": "compared", "seconds": seconds, "peak_rss_bytes": memory}
    return {**section, **measured, **compare_outputs(base, cand, policy)}


def _every_run(
    path: Path, side: str, folder: Path, policy: FunctionalPolicy, plan: probes.Plan
) -> Outputs:
    """A side's outputs, which must answer every probe run diffai wrote: the child ran an
    untrusted graph, and an answer of fewer runs would compare nothing and pass."""
    outputs = run_model(path, side, folder / "probes", folder / side, policy)
    if outputs.runs != len(plan.runs):
        raise UnreadableModel(
            path, f"the {side}'s run answered {outputs.runs} probe runs of {len(plan.runs)}"
        )
    return outputs


def _probes_record(plan: probes.Plan, digest: str) -> dict[str, Any]:
    return {
        "probes": plan.probes,
        "runs": len(plan.runs),
        "seed": plan.seed,
        "source": plan.source,
        "inputs_sha256": digest,
        "inputs": [_input_record(filled) for filled in plan.inputs],
        "threads": THREADS,
    }


def _input_record(filled: probes.Filled) -> dict[str, Any]:
    record: dict[str, Any] = {
        "name": filled.port.name, "dtype": filled.port.dtype, "shape": list(filled.shape),
        "batch_axis": filled.batch_axis, "fill": filled.rule,
    }  # fmt: skip
    if filled.rule == "value":
        record["value"] = filled.value
    if filled.rule == "token_ids":
        record["vocab"] = filled.vocab
    return record


def compare_outputs(base: Outputs, cand: Outputs, policy: FunctionalPolicy) -> dict[str, Any]:
    """Each output the baseline has, measured over every run; the others listed."""
    records = [_output(name, base, cand, policy) for name in base.names]
    return {
        "outputs": records,
        "added_outputs": [name for name in cand.names if name not in base.names],
    }


def _output(name: str, base: Outputs, cand: Outputs, policy: FunctionalPolicy) -> dict[str, Any]:
    if name not in cand.names:
        return {"name": name, "status": "removed"}
    kinds = base.kinds.get(name), cand.kinds.get(name)
    if kinds != ("tensor", "tensor"):
        return {
            "name": name,
            "status": "not_compared",
            "reason": f"a {kinds[0]} against a {kinds[1]}",
        }
    _, rules = policy.rules_for(name)
    drift = Drift(name, rules.atol, rules.rtol)
    for run in range(base.runs):
        b = base.array(run, base.names.index(name))
        c = cand.array(run, cand.names.index(name))
        if b.shape != c.shape:
            return {
                "name": name,
                "status": "shape_changed",
                "baseline_shape": list(b.shape),
                "candidate_shape": list(c.shape),
            }
        drift.add(b, c)
    return {**drift.record(), "status": "compared"}
