"""Time the ``diffai`` command on the benchmark models and check what it reports.

    python bench/run.py [--out bench/out] [--repeat 3] [--stats-mib 256]

Each pair runs as its own ``python -m diffai BASE CAND --report FILE -q`` child,
``--repeat`` times; the tables show the best wall and CPU times, the largest
peak RSS, and what the last run's report says. A first row compares the
repository's 4 KB example model with itself: the fixed cost of a run
(interpreter, imports, report) before any tensor is read.

Peak RSS is the child's own ``ru_maxrss`` as ``os.wait4`` returns it when the
child is reaped: the kernel's high-water mark, so no peak falls between
samples, and, unlike ``getrusage(RUSAGE_CHILDREN)`` (the largest of *all*
children so far), it is that one run's. The child is spawned by a small
``python -S`` launcher rather than by this process, because ``exec`` folds the
high-water mark of the memory a child was spawned from into its ``ru_maxrss``
(see ``launch``). RSS also counts the file-backed pages the child touched
through its memory maps, so the anonymous part (heap, chunk buffers) is shown
beside it, sampled from ``/proc/<pid>/status`` every 5 ms: a lower bound.

Then, in this process, ``diffai.stats.measure_pair`` on one large f32 pair
against a naive float64 numpy reference that upcasts both tensors whole: time,
extra memory (``tracemalloc`` peak; numpy reports its buffers to it) and how far
apart the two results are.

Models missing from ``--out`` are built first with ``make_models.py``'s defaults.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import make_models
import numpy as np

from diffai.model import TensorRef
from diffai.stats import TensorStats, measure_pair

MB = 1e6
MIB = 1 << 20
#: Compared with itself, it shows what a run costs before any tensor is read.
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "baseline.safetensors"
#: Tensors this small get too few noise samples for their relative change to be near the target.
MIN_CHECKED_ELEMENTS = 512
STATS_FIELDS = ("mean", "std", "min", "max")
DIFF_FIELDS = ("max_abs", "mean_abs", "l2", "relative_l2", "cosine", "changed")

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
class ChildRun:
    exit_code: int
    seconds: float
    cpu_seconds: float
    peak_rss: int
    peak_anon: int
    stderr: str


@dataclass(frozen=True)
class PairResult:
    pair: Pair
    input_bytes: int
    runs: list[ChildRun]
    document: Document | None

    @property
    def exit_code(self) -> int:
        return self.runs[-1].exit_code


# --- the child process -------------------------------------------------------------------


def launch(stderr_path: str, argv: list[str]) -> None:
    """Run ``argv`` and print its exit code, time and memory as JSON.

    This runs in a small ``python -S`` launcher, never in the benchmark process:
    at ``exec`` Linux folds the RSS high-water mark of the memory the child was
    spawned from into the child's ``ru_maxrss``, so a child spawned straight from
    this (torch-importing, 2 GB-allocating) process would report this process's
    peak instead of its own.
    """
    import json
    import os
    import re
    import threading
    import time

    def anon_bytes(pid: int) -> int:
        try:
            with open(f"/proc/{pid}/status") as status:
                match = re.search(r"^RssAnon:\s+(\d+) kB", status.read(), re.MULTILINE)
        except OSError:
            return 0
        return int(match[1]) * 1024 if match else 0

    def sample(pid: int, done: threading.Event, peak: list[int]) -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], anon_bytes(pid))

    actions = [
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
    ]
    start = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions)
    done, peak = threading.Event(), [0]
    sampler = threading.Thread(target=sample, args=(pid, done, peak))
    sampler.start()
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    run = {
        "exit_code": os.waitstatus_to_exitcode(status),
        "seconds": seconds,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss": usage.ru_maxrss * 1024,  # kilobytes on Linux
        "peak_anon": peak[0],
    }
    print(json.dumps(run))


LAUNCHER = f"{inspect.getsource(launch)}\nimport sys\nlaunch(sys.argv[1], sys.argv[2:])\n"


def run_child(argv: Sequence[str], stderr_path: Path) -> ChildRun:
    """``argv`` run once through the launcher."""
    launcher = [sys.executable, "-S", "-c", LAUNCHER, str(stderr_path), *argv]
    completed = subprocess.run(launcher, capture_output=True, text=True, check=True)
    return ChildRun(**json.loads(completed.stdout), stderr=stderr_path.read_text())


def diffai_argv(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "diffai", *map(str, args)]


def measure(pair: Pair, out: Path, repeat: int, scratch: Path) -> PairResult:
    baseline, candidate = out / pair.baseline, out / pair.candidate
    report = scratch / "report.json"
    argv = diffai_argv(baseline, candidate, "--report", report, "-q")
    runs = []
    for _ in range(repeat):
        report.unlink(missing_ok=True)
        runs.append(run_child(argv, scratch / "stderr.txt"))
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


# --- in-process streaming statistics ------------------------------------------------------


@dataclass(frozen=True)
class StatsRow:
    label: str
    seconds: float
    cpu_seconds: float
    extra_bytes: int


Figures = dict[str, float]


def naive_pair(base: np.ndarray, cand: np.ndarray) -> Figures:
    """The same figures as ``measure_pair``, from whole float64 copies (finite inputs only)."""
    b, c = base.astype(np.float64).ravel(), cand.astype(np.float64).ravel()
    delta = c - b
    magnitude = np.abs(delta)
    norm_b, norm_c, l2 = np.linalg.norm(b), np.linalg.norm(c), np.linalg.norm(delta)
    figures = {"max_abs": magnitude.max(), "mean_abs": magnitude.mean(), "l2": l2}
    figures |= {"relative_l2": l2 / norm_b, "cosine": np.dot(b, c) / (norm_b * norm_c)}
    figures["changed"] = np.count_nonzero(magnitude > 0)
    for side, values in (("base", b), ("cand", c)):
        figures |= {f"{side}.mean": values.mean(), f"{side}.std": values.std()}
        figures |= {f"{side}.min": values.min(), f"{side}.max": values.max()}
    return {key: float(value) for key, value in figures.items()}


def streamed_pair(base: np.ndarray, cand: np.ndarray) -> Figures:
    refs = [
        TensorRef(name, a.shape, "f32", lambda a=a: a) for name, a in (("b", base), ("c", cand))
    ]
    base_stats, cand_stats, diff = measure_pair(refs[0], refs[1], epsilon=0.0)
    figures = {key: float(getattr(diff, key)) for key in DIFF_FIELDS}
    return figures | _side_figures("base", base_stats) | _side_figures("cand", cand_stats)


def _side_figures(side: str, stats: TensorStats) -> Figures:
    return {f"{side}.{key}": float(getattr(stats, key)) for key in STATS_FIELDS}


def best_times(function: Callable[[], object], repeat: int) -> tuple[float, float]:
    """The best wall and CPU (all threads) seconds of ``repeat`` calls."""
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        function()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus)


def traced(function: Callable[[], Figures]) -> tuple[Figures, int]:
    """The result of ``function`` and the bytes it allocated at its peak, beyond what existed."""
    tracemalloc.start()
    try:
        return function(), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def stats_benchmark(mib: int, repeat: int) -> tuple[list[StatsRow], float, int]:
    """Rows for both methods, the largest relative disagreement, and the input bytes."""
    rng = np.random.default_rng(make_models.SEED)
    shape = (mib * MIB // 4 // 4096, 4096)
    base = rng.standard_normal(shape, dtype=np.float32)
    cand = base + np.float32(1e-3) * rng.standard_normal(shape, dtype=np.float32)
    methods = {"diffai.stats.measure_pair": streamed_pair, "naive float64 numpy": naive_pair}
    rows, results = [], []
    for label, method in methods.items():
        figures, extra = traced(lambda method=method: method(base, cand))
        rows.append(StatsRow(label, *best_times(lambda m=method: m(base, cand), repeat), extra))
        results.append(figures)
    streamed, naive = results
    gap = max(_relative_gap(streamed[key], naive[key]) for key in naive)
    return rows, gap, base.nbytes + cand.nbytes


# --- output ------------------------------------------------------------------------------


def print_table(headers: Sequence[str], rows: list[Sequence[str]], right: set[int]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    for row in (headers, *rows):
        cells = [
            str(cell).rjust(width) if i in right else str(cell).ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells).rstrip())
    print()


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


def print_stats(rows: list[StatsRow], gap: float, input_bytes: int) -> None:
    table = [
        [
            row.label,
            f"{row.seconds:.2f}",
            f"{row.cpu_seconds:.2f}",
            f"{input_bytes / MB / row.seconds:.0f}",
            f"{row.extra_bytes / MB:.1f}",
        ]
        for row in rows
    ]
    print(f"one f32 pair in memory, {input_bytes / MIB:.0f} MiB ({input_bytes / MB:.0f} MB):")
    print_table(("method", "best s", "CPU s", "MB/s", "extra memory MB"), table, right={1, 2, 3, 4})
    print(f"largest relative disagreement between the two: {gap:.1e}")


# --- main --------------------------------------------------------------------------------


def ensure_models(out: Path) -> None:
    needed = {name for pair in PAIRS for name in (pair.baseline, pair.candidate)}
    if not all((out / name).exists() for name in needed):
        print(f"building the benchmark models in {out} ...", file=sys.stderr)
        make_models.build(
            out, make_models.DEFAULT_SIZE_MB, echo=lambda line: print(line, file=sys.stderr)
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=make_models.DEFAULT_OUT, help="the models' folder"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per pair; best time is shown")
    parser.add_argument(
        "--stats-mib", type=int, default=256, help="size of each tensor of the in-process pair"
    )
    args = parser.parse_args()
    out = args.out.resolve()
    ensure_models(out)
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="diffai-bench-") as scratch:
        tiny = diffai_argv(EXAMPLE, EXAMPLE, "-q")
        fixed = [run_child(tiny, Path(scratch) / "stderr.txt") for _ in range(args.repeat)]
        results = []
        for pair in PAIRS:
            print(f"measuring {pair.label} ...", file=sys.stderr)
            results.append(measure(pair, out, args.repeat, Path(scratch)))
    print(f"diffai on {out}, best of {args.repeat}")
    print(f"{os.cpu_count()} cores, load average before the runs: {load}")
    print_timings(results, fixed)
    print_checks(results)
    print(
        f"measuring the streaming statistics ({args.stats_mib} MiB per side) ...", file=sys.stderr
    )
    print_stats(*stats_benchmark(args.stats_mib, args.repeat))


if __name__ == "__main__":
    main()
