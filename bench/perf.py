"""The performance suite (issue 5): diffai side by side with a floor, diffai-python and torch.

Every command runs in its own process through ``measure.run_child``. The warm
runs go round-robin: each round runs every command once (large pairs in the
first ``large_repeat`` rounds only, start-up commands in every round), so a
burst of load from the machine's other users lands on all of them alike, and
the medians over rounds are compared. Before each warm run its input files are
read once with ``cat``, so "warm" means in the page cache. Then the cold runs:
the large pair evicted with ``posix_fadvise(DONTNEED)`` before ``cat`` and
before diffai, with ``fincore`` showing what stayed cached.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import perf_models
from measure import (
    ChildRun,
    cached_bytes,
    evict,
    executable,
    files_in,
    median,
    run_child,
    warm,
)
from perf_models import PerfFiles

BENCH = Path(__file__).resolve().parent
DIFFAI_PYTHON = "diffai-python==0.5.2"
SMALL, LARGE, F16, BF16 = "f32 small", "f32 large", "f16", "bf16"
MANY, SHARDED = "10,000 tensors", "sharded folder"
STARTUP = "start-up"
STAGES_ONE, STAGES = "stages, 1 worker", "stages, default workers"

Echo = Callable[[str], None]


@dataclass(frozen=True)
class Settings:
    folder: Path
    small_bytes: int
    large_bytes: int
    repeat: int
    large_repeat: int
    cold_repeat: int
    startup_repeat: int
    timeout: float
    memory_limit: int


@dataclass(frozen=True)
class Job:
    tool: str
    pair: str
    argv: tuple[str, ...]
    repeat: int
    inputs: tuple[Path, ...] = ()
    ok_codes: tuple[int, ...] = (0,)
    env: dict[str, str] | None = None
    timeout: float = 0.0
    memory_limit: int = 0
    keep_stdout: bool = False

    def run(self) -> ChildRun:
        return run_child(
            self.argv,
            env=self.env,
            timeout=self.timeout,
            memory_limit=self.memory_limit,
            keep_stdout=self.keep_stdout,
        )


@dataclass
class Outcome:
    job: Job
    runs: list[ChildRun] = field(default_factory=list)
    failure: str | None = None

    @property
    def seconds(self) -> float:
        return median(run.seconds for run in self.runs)

    @property
    def cpu_seconds(self) -> float:
        return median(run.cpu_seconds for run in self.runs)

    @property
    def peak_anon(self) -> int:
        return max(run.peak_anon for run in self.runs)

    @property
    def peak_rss(self) -> int:
        return max(run.peak_rss for run in self.runs)

    @property
    def input_bytes(self) -> int:
        return sum(path.stat().st_size for path in files_in(self.job.inputs))

    @property
    def output(self) -> dict[str, Any]:
        """The last run's JSON on stdout."""
        return json.loads(self.runs[-1].stdout)

    def record(self, run: ChildRun) -> None:
        self.failure = _failure(run, self.job)
        if self.failure is None:
            self.runs.append(run)


def _failure(run: ChildRun, job: Job) -> str | None:
    if run.timed_out:
        return f"did not finish within the {job.timeout:.0f} s limit"
    if run.exit_code not in job.ok_codes:
        last = (run.stderr.strip().splitlines() or ["(no message)"])[-1][:160]
        limit = f" (address-space limit {job.memory_limit >> 30} GiB)" if job.memory_limit else ""
        return f"exit {run.exit_code}{limit}: {last}"
    return None


Results = dict[tuple[str, str], Outcome]


# --- the jobs ------------------------------------------------------------------------------


def diffai_argv(*args: str | Path) -> tuple[str, ...]:
    return (sys.executable, "-m", "diffai", *map(str, args))


def competitor_argv(tool: str, pair: tuple[Path, Path]) -> tuple[str, ...]:
    return (sys.executable, str(BENCH / "competitors.py"), tool, *map(str, pair))


def report_path(settings: Settings, name: str) -> Path:
    return settings.folder / "reports" / f"{name}.json"


