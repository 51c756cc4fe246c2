"""The transformer suite's in-process part: ``measure_pair`` against a naive float64 numpy pass.

One f32 pair held in memory, ``diffai.stats.measure_pair`` on one thread against
whole float64 copies reduced with numpy: time, extra memory (``tracemalloc``
peak; numpy reports its buffers to it) and how far apart the two results are.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from make_models import SEED
from tables import print_table

from diffai.model import TensorRef
from diffai.stats import TensorStats, measure_pair

MB = 1e6
MIB = 1 << 20
STATS_FIELDS = ("mean", "std", "min", "max")
DIFF_FIELDS = ("max_abs", "mean_abs", "l2", "relative_l2", "cosine", "changed")


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
    rng = np.random.default_rng(SEED)
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
    gap = max(relative_gap(streamed[key], naive[key]) for key in naive)
    return rows, gap, base.nbytes + cand.nbytes


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


def relative_gap(left: float, right: float) -> float:
    return abs(left - right) / max(abs(left), abs(right), 1e-300)
