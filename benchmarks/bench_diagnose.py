"""Diagnose real models, stage by stage: the time of each answer on one core.

Models a user brings: torch ``Linear → σ → Linear`` of width 32 trained by Adam (3,000
steps, float32) on scikit-learn's diabetes data with tanh, SiLU, GELU, sigmoid and ReLU; a
scikit-learn ``MLPClassifier`` (20 tanh units) on the digits data; and an MNIST-sized
synthetic regression (d = 784, m = 256, n = 10,000, P ≈ 200k) where every stage must be
matrix-free.  Each stage is what ``sm.diagnose`` runs, timed on its own: the certificate at
the model (gradient, spectrum, ray test), the negative-curvature step, the compression
profile, the nearest branch point, the bounded refinement; then ``sm.diagnose`` end to end.
Targets (the real-model issue): each diabetes and digits diagnosis under 20 s, the
MNIST-sized one under 3 minutes.

Run: ``python benchmarks/bench_diagnose.py [--quick]`` (quick: no MNIST-sized case); results
go to ``benchmarks/results/diagnose.json`` and ``diagnose.md``.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from _common import load_summary, session, write_results

import saddlemap as sm

ACTIVATIONS = {"tanh": torch.nn.Tanh, "silu": torch.nn.SiLU, "gelu": torch.nn.GELU,
               "sigmoid": torch.nn.Sigmoid, "relu": torch.nn.ReLU}


def diabetes_model(act: str) -> tuple[torch.nn.Module, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    X, y = (X - X.mean(0)) / X.std(0), (y - y.mean()) / y.std()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(10, 32), ACTIVATIONS[act](),
                                torch.nn.Linear(32, 1)).float()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    Xt, yt = torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    for _ in range(3000):
        opt.zero_grad()
        (0.5 * ((model(Xt)[:, 0] - yt) ** 2).mean()).backward()
        opt.step()
    return model, X, y


def digits_model() -> tuple[Any, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier((20,), activation="tanh", max_iter=500, random_state=0).fit(X, y)
    return clf, X, y


def mnist_sized_model() -> tuple[torch.nn.Module, np.ndarray, np.ndarray]:
    # d = 784, m = 256, n = 10,000: a tanh student trained by Adam on a width-8 tanh teacher
    # whose pre-activations have standard deviation 2 (well inside tanh's nonlinear range)
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(10_000, 784, generator=gen) / 14.0
    teacher = torch.randn(8, 784, generator=gen)
    y = torch.tanh(X @ teacher.T).sum(1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.Tanh(),
                                torch.nn.Linear(256, 1)).float()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        opt.zero_grad()
        (0.5 * ((model(X)[:, 0] - y) ** 2).mean()).backward()
        opt.step()
    return model, X.numpy().astype(np.float64), y.numpy().astype(np.float64)


def clock(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def stages(model: Any, X: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Each stage of a diagnosis timed on its own, then the whole ``sm.diagnose``."""
    loaded = sm.load_model(model)
    data = sm.Dataset(X, y, loss=loaded.loss, num_outputs=loaded.net.output_dim)
    net, row = loaded.net, {"P": loaded.net.num_params, "n": data.n, "K": data.output_dim}
    an = sm.Analysis(net, data)
    cert, row["certify_s"] = clock(lambda: sm.certify(an))
    descent, row["descent_s"] = clock(lambda: sm.negative_curvature_step(an))
    profile, row["compress_s"] = clock(lambda: sm.compression_profile(net, data))
    chosen = profile.chosen
    if chosen.width < net.width:
        _, row["branch_point_s"] = clock(lambda: sm.nearest_branch_point(
            net, data, None, chosen.groups, chosen.dropped))
    if not cert.converged and not cert.at_infinity and an.matvec_budget is None:
        # as diagnose: bounded, and skipped where each product is expensive
        _, row["refine_s"] = clock(lambda: sm.find_critical_point(
            net, data, max_iter=30 if an.dense else 10, max_move=0.3, patience=5))
    report, row["diagnose_s"] = clock(lambda: sm.diagnose(model, X, y, escape_steps=0))
    row.update(
        method=cert.spectrum.method, verdict=report.verdict.value,
        at_infinity=cert.at_infinity, lambda_min=descent.lambda_min,
        width=report.compression.width, loss_before=report.compression.loss_before,
        loss_after=report.compression.loss_after,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the MNIST-sized case")
    args = parser.parse_args()
    cases: list[tuple[str, Callable[[], tuple[Any, np.ndarray, np.ndarray]]]] = [
        *((f"diabetes, torch Adam, {a}", lambda a=a: diabetes_model(a)) for a in ACTIVATIONS),
        ("digits, MLPClassifier(20)", digits_model),
    ]
    if not args.quick:
        cases.append(("synthetic d = 784, m = 256, n = 10⁴", mnist_sized_model))
    rows = []
    with session() as harness:
        for name, make in cases:
            model, X, y = make()
            row = {"case": name, **stages(model, X, y)}
            print(f"  {name}: diagnose {row['diagnose_s']:.1f} s", flush=True)
            rows.append(row)
    result = {"rows": rows, "machine": harness.machine, "threads": harness.threads,
              "load": harness.load}
    load = load_summary(harness.load)
    lines = [
        "# diagnose on real models, per stage (seconds, one core)", "",
        *([f"Machine: {harness.machine['cpu']}. Load: {load}.", ""] if load else []),
        "| case | P | spectrum | certify | descent | compress | branch point | refine | "
        "diagnose | width | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cell = {k: (f"{r[k]:.2f}" if k in r else "—") for k in (
            "certify_s", "descent_s", "compress_s", "branch_point_s", "refine_s", "diagnose_s")}
        lines.append(
            f"| {r['case']} | {r['P']} | {r['method']} | {cell['certify_s']} | "
            f"{cell['descent_s']} | {cell['compress_s']} | {cell['branch_point_s']} | "
            f"{cell['refine_s']} | {cell['diagnose_s']} | {r['width']} | {r['verdict']} |"
        )
    write_results("diagnose", result, lines)


if __name__ == "__main__":
    main()
