"""Where a diffai run spends its time, stage by stage, run as its own process by ``perf.py``.

    python bench/stages.py BASE CAND WORKERS    (WORKERS 0: diffai's default)

Prints one JSON object: seconds spent importing what a run needs, opening
both models, measuring every pair (``compare_models``, with WORKERS threads)
and building and serialising the report, plus the bytes measured and, for the
compare stage, the CPU seconds in user and kernel mode, the minor page
faults (mapping file pages and fresh buffers) and the seconds its threads were
runnable but waiting for a CPU (``/proc/self/task/*/schedstat``, polled: what
other processes took from it). With one worker, bytes / ``compare`` seconds is
the engine's single-core rate, the figure to hold against the floor's.
"""

from __future__ import annotations

import itertools
import json
import os
import resource
import sys
import threading
import time


def run_delays(seen: dict[str, float]) -> None:
    """Each thread's seconds spent runnable but not running, so far (kept after it exits)."""
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/schedstat") as stat:
                seen[task] = int(stat.read().split()[1]) / 1e9
        except OSError:  # the thread has just exited
            continue


def poll(seen: dict[str, float], done: threading.Event) -> None:
    while not done.wait(0.005):
        run_delays(seen)


def main() -> None:
    base, cand, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
    marks = [time.perf_counter()]
    from diffai.api import compare_options, load_gate
    from diffai.comparison import bytes_to_read, compare_models
    from diffai.formats import open_model
    from diffai.report import Report

    marks.append(time.perf_counter())
    options = compare_options(0.0, (), (), workers or None)
    gate = load_gate(None)
    baseline, candidate = open_model(base), open_model(cand)
    marks.append(time.perf_counter())
    start, seen, done = {}, {}, threading.Event()
    run_delays(start)
    poller = threading.Thread(target=poll, args=(seen, done))
    poller.start()
    before = resource.getrusage(resource.RUSAGE_SELF)
    comparison = compare_models(baseline, candidate, options)
    after = resource.getrusage(resource.RUSAGE_SELF)
    done.set()
    poller.join()
    marks.append(time.perf_counter())
    Report.build(comparison, gate).to_json()
    marks.append(time.perf_counter())
    spans = [later - earlier for earlier, later in itertools.pairwise(marks)]
    stages = dict(zip(("import", "open", "compare", "report"), spans, strict=True))
    stages["compare_user"] = after.ru_utime - before.ru_utime
    stages["compare_system"] = after.ru_stime - before.ru_stime
    stages["compare_faults"] = after.ru_minflt - before.ru_minflt
    mine = {str(poller.native_id)}
    stages["compare_cpu_wait"] = sum(
        delay - start.get(task, 0.0) for task, delay in seen.items() if task not in mine
    )
    json.dump({**stages, "bytes": bytes_to_read(baseline, candidate, options)}, sys.stdout)


if __name__ == "__main__":
    main()
