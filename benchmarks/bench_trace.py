"""Trace and spectral density: saddlemap against PyHessian's algorithms, measured in pairs.

PyHessian (Yao et al. 2020) gives three numbers: λ_max (``bench_core``), the trace by
Hutchinson's estimator (``hessian.trace()``: Rademacher probes, one double-backward product
each, stopping when the running mean changes by less than ``tol`` = 1e-3 relative, at most
``maxIter`` = 100) and the eigenvalue density by stochastic Lanczos quadrature
(``hessian.density()``: ``iter`` = 100 Lanczos steps with full reorthogonalisation from each
of ``n_v`` = 1 Rademacher probe, one double-backward product per step).  The peers here run
those algorithms as PyHessian writes them, on the double-backward products it uses (the
gradient's graph built once per call with ``create_graph``, as its constructor does, and
kept for every product), on the flat parameter vector (``_peers.KeptGradient``).  The
package itself is not installed: its wheel pins nothing, but it is not in this machine's
index; the algorithms are short and reproduced line for line.

Pairs (ours and the peer in alternating blocks of calls, ``_common.paired``):

* exact trace: ``sm.hessian_trace`` (closed-form diagonal) against PyHessian's trace at its
  defaults;
* the same number of products: Hutch++ (99 products) against Hutchinson (99 probes);
* density: ``sm.spectral_density`` against PyHessian's SLQ at its defaults (1 probe, 100
  steps), and with 10 probes each (ours batches the probes into one product per step).

Accuracy: the trace's relative error against the exact trace (median over seeds), the
density's Wasserstein-1 distance to the dense spectrum relative to its range.

Run from the repository root::

    python benchmarks/bench_trace.py --quick   # P = 330 and 1,100, about 2 minutes
    python benchmarks/bench_trace.py           # also P = 2,200 (m = 200)

Results: ``results/trace.json`` and ``trace.md`` (``trace-quick.*`` for ``--quick``).
"""

from __future__ import annotations

import argparse
import math
import statistics
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from _common import load_summary, paired, session, write_results
from _peers import KeptGradient
from scipy.stats import wasserstein_distance

import saddlemap as sm

HUTCH_MATVECS = 99
BUSY = ("**The machine was loaded during this run** (other work on both cores): the ratios "
        "are indicative only, since load slows the two sides unequally; re-measure on a "
        "quiet machine before quoting them.")


@dataclass(frozen=True)
class Spec:
    d: int = 10
    m: int = 100
    n: int = 1000

    @property
    def label(self) -> str:
        return f"tanh d={self.d} m={self.m} n={self.n}"


QUICK = [Spec(m=30, n=300), Spec()]
FULL = [*QUICK, Spec(m=200)]


def problem(spec: Spec, seed: int) -> tuple[sm.TwoLayerNet, sm.Dataset]:
    """A random tanh network and data of unit scale (as ``bench_hvp``): indefinite H."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    net = sm.TwoLayerNet(randn(spec.m) / spec.m**0.5, randn(spec.m, spec.d) / spec.d**0.5,
                         activation="tanh")
    return net, sm.Dataset(randn(spec.n, spec.d), randn(spec.n))


# ------------------------------------------------------------- PyHessian's algorithms
def rademacher(P: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, (P,), generator=gen).to(torch.float64) * 2 - 1


def pyhessian_trace(risk: Any, theta: torch.Tensor, seed: int, max_iter: int = 100,
                    tol: float = 1e-3) -> tuple[float, int]:
    """``hessian.trace()``: the running Hutchinson mean, stopped at a relative change < tol."""
    kept = KeptGradient(risk, theta)
    gen = torch.Generator().manual_seed(seed)
    values: list[float] = []
    trace = 0.0
    for _ in range(max_iter):
        v = rademacher(theta.numel(), gen)
        values.append(float(kept.hvp(v) @ v))
        mean = float(np.mean(values))
        if abs(mean - trace) / (abs(trace) + 1e-6) < tol:
            return mean, len(values)
        trace = mean
    return float(np.mean(values)), len(values)


def hutchinson(risk: Any, theta: torch.Tensor, seed: int, probes: int) -> float:
    """Plain Hutchinson with ``probes`` kept-graph products."""
    kept = KeptGradient(risk, theta)
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    for _ in range(probes):
        v = rademacher(theta.numel(), gen)
        total += float(kept.hvp(v) @ v)
    return total / probes


def pyhessian_density(risk: Any, theta: torch.Tensor, seed: int, steps: int = 100,
                      n_v: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``hessian.density()``: Lanczos with full reorthogonalisation per Rademacher probe.

    Returns the nodes and weights (n_v × steps), as PyHessian's ``eigen_list_full`` and
    ``weight_list_full``.
    """
    kept = KeptGradient(risk, theta)
    gen = torch.Generator().manual_seed(seed)
    P = theta.numel()
    steps = min(steps, P)
    nodes, weights = [], []
    for _ in range(n_v):
        v = rademacher(P, gen)
        v = v / v.norm()
        basis = [v]
        alphas, betas = [], []
        w_prev = None
        for i in range(steps):
            if i == 0:
                w_prime = kept.hvp(v)
                alpha = float(w_prime @ v)
                w = w_prime - alpha * v
            else:
                beta = float(w_prev.norm())
                betas.append(beta)
                v = w_prev / beta if beta > 1e-300 else rademacher(P, gen).double()
                for u in basis:  # PyHessian's orthnormal(): one Gram–Schmidt pass
                    v = v - (v @ u) * u
                v = v / v.norm()
                basis.append(v)
                w_prime = kept.hvp(v)
                alpha = float(w_prime @ v)
                w = w_prime - alpha * v - beta * basis[-2]
            alphas.append(alpha)
            w_prev = w
        T = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
        theta_t, U = np.linalg.eigh(T)
        nodes.append(theta_t)
        weights.append(U[0] ** 2)
    return np.array(nodes), np.array(weights)


