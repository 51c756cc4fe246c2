"""The transformer suite: time ``diffai`` on the benchmark models and check what it reports.

    python bench/run.py --suite transformer [--out bench/out] [--repeat 3] [--stats-mib 256]

Each pair runs as its own ``python -m diffai BASE CAND --report FILE -q`` child,
``--repeat`` times; the tables show the best wall and CPU times, the largest
peak RSS, and what the last run's report says. A first row compares the
repository's 4 KB example model with itself: the fixed cost of a run
(interpreter, imports, report) before any tensor is read.

Peak RSS is the child's own ``ru_maxrss`` as ``os.wait4`` returns it when the
child is reaped: the kernel's high-water mark, so no peak falls between
samples, and, unlike ``getrusage(RUSAGE_CHILDREN)`` (the largest of *all*
children so far), it is that one run's. The child is spawned by a small
``python -S`` launcher rather than by this process (see ``measure.py``). RSS
also counts the file-backed pages the child touched through its memory maps,
so the anonymous part (heap, chunk buffers) is shown beside it, sampled from
``/proc/<pid>/status`` every 5 ms: a lower bound.

Then, in this process, ``diffai.stats.measure_pair`` on one large f32 pair
against a naive float64 numpy reference that upcasts both tensors whole: time,
extra memory (``tracemalloc`` peak; numpy reports its buffers to it) and how far
apart the two results are.

Models missing from ``--out`` are built first with ``make_models.py``'s defaults.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import make_models
from measure import ChildRun, run_child
from streaming import print_stats, stats_benchmark
from tables import print_table

MB = 1e6
MIB = 1 << 20
#: Compared with itself, it shows what a run costs before any tensor is read.
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "baseline.safetensors"
#: Tensors this small get too few noise samples for their relative change to be near the target.
MIN_CHECKED_ELEMENTS = 512
STATS_FIELDS = ("mean", "std", "min", "max")

Document = dict[str, Any]


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


@dataclass(frozen=True)
class Pair:
    label: str
    baseline: str
    candidate: str
    expected_exit: int
    check: Callable[[Document], Check]


@dataclass(frozen=True)
class PairResult:
    pair: Pair
    input_bytes: int
    runs: list[ChildRun]
    document: Document | None

    @property
    def exit_code(self) -> int:
        return self.runs[-1].exit_code


# --- the runs --------------------------------------------------------------------------------


def diffai_argv(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "diffai", *map(str, args)]


def measure(pair: Pair, out: Path, repeat: int, scratch: Path) -> PairResult:
    baseline, candidate = out / pair.baseline, out / pair.candidate
    report = scratch / "report.json"
    argv = diffai_argv(baseline, candidate, "--report", report, "-q")
    runs = []
    for _ in range(repeat):
        report.unlink(missing_ok=True)
        runs.append(run_child(argv))
    document = json.loads(report.read_text()) if report.exists() else None
    input_bytes = baseline.stat().st_size + candidate.stat().st_size
    return PairResult(pair, input_bytes, runs, document)


# --- what each report must say -----------------------------------------------------------


def _tensors(document: Document, status: str) -> list[Document]:
    return [t for t in document["tensors"] if t["status"] == status]


def _layer_of(name: str) -> str | None:
    match = re.search(r"\.layer\.(\d+)\.", name)
    return match[1] if match else None


def _layer_count(document: Document) -> int:
    indices = [_layer_of(t["name"]) for t in document["tensors"]]
    return 1 + max(int(index) for index in indices if index is not None)


def _is_float(tensor: Document) -> bool:
    side = tensor["baseline"] or tensor["candidate"]
    return side["dtype"].startswith(("f", "bf"))


def check_identical(document: Document) -> Check:
    summary = document["summary"]
    different = [t["name"] for t in document["tensors"] if t["status"] != "unchanged"]
    if different or summary["scalars_changed"]:
        return Check(False, f"NOT identical: {len(different)} tensors differ, e.g. {different[:2]}")
    return Check(True, f"identical, {summary['tensors_compared']} tensors")


def check_finetuned(document: Document) -> Check:
    """Each tensor's relative L2 change must be the update size the fine-tune drew."""
    layers = _layer_count(document)
    changed = {t["name"]: t["diff"]["relative_l2"] for t in _tensors(document, "changed")}
    ratios = [
        changed[t["name"]] / make_models.update_scale(t["name"], layers)
        for t in _tensors(document, "changed")
        if t["baseline"]["elements"] >= MIN_CHECKED_ELEMENTS
    ]
    floats = [t for t in document["tensors"] if _is_float(t)]
    top = f"bert.encoder.layer.{layers - 1}.attention.self.query.weight"
    spots = {
        "layer0.query": changed.get("bert.encoder.layer.0.attention.self.query.weight"),
        f"layer{layers - 1}.query": changed.get(top),
        "classifier": changed.get("classifier.weight"),
    }
    ok = len(changed) == len(floats) and all(0.9 < r < 1.1 for r in ratios)
    shown = ", ".join(f"{k}={_num(v)}" for k, v in spots.items())
    return Check(ok, f"rel_l2 {shown}; measured/drawn {min(ratios):.3f}..{max(ratios):.3f}")


