"""Scaling of the critical reduction operator: m = 10³ … 10⁵ neurons, d = 20.

Two families, tanh:

* clustered: 200 distinct input-weight vectors, every neuron a copy of one of them
  (clustered duplicates, as a split embedding or a condensed training run leaves), with
  random output weights.  ``reduce`` is timed with and without its linear-dependence
  check, and a naive O(m²) pairwise grouping beside it where it fits, as what a user would
  otherwise write.
* minimal: m distinct random neurons, already minimal, so nothing merges and the
  dependence check sees all m of them: one SVD of a (2m + 8) × m feature matrix up to
  512 neurons, windows of 64 neighbours above (``saddlemap.reduction``).  The single SVD
  every width used before is timed beside it where it fits (m ≤ 3,000), as the O(m³)
  baseline.

The scaling exponents are the slopes of log(time) against log(m).

Run: ``python benchmarks/bench_reduce.py [--quick]``; results go to
``benchmarks/results/reduce.json`` and ``reduce.md`` (``reduce-quick.*`` with ``--quick``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from _common import load_summary, measure, session, write_results

import saddlemap as sm
from saddlemap import reduction

CLUSTERS, D = 200, 20


def clustered(m: int, seed: int = 0) -> sm.TwoLayerNet:
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(CLUSTERS, D, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, CLUSTERS, (m,), generator=gen)
    a = torch.randn(m, generator=gen, dtype=torch.float64)
    return sm.TwoLayerNet(a, centres[labels], activation="tanh")


def minimal(m: int, seed: int = 0) -> sm.TwoLayerNet:
    gen = torch.Generator().manual_seed(seed)
    return sm.TwoLayerNet(torch.randn(m, generator=gen, dtype=torch.float64),
                          torch.randn(m, D, generator=gen, dtype=torch.float64),
                          activation="tanh")


def single_svd(net: sm.TwoLayerNet) -> int:
    """The dependence check as one SVD of all m neurons on 2m + 8 probes (the old default)."""
    probes = reduction._probe_inputs(net, None, 2 * net.width + 8)
    return reduction._rank_deficiency(net, probes)[0]


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


def _exponent(rows: list[dict[str, Any]], key: str) -> float:
    ms = np.array([r["m"] for r in rows], dtype=float)
    return float(np.polyfit(np.log(ms), np.log([r[key] for r in rows]), 1)[0])


def clustered_rows(sizes: list[int], repeats: int) -> list[dict[str, Any]]:
    rows = []
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
        print(f"  clustered m = {m}: reduce {row['reduce_s']:.3f} s", flush=True)
        rows.append(row)
    return rows


def minimal_rows(sizes: list[int], repeats: int) -> list[dict[str, Any]]:
    rows = []
    for m in sizes:
        net = minimal(m)
        red = sm.reduce(net)
        assert red.width == m and red.is_minimal
        row = {
            "m": m,
            "reduce_s": median_time(lambda n=net: sm.reduce(n, check_rank=False), repeats),
            "reduce_with_rank_check_s": median_time(lambda n=net: sm.reduce(n), repeats),
            "check": "svd" if m <= reduction.EXACT_RANK_WIDTH else "windows",
        }
        if m <= 3_000:  # (2m + 8) × m doubles and O(m³) flops
            row["single_svd_s"] = median_time(lambda n=net: single_svd(n), 1)
        print(f"  minimal m = {m}: reduce with check {row['reduce_with_rank_check_s']:.3f} s",
              flush=True)
        rows.append(row)
    return rows


BUSY = ("**The machine was loaded during this run** (other work on both cores): the times "
        "are slower and noisier than on a quiet machine; re-measure there before quoting them.")


def markdown(result: dict[str, Any]) -> list[str]:
    load = load_summary(result.get("load"))
    min_exponent = result.get("minimal_scaling_exponent")
    busy = bool((result.get("load") or {}).get("warnings"))
    lines = [
        f"# reduce: m neurons in {CLUSTERS} clusters, d = {D}, tanh",
        "",
        f"Scaling exponent of reduce (time ∝ m^p): p = {result['scaling_exponent']:.2f}.",
        *([f"Machine: {result['machine']['cpu']}. Load: {load}."] if load else []),
        *(["", BUSY] if busy else []),
        "",
        "| m | reduce (s) | with rank check (s) | width | output change | naive O(m²) (s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        naive = f"{r['naive_pairwise_s']:.3f}" if "naive_pairwise_s" in r else "—"
        lines.append(
            f"| {r['m']} | {r['reduce_s']:.3f} | {r['reduce_with_rank_check_s']:.3f} | "
            f"{r['width']} | {r['output_change']:.1e} | {naive} |"
        )
    lines += [
        "",
        f"## Already-minimal networks: m distinct neurons, d = {D}, tanh",
        "",
        "The dependence check is one SVD up to 512 neurons and windows of 64 neighbours "
        "above; the single SVD of all m neurons (the previous check at every width) beside "
        "it where it fits."
        + (f" Scaling exponent of reduce with the windowed check: p = {min_exponent:.2f}."
           if min_exponent is not None else ""),
        "",
        "| m | reduce (s) | with dependence check (s) | check | single SVD of all m (s) |",
        "|---|---|---|---|---|",
    ]
    for r in result.get("minimal_rows", []):
        svd = f"{r['single_svd_s']:.3f}" if "single_svd_s" in r else "—"
        lines.append(f"| {r['m']} | {r['reduce_s']:.3f} | {r['reduce_with_rank_check_s']:.3f} "
                     f"| {r['check']} | {svd} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="m up to 10⁴, one repeat")
    args = parser.parse_args()
    sizes = [1_000, 3_000, 10_000] + ([] if args.quick else [30_000, 100_000])
    repeats = 1 if args.quick else 3
    with session() as harness:
        rows = clustered_rows(sizes, repeats)
        min_rows = minimal_rows(sizes, repeats)
    exponent = _exponent(rows, "reduce_s")
    windowed = [r for r in min_rows if r["check"] == "windows"]
    min_exponent = (_exponent(windowed, "reduce_with_rank_check_s")
                    if len(windowed) > 1 else None)
    result = {"clusters": CLUSTERS, "d": D, "rows": rows, "scaling_exponent": exponent,
              "minimal_rows": min_rows, "minimal_scaling_exponent": min_exponent,
              "torch": torch.__version__, "torch_threads": harness.machine["torch_threads"],
              "machine": harness.machine, "threads": harness.threads, "load": harness.load}
    write_results("reduce-quick" if args.quick else "reduce", result, markdown(result))


if __name__ == "__main__":
    main()
