"""Scaling of the critical reduction operator: m = 10³ … 10⁵ neurons, d = 20.

Each network has 200 distinct input-weight vectors, every neuron a copy of one of them
(clustered duplicates, as a split embedding or a condensed training run leaves), with
random output weights.  ``reduce`` is timed with and without its linear-dependence check;
the scaling exponent is the slope of log(time) against log(m), and a naive O(m²)
pairwise grouping is timed beside it where it fits, as what a user would otherwise write.

Run: ``python benchmarks/bench_reduce.py [--quick]``; results go to
``benchmarks/results/reduce.json`` and ``reduce.md``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from _common import load_summary, measure, session, write_results

import saddlemap as sm

CLUSTERS, D = 200, 20


def clustered(m: int, seed: int = 0) -> sm.TwoLayerNet:
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(CLUSTERS, D, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, CLUSTERS, (m,), generator=gen)
    a = torch.randn(m, generator=gen, dtype=torch.float64)
    return sm.TwoLayerNet(a, centres[labels], activation="tanh")


def naive_groups(net: sm.TwoLayerNet, tol: float) -> int:
    """Pairwise distances, then connected groups: the O(m²) route."""
    w = net.W_aug
    close = torch.cdist(w, w) <= tol
    seen = torch.zeros(w.shape[0], dtype=torch.bool)
    groups = 0
    for k in range(w.shape[0]):
        if not seen[k]:
            seen |= close[k]
            groups += 1
    return groups


def median_time(fn: Callable[[], Any], repeats: int) -> float:
    """The harness's median of ``repeats`` runs, after one warm-up."""
    return measure(fn, repeats).median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="m up to 10⁴, one repeat")
    args = parser.parse_args()
    sizes = [1_000, 3_000, 10_000] + ([] if args.quick else [30_000, 100_000])
    repeats = 1 if args.quick else 3
    rows = []
    with session() as harness:
        for m in sizes:
            net = clustered(m)
            red = sm.reduce(net, check_rank=False)
            assert red.width <= CLUSTERS
            row = {
                "m": m,
                "reduce_s": median_time(lambda n=net: sm.reduce(n, check_rank=False), repeats),
                "reduce_with_rank_check_s": median_time(lambda n=net: sm.reduce(n), repeats),
                "width": red.width,
                "output_change": red.output_change,
            }
            if m <= 10_000:  # the pairwise matrix needs m² bytes and seconds
                tol = red.tol
                row["naive_pairwise_s"] = median_time(lambda n=net, t=tol: naive_groups(n, t), 1)
                row["naive_over_reduce"] = row["naive_pairwise_s"] / row["reduce_s"]
            print(f"  m = {m}: reduce {row['reduce_s']:.3f} s", flush=True)
            rows.append(row)
    ms = np.array([r["m"] for r in rows], dtype=float)
    exponent = float(np.polyfit(np.log(ms), np.log([r["reduce_s"] for r in rows]), 1)[0])
    result = {"clusters": CLUSTERS, "d": D, "rows": rows, "scaling_exponent": exponent,
              "torch": torch.__version__, "torch_threads": harness.machine["torch_threads"],
              "machine": harness.machine, "threads": harness.threads, "load": harness.load}
    load = load_summary(harness.load)
    lines = [
        f"# reduce: m neurons in {CLUSTERS} clusters, d = {D}, tanh",
        "",
        f"Scaling exponent of reduce (time ∝ m^p): p = {exponent:.2f}.",
        *([f"Machine: {harness.machine['cpu']}. Load: {load}."] if load else []),
        "",
        "| m | reduce (s) | with rank check (s) | width | output change | naive O(m²) (s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        naive = f"{r['naive_pairwise_s']:.3f}" if "naive_pairwise_s" in r else "—"
        lines.append(
            f"| {r['m']} | {r['reduce_s']:.3f} | {r['reduce_with_rank_check_s']:.3f} | "
            f"{r['width']} | {r['output_change']:.1e} | {naive} |"
        )
    write_results("reduce", result, lines)


if __name__ == "__main__":
    main()
