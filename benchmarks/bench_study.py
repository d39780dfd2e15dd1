"""Study throughput on 1 and 2 worker processes, and the PlateauMonitor's overhead.

* Throughput: the same 40-run teacher–student study (erf, r* = 1, m ∈ {1, 2}, d = 3, n = 30,
  200 gd steps, 20 seeds) run serially and by the process engine with 1 and 2 workers, each
  into a fresh SQLite database; runs per minute, worker start-up included.
* Monitor overhead: 300 gd steps on d = 10, m = 100, n = 1000 (erf) with and without a
  PlateauMonitor whose plateau detection cannot fire (refinement excluded), as a fraction of
  a training step.

Run: ``python benchmarks/bench_study.py``; results go to ``benchmarks/results/study.json``
and ``study.md``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from _common import interleaved, load_summary, session, write_results

import saddlemap as sm

CONFIG = {
    "steps": 200, "window": 40, "min_length": 20,
    "grid": {"activation": ["erf"], "teacher_width": [1], "width": [1, 2], "d": [3],
             "n": [30], "seeds": 20},
}


def throughput(engine: str, workers: int | None) -> dict[str, float]:
    config = sm.StudyConfig.from_dict(CONFIG)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()  # one end-to-end run, worker start-up included: no warm-up
        report = sm.run_study(config, str(Path(tmp) / "s.sqlite"), engine=engine, workers=workers)
        seconds = time.perf_counter() - t0
    return {"runs": report.run_now, "seconds": seconds,
            "runs_per_minute": 60 * report.run_now / seconds}


def monitor_overhead(steps: int = 300) -> dict[str, float]:
    prob = sm.teacher_student(5, 100, d=10, n=1000, activation="erf", seed=0)
    lr = sm.safe_step_size(prob.student, prob.data)

    def plain() -> None:
        sm.train(prob.student, prob.data, lr=lr, steps=steps, callbacks=[])

    def monitored() -> None:
        sm.train(prob.student, prob.data, lr=lr, steps=steps,
                 callbacks=[sm.PlateauMonitor(prob.data, rtol=0.0)])

    # rtol = 0 never sees a plateau: what is left is the bookkeeping and the width checks.
    # Interleaved repeats, best of each: the machine's noise is larger than the overhead.
    t_plain, t_monitored = interleaved([plain, monitored], rounds=5, alternate=False)
    base = min(t_plain) / steps
    watched = min(t_monitored) / steps
    return {"step_ms": 1e3 * base, "step_with_monitor_ms": 1e3 * watched,
            "overhead_fraction": watched / base - 1}


def main() -> None:
    with session() as harness:
        rows = {
            "serial": throughput("serial", None),
            "process, 1 worker": throughput("process", 1),
            "process, 2 workers": throughput("process", 2),
        }
        over = monitor_overhead()
    result = {"throughput": rows, "monitor": over, "machine": harness.machine,
              "threads": harness.threads, "load": harness.load, "config": CONFIG}
    load = load_summary(harness.load)
    lines = ["# Study throughput and monitor overhead", "",
             f"Machine: {result['machine']['cpu']}, torch {torch.__version__}.",
             *([f"Load: {load}."] if load else []), "",
             "| engine | runs | seconds | runs per minute |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['runs']} | {v['seconds']:.1f} | {v['runs_per_minute']:.0f} |"
              for k, v in rows.items()]
    lines += ["", f"Monitor: a gd step takes {over['step_ms']:.2f} ms, "
              f"{over['step_with_monitor_ms']:.2f} ms with the monitor "
              f"({100 * over['overhead_fraction']:.1f} % overhead; d=10, m=100, n=1000)."]
    write_results("study", result, lines)


if __name__ == "__main__":
    main()