def check_retyped(low: float, high: float) -> Callable[[Document], Check]:
    """Every float tensor re-typed, with a rounding error of the expected size."""

    def check(document: Document) -> Check:
        retyped = _tensors(document, "dtype_changed")
        worst = max(t["diff"]["relative_l2"] for t in retyped)
        cosine = min(t["diff"]["cosine"] for t in retyped)
        floats = [t for t in document["tensors"] if _is_float(t)]
        ok = len(retyped) == len(floats) and low <= worst <= high
        detail = f"max rel_l2={worst:.3g} (expect {low:g}..{high:g}), min cos={cosine:.7f}"
        return Check(ok, detail)

    return check


def check_quantized(document: Document) -> Check:
    """Every Linear weight qint8 (dequantized), paired by name; int8 rounding error measured."""
    retyped = _tensors(document, "dtype_changed")
    stored = {t["candidate"]["stored_dtype"] for t in retyped}
    analysis = document["analyses"]["quantization_analysis"]
    error, compression = analysis["relative_error"], analysis["compression"]
    ok = bool(retyped) and stored == {"qint8"} and 1e-3 <= error <= 5e-2
    ok = ok and 0.25 <= compression <= 0.26
    detail = (
        f"{len(retyped)} weights f32->qint8, relative_error={error:.3g}, "
        f"sqnr={analysis['sqnr_db']:.1f} dB, compression={compression:.3f}"
    )
    return Check(ok, detail)


def check_pruned(document: Document) -> Check:
    """Half of each pruned weight zeroed; the removed tensors are one whole layer."""
    removed = {_layer_of(t["name"]) for t in _tensors(document, "removed")}
    zeros = [
        t["candidate"]["zeros"] / t["candidate"]["elements"] for t in _tensors(document, "changed")
    ]
    fractions = [t["diff"]["changed_fraction"] for t in _tensors(document, "changed")]
    ok = len(removed) == 1 and None not in removed and all(0.49 < z < 0.51 for z in zeros)
    detail = (
        f"removed: layer {','.join(map(str, removed))}; zeros {min(zeros):.1%}..{max(zeros):.1%}, "
        f"changed_fraction {min(fractions):.1%}..{max(fractions):.1%}"
    )
    return Check(ok, detail)


def check_permuted(document: Document) -> Check:
    """Same mean/std/min/max on both sides, yet a cosine near 0: only the diff sees it."""
    changed = _tensors(document, "changed")
    expected = {
        f"bert.encoder.layer.{i}.{suffix}"
        for i in make_models.permuted_layers(_layer_count(document))
        for suffix in (
            "intermediate.dense.weight",
            "intermediate.dense.bias",
            "output.dense.weight",
        )
    }
    stats_gap = max(
        _relative_gap(t["baseline"][k], t["candidate"][k]) for t in changed for k in STATS_FIELDS
    )
    cosines = [t["diff"]["cosine"] for t in changed]
    ok = {t["name"] for t in changed} == expected and stats_gap < 1e-9
    detail = (
        f"{len(changed)} permuted: cos {min(cosines):+.4f}..{max(cosines):+.4f}, "
        f"mean/std/min/max equal to {stats_gap:.1e}"
    )
    return Check(ok, detail)


def check_epochs(document: Document) -> Check:
    """Scalars (epoch, loss, lr), every float weight and the Adam moments must have moved."""
    scalars = {s["name"]: (s["baseline"], s["candidate"]) for s in document["scalars"]}
    moments = [
        t for t in _tensors(document, "changed") if t["name"].endswith(("exp_avg", "exp_avg_sq"))
    ]
    weights = [t for t in document["tensors"] if t["name"].startswith("model_state_dict.")]
    moved = [t for t in weights if t["status"] == "changed"]
    trained = [t for t in weights if _is_float(t)]
    lr = scalars.get("optimizer_state_dict.param_groups.0.lr")
    ok = scalars.get("epoch") == (1, 2) and "loss" in scalars and lr is not None
    ok = ok and len(moved) == len(trained) and len(moments) > 0
    shown = ", ".join(f"{name} {_num(a)}->{_num(b)}" for name, (a, b) in scalars.items())
    detail = f"{shown}; weights moved {len(moved)}/{len(weights)}, Adam moments {len(moments)}"
    return Check(ok, detail)


def _relative_gap(left: float, right: float) -> float:
    return abs(left - right) / max(abs(left), abs(right), 1e-300)


