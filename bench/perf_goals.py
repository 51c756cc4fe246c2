"""The performance suite's figures: each goal met or not and what bounds it, the raw medians."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from perf import (
    BF16,
    F16,
    LARGE,
    MANY,
    SHARDED,
    SMALL,
    STAGES,
    STAGES_ONE,
    STARTUP,
    Outcome,
    PerfRun,
)

MIB = 1 << 20
GB = 1e9


@dataclass(frozen=True)
class Goal:
    figure: str
    measured: str
    goal: str
    met: bool | None  # None: not measurable in this run
    bound: str = ""  # the measurement that bounds it, said when the goal is not met


def size_label(size: int) -> str:
    return f"{size >> 30} GiB" if size % (1 << 30) == 0 else f"{size >> 20} MiB"


def pair_names(run: PerfRun) -> dict[str, str]:
    small, large = size_label(run.settings.small_bytes), size_label(run.settings.large_bytes)
    return {
        SMALL: f"2 x {small} f32",
        LARGE: f"2 x {large} f32",
        F16: f"2 x {small} model in f16",
        BF16: f"2 x {small} model in bf16",
        MANY: "2 x 10,000 tensors (31 MiB)",
        SHARDED: f"2 folders of 4 shards ({small})",
        STARTUP: "no input",
    }


def _get(run: PerfRun, tool: str, pair: str) -> Outcome:
    return run.warm[(tool, pair)]


def _seconds(outcome: Outcome) -> float | None:
    return outcome.seconds if outcome.runs and outcome.failure is None else None


def _rate(outcome: Outcome) -> float:
    """Input bytes per second of wall time, from the median."""
    return outcome.input_bytes / outcome.seconds


def _stage_rate(outcome: Outcome) -> float:
    """Bytes per second of the compare stage alone (``stages.py``), from the median run."""
    return outcome.output["bytes"] / median_field(outcome, "compare")


def median_field(outcome: Outcome, key: str) -> float:
    """The median over runs of one figure a child printed as JSON."""
    return float(np.median([json.loads(run.stdout)[key] for run in outcome.runs]))


# --- goals ---------------------------------------------------------------------------------


def speed_goal(run: PerfRun, tool: str, pair: str, least: float) -> Goal:
    """``tool``'s median time over diffai's on ``pair``: diffai must be ``least`` x faster."""
    name = pair_names(run)[pair]
    other, diffai = _get(run, tool, pair), _get(run, "diffai", pair)
    figure = f"{tool} time ÷ diffai time, {name}"
    goal = f"≥ {least:g}x"
    if other.failure:
        return Goal(figure, f"{tool} failed: {other.failure}", goal, None)
    ratio = other.seconds / diffai.seconds
    measured = f"{ratio:.2f}x ({other.seconds:.2f} s / {diffai.seconds:.2f} s)"
    bound = (
        f"{tool} {other.seconds:.2f} s ({_rate(other) / GB:.2f} GB/s, its pass alone "
        f"{median_field(other, 'pass_seconds'):.2f} s); diffai {diffai.seconds:.2f} s "
        f"({_rate(diffai) / GB:.2f} GB/s), of which its imports take "
        f"{median_field(_get(run, STAGES, SMALL), 'import'):.2f} s; {least:g}x needs diffai "
        f"≤ {other.seconds / least:.2f} s"
    )
    return Goal(figure, measured, goal, ratio >= least, bound)


def floor_goal(run: PerfRun) -> Goal:
    floor, diffai = _get(run, "floor", SMALL), _get(run, "diffai", SMALL)
    one, default = _get(run, STAGES_ONE, SMALL), _get(run, STAGES, SMALL)
    ratio = floor.seconds / diffai.seconds
    floor_rate = floor.output["bytes"] / median_field(floor, "pass_seconds")
    stages = ", ".join(
        f"{stage} {median_field(default, stage):.2f} s"
        for stage in ("import", "open", "compare", "report")
    )
    user, system = (median_field(one, f"compare_{mode}") for mode in ("user", "system"))
    bound = (
        f"the floor's pass alone runs at {floor_rate / GB:.1f} GB/s on one core (its process "
        f"{floor.seconds:.2f} s); diffai's compare stage at {_stage_rate(one) / GB:.2f} GB/s on "
        f"1 worker and {_stage_rate(default) / GB:.2f} GB/s on the default workers, i.e. "
        f"{floor_rate / _stage_rate(one):.1f}x the floor's time per byte per core. On 1 worker "
        f"the compare stage takes {median_field(one, 'compare_faults'):,.0f} minor page faults "
        f"(the floor's pass {median_field(floor, 'faults'):,.0f}) and spends {system:.2f} s of "
        f"CPU in the OS against {user:.2f} s in user mode. On the default workers its threads "
        f"were runnable but waiting for a CPU (the machine's other load) "
        f"{median_field(default, 'compare_cpu_wait'):.2f} s in all; diffai's stages (default "
        f"workers): {stages}"
    )
    return Goal(
        f"floor time ÷ diffai time, {pair_names(run)[SMALL]}",
        f"{ratio:.2f} ({floor.seconds:.2f} s / {diffai.seconds:.2f} s)",
        "≥ 0.4",
        ratio >= 0.4,
        bound,
    )


def agreement_goal(run: PerfRun) -> Goal:
    """ "Same numbers" against the torch script that computes them in float64.

    The float32 script cannot be the yardstick: its reductions over the largest
    tensor are off by up to 6e-3 from float64 numpy, 1e9 times diffai's error.
    """
    acc = run.accuracy
    errors = ", ".join(
        f"{key}: torch float32 {acc.torch_gaps[key]:.1e}, torch float64 "
        f"{acc.torch_f64_gaps[key]:.1e}, diffai {acc.diffai_gaps[f'diff.{key}']:.1e}"
        for key in acc.torch_gaps
    )
    return Goal(
        f"torch script (in float64) vs diffai's report, relative_l2 and cosine, "
        f"{pair_names(run)[SMALL]}",
        f"largest relative gap {acc.agreement:.1e} ({acc.agreement_tensor}); "
        f"{acc.disagreeing} of {acc.tensors} tensors beyond 1e-5",
        "≤ 1e-5 per tensor",
        acc.agreement <= 1e-5,
        f"error against float64 numpy on {acc.tensor} ({acc.elements:,} elements): {errors}",
    )


def memory_goals(run: PerfRun) -> list[Goal]:
    small, large = _get(run, "diffai", SMALL), _get(run, "diffai", LARGE)
    names = pair_names(run)
    goals = [
        Goal(
            f"diffai peak RssAnon, {names[pair]}",
            f"{outcome.peak_anon / MIB:.0f} MiB (VmHWM {outcome.peak_rss / MIB:.0f} MiB incl. "
            "mapped file pages)",
            "≤ 400 MiB",
            outcome.peak_anon <= 400 * MIB,
        )
        for pair, outcome in ((SMALL, small), (LARGE, large))
    ]
    growth = large.peak_anon / small.peak_anon - 1
    goals.append(
        Goal(
            f"RssAnon growth from {names[SMALL]} to {names[LARGE]}",
            f"{growth:+.1%}",
            "≤ +10 %",
            growth <= 0.10,
        )
    )
    return goals


def cold_goal(run: PerfRun) -> Goal:
    cold = run.cold
    cat, diffai = cold.cat.seconds, cold.diffai.seconds
    ratio = diffai / cat
    warm = _get(run, "diffai", LARGE).seconds
    bytes_in = cold.cat.input_bytes
    bound = (
        f"cold cat {bytes_in / cat / GB:.2f} GB/s, diffai cold {bytes_in / diffai / GB:.2f} GB/s, "
        f"diffai warm {bytes_in / warm / GB:.2f} GB/s ({warm:.1f} s): computing alone takes "
        f"{warm / cat:.2f}x the cold read, so overlap cannot bring it under that"
    )
    return Goal(
        f"cold page cache, diffai time ÷ `cat a b > /dev/null` time, {pair_names(run)[LARGE]}",
        f"{ratio:.2f}x ({diffai:.1f} s / {cat:.1f} s)",
        "≤ 1.3x",
        ratio <= 1.3,
        bound,
    )


def low_precision_goals(run: PerfRun) -> list[Goal]:
    f32 = _get(run, "diffai", SMALL)
    goals = []
    for pair in (F16, BF16):
        outcome = _get(run, "diffai", pair)
        ratio = _rate(outcome) / _rate(f32)
        per_element = outcome.seconds / f32.seconds
        goals.append(
            Goal(
                f"{pair} bytes/s ÷ f32 bytes/s ({pair_names(run)[pair]})",
                f"{ratio:.2f} ({_rate(outcome) / GB:.2f} / {_rate(f32) / GB:.2f} GB/s)",
                "≥ 0.5",
                ratio >= 0.5,
                f"same elements, half the bytes: the {pair} pair takes {per_element:.2f}x the f32 "
                f"pair's time ({outcome.seconds:.2f} s against {f32.seconds:.2f} s)",
            )
        )
    return goals


def startup_goals(run: PerfRun) -> list[Goal]:
    numpy = _get(run, "import numpy", STARTUP).seconds
    goals = []
    for tool in ("diffai --version", "diffai --help"):
        seconds = _get(run, tool, STARTUP).seconds
        goals.append(
            Goal(
                f"`{tool}` ÷ `python -c 'import numpy'`",
                f"{seconds / numpy:.2f} ({seconds * 1e3:.0f} ms / {numpy * 1e3:.0f} ms)",
                "≤ 1.5",
                seconds / numpy <= 1.5,
            )
        )
    return goals


def accuracy_goal(run: PerfRun) -> Goal:
    acc = run.accuracy
    worst = max(acc.diffai_gaps, key=acc.diffai_gaps.__getitem__)
    return Goal(
        f"diffai's statistics vs float64 numpy, {acc.tensor} ({acc.elements:,} elements)",
        f"largest relative gap {acc.diffai_gaps[worst]:.1e} ({worst}), "
        f"{len(acc.diffai_gaps)} statistics",
        "≤ 1e-6",
        acc.diffai_gaps[worst] <= 1e-6,
    )


def goals(run: PerfRun) -> list[Goal]:
    return [
        floor_goal(run),
        speed_goal(run, "diffai-python", SMALL, 5),
        speed_goal(run, "diffai-python", LARGE, 5),
        speed_goal(run, "torch", SMALL, 2),
        speed_goal(run, "torch", LARGE, 2),
        agreement_goal(run),
        *memory_goals(run),
        cold_goal(run),
        *low_precision_goals(run),
        *startup_goals(run),
        accuracy_goal(run),
    ]


# --- the other figures ---------------------------------------------------------------------


def other_figures(run: PerfRun) -> list[list[str]]:
    """What has no goal: many small tensors, shards, where time goes, the eviction check."""
    return [
        many_tensors_row(run),
        *stage_rows(run),
        sharded_row(run),
        shard_row(run),
        eviction_row(run),
        diffai_python_row(run),
        torch_f64_row(run),
    ]


def torch_f64_row(run: PerfRun) -> list[str]:
    seconds, diffai = _seconds(_get(run, "torch-f64", SMALL)), _get(run, "diffai", SMALL)
    ratio = "" if seconds is None else f": {seconds / diffai.seconds:.1f}x diffai's"
    return [
        f"the torch script in float64, {pair_names(run)[SMALL]} (one run)",
        f"{_fmt_s(seconds)}{ratio}; the figures the agreement goal holds diffai's against",
    ]


def many_tensors_row(run: PerfRun) -> list[str]:
    tools = ("diffai", "floor", "torch", "diffai-python")
    times = ", ".join(f"{tool} {_fmt_s(_seconds(_get(run, tool, MANY)))}" for tool in tools)
    stages = _get(run, STAGES, MANY)
    per_tensor = {
        stage: median_field(stages, stage) / 10_000 * 1e3 for stage in ("compare", "report")
    }
    return [
        pair_names(run)[MANY],
        f"{times}; per tensor pair diffai spends {per_tensor['compare']:.2f} ms measuring "
        f"and {per_tensor['report']:.2f} ms in the report (`stages.py`)",
    ]


def stage_rows(run: PerfRun) -> list[list[str]]:
    rows = []
    for tool, pair in ((STAGES_ONE, SMALL), (STAGES, SMALL), (STAGES, MANY)):
        outcome = _get(run, tool, pair)
        spans = ", ".join(
            f"{stage} {median_field(outcome, stage):.2f} s"
            for stage in ("import", "open", "compare", "report")
        )
        compare = (
            f"compare at {_stage_rate(outcome) / GB:.2f} GB/s, CPU "
            f"{median_field(outcome, 'compare_user'):.2f} s user + "
            f"{median_field(outcome, 'compare_system'):.2f} s kernel, "
            f"{median_field(outcome, 'compare_faults'):,.0f} minor faults, threads waiting "
            f"for a CPU {median_field(outcome, 'compare_cpu_wait'):.2f} s"
        )
        rows.append([f"diffai in process, {tool}, {pair_names(run)[pair]}", f"{spans}; {compare}"])
    return rows


def sharded_row(run: PerfRun) -> list[str]:
    sharded, single = _get(run, "diffai", SHARDED).seconds, _get(run, "diffai", SMALL).seconds
    return [
        pair_names(run)[SHARDED],
        f"diffai {sharded:.2f} s, against {single:.2f} s for the same tensors in one file each "
        f"({sharded / single:.2f}x)",
    ]


def shard_row(run: PerfRun) -> list[str]:
    single = _get(run, "diffai", SMALL).seconds
    parts = [_get(run, f"diffai --shard {i}/2", SMALL).seconds for i in (1, 2)]
    merge = _get(run, "diffai merge", SMALL).seconds
    return [
        f"`--shard 1/2`, `--shard 2/2`, `diffai merge`, {pair_names(run)[SMALL]}",
        f"{parts[0]:.2f} + {parts[1]:.2f} + {merge:.2f} s = {sum(parts) + merge:.2f} s on one "
        f"runner, {max(parts) + merge:.2f} s on two (one run: {single:.2f} s); merged report "
        f"{'identical to' if run.merged_matches else 'DIFFERENT from'} the one-run report",
    ]


def eviction_row(run: PerfRun) -> list[str]:
    evicted = [size for size in run.cold.cached_after_evict if size is not None]
    cold, warm = run.cold.cat, run.cold.cat_warm
    return [
        "eviction check, " + pair_names(run)[LARGE],
        f"after `posix_fadvise(DONTNEED)`: {max(evicted, default=0) / MIB:.0f} MiB cached "
        f"(fincore); cat cold {cold.input_bytes / cold.seconds / GB:.2f} GB/s, "
        f"right after, warm {warm.input_bytes / warm.seconds / GB:.2f} GB/s",
    ]


def diffai_python_row(run: PerfRun) -> list[str]:
    outcome = _get(run, "diffai-python", SMALL)
    if not outcome.runs:
        return ["what diffai-python computes", f"failed: {outcome.failure}"]
    output = outcome.output
    computed = ", ".join(f"{key} x{count}" for key, count in output["computed"].items())
    return [
        f"what diffai-python computes, {pair_names(run)[SMALL]}",
        f"{output['records']} records: {computed}; no element-wise metric",
    ]


def _fmt_s(seconds: float | None) -> str:
    return "failed" if seconds is None else f"{seconds:.2f} s"


def raw_rows(run: PerfRun) -> list[list[str]]:
    names = pair_names(run)
    outcomes = [*run.warm.values(), run.cold.cat, run.cold.cat_warm, run.cold.diffai]
    rows = []
    for outcome in outcomes:
        job = outcome.job
        cells = [job.tool, names[job.pair], str(len(outcome.runs))]
        if outcome.runs:
            walls = [r.seconds for r in outcome.runs]
            cells += [
                f"{outcome.seconds:.3f}",
                f"{min(walls):.3f}..{max(walls):.3f}",
                f"{_rate(outcome) / 1e6:.0f}" if outcome.input_bytes else "-",
                f"{outcome.cpu_seconds:.2f}",
                f"{outcome.peak_rss / MIB:.0f}",
                f"{outcome.peak_anon / MIB:.0f}",
            ]
        else:
            cells += ["-"] * 6
        rows.append([*cells, outcome.failure or ""])
    return rows


RAW_HEADERS = (
    "command", "input", "runs", "median s", "range s", "MB/s", "CPU s",
    "VmHWM MiB", "RssAnon MiB", "failure",
)  # fmt: skip


def goal_rows(found: list[Goal]) -> list[list[str]]:
    verdicts = {True: "yes", False: "**no**", None: "n/a"}
    return [[g.figure, g.measured, g.goal, verdicts[g.met]] for g in found]
