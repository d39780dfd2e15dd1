"""Core benchmark: saddlemap's closed forms against what a user would otherwise run.

In one process, on the same problems (tanh, no bias, squared loss, float64, one thread for
torch and for every BLAS threadpool, a warm-up run, median of several repeats), this times

1. the full Hessian: ``sm.hessian`` against ``torch.func.hessian`` on ``sm.loss_function``
   and against row-by-row double backward, beside a lower bound, one bare GEMM ``JᵀJ``;
2. one Hessian-vector product: ``sm.hvp`` (and the cached ``HessianOperator.apply``)
   against double backward (graph rebuilt per call, and first backward cached) and
   ``torch.func.jvp(grad)``, beside a lower bound, one autograd gradient;
3. λ_min and λ_max: ``sm.spectrum(method="lanczos")`` against ``scipy.sparse.linalg.eigsh``
   on an autograd double-backward operator, at a random point and at an embedded saddle;
4. the peers that are installed (PyHessian, curvlinops, hessian-eigenthings), at their
   defaults and tuned to our tolerance, with their error against a dense ``eigh``.

The embedded saddle: a random width-m/2 network is made an exact critical point by
planting the targets (y = its outputs plus a residual orthogonal to its Jacobian's range),
then every neuron is split with output-weight ratios (0.3, 0.7).  The wide network is then
an exact critical point whose Hessian has exact zero eigenvalues (one per split neuron).
Both points of a problem share the same data.

Run from the repository root::

    python benchmarks/bench_core.py --quick   # main problem only, under 2 minutes
    python benchmarks/bench_core.py           # the grid, about 10 minutes on 2 cores

The full run times the derivatives (tasks 1-2) on the grid d ∈ {2, 10}, m ∈ {10, 50, 100,
200}, n ∈ {10², 10³, 10⁴}; the eigenvalues (task 3) on the main problem (d=10, m=100,
n=1000) and one axis varied at a time around it; peers and scipy's default eigsh (task 4)
on the main problem and d=2, m=100, n=1000.  Slow autodiff Hessians are skipped where
their predicted time or memory is too large, and an eigensolver still running after 60 s
is stopped; both are recorded with the reason.

Results go to ``benchmarks/results/core.json`` and ``core.md`` (``core-quick.*`` for
``--quick``).  Ratios are peer time / our time: above 1 means saddlemap is faster.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy
import torch
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

import saddlemap as sm

DTYPE = torch.float64
SPLIT = (0.3, 0.7)
RESIDUAL_RMS = 0.5
LANCZOS_TOL = 1e-12  # sm.spectrum's default tolerance: what the tuned peers are held to
LANCZOS_NCV = 30  # the Krylov size sm.lanczos_spectrum uses for k = 1
SLOW_LIMIT_S = 25.0  # skip a tool whose predicted time per call is above this (not on MAIN)
BATCH = 16  # vectors in the batched-HVP row
GIVE_UP_S = 60.0  # an eigensolver run still going after this is a failure (no convergence)
OURS = {
    "hessian": "saddlemap.hessian",
    "hvp": "saddlemap.hvp",
    "lambda_min": "saddlemap.spectrum lanczos",
    "lambda_max": "saddlemap.spectrum lanczos",
}
PEERS = {
    "pyhessian": "pyhessian",
    "curvlinops": "curvlinops-for-pytorch",
    "hessian_eigenthings": "hessian-eigenthings",
}


# ------------------------------------------------------------------------------ problems
@dataclass(frozen=True)
class Spec:
    d: int
    m: int
    n: int

    @property
    def num_params(self) -> int:
        return self.m * (self.d + 1)

    @property
    def label(self) -> str:
        return f"d={self.d} m={self.m} n={self.n}"


MAIN = Spec(10, 100, 1000)
GRID = [Spec(d, m, n) for d in (2, 10) for m in (10, 50, 100, 200) for n in (100, 1000, 10_000)]
# λ comparisons: the main problem and one axis varied at a time around it.
AXES = [MAIN, Spec(10, 10, 1000), Spec(10, 50, 1000), Spec(10, 200, 1000),
        Spec(10, 100, 100), Spec(10, 100, 10_000), Spec(2, 100, 1000)]
# Peers and scipy's default eigsh (slow at saddles): the main problem and a d = 2 one, whose
# spectrum is more clustered.
PEER_SPECS = [MAIN, Spec(2, 100, 1000)]


@dataclass
class Problem:
    spec: Spec
    data: sm.Dataset
    points: dict[str, sm.TwoLayerNet | None]
    info: dict[str, Any]


def _generator(spec: Spec, seed: int) -> torch.Generator:
    entropy = np.random.SeedSequence([seed, spec.d, spec.m, spec.n]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(entropy))


def _planted_residual(
    narrow: sm.TwoLayerNet, X: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    """A residual orthogonal to the range of the narrow net's Jacobian (zero if none fits)."""
    n = X.shape[0]
    J = sm.jacobian(narrow, sm.Dataset(X, torch.zeros(n, dtype=DTYPE))).reshape(n, -1)
    z = torch.randn(n, generator=gen, dtype=DTYPE)
    if n <= J.shape[1]:
        return torch.zeros(n, dtype=DTYPE)
    Q, _ = torch.linalg.qr(J)
    for _ in range(2):  # twice is enough (Kahan): orthogonal to machine precision
        z = z - Q @ (Q.T @ z)
    return z * (RESIDUAL_RMS * math.sqrt(n) / float(z.norm()))