def warm_jobs(files: PerfFiles, settings: Settings, diffai_python: Path) -> list[Job]:
    """Every warm-cache command, in the order each round runs them."""
    s, py = settings, sys.executable
    limits = {"timeout": s.timeout, "memory_limit": s.memory_limit}
    other = {"env": {"PYTHONPATH": str(diffai_python)}, "keep_stdout": True, **limits}
    jobs = [
        Job("diffai --version", STARTUP, (executable("diffai"), "--version"), s.startup_repeat),
        Job("diffai --help", STARTUP, (executable("diffai"), "--help"), s.startup_repeat),
        Job("import numpy", STARTUP, (py, "-c", "import numpy"), s.startup_repeat),
    ]
    sized = ((SMALL, files.small, s.repeat), (LARGE, files.large, s.large_repeat))
    for label, pair, repeat in (*sized, (MANY, files.many, s.repeat)):
        report = report_path(s, label.replace(" ", "-").replace(",", ""))
        jobs += [
            Job("floor", label, competitor_argv("floor", pair), repeat, pair, keep_stdout=True),
            Job("diffai", label, diffai_argv(*pair, "--report", report, "-q"), repeat, pair, (1,)),
            Job("torch", label, competitor_argv("torch", pair), repeat, pair, keep_stdout=True),
            Job(
                "diffai-python",
                label,
                competitor_argv("diffai-python", pair),
                repeat,
                pair,
                **other,
            ),
        ]
    # Once: its figures check diffai's (agreement_goal); its time is listed, not a goal.
    jobs.append(Job("torch-f64", SMALL, competitor_argv("torch-f64", files.small), 1,
                    files.small, keep_stdout=True))  # fmt: skip
    for label, pair in ((F16, files.f16), (BF16, files.bf16), (SHARDED, files.sharded)):
        jobs.append(Job("diffai", label, diffai_argv(*pair, "-q"), s.repeat, pair, (1,)))
    parts = [report_path(s, f"shard-{index}") for index in (1, 2)]
    for index, part in enumerate(parts, 1):
        argv = diffai_argv(*files.small, "--shard", f"{index}/2", "--report", part, "-q")
        jobs.append(Job(f"diffai --shard {index}/2", SMALL, argv, s.repeat, files.small, (1,)))
    merged = diffai_argv("merge", *parts, "--report", report_path(s, "merged"), "-q")
    jobs.append(Job("diffai merge", SMALL, merged, s.repeat, (), (1,)))
    for tool, label, pair, workers in (
        (STAGES_ONE, SMALL, files.small, 1),
        (STAGES, SMALL, files.small, 0),
        (STAGES, MANY, files.many, 0),
    ):
        argv = (py, str(BENCH / "stages.py"), *map(str, pair), str(workers))
        jobs.append(Job(tool, label, argv, s.repeat, pair, keep_stdout=True))
    return jobs


def run_rounds(jobs: Sequence[Job], echo: Echo) -> Results:
    """Round-robin: round r runs every job that wants more than r runs and has not failed."""
    results = {(job.tool, job.pair): Outcome(job) for job in jobs}
    for round_index in range(max(job.repeat for job in jobs)):
        echo(f"round {round_index + 1} ...")
        for job in jobs:
            outcome = results[(job.tool, job.pair)]
            if round_index < job.repeat and outcome.failure is None:
                warm(job.inputs)
                outcome.record(job.run())
                if outcome.failure:
                    echo(f"  {job.tool} on {job.pair}: {outcome.failure}")
    return results


@dataclass(frozen=True)
class Cold:
    """The large pair read from an evicted page cache, and how much of it stayed cached."""

    cat: Outcome
    cat_warm: Outcome
    diffai: Outcome
    cached_after_evict: list[int | None]


def run_cold(files: PerfFiles, settings: Settings, echo: Echo) -> Cold:
    pair = files.large
    cat = Job("cat (cold)", LARGE, (executable("cat"), *map(str, pair)), settings.cold_repeat, pair)
    cat_warm = Job("cat (warm, right after)", LARGE, cat.argv, settings.cold_repeat, pair)
    diffai = Job("diffai (cold)", LARGE, diffai_argv(*pair, "-q"), settings.cold_repeat, pair, (1,))
    cold = Cold(Outcome(cat), Outcome(cat_warm), Outcome(diffai), [])
    for round_index in range(settings.cold_repeat):
        echo(f"cold round {round_index + 1} ...")
        evict(pair)
        cold.cached_after_evict.append(cached_bytes(pair))
        cold.cat.record(cat.run())
        cold.cat_warm.record(cat_warm.run())
        evict(pair)
        cold.diffai.record(diffai.run())
    return cold


# --- the checks of what the tools computed -------------------------------------------------


def relative_gap(value: float, reference: float) -> float:
    if value == reference:
        return 0.0
    return abs(value - reference) / max(abs(reference), abs(value))