# ------------------------------------------------------------------------------ runs
def _w1(nodes: np.ndarray, weights: np.ndarray, lam: np.ndarray) -> float:
    keep = np.isfinite(nodes)
    return float(wasserstein_distance(nodes[keep], lam, u_weights=weights[keep])
                 / (lam.max() - lam.min()))


def _row(spec: Spec, P: int, task: str, peer: str, pair: dict[str, Any],
         **extra: Any) -> dict[str, Any]:
    row = {"problem": spec.label, "P": P, "task": task, "peer": peer, **pair, **extra}
    print(f"  {spec.label:26s} {task:34s} vs {peer:38s} {row['ratio']:6.2f}x "
          f"(ours {row['ours_s'] * 1e3:.2f} ms)", flush=True)
    return row


def bench(spec: Spec, seed: int, budget_s: float, seeds: int) -> list[dict[str, Any]]:
    net, data = problem(spec, seed)
    P = net.num_params
    risk, theta = sm.loss_function(net, data), net.flatten()
    exact = float(sm.hessian(net, data).trace())
    lam = np.linalg.eigvalsh(sm.hessian(net, data).numpy())

    def rel(x: float) -> float:
        return abs(x - exact) / abs(exact)

    rows = []
    ours_exact = sm.hessian_trace(net, data).value
    runs = [pyhessian_trace(risk, theta, s) for s in range(seeds)]
    rows.append(_row(
        spec, P, "trace, exact", "PyHessian trace() at its defaults",
        paired(lambda: pyhessian_trace(risk, theta, seed), lambda: sm.hessian_trace(net, data),
               budget_s),
        ours_rel_error=rel(ours_exact),
        peer_rel_error_median=statistics.median(rel(v) for v, _ in runs),
        peer_products_median=statistics.median(k for _, k in runs)))
    hpp = [sm.hessian_trace(net, data, "hutch++", HUTCH_MATVECS, seed=s).value
           for s in range(seeds)]
    hut = [hutchinson(risk, theta, s, HUTCH_MATVECS) for s in range(seeds)]
    rows.append(_row(
        spec, P, f"trace, {HUTCH_MATVECS} products", f"Hutchinson, {HUTCH_MATVECS} probes",
        paired(lambda: hutchinson(risk, theta, seed, HUTCH_MATVECS),
               lambda: sm.hessian_trace(net, data, "hutch++", HUTCH_MATVECS, seed=seed),
               budget_s),
        ours_rel_error_median=statistics.median(rel(v) for v in hpp),
        peer_rel_error_median=statistics.median(rel(v) for v in hut)))
    density_seeds = range(seed, seed + min(seeds, 3))
    for n_v in (1, 10):
        ours = [sm.spectral_density(net, data, n_probes=n_v, lanczos_steps=100, seed=s)
                for s in density_seeds]
        peers = [pyhessian_density(risk, theta, s, 100, n_v) for s in density_seeds]
        rows.append(_row(
            spec, P, f"density, {n_v} probe(s) x 100 steps",
            f"PyHessian density(iter=100, n_v={n_v})",
            paired(lambda k=n_v: pyhessian_density(risk, theta, seed, 100, k),
                   lambda k=n_v: sm.spectral_density(net, data, n_probes=k, lanczos_steps=100,
                                                     seed=seed), budget_s),
            ours_w1_rel=statistics.median(_w1(o.nodes, o.weights, lam) for o in ours),
            peer_w1_rel=statistics.median(_w1(n, w, lam) for n, w in peers),
            density_seeds=len(density_seeds),
            negative_true=int((lam < -ours[0].zero_tol).sum()),
            ours_negative=ours[0].negative_count,
            ours_negative_stderr=ours[0].negative_count_stderr,
            ours_negative_bounds=ours[0].negative_count_bounds))
    return rows