def build_problem(spec: Spec, seed: int) -> Problem:
    gen = _generator(spec, seed)
    d, m, n, h = spec.d, spec.m, spec.n, spec.m // 2
    X = torch.randn(n, d, generator=gen, dtype=DTYPE)
    narrow = sm.TwoLayerNet(
        torch.randn(h, generator=gen, dtype=DTYPE) / math.sqrt(h),
        torch.randn(h, d, generator=gen, dtype=DTYPE) / math.sqrt(d),
    )
    z = _planted_residual(narrow, X, gen)
    data = sm.Dataset(X, narrow(X)[:, 0] + z)
    random_net = sm.TwoLayerNet(
        torch.randn(m, generator=gen, dtype=DTYPE) / math.sqrt(m),
        torch.randn(m, d, generator=gen, dtype=DTYPE) / math.sqrt(d),
    )
    a = narrow.a[:, 0]
    saddle = sm.TwoLayerNet(torch.cat([SPLIT[0] * a, SPLIT[1] * a]),
                            torch.cat([narrow.W, narrow.W]))
    info: dict[str, Any] = {
        "P": spec.num_params,
        "narrow_gradient_norm": float(sm.gradient(narrow, data).norm()),
        "saddle_gradient_norm": float(sm.gradient(saddle, data).norm()),
        "residual_rms": float(z.norm()) / math.sqrt(n),
    }
    interpolating = bool(z.abs().max() == 0)
    if interpolating:
        info["saddle_skipped"] = (
            f"n = {n} ≤ P/2 = {h * (d + 1)}: the narrow net interpolates the data, so the split "
            "point is a global minimum, not a saddle"
        )
    return Problem(spec, data, {"random": random_net, "saddle": None if interpolating else saddle},
                   info)


# ---------------------------------------------------------------------------- measuring
def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class PeakRss:
    """Peak resident memory above the level at entry, sampled every millisecond."""

    def __init__(self) -> None:
        self.base = _rss_bytes()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self._update()

    def _update(self) -> None:
        now = _rss_bytes()
        if now is not None and self.peak is not None:
            self.peak = max(self.peak, now)

    def __enter__(self) -> PeakRss:
        if self.base is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._update()

    @property
    def megabytes(self) -> float | None:
        if self.base is None or self.peak is None:
            return None
        return round((self.peak - self.base) / 2**20, 1)


@dataclass
class Timing:
    median: float
    times: list[float]
    calls_per_repeat: int
    peak_mb: float | None
    value: Any


def measure(fn: Callable[[], Any], repeats: int, budget_s: float) -> Timing:
    """Warm up once (sampling memory), then time up to ``repeats`` runs within the budget.

    Calls faster than 10 ms are looped so that one timed repeat lasts about 30 ms, and get at
    least 9 repeats (the machine may be shared).  A call slower than the whole budget is run
    once only: that run is the measurement (``calls_per_repeat`` is then 0).
    """
    with PeakRss() as mem:
        start = time.perf_counter()
        value = fn()
        warm = time.perf_counter() - start
    if warm > budget_s:
        return Timing(warm, [warm], 0, mem.megabytes, value)
    number = 1 if warm >= 0.01 else min(1000, max(1, int(0.03 / max(warm, 1e-6))))
    repeats = repeats if warm >= 0.01 else max(repeats, 9)
    times: list[float] = []
    spent = warm
    while len(times) < repeats and (not times or spent + warm < budget_s):
        start = time.perf_counter()
        for _ in range(number):
            value = fn()
        elapsed = time.perf_counter() - start
        times.append(elapsed / number)
        spent += elapsed
    return Timing(statistics.median(times), times, number, mem.megabytes, value)


@dataclass
class Settings:
    repeats: int
    eig_repeats: int
    budget_s: float
    seed: int
    peers: bool


@dataclass
class Row:
    problem: str
    d: int
    m: int
    n: int
    P: int
    point: str
    task: str
    tool: str
    status: str = "ok"
    median_s: float | None = None
    repeats: int = 0
    times_s: list[float] = field(default_factory=list)
    ratio_to_ours: float | None = None
    ours: str | None = None
    matvecs: int | None = None
    error: dict[str, Any] | None = None
    peak_mb: float | None = None
    note: str = ""


class Recorder:
    """Collects rows; a failing tool becomes a row with its exception, never a crash."""

    def __init__(self, settings: Settings) -> None:
        self.rows: list[Row] = []
        self.settings = settings

    def add(self, prob: Problem, point: str, task: str, tool: str, **kw: Any) -> Row:
        s = prob.spec
        row = Row(s.label, s.d, s.m, s.n, s.num_params, point, task, tool, **kw)
        self.rows.append(row)
        return row

    def skip(self, prob: Problem, point: str, task: str, tool: str, why: str) -> None:
        self.add(prob, point, task, tool, status="skipped", note=why)
        print(f"  {task:10s} {tool:58s} skipped: {why}", flush=True)

    def time(
        self, prob: Problem, point: str, task: str, tool: str, fn: Callable[[], Any],
        *, repeats: int | None = None, note: str = "", ours: str | None = None,
        check: Callable[[Any], dict[str, Any]] | None = None,
    ) -> Any:
        """Time ``fn``; ``check`` turns its value into error/matvec fields."""
        reps = self.settings.repeats if repeats is None else repeats
        try:
            t = measure(fn, reps, self.settings.budget_s)
            extra = check(t.value) if check is not None else {}
        except Exception as exc:  # a peer's crash is a result, not the end of the run
            msg = f"{type(exc).__name__}: {exc}".strip()[:400]
            self.add(prob, point, task, tool, status="failed", note=msg, ours=ours)
            print(f"  {task:10s} {tool:58s} FAILED {msg[:120]}", flush=True)
            if os.environ.get("BENCH_TRACEBACK"):
                traceback.print_exc()
            return None
        status = extra.pop("status", "ok")
        cold = "single run, no warm-up: one call exceeds the time budget"
        notes = "; ".join(x for x in (note, extra.pop("note", ""),
                                      cold if t.calls_per_repeat == 0 else "") if x)
        self.add(
            prob, point, task, tool, status=status, median_s=t.median, repeats=len(t.times),
            times_s=[round(x, 7) for x in t.times], matvecs=extra.pop("matvecs", None),
            error=extra or None, peak_mb=t.peak_mb, note=notes, ours=ours,
        )
        err = extra.get("rel_error", extra.get("max_rel_diff"))
        err_s = "" if err is None else f" err {err:.1e}"
        print(f"  {task:10s} {tool:58s} {t.median * 1e3:10.3f} ms{err_s}", flush=True)
        return t.value


# ----------------------------------------------------------------- autodiff references
def _leaf(theta: torch.Tensor) -> torch.Tensor:
    return theta.detach().clone().requires_grad_(True)


def autograd_gradient(risk: Callable[[torch.Tensor], torch.Tensor],
                      theta: torch.Tensor) -> torch.Tensor:
    th = _leaf(theta)
    return torch.autograd.grad(risk(th), th)[0]


