"""HVP benchmark: saddlemap's Hessian-vector products against autograd, measured in pairs.

On a shared machine the speed of one core drifts by ±30 % over seconds, which is as large
as the ratios in question.  So each comparison here is *paired*: ours and the peer run in
alternating blocks of calls (the order flipping every block), and the figure is the median
over blocks of peer time / our time, with the median times beside it.  Drift hits both
sides of a pair alike and drops out.

Per problem (float64, one thread, squared loss):

* one product at a fresh point: ``sm.hvp(net, data, v)`` against double backward with the
  gradient graph built per call, and against ``torch.func.jvp(grad)``;
* products at one point: ``HessianOperator.apply`` against double backward with the first
  backward's graph kept (``retain_graph``);
* 16 products at one point: ``HessianOperator.apply`` on 16 columns against 16 calls of the
  kept-graph double backward;
* the gradient: ``sm.gradient`` against one autograd backward (the bound the protocol sets
  beside an HVP).

Every pair is checked for agreement first.  Run from the repository root::

    python benchmarks/bench_hvp.py            # about 4 minutes on 2 cores
    python benchmarks/bench_hvp.py --quick    # the main problem only
    python benchmarks/bench_hvp.py --shapes   # the main problem and the K / d axis

The K / d axis (:data:`SHAPES`) is where the two contraction orders of the HVP kernels part
ways: many outputs (scikit-learn's digits: K = 10, d = 64, cross-entropy) and MNIST-sized
inputs (d = 784).

Results: ``results/hvp.json`` and ``results/hvp.md`` (``hvp-quick.*`` for ``--quick``,
``hvp-shapes.*`` for ``--shapes``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from _common import load_summary, paired, session, write_results
from _peers import DoubleBackward, TorchFunc

import saddlemap as sm

BATCH = 16


@dataclass(frozen=True)
class Spec:
    activation: str = "tanh"
    d: int = 10
    m: int = 100
    n: int = 1000
    K: int = 1
    bias: bool = False
    loss: str = "mse"

    @property
    def label(self) -> str:
        extra = (f" K={self.K}" if self.K > 1 else "") + (" biases" if self.bias else "")
        extra += f" {self.loss}" if self.loss != "mse" else ""
        return f"{self.activation} d={self.d} m={self.m} n={self.n}{extra}"


MAIN = Spec()
GRID = [MAIN, Spec("erf"), Spec("sigmoid"), Spec(K=3), Spec(bias=True), Spec(d=2),
        Spec(m=200), Spec(n=100), Spec(n=10_000)]
# The K / d axis: digits-shaped (many outputs), then MNIST-sized inputs.
SHAPES = [Spec(d=64, m=20, n=1797, K=10, bias=True, loss="cross_entropy"), Spec(d=784),
          Spec(d=784, m=256, n=2000)]


def problem(spec: Spec, seed: int) -> tuple[sm.TwoLayerNet, sm.Dataset]:
    """A random network and data of unit scale."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    net = sm.TwoLayerNet(randn(spec.m, spec.K) / spec.m**0.5, randn(spec.m, spec.d) / spec.d**0.5,
                         b=randn(spec.m) if spec.bias else None,
                         c=randn(spec.K) if spec.bias else None, activation=spec.activation)
    X = randn(spec.n, spec.d)
    if spec.loss == "cross_entropy":
        labels = torch.randint(0, spec.K, (spec.n,), generator=gen)
        return net, sm.Dataset(X, labels, loss="cross_entropy", num_outputs=spec.K)
    return net, sm.Dataset(X, randn(spec.n, spec.K))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def bench(spec: Spec, seed: int, budget_s: float) -> list[dict[str, Any]]:
    net, data = problem(spec, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    v = torch.randn(net.num_params, generator=gen, dtype=torch.float64)
    V = torch.randn(net.num_params, BATCH, generator=gen, dtype=torch.float64)
    risk, theta = sm.loss_function(net, data), net.flatten()
    func, autograd = TorchFunc(risk), DoubleBackward(risk, theta)
    kept = autograd.kept()

    def double_backward() -> torch.Tensor:
        return autograd.hvp(v)

    def jvp_grad() -> torch.Tensor:
        return func.hvp(theta, v)

    def kept_graph() -> torch.Tensor:
        return kept.hvp(v)

    def kept_graph_batch() -> list[torch.Tensor]:
        return kept.hvp_columns(V)

    op = sm.hessian_operator(net, data)
    ref = double_backward()
    ref_batch = torch.stack(kept_graph_batch(), 1)
    pairs: list[tuple[str, str, Callable[[], Any], Callable[[], Any], float]] = [
        ("one product, fresh point", "double backward, graph built per call", double_backward,
         lambda: sm.hvp(net, data, v), _rel(sm.hvp(net, data, v), ref)),
        ("one product, fresh point", "torch.func.jvp(grad)", jvp_grad,
         lambda: sm.hvp(net, data, v), _rel(jvp_grad(), ref)),
        ("products at one point", "double backward, first backward kept", kept_graph,
         lambda: op.apply(v[:, None]), _rel(op.apply(v[:, None])[:, 0], ref)),
        (f"{BATCH} products at one point", f"{BATCH} kept-graph double backwards",
         kept_graph_batch, lambda: op.apply(V), _rel(op.apply(V), ref_batch)),
        ("gradient", "autograd backward", autograd.gradient, lambda: sm.gradient(net, data),
         _rel(sm.gradient(net, data), autograd.gradient())),
    ]
    rows = []
    for task, peer_name, peer, ours, err in pairs:
        row = {"problem": spec.label, "P": net.num_params, "task": task, "peer": peer_name,
               "max_rel_diff": err, **paired(peer, ours, budget_s)}
        print(f"  {spec.label:34s} {task:28s} vs {peer_name:40s} {row['ratio']:5.2f}x "
              f"(ours {row['ours_s'] * 1e3:.3f} ms, diff {err:.1e})", flush=True)
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]], info: dict[str, Any], mode: str,
             load: dict[str, Any] | None = None) -> list[str]:
    main = [r for r in rows if r["problem"] == MAIN.label]
    load_line = load_summary(load)
    out = ["# saddlemap HVP benchmark (paired)", "",
           f"Mode `{mode}`. Ratio = peer time / saddlemap time, the "
           "median over alternating blocks of calls (interquartile range in brackets); above "
           "1 means saddlemap is faster.", "", "## Machine", "",
           f"* CPU: {info['cpu']}; torch {info['torch']}, {info['torch_threads']} thread; "
           f"Python {info['python']}; saddlemap {info['saddlemap']}",
           *([f"* load: {load_line}"] if load_line else []), "",
           f"## Main problem ({MAIN.label})", ""]
    out += [f"* {r['task']}: {r['ratio']:.2f}× {r['peer']} (ours {r['ours_s'] * 1e3:.3f} ms, "
            f"theirs {r['peer_s'] * 1e3:.3f} ms)" for r in main]
    out += ["", "## All problems", "",
            "| problem | P | task | compared with | ratio [IQR] | ours | theirs | max rel diff |",
            "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        per = f" (/{BATCH}: {r['ours_s'] / BATCH * 1e3:.3f} ms each)" if "16" in r["task"] else ""
        out.append(f"| {r['problem']} | {r['P']} | {r['task']} | {r['peer']} | "
                   f"{r['ratio']:.2f}× [{r['ratio_q1']:.2f}, {r['ratio_q3']:.2f}] | "
                   f"{r['ours_s'] * 1e3:.3f} ms{per} | {r['peer_s'] * 1e3:.3f} ms | "
                   f"{r['max_rel_diff']:.1e} |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="main problem only")
    parser.add_argument("--shapes", action="store_true",
                        help="main problem and the K / d axis (many outputs, wide inputs)")
    parser.add_argument("--budget", type=float, default=4.0, help="seconds per pair")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = []
    with session() as harness:
        specs = [MAIN] if args.quick else [MAIN, *SHAPES] if args.shapes else GRID
        for spec in specs:
            rows += bench(spec, args.seed, args.budget)
    mode = "quick" if args.quick else "shapes" if args.shapes else "full"
    name = "hvp" if mode == "full" else f"hvp-{mode}"
    result = {"machine": harness.machine, "threads": harness.threads, "load": harness.load,
              "rows": rows}
    write_results(name, result, markdown(rows, harness.machine, mode, harness.load))


if __name__ == "__main__":
    main()
