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
from _common import machine, method_table, narrow_critical_point, timed, timed_peer, write_results
from scipy.sparse.linalg import LinearOperator, eigsh

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
        count = [0]

        def matvec(x: np.ndarray) -> np.ndarray:
            count[0] += 1
            t = theta.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(risk(t), t, create_graph=True)
            (hv,) = torch.autograd.grad(g @ torch.from_numpy(np.ascontiguousarray(x).ravel()), t)
            return hv.numpy()

        op = LinearOperator((net.num_params,) * 2, matvec=matvec, dtype=np.float64)
        v0 = np.random.default_rng(0).standard_normal(net.num_params)
        lam, vec = eigsh(op, k=1, which="SA", tol=tol, v0=v0)
        v = torch.from_numpy(vec[:, 0])
        before = float(risk(theta))
        scale = 0.5 * max(1.0, float(theta.abs().max()))
        ts = scale * 2.0 ** -np.arange(12)
        drops = [before - float(risk(theta + s * t * v)) for t in ts for s in (1, -1)]
        return {"kind": "strict saddle" if lam[0] < 0 else "not a strict saddle",
                "curvature": float(lam[0]), "loss_drop": max(drops), "matvecs": count[0]}

    return run




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat")
    args = parser.parse_args()
    torch.set_num_threads(1)
    repeats = 1 if args.quick else 3
    net, data = split_saddle()
    rows = {"saddlemap classify + scan": timed(lambda: ours(net, data), repeats)}
    for label, tol in (("eigsh on autograd HVP, scipy default tol", 0.0),
                       ("eigsh on autograd HVP, tol=1e-10", 1e-10)):
        rows[label] = timed_peer(lambda t=tol: eigenvector_route(t)(net, data), repeats)
    table = method_table(
        rows, "saddlemap classify + scan", ["HVPs", "verdict", "vᵀHv", "loss drop"],
        lambda r: [str(r["matvecs"]), str(r["kind"]), f"{r['curvature']:.3e}",
                   f"{r['loss_drop']:.3e}"],
    )
    result = {"problem": {"activation": "tanh", "d": 10, "m": 100, "n": 1000,
                          "P": net.num_params}, "machine": machine(), "results": rows}
    lines = [
        "# Classify a split saddle and find the way down (d=10, m=100, n=1000, P=1100, tanh)",
        "",
        f"Machine: {result['machine']['cpu']}, torch {torch.__version__}, 1 thread.",
        "",
        *table,
    ]
    write_results("saddles", result, lines)


if __name__ == "__main__":
    main()