def hvp_double_backward(risk: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor,
                        v: torch.Tensor) -> torch.Tensor:
    th = _leaf(theta)
    (g,) = torch.autograd.grad(risk(th), th, create_graph=True)
    return torch.autograd.grad(g @ v, th)[0]


class CachedGradient:
    """The gradient's graph built once; each HVP is one more backward through it."""

    def __init__(self, risk: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor) -> None:
        self.theta = _leaf(theta)
        (self.g,) = torch.autograd.grad(risk(self.theta), self.theta, create_graph=True)

    def hvp(self, v: torch.Tensor) -> torch.Tensor:
        return torch.autograd.grad(self.g @ v, self.theta, retain_graph=True)[0]


def hvp_jvp(risk: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor,
            v: torch.Tensor) -> torch.Tensor:
    return torch.func.jvp(torch.func.grad(risk), (theta,), (v,))[1]


def hessian_rowwise(risk: Callable[[torch.Tensor], torch.Tensor],
                    theta: torch.Tensor) -> torch.Tensor:
    cached = CachedGradient(risk, theta)
    rows = [torch.autograd.grad(cached.g[i], cached.theta, retain_graph=True)[0]
            for i in range(theta.numel())]
    return torch.stack(rows)


class CountingOperator(LinearOperator):
    """A scipy operator from a numpy matvec that counts the vectors it multiplies.

    An eigensolver still running ``GIVE_UP_S`` seconds after the operator was made is
    stopped with a TimeoutError, recorded as that tool's failure.
    """

    def __init__(self, matvec: Callable[[np.ndarray], np.ndarray], size: int) -> None:
        self._fn = matvec
        self.num_matvecs = 0
        self._deadline = time.perf_counter() + GIVE_UP_S
        super().__init__(dtype=np.dtype(np.float64), shape=(size, size))

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        self.num_matvecs += 1
        if time.perf_counter() > self._deadline:
            raise TimeoutError(f"gave up after {GIVE_UP_S:.0f} s ({self.num_matvecs} matvecs)")
        return self._fn(np.ascontiguousarray(x).reshape(-1))

    def _adjoint(self) -> CountingOperator:
        return self


def autograd_operator(risk: Callable[[torch.Tensor], torch.Tensor],
                      theta: torch.Tensor) -> CountingOperator:
    cached = CachedGradient(risk, theta)
    return CountingOperator(lambda x: cached.hvp(torch.from_numpy(x)).numpy(), theta.numel())


# ---------------------------------------------------------------------- cost prediction
class CostModel:
    """Predicts the time and memory of the slow autodiff tools, per unit of P·n·m.

    Both scale with P·n·m: ``torch.func.hessian`` holds about five float64 tensors of that
    size (40 bytes per unit), row-by-row double backward runs P backward passes of cost n·m.
    The rates start from the worst seen on a 2-core machine and only ever grow with what
    this run measures (on problems big enough not to be dominated by overhead).
    """

    def __init__(self) -> None:
        self.sec_per_unit = {"torch.func.hessian": 2e-7, "row-by-row double backward": 2.5e-8}
        self.bytes_per_unit = {"torch.func.hessian": 40.0}
        mem_total = _meminfo_bytes()
        self.mem_limit = 0.25 * mem_total if mem_total else 6e9  # its peak disturbs the rest

    @staticmethod
    def units(s: Spec) -> float:
        return float(s.num_params * s.n * s.m)

    def calibrate(self, tool: str, s: Spec, row: Row) -> None:
        units = self.units(s)
        if row.status != "ok" or row.median_s is None or units < 1e7:
            return
        self.sec_per_unit[tool] = max(self.sec_per_unit[tool], row.median_s / units)
        if tool in self.bytes_per_unit and row.peak_mb:
            self.bytes_per_unit[tool] = max(self.bytes_per_unit[tool],
                                            row.peak_mb * 2**20 / units)

    def reason_to_skip(self, tool: str, s: Spec) -> str | None:
        t = self.sec_per_unit[tool] * self.units(s)
        if t > SLOW_LIMIT_S and s != MAIN:
            return f"predicted {t:.0f} s per call (> {SLOW_LIMIT_S:.0f} s)"
        if tool in self.bytes_per_unit:
            mem = self.bytes_per_unit[tool] * self.units(s)
            if mem > self.mem_limit:
                return (f"predicted peak memory {mem / 1e9:.0f} GB (> a quarter of the "
                        f"{4 * self.mem_limit / 1e9:.0f} GB of this machine)")
        return None


def _meminfo_bytes() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return float(line.split()[1]) * 1024
    return None


# ------------------------------------------------------------------ task 1: full Hessian
def _max_rel_diff(ref: torch.Tensor) -> Callable[[torch.Tensor], dict[str, Any]]:
    scale = float(ref.abs().max()) or 1.0
    return lambda out: {"max_rel_diff": float((out - ref).abs().max()) / scale}


def bench_hessian(rec: Recorder, prob: Problem, costs: CostModel) -> None:
    net, data = prob.points["random"], prob.data
    assert net is not None
    ours = rec.time(prob, "random", "hessian", OURS["hessian"], lambda: sm.hessian(net, data))
    J = sm.jacobian(net, data).reshape(-1, net.num_params).contiguous()
    rec.time(prob, "random", "hessian", "bound: one GEMM J^T J (J of shape nK x P)",
             lambda: J.T @ J, ours=OURS["hessian"], note="torch matmul, as sm.hessian uses")
    Jn = J.numpy()
    rec.time(prob, "random", "hessian", "bound: numpy J^T J (BLAS syrk, half the flops)",
             lambda: Jn.T @ Jn, ours=OURS["hessian"])
    risk, theta = sm.loss_function(net, data), net.flatten()
    check = _max_rel_diff(ours) if ours is not None else None
    slow = {
        "torch.func.hessian": lambda: torch.func.hessian(risk)(theta),
        "row-by-row double backward": lambda: hessian_rowwise(risk, theta),
    }
    for tool, fn in slow.items():
        why = costs.reason_to_skip(tool, prob.spec)
        if why is not None:
            rec.skip(prob, "random", "hessian", tool, why)
            continue
        rec.time(prob, "random", "hessian", tool, fn, ours=OURS["hessian"], check=check)
        costs.calibrate(tool, prob.spec, rec.rows[-1])


