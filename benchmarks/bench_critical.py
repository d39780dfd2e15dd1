"""Time to certify a critical point: saddlemap against SciPy root finders on autograd.

Problem: teacher–student, tanh, d=10, n=1000, noise 0.1.  A width-5 critical point is found
(L-BFGS, then saddlemap's refinement) and embedded into width 50 by splitting every neuron
into 10 copies with random ratios summing to 1: an exact critical point (a saddle branch
point) with P = 550 parameters and exactly singular Hessian.  It is perturbed until
‖∇R‖ ≈ 1e-4, and each method must bring ‖∇R‖ back below 1e-10:

* saddlemap ``find_critical_point`` (Levenberg–Marquardt on ∇R with closed-form H) plus
  ``certify`` (dense spectrum, verdict);
* ``scipy.optimize.root(method="lm")`` and ``least_squares(method="lm")`` on F = ∇R with
  the Jacobian H, both from ``torch.func`` autodiff (what a user would otherwise write),
  followed by the same eigendecomposition for the verdict.

Run: ``python benchmarks/bench_critical.py [--quick]``; results go to
``benchmarks/results/critical.json`` and ``critical.md``.
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
from _peers import TorchFunc
from scipy.optimize import least_squares, root

import saddlemap as sm


def embedded_saddle(seed: int = 0) -> tuple[sm.TwoLayerNet, sm.Dataset]:
    narrow, data = narrow_critical_point(seed)
    gen = torch.Generator().manual_seed(seed)
    ratios = torch.rand(5, 10, generator=gen, dtype=torch.float64) + 0.5
    ratios = ratios / ratios.sum(1, keepdim=True)
    a = (narrow.a * ratios).reshape(-1, 1)
    W = narrow.W.repeat_interleave(10, dim=0)
    return sm.TwoLayerNet(a, W, activation="tanh"), data


def perturbed(net: sm.TwoLayerNet, data: sm.Dataset, target: float = 1e-4) -> sm.TwoLayerNet:
    direction = torch.randn(net.num_params, generator=torch.Generator().manual_seed(1),
                            dtype=torch.float64)
    scale = 1e-4
    for _ in range(60):
        trial = net.unflatten(net.flatten() + scale * direction)
        g = float(sm.gradient(trial, data).norm())
        if 0.5 * target <= g <= 2 * target:
            return trial
        scale *= (target / g) ** 0.5 if g > 0 else 2
    return trial


def ours(start: sm.TwoLayerNet, data: sm.Dataset) -> dict[str, Any]:
    cp = sm.find_critical_point(start, data)
    return {"grad_norm": cp.grad_norm, "iterations": cp.iterations, "verdict": cp.verdict.value}


def scipy_method(kind: str) -> Callable[[sm.TwoLayerNet, sm.Dataset], dict[str, Any]]:
    def run(start: sm.TwoLayerNet, data: sm.Dataset) -> dict[str, Any]:
        func = TorchFunc(sm.loss_function(start, data))

        def F(x: np.ndarray) -> np.ndarray:
            return func.gradient(torch.from_numpy(x)).numpy()

        def J(x: np.ndarray) -> np.ndarray:
            return func.hessian(torch.from_numpy(x)).numpy()

        x0 = start.flatten().numpy()
        if kind == "root-lm":
            res = root(F, x0, jac=J, method="lm", options={"xtol": 1e-15, "ftol": 1e-15})
            x, nit = res.x, int(res.nfev)
        else:
            res = least_squares(F, x0, jac=J, method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15)
            x, nit = res.x, int(res.nfev)
        net = start.unflatten(torch.from_numpy(x))
        spec = sm.dense_spectrum(torch.from_numpy(J(x)))  # the verdict needs H too
        g = float(np.linalg.norm(F(x)))
        verdict = "strict saddle" if spec.min < -spec.zero_tol else "other"
        return {"grad_norm": g, "iterations": nit, "verdict": verdict,
                "loss": sm.loss(net, data)}

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat")
    args = parser.parse_args()
    repeats = 1 if args.quick else 3
    with session() as harness:
        net, data = embedded_saddle()
        start = perturbed(net, data)
        g0 = float(sm.gradient(start, data).norm())
        rows = {"saddlemap": timed(lambda: ours(start, data), repeats)}
        print(f"  saddlemap: {rows['saddlemap']['median_s']:.3f} s", flush=True)
        for kind in ("root-lm", "least_squares-lm"):
            rows[kind] = timed_peer(lambda k=kind: scipy_method(k)(start, data), repeats)
            print(f"  {kind}: {rows[kind].get('median_s', rows[kind].get('failure'))}",
                  flush=True)
    table = method_table(
        rows, "saddlemap", ["final ‖∇R‖", "evaluations", "verdict"],
        lambda r: [f"{r['grad_norm']:.1e}", str(r["iterations"]), str(r["verdict"])],
    )
    for row in rows.values():
        if "grad_norm" in row:
            row["reached_1e-10"] = row["grad_norm"] <= 1e-10
    result = {"problem": {"activation": "tanh", "d": 10, "m": 50, "n": 1000, "P": net.num_params,
                          "start_grad_norm": g0}, "machine": harness.machine,
              "threads": harness.threads, "load": harness.load, "results": rows}
    load = load_summary(harness.load)
    lines = [
        "# Certify a critical point (d=10, m=50, n=1000, P=550, tanh)",
        "",
        f"Start: a split saddle perturbed to ‖∇R‖ = {g0:.2e}. Machine: {result['machine']['cpu']},"
        f" torch {torch.__version__}, {torch.get_num_threads()} thread.",
        *([f"Load: {load}."] if load else []),
        "",
        *table,
    ]
    write_results("critical", result, lines)


if __name__ == "__main__":
    main()
