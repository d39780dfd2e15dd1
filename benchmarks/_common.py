"""Helpers shared by the benchmark scripts: the machine description and a timer."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy
import torch

import saddlemap as sm

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    """CPU model, threads and library versions, to stand beside every figure."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu, "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
        "torch": torch.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
        "saddlemap": sm.__version__,
    }


def timed(fn: Callable[[], dict[str, Any]], repeats: int) -> dict[str, Any]:
    """Run ``fn`` ``repeats`` times; its last result plus the median time and the count."""
    times, out = [], {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return {**out, "median_s": statistics.median(times), "repeats": repeats}


def timed_peer(fn: Callable[[], dict[str, Any]], repeats: int) -> dict[str, Any]:
    """:func:`timed`, or ``{"failure": ...}`` when the peer raises: a failure is a result."""
    try:
        return timed(fn, repeats)
    except Exception as exc:
        return {"failure": f"{type(exc).__name__}: {exc}"}


def method_table(
    rows: dict[str, dict[str, Any]], ours: str, header: list[str],
    cells: Callable[[dict[str, Any]], list[str]],
) -> list[str]:
    """Set each row's ``ratio_to_saddlemap`` against ``ours``, and render the Markdown table.

    Columns: method, median time, × saddlemap, then ``header`` filled by ``cells``; a failed
    row puts its message in the last column.
    """
    base = rows[ours]["median_s"]
    out = ["| method | median time (s) | × saddlemap | " + " | ".join(header) + " |",
           "|---" * (3 + len(header)) + "|"]
    for name, row in rows.items():
        if "failure" in row:
            out.append(f"| {name} | failed | |" + " |" * (len(header) - 1)
                       + f" {row['failure']} |")
            continue
        row["ratio_to_saddlemap"] = row["median_s"] / base
        out.append(f"| {name} | {row['median_s']:.3f} | {row['ratio_to_saddlemap']:.1f} | "
                   + " | ".join(cells(row)) + " |")
    return out


def narrow_critical_point(seed: int = 0) -> tuple[sm.TwoLayerNet, sm.Dataset]:
    """A width-5 critical point of a tanh teacher–student problem (d = 10, n = 1000)."""
    prob = sm.teacher_student(8, 5, d=10, n=1000, activation="tanh", seed=seed, noise=0.1)
    trained = sm.train(prob.student, prob.data, optimizer="lbfgs", steps=1000, grad_tol=1e-7)
    narrow = sm.find_critical_point(trained.net, prob.data)
    if not narrow.converged:
        raise RuntimeError("the width-5 problem did not give a critical point; change the seed")
    return narrow.net, prob.data


def write_results(name: str, result: dict[str, Any], lines: list[str]) -> None:
    """Write ``results/NAME.json`` and ``results/NAME.md``, and print the Markdown."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