# ------------------------------------------------------------------------- task 2: HVP
def bench_hvp(rec: Recorder, prob: Problem, seed: int) -> None:
    net, data = prob.points["random"], prob.data
    assert net is not None
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(net.num_params, generator=gen, dtype=DTYPE)
    ref = rec.time(prob, "random", "hvp", OURS["hvp"], lambda: sm.hvp(net, data, v))
    check = _max_rel_diff(ref) if ref is not None else None
    op = sm.hessian_operator(net, data)
    cached_ours = "saddlemap.HessianOperator.apply (forward cached)"
    rec.time(prob, "random", "hvp", cached_ours, lambda: op.apply(v[:, None])[:, 0],
             check=check, ours=OURS["hvp"])
    risk, theta = sm.loss_function(net, data), net.flatten()
    cached = CachedGradient(risk, theta)
    tools: list[tuple[str, Callable[[], Any], str]] = [
        ("double backward (gradient graph built per call)",
         lambda: hvp_double_backward(risk, theta, v), OURS["hvp"]),
        ("double backward (first backward cached)", lambda: cached.hvp(v), cached_ours),
        ("torch.func.jvp(grad) (forward over reverse)",
         lambda: hvp_jvp(risk, theta, v), OURS["hvp"]),
        ("bound: one autograd gradient", lambda: autograd_gradient(risk, theta), OURS["hvp"]),
        ("saddlemap.gradient (closed form)", lambda: sm.gradient(net, data), OURS["hvp"]),
    ]
    for tool, fn, ours in tools:
        is_hvp = not (tool.startswith("bound") or tool.startswith("saddlemap.gradient"))
        rec.time(prob, "random", "hvp", tool, fn, ours=ours, check=check if is_hvp else None)
    V = torch.randn(net.num_params, BATCH, generator=gen, dtype=DTYPE)
    out = rec.time(prob, "random", "hvp", f"saddlemap.hvp, {BATCH} vectors at once",
                   lambda: sm.hvp(net, data, V), ours=OURS["hvp"],
                   check=lambda HV: {"max_rel_diff": float(
                       (HV[:, 0] - cached.hvp(V[:, 0])).abs().max() / HV[:, 0].abs().max())})
    if out is not None:  # report it per vector, as the other rows are
        row = rec.rows[-1]
        row.median_s = row.median_s / BATCH if row.median_s else None
        row.times_s = [x / BATCH for x in row.times_s]
        row.note = f"time per vector (total / {BATCH})"


# ----------------------------------------------------------------- task 3: λ_min, λ_max
@dataclass
class Reference:
    """Dense eigendecomposition of our Hessian: the truth every eigensolver is held to."""

    H: torch.Tensor
    lam: np.ndarray
    scale: float

    @classmethod
    def of(cls, net: sm.TwoLayerNet, data: sm.Dataset) -> Reference:
        H = sm.hessian(net, data)
        lam = torch.linalg.eigvalsh(H).numpy()
        return cls(H, lam, float(np.abs(lam).max()))

    @property
    def zero_tol(self) -> float:
        return math.sqrt(np.finfo(np.float64).eps) * self.scale

    def truth(self, task: str) -> float:
        return float(self.lam[0] if task == "lambda_min" else self.lam[-1])

    def assess(self, task: str, est: float, vec: np.ndarray | None = None) -> dict[str, Any]:
        true = self.truth(task)
        out: dict[str, Any] = {
            "estimate": est, "truth": true, "abs_error": abs(est - true),
            "rel_error": abs(est - true) / max(abs(true), 1e-300),
            "error_over_norm": abs(est - true) / self.scale,
        }
        if vec is not None:
            u = torch.as_tensor(np.asarray(vec, dtype=np.float64).reshape(-1))
            u = u / u.norm()
            out["residual_over_norm"] = float((self.H @ u - est * u).norm()) / self.scale
        if task == "lambda_min":
            out["saddle_detected"] = (est < -self.zero_tol) == (true < -self.zero_tol)
        return out


def _end(task: str) -> str:
    return "SA" if task == "lambda_min" else "LA"