def reference_figures(base: np.ndarray, cand: np.ndarray) -> dict[str, float]:
    """diffai's statistics of one finite pair from whole float64 copies with plain numpy."""
    b, c = base.astype(np.float64).ravel(), cand.astype(np.float64).ravel()
    delta = c - b
    magnitude = np.abs(delta)
    l2, norm_b, norm_c = (float(np.sqrt(np.sum(v * v))) for v in (delta, b, c))
    figures = {"diff.max_abs": magnitude.max(), "diff.mean_abs": magnitude.mean()}
    figures |= {"diff.l2": l2, "diff.relative_l2": l2 / norm_b}
    figures |= {"diff.cosine": np.sum(b * c) / (norm_b * norm_c)}
    figures |= {"diff.changed": np.count_nonzero(magnitude), "diff.baseline_l2": norm_b}
    figures |= {"diff.candidate_l2": norm_c}
    for side, values in (("baseline", b), ("candidate", c)):
        figures |= {f"{side}.mean": values.mean(), f"{side}.std": values.std()}
        figures |= {f"{side}.min": values.min(), f"{side}.max": values.max()}
        figures |= {f"{side}.zeros": values.size - np.count_nonzero(values)}
    return {key: float(value) for key, value in figures.items()}


@dataclass(frozen=True)
class Accuracy:
    tensor: str
    elements: int
    diffai_gaps: dict[str, float]  # every statistic, relative to float64 numpy
    torch_gaps: dict[str, float]  # the float32 script's relative_l2 and cosine
    torch_f64_gaps: dict[str, float]  # the float64 script's
    agreement: float  # largest relative gap between the float64 script's and diffai's figures
    agreement_tensor: str
    disagreeing: int  # tensors whose relative_l2 or cosine differ by more than 1e-5
    tensors: int


def check_accuracy(
    pair: tuple[Path, Path], report: Path, torch_output: dict[str, Any], f64: dict[str, Any]
) -> Accuracy:
    document = json.loads(report.read_text())
    records = {record["name"]: record for record in document["tensors"]}
    name = max(records, key=lambda n: records[n]["baseline"]["elements"])
    base, cand = (dict(perf_models.read_tensors(path))[name] for path in pair)
    reference = reference_figures(base, cand)
    record = records[name]
    reported = {
        f"{part}.{key}": float(record[part][key])
        for part, key in (key.split(".") for key in reference)
    }
    f64_figures = f64["tensors"]
    gaps = {
        (n, key): relative_gap(f64_figures[n][key], records[n]["diff"][key])
        for n in f64_figures
        for key in DIFF_KEYS
    }
    worst = max(gaps, key=gaps.__getitem__)
    return Accuracy(
        tensor=name,
        elements=base.size,
        diffai_gaps={key: relative_gap(reported[key], reference[key]) for key in reference},
        torch_gaps=_gaps_from(torch_output["tensors"][name], reference),
        torch_f64_gaps=_gaps_from(f64_figures[name], reference),
        agreement=gaps[worst],
        agreement_tensor=f"{worst[0]} ({worst[1]})",
        disagreeing=len({n for (n, _), gap in gaps.items() if gap > 1e-5}),
        tensors=len(f64_figures),
    )


DIFF_KEYS = ("relative_l2", "cosine")


def _gaps_from(figures: dict[str, Any], reference: dict[str, float]) -> dict[str, float]:
    """A torch script's relative_l2 and cosine of one tensor against float64 numpy's."""
    return {key: relative_gap(figures[key], reference[f"diff.{key}"]) for key in DIFF_KEYS}


def merged_matches(settings: Settings) -> bool:
    """Whether ``diffai merge`` of the two shard reports equals the one-run report."""
    single = json.loads(report_path(settings, "f32-small").read_text())
    merged = json.loads(report_path(settings, "merged").read_text())
    return single == merged


# --- setup -----------------------------------------------------------------------------------


def install_diffai_python(folder: Path, echo: Echo) -> Path:
    """diffai-python in a folder of its own: its module is called ``diffai`` too."""
    target = folder / "diffai-python-0.5.2"
    if not (target / "diffai" / "__init__.py").exists():
        echo(f"installing {DIFFAI_PYTHON} into {target} ...")
        shutil.rmtree(target, ignore_errors=True)
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
        subprocess.run([*command, "--target", str(target), DIFFAI_PYTHON], check=True)
    return target


@dataclass(frozen=True)
class PerfRun:
    settings: Settings
    files: PerfFiles
    warm: Results
    cold: Cold
    accuracy: Accuracy
    merged_matches: bool


def run_perf(settings: Settings, echo: Echo) -> PerfRun:
    files = perf_models.build(settings.folder, settings.small_bytes, settings.large_bytes, echo)
    report_path(settings, "x").parent.mkdir(parents=True, exist_ok=True)
    diffai_python = install_diffai_python(settings.folder.parent, echo)
    results = run_rounds(warm_jobs(files, settings, diffai_python), echo)
    cold = run_cold(files, settings, echo)
    echo("checking accuracy against float64 numpy ...")
    accuracy = check_accuracy(
        files.small,
        report_path(settings, "f32-small"),
        results[("torch", SMALL)].output,
        results[("torch-f64", SMALL)].output,
    )
    return PerfRun(settings, files, results, cold, accuracy, merged_matches(settings))