def markdown(rows: list[dict[str, Any]], info: dict[str, Any], mode: str,
             load: dict[str, Any] | None, seeds: int) -> list[str]:
    load_line = load_summary(load)
    out = ["# Hessian trace and spectral density against PyHessian's algorithms (paired)", "",
           f"Mode `{mode}`. Ratio = peer time / saddlemap time, the median over alternating "
           "blocks of calls (interquartile range in brackets); above 1 means saddlemap is "
           "faster. The peers are PyHessian's trace() and density() algorithms on kept-graph "
           "double-backward products (PyHessian itself is not installed here). Errors: the "
           f"trace's relative error (median over {seeds} seeds), the density's W1 distance to "
           f"the dense spectrum over the spectral range (median over {min(seeds, 3)} seeds) "
           "and, for the first seed, the negative count with its standard error and "
           "bracket against the dense count.",
           *(["", BUSY] if load and load.get("warnings") else []), "",
           f"* CPU: {info['cpu']}; torch {info['torch']}, {info['torch_threads']} thread; "
           f"saddlemap {info['saddlemap']}",
           *([f"* load: {load_line}"] if load_line else []), "",
           "| problem | P | task | compared with | ratio [IQR] | ours | theirs | accuracy |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "ours_w1_rel" in r:
            lo, hi = r["ours_negative_bounds"]
            acc = (f"W1 {r['ours_w1_rel']:.1e} vs {r['peer_w1_rel']:.1e}; negatives "
                   f"{r['ours_negative']:.0f} ± {r['ours_negative_stderr']:.0f}, bracket "
                   f"{lo:.0f}–{hi:.0f} (true {r['negative_true']})")
        elif "ours_rel_error" in r:
            acc = (f"exact ({r['ours_rel_error']:.0e}) vs {r['peer_rel_error_median']:.1e} "
                   f"({r['peer_products_median']:.0f} products)")
        else:
            acc = f"{r['ours_rel_error_median']:.1e} vs {r['peer_rel_error_median']:.1e}"
        out.append(f"| {r['problem']} | {r['P']} | {r['task']} | {r['peer']} | "
                   f"{r['ratio']:.2f}× [{r['ratio_q1']:.2f}, {r['ratio_q3']:.2f}] | "
                   f"{r['ours_s'] * 1e3:.2f} ms | {r['peer_s'] * 1e3:.2f} ms | {acc} |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="P = 330 and 1,100 only")
    parser.add_argument("--budget", type=float, default=4.0, help="seconds per pair")
    parser.add_argument("--seeds", type=int, default=7, help="seeds for the error medians")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.seeds < 1 or not math.isfinite(args.budget) or args.budget < 0:
        parser.error("--seeds must be ≥ 1 and --budget a finite number ≥ 0")
    rows: list[dict[str, Any]] = []
    with session() as harness:
        for spec in QUICK if args.quick else FULL:
            rows += bench(spec, args.seed, args.budget, args.seeds)
    mode = "quick" if args.quick else "full"
    result = {"machine": harness.machine, "threads": harness.threads, "load": harness.load,
              "rows": rows}
    write_results("trace" if mode == "full" else "trace-quick", result,
                  markdown(rows, harness.machine, mode, harness.load, args.seeds))


if __name__ == "__main__":
    main()
