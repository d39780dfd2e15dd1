"""MNIST-sized inputs: HVPs against autograd and the three-GEMM bound, spectra in bounded memory.

The d-axis (d = 10, 100, 784 at m = 100, n = 1,000) and the MNIST-sized grid (d = 784,
m ∈ {100, 256, 1,000}, n ∈ {1,000, 10,000}), float64, tanh, one thread.  Per problem, paired
and interleaved (``_common.paired``):

* one Hessian-vector product at a fresh point, ``sm.hvp``, against double backward with the
  gradient graph built per call;
* the same product against its bound: three n × D × m GEMMs (forward, J v, one combined
  backward) of the same sizes, timed as plain ``torch.matmul`` calls;
* the memory a cached ``HessianOperator`` keeps (``derivatives.cache_bytes``) and whether it
  streams instead.

Then two memory runs, each in a fresh process (peak resident memory above the start, read
from ``/proc``; Linux only): Lanczos λ_min through ``sm.Analysis(...).spectrum`` at d = 784,
m = 1,000, n = 1,000, and six streamed products at n = 60,000 (``batch_size=5000``).

Run: ``python benchmarks/bench_wide.py`` (about 10 minutes); results go to
``benchmarks/results/wide.json`` and ``wide.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

import torch
from _common import load_summary, paired, session, write_results
from _peers import DoubleBackward

import saddlemap as sm
from saddlemap import derivatives

AXIS = [(10, 100, 1000), (100, 100, 1000)]  # d = 784 is the first MNIST row
MNIST = [(784, m, n) for m in (100, 256, 1000) for n in (1000, 10_000)]

MEMORY_RUN = r"""
import json, sys, time, warnings
import torch
torch.set_num_threads(1)
import saddlemap as sm

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024

n, m, d, mode = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
gen = torch.Generator().manual_seed(0)
X = torch.randn(n, d, generator=gen, dtype=torch.float64) / d**0.5
net = sm.TwoLayerNet(torch.randn(m, generator=gen, dtype=torch.float64) / m**0.5,
                     torch.randn(m, d, generator=gen, dtype=torch.float64))
data = sm.Dataset(X, torch.tanh(X[:, :5].sum(1)))
del X
open("/proc/self/clear_refs", "w").write("5")
start = status("VmRSS")
t = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    if mode == "analysis":
        spec = sm.Analysis(net, data).spectrum
    else:
        spec = sm.spectrum(net, data, k=1, which="smallest", method="lanczos",
                           batch_size=5000, max_matvecs=6)
print(json.dumps({"seconds": time.perf_counter() - t, "peak_mib": status("VmHWM") - start,
                  "start_mib": start, "lambda_min": float(spec.min),
                  "residual": float(spec.residuals[0]), "matvecs": spec.num_matvecs,
                  "converged": bool(spec.converged[0])}))