def _v0(P: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(P)  # what sm.spectrum starts from


def _eigsh(op: LinearOperator, which: str, **kw: Any) -> tuple[float, np.ndarray, str]:
    try:
        lam, vec = eigsh(op, k=1, which=which, **kw)
        return float(lam[0]), vec[:, 0], ""
    except ArpackNoConvergence as exc:
        if len(exc.eigenvalues) == 0:
            raise
        return float(exc.eigenvalues[0]), exc.eigenvectors[:, 0], "ARPACK did not converge"


def bench_eigen(rec: Recorder, prob: Problem, point: str, net: sm.TwoLayerNet,
                settings: Settings, with_defaults: bool) -> Reference:
    data, reps = prob.data, settings.eig_repeats
    ref = Reference.of(net, data)
    prob.info[f"{point}_spectrum"] = {
        "lambda_min": ref.truth("lambda_min"), "lambda_max": ref.truth("lambda_max"),
        "zeros": int((np.abs(ref.lam) <= ref.zero_tol).sum()),
        "negatives": int((ref.lam < -ref.zero_tol).sum()), "zero_tol": ref.zero_tol,
    }
    dense = rec.time(prob, point, "lambda_min", "saddlemap dense: hessian + eigvalsh",
                     lambda: torch.linalg.eigvalsh(sm.hessian(net, data)), repeats=reps,
                     ours=OURS["lambda_min"], note="all eigenvalues, both ends at once",
                     check=lambda lam: ref.assess("lambda_min", float(lam[0])))
    del dense
    risk, theta = sm.loss_function(net, data), net.flatten()
    P = net.num_params
    for task in ("lambda_min", "lambda_max"):
        which = "smallest" if task == "lambda_min" else "largest"
        rec.time(prob, point, task, OURS[task],
                 lambda which=which: sm.spectrum(net, data, k=1, which=which,
                                                 method="lanczos", seed=settings.seed),
                 repeats=reps, check=lambda s, task=task: {
                     **ref.assess(task, float(s.eigenvalues[0]), s.eigenvectors[:, 0]),
                     "matvecs": s.num_matvecs})
        variants = {
            "scipy eigsh on autograd HVP, tuned (tol=1e-12, ncv=30, same v0)":
                {"tol": LANCZOS_TOL, "ncv": min(P, LANCZOS_NCV), "v0": _v0(P, settings.seed)},
        }
        if with_defaults:
            variants["scipy eigsh on autograd HVP, defaults"] = {}
        for tool, kw in variants.items():
            rec.time(prob, point, task, tool,
                     lambda kw=kw, task=task: _run_eigsh(autograd_operator(risk, theta),
                                                         _end(task), kw),
                     repeats=reps, ours=OURS[task],
                     check=lambda out, task=task: _assess_run(ref, task, out),
                     note="double-backward HVP, first backward cached in the operator")
    return ref


def _run_eigsh(op: CountingOperator, which: str, kw: dict[str, Any]) -> dict[str, Any]:
    lam, vec, note = _eigsh(op, which, **kw)
    return {"lam": lam, "vec": vec, "matvecs": op.num_matvecs, "note": note}


def _assess_run(ref: Reference, task: str, out: dict[str, Any]) -> dict[str, Any]:
    res = ref.assess(task, out["lam"], out.get("vec"))
    res["matvecs"] = out.get("matvecs")
    if out.get("note"):
        res["note"] = out["note"]
    if out.get("status"):
        res["status"] = out["status"]
    return res


# ------------------------------------------------------------------------ task 4: peers
def peer_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dist in [*PEERS.values(), "backpack-for-pytorch", "threadpoolctl"]:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _import_peer(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except Exception as exc:
        return f"not importable ({type(exc).__name__}: {exc})"


def _module_to_flat(vec: np.ndarray, m: int, d: int) -> np.ndarray:
    """A vector in nn.Sequential's order (W row-major, then a) to saddlemap's flat layout."""
    W, a = vec[: m * d].reshape(m, d), vec[m * d:]
    return np.concatenate([a[:, None], W], axis=1).reshape(-1)


def _flat_to_module(vec: np.ndarray, m: int, d: int) -> np.ndarray:
    blocks = vec.reshape(m, d + 1)
    return np.concatenate([blocks[:, 1:].reshape(-1), blocks[:, 0]])


def _half_mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """R = (1/2n) Σ‖g − y‖², the loss saddlemap's Dataset uses."""
    return 0.5 * ((out - target) ** 2).sum(-1).mean()


@dataclass
class PeerContext:
    net: sm.TwoLayerNet
    X: torch.Tensor
    Y: torch.Tensor
    ref: Reference
    seed: int

    def model(self) -> torch.nn.Module:
        return self.net.to_torch()  # a fresh copy per run: some peers leave .grad behind

    def to_flat(self, vec: np.ndarray) -> np.ndarray:
        return _module_to_flat(np.asarray(vec, dtype=np.float64), self.net.width,
                               self.net.input_dim)


def run_curvlinops(ctx: PeerContext, task: str, tuned: bool) -> dict[str, Any]:
    import curvlinops

    model = ctx.model()
    H = curvlinops.HessianLinearOperator(model, torch.nn.MSELoss(), list(model.parameters()),
                                         [(ctx.X, ctx.Y)])
    scipy_op = (0.5 * H).to_scipy()  # MSELoss is (1/n)Σ(g−y)² = 2R
    op = CountingOperator(lambda x: np.asarray(scipy_op @ x), ctx.net.num_params)
    kw: dict[str, Any] = {}
    if tuned:
        P = ctx.net.num_params
        v0 = _flat_to_module(_v0(P, ctx.seed), ctx.net.width, ctx.net.input_dim)
        kw = {"tol": LANCZOS_TOL, "ncv": min(P, LANCZOS_NCV), "v0": v0}
    lam, vec, note = _eigsh(op, _end(task), **kw)
    return {"lam": lam, "vec": ctx.to_flat(vec), "matvecs": op.num_matvecs, "note": note}


@contextlib.contextmanager
def _count_pyhessian_hvps(counter: list[int]) -> Iterator[None]:
    mod = sys.modules["pyhessian.hessian"]
    original = mod.hessian_vector_product

    def counted(*args: Any, **kwargs: Any) -> Any:
        counter[0] += 1
        return original(*args, **kwargs)

    mod.hessian_vector_product = counted
    try:
        yield
    finally:
        mod.hessian_vector_product = original


def run_pyhessian(ctx: PeerContext, task: str, tuned: bool) -> dict[str, Any]:
    import pyhessian

    max_iter, tol = (10_000, LANCZOS_TOL) if tuned else (100, 1e-3)
    counter = [0]
    torch.manual_seed(ctx.seed)  # PyHessian draws its start vector from torch's global RNG
    with _count_pyhessian_hvps(counter), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # its backward(create_graph=True)
        h = pyhessian.hessian(ctx.model(), _half_mse, data=(ctx.X, ctx.Y), cuda=False)
        lams, vecs = h.eigenvalues(maxIter=max_iter, tol=tol, top_n=1)
    vec = torch.cat([t.detach().reshape(-1) for t in vecs[0]]).double().numpy()
    note = f"stopped at maxIter={max_iter}" if counter[0] >= max_iter else ""
    return {"lam": float(lams[0]), "vec": ctx.to_flat(vec), "matvecs": counter[0],
            "note": note}


def run_eigenthings(ctx: PeerContext, task: str, tuned: bool) -> dict[str, Any]:
    import hessian_eigenthings as he

    op = he.HessianOperator(ctx.model(), [(ctx.X, ctx.Y)], he.supervised_loss(_half_mse))
    which = _end(task)
    if not tuned:
        r = he.lanczos(op, k=1, which=which)
        return {"lam": float(r.eigenvalues[0]), "vec": ctx.to_flat(r.eigenvectors[0].numpy()),
                "matvecs": r.iterations}
    # Tuned: its Lanczos has no restart, so grow the Krylov size until it reports convergence.
    total, size, P = 0, 50, ctx.net.num_params
    while True:
        size = min(size, P)
        r = he.lanczos(op, k=1, which=which, max_iter=size, tol=LANCZOS_TOL,
                       reorthogonalize=True, seed=ctx.seed)
        total += r.iterations
        if bool(r.converged[0]) or size == P:
            break
        size *= 2
    note = f"Krylov sizes doubled from 50 up to {size}; converged={bool(r.converged[0])}"
    return {"lam": float(r.eigenvalues[0]), "vec": ctx.to_flat(r.eigenvectors[0].numpy()),
            "matvecs": total, "note": note}


PEER_RUNS: list[tuple[str, str, Callable[[PeerContext, str, bool], dict[str, Any]], str, str]] = [
    ("curvlinops", "curvlinops HessianLinearOperator + eigsh", run_curvlinops,
     "scipy eigsh defaults (tol=0, ncv=20, random v0)", "tol=1e-12, ncv=30, same v0"),
    ("pyhessian", "PyHessian power iteration", run_pyhessian,
     "maxIter=100, tol=1e-3", "maxIter=10000, tol=1e-12"),
    ("hessian_eigenthings", "hessian-eigenthings lanczos", run_eigenthings,
     "k=1: max_iter=2, tol=1e-4", "tol=1e-12, full reorthogonalisation, max_iter doubled"),
]


def bench_peers(rec: Recorder, prob: Problem, point: str, net: sm.TwoLayerNet,
                ref: Reference, settings: Settings) -> None:
    ctx = PeerContext(net, prob.data.X, prob.data.targets, ref, settings.seed)
    for module, name, run, default_kw, tuned_kw in PEER_RUNS:
        imported = _import_peer(module)
        for task in ("lambda_min", "lambda_max"):
            for tuned, kw in ((False, default_kw), (True, tuned_kw)):
                tool = f"{name}, {'tuned' if tuned else 'defaults'} ({kw})"
                if isinstance(imported, str):
                    rec.add(prob, point, task, tool, status="failed", note=imported,
                             ours=OURS[task])
                    print(f"  {task:10s} {tool:58s} FAILED {imported}", flush=True)
                    continue
                if module == "pyhessian" and task == "lambda_min":
                    rec.add(prob, point, task, tool, status="unsupported", ours=OURS[task],
                             note="power iteration finds the largest-|λ| eigenvalue only")
                    continue
                rec.time(prob, point, task, tool,
                         lambda run=run, task=task, tuned=tuned: run(ctx, task, tuned),
                         repeats=settings.eig_repeats, ours=OURS[task],
                         check=lambda out, task=task: _assess_run(ref, task, out))


# ----------------------------------------------------------------------- machine, output
def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as fh:
            names = [ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    config = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=([^,\s]+)", config)
    info: dict[str, Any] = {
        "cpu": cpu, "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gb": round((_meminfo_bytes() or 0) / 2**30, 1),
        "os": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
        "saddlemap": sm.__version__, "saddlemap_source": _source_state(),
        "torch_blas": blas.group(1) if blas else None,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "peers": peer_versions(),
    }
    info["threadpools"] = _threadpools()
    return info


def _source_state() -> str:
    """The commit measured, and whether the package's sources differed from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                  check=True, timeout=30).stdout.strip()

        dirty = git("status", "--porcelain", "--", "src")
        return git("rev-parse", "--short", "HEAD") + (" with uncommitted changes in src/"
                                                      if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"


def _threadpools() -> list[dict[str, Any]] | str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return _numpy_blas()
    keep = ("user_api", "internal_api", "prefix", "version", "num_threads", "threading_layer",
            "architecture")  # never the file path: no machine paths in the results
    return [{k: pool.get(k) for k in keep} for pool in threadpool_info()]


def _numpy_blas() -> str:
    try:
        deps = np.show_config(mode="dicts")["Build Dependencies"]  # type: ignore[func-returns-value]
        return f"threadpoolctl missing; numpy built with {deps['blas']['name']}"
    except Exception as exc:
        return f"threadpoolctl missing; numpy BLAS unknown ({type(exc).__name__})"


@contextlib.contextmanager
def single_threaded() -> Iterator[str]:
    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):  # only settable before any inter-op work
        torch.set_num_interop_threads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield "torch 1 thread; threadpoolctl not installed, BLAS threads not fixed"
        return
    with threadpool_limits(limits=1):
        yield "torch 1 thread; every threadpool limited to 1 by threadpoolctl"


def fill_ratios(rows: list[Row]) -> None:
    index = {(r.problem, r.point, r.task, r.tool): r for r in rows}
    for r in rows:
        r.ours = r.ours or (OURS[r.task] if r.tool != OURS[r.task] else None)
        base = index.get((r.problem, r.point, r.task, r.ours)) if r.ours else None
        if r.tool == OURS[r.task]:
            r.ratio_to_ours = 1.0 if r.median_s else None
        elif base is not None and base.median_s and r.median_s and r.status == "ok":
            r.ratio_to_ours = r.median_s / base.median_s


def _fmt_t(x: float | None) -> str:
    if x is None:
        return "—"
    if x >= 1:
        return f"{x:.2f} s"
    return f"{x * 1e3:.3g} ms" if x >= 1e-3 else f"{x * 1e6:.3g} µs"


def _fmt_r(x: float | None) -> str:
    return "—" if x is None else f"{x:.3g}×"


def _fmt_e(x: Any) -> str:
    return "—" if x is None else f"{x:.1e}"


def _get(rows: list[Row], **kw: Any) -> Row | None:
    return next((r for r in rows if all(getattr(r, k) == v for k, v in kw.items())), None)


def _cell(r: Row | None) -> str:
    if r is None:
        return "—"
    if r.status != "ok":
        return r.status
    return _fmt_r(r.ratio_to_ours)


def markdown(result: dict[str, Any], rows: list[Row]) -> str:
    mach = result["machine"]
    pools = mach["threadpools"]
    pool_s = ", ".join(f"{p['internal_api']} {p['version']} ({p['num_threads']} thr)"
                       for p in pools) if isinstance(pools, list) else pools
    peers = ", ".join(f"{k} {v or 'not installed'}" for k, v in mach["peers"].items())
    out = [
        "# saddlemap core benchmark", "",
        f"Mode: `{result['mode']}`, seed {result['seed']}, total {result['wall_s']:.0f} s. "
        "Ratio = tool time / saddlemap time (above 1: saddlemap is faster); for the bounds "
        "it is below 1 and says how close saddlemap gets to them.", "",
        "## Machine", "",
        f"* CPU: {mach['cpu']}; {mach['logical_cores']} logical cores "
        f"({mach['usable_cores']} usable); {mach['memory_gb']} GB",
        f"* {mach['os']}; Python {mach['python']}; torch {mach['torch']} "
        f"(BLAS {mach['torch_blas']}); numpy {mach['numpy']}; scipy {mach['scipy']}; "
        f"saddlemap {mach['saddlemap']} ({mach['saddlemap_source']})",
        f"* threads: {result['threads']}; torch threads {mach['torch_threads']}; "
        f"threadpools: {pool_s}",
        f"* peers: {peers}", "",
    ]
    out += _md_headline(rows) + _md_hessian(rows) + _md_hvp(rows) + _md_eigen(rows)
    out += _md_failures(rows)
    return "\n".join(out) + "\n"


def _ratio_of(rows: list[Row], **kw: Any) -> str:
    r = _get(rows, problem=MAIN.label, **kw)
    return _cell(r) if r is not None else "not run"


def _eigen_line(rows: list[Row], point: str, task: str) -> str:
    ours = _get(rows, problem=MAIN.label, point=point, task=task, tool=OURS[task])
    if ours is None or ours.status != "ok":
        return f"* {task} at the {point} point: not run"
    tuned = "scipy eigsh on autograd HVP, tuned (tol=1e-12, ncv=30, same v0)"
    default = "scipy eigsh on autograd HVP, defaults"
    return (f"* {task} at the {point} point: saddlemap {_fmt_t(ours.median_s)} "
            f"({ours.matvecs} matvecs); eigsh on autograd HVP, same settings "
            f"{_ratio_of(rows, point=point, task=task, tool=tuned)}, at scipy's defaults "
            f"{_ratio_of(rows, point=point, task=task, tool=default)}")


def _peer_line(rows: list[Row]) -> list[str]:
    out = []
    for r in rows:
        if r.problem != MAIN.label or not any(r.tool.startswith(p[1]) for p in PEER_RUNS):
            continue
        err = (r.error or {}).get("rel_error")
        what = (f"rel. error {_fmt_e(err)}, {_cell(r)}" if r.status == "ok"
                else f"{r.status} ({r.note[:80]})")
        if (r.error or {}).get("saddle_detected") is False:
            what += ", sign of λ_min wrong"
        out.append(f"  * {r.point}, {r.task}, {r.tool}: {what}")
    return out


def _md_headline(rows: list[Row]) -> list[str]:
    ours_h = _get(rows, problem=MAIN.label, task="hessian", tool=OURS["hessian"])
    gemm = next((r for r in rows if r.problem == MAIN.label
                 and r.tool.startswith("bound: one GEMM")), None)
    syrk = next((r for r in rows if r.problem == MAIN.label
                 and r.tool.startswith("bound: numpy")), None)
    ours_v = _get(rows, problem=MAIN.label, task="hvp", tool=OURS["hvp"])
    grad = _get(rows, problem=MAIN.label, task="hvp", tool="bound: one autograd gradient")
    out = [f"## Main problem ({MAIN.label}, P = {MAIN.num_params}) at a glance", "",
           f"* Full Hessian: saddlemap {_fmt_t(ours_h and ours_h.median_s)}; torch.func.hessian "
           f"{_ratio_of(rows, task='hessian', tool='torch.func.hessian')}, row-by-row double "
           f"backward {_ratio_of(rows, task='hessian', tool='row-by-row double backward')}; "
           f"ours / GEMM bound {_fmt_r(_over(ours_h, gemm))}, ours / numpy syrk "
           f"{_fmt_r(_over(ours_h, syrk))}",
           f"* HVP: sm.hvp {_fmt_t(ours_v and ours_v.median_s)}; double backward "
           f"{_ratio_of(rows, task='hvp', tool='double backward (gradient graph built per call)')}"
           f", jvp(grad) "
           f"{_ratio_of(rows, task='hvp', tool='torch.func.jvp(grad) (forward over reverse)')}; "
           f"cached double backward vs cached HessianOperator.apply "
           f"{_ratio_of(rows, task='hvp', tool='double backward (first backward cached)')}; "
           f"sm.hvp / one autograd gradient {_fmt_r(_over(ours_v, grad))}",
           _eigen_line(rows, "random", "lambda_min"), _eigen_line(rows, "saddle", "lambda_min"),
           _eigen_line(rows, "random", "lambda_max"), _eigen_line(rows, "saddle", "lambda_max"),
           "* Peers (ratio = their time / saddlemap's Lanczos):", *_peer_line(rows), ""]
    return out


def _problems(rows: list[Row], task: str) -> list[str]:
    seen: dict[str, None] = {}
    for r in rows:
        if r.task == task:
            seen.setdefault(r.problem, None)
    return list(seen)


def _over(a: Row | None, b: Row | None) -> float | None:
    if a is None or b is None or not a.median_s or not b.median_s:
        return None
    return a.median_s / b.median_s


def _md_hessian(rows: list[Row]) -> list[str]:
    out = ["## Full Hessian (random point)", "",
           "| problem | P | saddlemap.hessian | GEMM JᵀJ | ours / GEMM | ours / numpy syrk "
           "| torch.func.hessian | row-by-row double backward | max rel diff vs func.hessian |",
           "|---|---|---|---|---|---|---|---|---|"]
    for p in _problems(rows, "hessian"):
        ours = _get(rows, problem=p, task="hessian", tool=OURS["hessian"])
        gemm = next((r for r in rows if r.problem == p and r.tool.startswith("bound: one GEMM")),
                    None)
        syrk = next((r for r in rows if r.problem == p and r.tool.startswith("bound: numpy")),
                    None)
        fh = _get(rows, problem=p, task="hessian", tool="torch.func.hessian")
        rb = _get(rows, problem=p, task="hessian", tool="row-by-row double backward")
        bound = _over(ours, gemm)
        diff = fh.error.get("max_rel_diff") if fh and fh.error else None
        out.append(f"| {p} | {ours.P if ours else '—'} | {_fmt_t(ours and ours.median_s)} | "
                   f"{_fmt_t(gemm and gemm.median_s)} | {_fmt_r(bound)} | "
                   f"{_fmt_r(_over(ours, syrk))} | {_cell(fh)} | {_cell(rb)} | {_fmt_e(diff)} |")
    return [*out, ""]


def _md_hvp(rows: list[Row]) -> list[str]:
    names = [("double backward (gradient graph built per call)", "double backward"),
             ("double backward (first backward cached)", "cached DB vs cached ours"),
             ("torch.func.jvp(grad) (forward over reverse)", "jvp(grad)"),
             ("bound: one autograd gradient", "autograd gradient (bound)"),
             (f"saddlemap.hvp, {BATCH} vectors at once", f"sm.hvp, {BATCH} at once, per vector")]
    out = ["## Hessian-vector product (random point)", "",
           "| problem | sm.hvp | HessianOperator.apply | "
           + " | ".join(n for _, n in names) + " |", "|---" * (3 + len(names)) + "|"]
    for p in _problems(rows, "hvp"):
        ours = _get(rows, problem=p, task="hvp", tool=OURS["hvp"])
        cached = next((r for r in rows if r.problem == p and r.tool.startswith(
            "saddlemap.HessianOperator")), None)
        cells = [_cell(_get(rows, problem=p, task="hvp", tool=t)) for t, _ in names]
        out.append(f"| {p} | {_fmt_t(ours and ours.median_s)} | "
                   f"{_fmt_t(cached and cached.median_s)} | " + " | ".join(cells) + " |")
    return [*out, "",
            "Each ratio is against sm.hvp, except the cached double backward, which is "
            "against the cached HessianOperator.apply.", ""]


def _md_eigen(rows: list[Row]) -> list[str]:
    out = ["## λ_min and λ_max", "",
           "| problem | point | task | tool | time | ratio | matvecs | rel. error "
           "| error / ‖H‖ | status / note |", "|---" * 10 + "|"]
    for r in rows:
        if r.task not in ("lambda_min", "lambda_max"):
            continue
        err = r.error or {}
        note = r.status if r.status != "ok" else ""
        if r.note:
            note = f"{note}: {r.note}" if note else r.note
        if err.get("saddle_detected") is False:
            note = f"sign of λ_min wrong. {note}"
        out.append(f"| {r.problem} | {r.point} | {r.task} | {r.tool} | {_fmt_t(r.median_s)} | "
                   f"{_fmt_r(r.ratio_to_ours)} | {r.matvecs if r.matvecs is not None else '—'}"
                   f" | {_fmt_e(err.get('rel_error'))} | {_fmt_e(err.get('error_over_norm'))} "
                   f"| {note[:160]} |")
    return [*out, ""]


def _md_failures(rows: list[Row]) -> list[str]:
    bad = [r for r in rows if r.status in ("failed", "skipped")]
    if not bad:
        return ["## Failures and skips", "", "None.", ""]
    out = ["## Failures and skips", ""]
    out += [f"* {r.problem}, {r.point}, {r.task}, {r.tool}: **{r.status}** — {r.note}"
            for r in bad]
    return [*out, ""]


# -------------------------------------------------------------------------------- driver
def plan(quick: bool) -> tuple[list[Spec], list[Spec], list[Spec]]:
    if quick:
        return [MAIN], [MAIN], [MAIN]
    grid = [MAIN, *[s for s in GRID if s != MAIN]]  # the main problem calibrates the skips
    return grid, AXES, PEER_SPECS


def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings(
        repeats=args.repeats or (3 if args.quick else 5),
        eig_repeats=args.eig_repeats or (1 if args.quick else 2),
        budget_s=args.budget or (5.0 if args.quick else 10.0), seed=args.seed,
        peers=not args.no_peers)
    rec, costs = Recorder(settings), CostModel()
    start = time.perf_counter()
    grid, axes, peer_specs = plan(args.quick)
    problems: dict[Spec, Problem] = {}
    with single_threaded() as threads:
        for spec in grid:
            print(f"[{time.perf_counter() - start:6.0f} s] {spec.label} "
                  f"(P = {spec.num_params})", flush=True)
            prob = problems[spec] = build_problem(spec, settings.seed)
            bench_hvp(rec, prob, settings.seed)
            if spec in axes:
                run_eigen(rec, prob, settings, spec in peer_specs)
            bench_hessian(rec, prob, costs)  # last: torch.func.hessian's GBs disturb the rest
        mach = machine()
    fill_ratios(rec.rows)
    return {
        "mode": "quick" if args.quick else "full", "seed": settings.seed,
        "settings": asdict(settings), "threads": threads, "machine": mach,
        "wall_s": time.perf_counter() - start,
        "problems": [{"problem": p.spec.label, "d": p.spec.d, "m": p.spec.m, "n": p.spec.n,
                      **p.info} for p in problems.values()],
        "results": [asdict(r) for r in rec.rows],
    }


def run_eigen(rec: Recorder, prob: Problem, settings: Settings, with_peers: bool) -> None:
    for point, net in prob.points.items():
        if net is None:
            for task in ("lambda_min", "lambda_max"):
                rec.skip(prob, point, task, OURS[task], prob.info.get("saddle_skipped", ""))
            continue
        ref = bench_eigen(rec, prob, point, net, settings, with_peers)
        if with_peers and settings.peers:
            bench_peers(rec, prob, point, net, ref, settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="main problem only, few repeats")
    parser.add_argument("--repeats", type=int, default=0, help="timed repeats per tool")
    parser.add_argument("--eig-repeats", type=int, default=0,
                        help="timed repeats per eigensolver run")
    parser.add_argument("--budget", type=float, default=0.0,
                        help="seconds per tool and problem before repeats stop; a call "
                        "slower than this runs once (default 5 with --quick, else 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-peers", action="store_true", help="skip the third-party peers")
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    result = run(args)
    rows = [Row(**r) for r in result["results"]]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = "core-quick" if args.quick else "core"
    (args.out_dir / f"{stem}.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    (args.out_dir / f"{stem}.md").write_text(markdown(result, rows))
    print(f"wrote {stem}.json and {stem}.md in {result['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
