"""Deep MLP derivatives: gradient, HVP and λ_min of a depth-3 network against autograd.

Problem: d = 10, hidden widths 100–100, K = 1, n = 1000, tanh, biases in every layer
(P = 11,301), squared loss on the outputs of a random teacher of the same shape plus noise;
the point is a seeded random network (indefinite Hessian).  Each comparison alternates
blocks of calls of both sides (:func:`_common.paired`), so a drift of the machine hits both:

* gradient: ``sm.mlp_gradient`` (backpropagation) vs one autograd backward and
  ``torch.func.grad``;
* one HVP at a fresh point: ``sm.mlp_hvp`` (pass + R-operator) vs double backward with the
  graph built per call, and ``torch.func.jvp(grad)``;
* HVPs at one point: ``MLPHessianOperator.apply`` (pass kept) vs double backward with the
  first backward kept; 16 vectors at once vs 16 kept-graph products;
* λ_min: the same Lanczos driver (``sm.lanczos_spectrum``, smallest end, tol 1e-12) on our
  operator and on a kept-graph double-backward operator: time, products, agreement.

Run: ``python benchmarks/bench_deep.py [--budget S]``; results go to
``benchmarks/results/deep.json`` and ``deep.md``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch
from _common import load_summary, paired, session, write_results
from _peers import DoubleBackward, TorchFunc, autograd_operator

import saddlemap as sm

D, WIDTHS, N, K = 10, (100, 100), 1000, 1


def problem(seed: int = 0) -> tuple[sm.MLP, sm.Dataset]:
    gen = torch.Generator().manual_seed(seed)
    sizes = (D, *WIDTHS, K)

    def net() -> sm.MLP:
        L = len(sizes) - 1
        return sm.MLP([torch.randn(sizes[j + 1], sizes[j], generator=gen, dtype=torch.float64)
                       / sizes[j] ** 0.5 for j in range(L)],
                      [0.1 * torch.randn(sizes[j + 1], generator=gen, dtype=torch.float64)
                       for j in range(L)], activation="tanh")

    teacher, student = net(), net()
    X = torch.randn(N, D, generator=gen, dtype=torch.float64)
    y = teacher(X) + 0.1 * torch.randn(N, K, generator=gen, dtype=torch.float64)
    return student, sm.Dataset(X, y)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def row(task: str, peer: str, result: dict[str, Any], diff: float) -> dict[str, Any]:
    return {"task": task, "peer": peer, **result, "max_rel_diff": diff}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=8.0, help="seconds per pair")
    args = parser.parse_args()
    net, data = problem()
    theta = net.flatten()
    risk = sm.mlp_loss_function(net, data)
    func, autograd = TorchFunc(risk), DoubleBackward(risk, theta)
    kept = autograd.kept()
    gen = torch.Generator().manual_seed(1)
    v = torch.randn(net.num_params, generator=gen, dtype=torch.float64)
    V = torch.randn(net.num_params, 16, generator=gen, dtype=torch.float64)
    op = sm.MLPHessianOperator(net, data)
    rows = []
    with session() as harness:
        ours_g = sm.mlp_gradient(net, data)
        rows.append(row("gradient", "autograd backward",
                        paired(autograd.gradient, lambda: sm.mlp_gradient(net, data),
                               args.budget), rel(ours_g, autograd.gradient())))
        rows.append(row("gradient", "torch.func.grad",
                        paired(lambda: func.gradient(theta), lambda: sm.mlp_gradient(net, data),
                               args.budget), rel(ours_g, func.gradient(theta))))
        ours_hv = sm.mlp_hvp(net, data, v)
        rows.append(row("one HVP, fresh point", "double backward, graph per call",
                        paired(lambda: autograd.hvp(v), lambda: sm.mlp_hvp(net, data, v),
                               args.budget), rel(ours_hv, autograd.hvp(v))))
        rows.append(row("one HVP, fresh point", "torch.func.jvp(grad)",
                        paired(lambda: func.hvp(theta, v), lambda: sm.mlp_hvp(net, data, v),
                               args.budget), rel(ours_hv, func.hvp(theta, v))))
        col = v[:, None]
        rows.append(row("HVPs at one point", "double backward, first backward kept",
                        paired(lambda: kept.hvp(v), lambda: op.apply(col), args.budget),
                        rel(op.apply(col)[:, 0], kept.hvp(v))))
        rows.append(row("16 HVPs at one point", "16 kept-graph double backwards",
                        paired(lambda: kept.hvp_columns(V), lambda: op.apply(V), args.budget),
                        rel(op.apply(V), torch.stack(kept.hvp_columns(V), 1))))
        for r in rows:
            print(f"  {r['task']} vs {r['peer']}: {r['ratio']:.2f}×", flush=True)
        makers = {"saddlemap": lambda: sm.MLPHessianOperator(net, data),
                  "double backward, kept graph":
                      lambda: autograd_operator(risk, theta, give_up_s=None)}
        eig: dict[str, dict[str, Any]] = {}
        # ABBA: each side twice, in mirrored order, so that a drift hits both alike
        for name in ["saddlemap", "double backward, kept graph",
                     "double backward, kept graph", "saddlemap"]:
            start = time.perf_counter()
            spec = sm.lanczos_spectrum(makers[name](), k=1, which="smallest")
            seconds = time.perf_counter() - start
            entry = eig.setdefault(name, {"runs_s": []})
            entry["runs_s"].append(seconds)
            entry.update(seconds=float(np.median(entry["runs_s"])), lambda_min=spec.min,
                         matvecs=spec.num_matvecs, residual=float(spec.residuals[0]))
            print(f"  λ_min {name}: {seconds:.2f} s, {spec.min:.12g}", flush=True)
    ours_s, peer_s = eig["saddlemap"]["seconds"], eig["double backward, kept graph"]["seconds"]
    result = {"problem": {"d": D, "widths": WIDTHS, "n": N, "K": K, "P": net.num_params,
                          "activation": "tanh", "biases": True},
              "rows": rows, "lambda_min": eig, "lambda_min_ratio": peer_s / ours_s,
              "torch": torch.__version__, "machine": harness.machine,
              "threads": harness.threads, "load": harness.load}
    load = load_summary(harness.load)
    uptime = [harness.load.get(w, {}).get("uptime", "") for w in ("before", "after")]
    lines = [
        f"# Deep MLP derivatives: depth 3, d = {D}, widths {WIDTHS[0]}–{WIDTHS[1]}, "
        f"n = {N}, K = {K}, tanh, biases (P = {net.num_params})",
        "",
        "Ratio = peer time / saddlemap time, the median over alternating blocks of calls "
        "(interquartile range in brackets); above 1 means saddlemap is faster.",
        "",
        f"Machine: {harness.machine['cpu']}, one thread. "
        + (f"Load: {load}." if load else ""),
        f"`uptime` before: `{uptime[0]}`; after: `{uptime[1]}`.",
        "",
        "| task | compared with | ratio [IQR] | ours | theirs | max rel diff |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['task']} | {r['peer']} | {r['ratio']:.2f}× "
                     f"[{r['ratio_q1']:.2f}, {r['ratio_q3']:.2f}] | {1e3 * r['ours_s']:.2f} ms | "
                     f"{1e3 * r['peer_s']:.2f} ms | {r['max_rel_diff']:.1e} |")
    lines += [
        "",
        "λ_min by the same Lanczos driver (smallest end, tol 1e-12), each side run twice "
        "in ABBA order (median time):",
        "",
        "| products by | time (s) | λ_min | products | residual |",
        "|---|---|---|---|---|",
    ]
    for name, e in eig.items():
        lines.append(f"| {name} | {e['seconds']:.2f} | {e['lambda_min']:.10g} | "
                     f"{e['matvecs']} | {e['residual']:.1e} |")
    diff = abs(eig["saddlemap"]["lambda_min"] - eig["double backward, kept graph"]["lambda_min"])
    lines += ["", f"Ratio {peer_s / ours_s:.2f}×; the two λ_min differ by {diff:.1e}."]
    if not np.isfinite(diff):
        raise RuntimeError("λ_min is not finite")
    write_results("deep", result, lines)


if __name__ == "__main__":
    main()
