"""Classify a saddle and find the way down: saddlemap against the eigenvector route.

Problem: tanh, d=10, n=1000: a width-5 critical point (L-BFGS, then refinement) split into
width 100 (20 copies per neuron, ratios of both signs summing to 1): an exact strict saddle,
P = 1100, with exact zero eigenvalues.

* saddlemap: ``escape(net, data, steps=0, refine=False)`` — certificate (gradient, dense
  spectrum, warnings), classification with a witness direction, and the scan of the loss
  along it on both sides.
* the eigenvector route a user would otherwise take: ``scipy.sparse.linalg.eigsh(which="SA")``
  on a LinearOperator of double-backward autograd HVPs (at scipy's default tolerance and
  at tol=1e-10), then the same scan along the eigenvector.

Run: ``python benchmarks/bench_saddles.py [--quick]``; results go to
``benchmarks/results/saddles.json`` and ``saddles.md``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from _common import (
    load_summary,
    method_table,
    narrow_critical_point,
    session,
    timed,
    timed_peer,
    write_results,
)
from _peers import autograd_operator, scipy_eigsh, start_vector

import saddlemap as sm


def split_saddle(seed: int = 0) -> tuple[sm.TwoLayerNet, sm.Dataset]:
    narrow, data = narrow_critical_point(seed)
    gen = torch.Generator().manual_seed(seed)
    ratios = torch.rand(5, 20, generator=gen, dtype=torch.float64) - 0.3
    ratios[:, -1] = 1 - ratios[:, :-1].sum(1)
    a = (narrow.a * ratios).reshape(-1, 1)
    return sm.TwoLayerNet(a, narrow.W.repeat_interleave(20, dim=0)), data


def ours(net: sm.TwoLayerNet, data: sm.Dataset) -> dict[str, Any]:
    out = sm.escape(net, data, steps=0, refine=False)
    return {"kind": out.start.kind.value, "curvature": out.start.curvature,
            "loss_drop": out.loss_before - out.loss_after_step, "matvecs": 0}


def eigenvector_route(tol: float) -> Callable[[sm.TwoLayerNet, sm.Dataset], dict[str, Any]]:
    def run(net: sm.TwoLayerNet, data: sm.Dataset) -> dict[str, Any]:
        risk = sm.loss_function(net, data)
        theta = net.flatten()
        # Double backward with the gradient graph rebuilt per product; no time limit, and
        # an ARPACK run that does not converge is a failure.
        op = autograd_operator(risk, theta, kept=False, give_up_s=None)
        out = scipy_eigsh(op, "SA", partial=False, tol=tol, v0=start_vector(net.num_params, 0))
        lam, v = out["lam"], torch.from_numpy(out["vec"])
        before = float(risk(theta))
        scale = 0.5 * max(1.0, float(theta.abs().max()))
        ts = scale * 2.0 ** -np.arange(12)
        drops = [before - float(risk(theta + s * t * v)) for t in ts for s in (1, -1)]
        return {"kind": "strict saddle" if lam < 0 else "not a strict saddle",
                "curvature": lam, "loss_drop": max(drops), "matvecs": out["matvecs"]}

    return run


def _sci(x: float | None) -> str:
    return "—" if x is None else f"{x:.3e}"  # None: saddlemap found no saddle to classify


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat")
    args = parser.parse_args()
    repeats = 1 if args.quick else 3
    with session() as harness:
        net, data = split_saddle()
        rows = {"saddlemap classify + scan": timed(lambda: ours(net, data), repeats)}
        print(f"  saddlemap: {rows['saddlemap classify + scan']['median_s']:.3f} s", flush=True)
        for label, tol in (("eigsh on autograd HVP, scipy default tol", 0.0),
                           ("eigsh on autograd HVP, tol=1e-10", 1e-10)):
            rows[label] = timed_peer(lambda t=tol: eigenvector_route(t)(net, data), repeats)
            print(f"  {label}: {rows[label].get('median_s', rows[label].get('failure'))}",
                  flush=True)
    table = method_table(
        rows, "saddlemap classify + scan", ["HVPs", "verdict", "vᵀHv", "loss drop"],
        lambda r: [str(r["matvecs"]), str(r["kind"]), _sci(r["curvature"]),
                   _sci(r["loss_drop"])],
    )
    result = {"problem": {"activation": "tanh", "d": 10, "m": 100, "n": 1000,
                          "P": net.num_params}, "machine": harness.machine,
              "threads": harness.threads, "load": harness.load, "results": rows}
    load = load_summary(harness.load)
    lines = [
        "# Classify a split saddle and find the way down (d=10, m=100, n=1000, P=1100, tanh)",
        "",
        f"Machine: {result['machine']['cpu']}, torch {torch.__version__}, 1 thread.",
        *([f"Load: {load}."] if load else []),
        "",
        *table,
    ]
    write_results("saddles", result, lines)


if __name__ == "__main__":
    main()