"""


def problem(d: int, m: int, n: int) -> tuple[sm.TwoLayerNet, sm.Dataset]:
    gen = torch.Generator().manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    net = sm.TwoLayerNet(randn(m) / m**0.5, randn(m, d) / d**0.5)
    return net, sm.Dataset(randn(n, d), randn(n))


def row(d: int, m: int, n: int, budget_s: float) -> dict[str, Any]:
    net, data = problem(d, m, n)
    v = torch.randn(net.num_params, generator=torch.Generator().manual_seed(1),
                    dtype=torch.float64)
    autograd = DoubleBackward(sm.loss_function(net, data), net.flatten())
    X, W = data.X, net.W
    dW = torch.randn_like(W)

    def three_gemms() -> torch.Tensor:
        Z = X @ W.T
        U = X @ dW.T
        return (Z + U).T @ X

    ours = sm.hvp(net, data, v)
    diff = float((ours - autograd.hvp(v)).abs().max() / ours.abs().max())
    peer = paired(lambda: autograd.hvp(v), lambda: sm.hvp(net, data, v), budget_s)
    bound = paired(three_gemms, lambda: sm.hvp(net, data, v), budget_s)
    cache = derivatives.cache_bytes(n, m, 1, d)
    out = {"d": d, "m": m, "n": n, "P": net.num_params, "max_rel_diff": diff,
           "vs_double_backward": peer["ratio"], "db_iqr": [peer["ratio_q1"], peer["ratio_q3"]],
           "ours_s": peer["ours_s"], "double_backward_s": peer["peer_s"],
           "bound_s": bound["peer_s"], "over_bound": 1.0 / bound["ratio"],
           "cache_mib": cache / 2**20, "streams": cache > derivatives.CACHE_BYTES}
    print(f"  d={d} m={m} n={n}: {out['vs_double_backward']:.2f}x double backward, "
          f"{out['over_bound']:.2f}x the bound, cache {out['cache_mib']:.0f} MiB", flush=True)
    return out


def memory_run(n: int, m: int, d: int, mode: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", MEMORY_RUN, str(n), str(m), str(d), mode],
                          capture_output=True, text=True, check=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    result = {"n": n, "m": m, "d": d, "mode": mode, **json.loads(done.stdout)}
    print(f"  memory {mode} n={n}: {result['seconds']:.1f} s, peak +{result['peak_mib']:.0f} "
          f"MiB", flush=True)
    return result


def markdown(rows: list[dict[str, Any]], memory: list[dict[str, Any]], harness: Any) -> list[str]:
    load = load_summary(harness.load)
    out = ["# MNIST-sized inputs: HVPs and spectra (one thread, float64, tanh)", "",
           f"Machine: {harness.machine['cpu']}; torch {harness.machine['torch']}."
           + (f" Load: {load}." if load else ""), "",
           "Ratios are paired and interleaved (median over alternating blocks). "
           "\"× bound\" is our fresh-point HVP over three plain GEMMs of size n × D × m.", "",
           "| d | m | n | P | vs double backward [IQR] | ours | double backward | × bound | "
           "operator cache | max rel diff |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cache = f"{r['cache_mib']:.0f} MiB" + (" (streams)" if r["streams"] else "")
        out.append(f"| {r['d']} | {r['m']} | {r['n']} | {r['P']} | "
                   f"{r['vs_double_backward']:.2f}× [{r['db_iqr'][0]:.2f}, {r['db_iqr'][1]:.2f}] "
                   f"| {r['ours_s'] * 1e3:.1f} ms | {r['double_backward_s'] * 1e3:.1f} ms | "
                   f"{r['over_bound']:.2f}× | {cache} | {r['max_rel_diff']:.1e} |")
    out += ["", "## Spectra in bounded memory (fresh process each; peak above the data)", "",
            "| what | n | m | d | time | peak memory | products | λ_min (residual) |",
            "|---|---|---|---|---|---|---|---|"]
    for r in memory:
        what = ("`Analysis(...).spectrum` (budgeted thick-restart Lanczos)"
                if r["mode"] == "analysis" else "6 streamed products, `batch_size=5000`")
        out.append(f"| {what} | {r['n']} | {r['m']} | {r['d']} | {r['seconds']:.1f} s | "
                   f"{r['peak_mib']:.0f} MiB | {r['matvecs']} | {r['lambda_min']:.4g} "
                   f"({r['residual']:.1e}) |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=4.0, help="seconds per pair")
    args = parser.parse_args()
    with session() as harness:
        rows = [row(d, m, n, args.budget) for d, m, n in AXIS + MNIST]
        memory = [memory_run(1000, 1000, 784, "analysis"), memory_run(60_000, 1000, 784, "stream")]
    result = {"rows": rows, "memory": memory, "machine": harness.machine,
              "threads": harness.threads, "load": harness.load}
    write_results("wide", result, markdown(rows, memory, harness))


if __name__ == "__main__":
    main()