def _num(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


PAIRS = (
    Pair("base vs itself", "base.safetensors", "base.safetensors", 0, check_identical),
    Pair("finetuned", "base.safetensors", "finetuned.safetensors", 1, check_finetuned),
    Pair("finetuned (.pt)", "base.pt", "finetuned.pt", 1, check_finetuned),
    Pair("f16", "base.safetensors", "f16.safetensors", 1, check_retyped(1e-4, 4e-4)),
    Pair("bf16", "base.safetensors", "bf16.safetensors", 1, check_retyped(1e-3, 3e-3)),
    Pair("pruned", "base.safetensors", "pruned.safetensors", 1, check_pruned),
    Pair("permuted", "base.safetensors", "permuted.safetensors", 1, check_permuted),
    Pair(".pt vs .safetensors", "base.pt", "base.safetensors", 0, check_identical),
    Pair(".npz vs .safetensors", "base.npz", "base.safetensors", 0, check_identical),
    Pair("qint8 (dynamic) vs itself", "qint8.pt", "qint8.pt", 0, check_identical),
    Pair("qint8 (dynamic)", "base.safetensors", "qint8.pt", 1, check_quantized),
    Pair("epoch1 vs epoch2", "checkpoint_epoch1.pt", "checkpoint_epoch2.pt", 1, check_epochs),
)


def verdict(result: PairResult) -> Check:
    """The pair's check, or why it could not be made."""
    expected = result.pair.expected_exit
    if result.exit_code != expected or result.document is None:
        stderr = result.runs[-1].stderr.strip().splitlines() or ["no report written"]
        return Check(False, f"exit {result.exit_code} (expected {expected}): {stderr[-1]}")
    try:
        return result.pair.check(result.document)
    except (KeyError, TypeError, ValueError) as exc:  # a report without what the check reads
        return Check(False, f"the report does not say what the check reads: {exc!r}")


# --- output ------------------------------------------------------------------------------


def print_timings(results: list[PairResult], fixed: list[ChildRun]) -> None:
    rows = [
        _timing_row("(fixed cost: 4 KB example vs itself)", 0, fixed),
        *(_timing_row(r.pair.label, r.input_bytes, r.runs) for r in results),
    ]
    headers = (
        "pair",
        "exit",
        "MB in",
        "best s",
        "CPU s",
        "MB/s",
        "peak RSS MB",
        "anon MB (sampled)",
    )
    print_table(headers, rows, right=set(range(1, len(headers))))


def _timing_row(label: str, input_bytes: int, runs: list[ChildRun]) -> list[str]:
    seconds = min(run.seconds for run in runs)
    return [
        label,
        str(runs[-1].exit_code),
        f"{input_bytes / MB:.1f}" if input_bytes else "-",
        f"{seconds:.2f}",
        f"{min(run.cpu_seconds for run in runs):.2f}",
        f"{input_bytes / MB / seconds:.0f}" if input_bytes else "-",
        f"{max(run.peak_rss for run in runs) / MB:.0f}",
        f"{max(run.peak_anon for run in runs) / MB:.0f}",
    ]


def print_checks(results: list[PairResult]) -> None:
    rows = []
    for result in results:
        summary = (result.document or {}).get("summary", {})
        counts = "/".join(
            str(summary.get(key, "-"))
            for key in ("changed", "added", "removed", "dtype_changed", "unchanged")
        )
        check = verdict(result)
        rows.append([result.pair.label, counts, "ok" if check.ok else "UNEXPECTED", check.detail])
    headers = ("pair", "chg/add/rem/dtype/same", "check", "spot check")
    print_table(headers, rows, right=set())


# --- main --------------------------------------------------------------------------------


def ensure_models(out: Path) -> None:
    needed = {name for pair in PAIRS for name in (pair.baseline, pair.candidate)}
    if not all((out / name).exists() for name in needed):
        print(f"building the benchmark models in {out} ...", file=sys.stderr)
        make_models.build(
            out, make_models.DEFAULT_SIZE_MB, echo=lambda line: print(line, file=sys.stderr)
        )


def run_suite(out: Path, repeat: int, stats_mib: int) -> None:
    out = out.resolve()
    ensure_models(out)
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="diffai-bench-") as scratch:
        tiny = diffai_argv(EXAMPLE, EXAMPLE, "-q")
        fixed = [run_child(tiny) for _ in range(repeat)]
        results = []
        for pair in PAIRS:
            print(f"measuring {pair.label} ...", file=sys.stderr)
            results.append(measure(pair, out, repeat, Path(scratch)))
    print(f"diffai on {out}, best of {repeat}")
    print(f"{os.cpu_count()} cores, load average before the runs: {load}")
    print_timings(results, fixed)
    print_checks(results)
    print(f"measuring the streaming statistics ({stats_mib} MiB per side) ...", file=sys.stderr)
    print_stats(*stats_benchmark(stats_mib, repeat))
