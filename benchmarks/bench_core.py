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
import math
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import load_summary, measure, meminfo_bytes, session, write_results
from _peers import (
    EIGEN_PEERS,
    LANCZOS_NCV,
    LANCZOS_TOL,
    TASKS,
    DoubleBackward,
    PeerProblem,
    TorchFunc,
    autograd_operator,
    scipy_eigsh,
    start_vector,
    which_end,
)

import saddlemap as sm

DTYPE = torch.float64
SPLIT = (0.3, 0.7)
RESIDUAL_RMS = 0.5
SLOW_LIMIT_S = 25.0  # skip a tool whose predicted time per call is above this (not on MAIN)
BATCH = 16  # vectors in the batched-HVP row
OURS = {
    "hessian": "saddlemap.hessian",
    "hvp": "saddlemap.hvp",
    "lambda_min": "saddlemap.spectrum lanczos",
    "lambda_max": "saddlemap.spectrum lanczos",
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


# ------------------------------------------------------------------------ settings, rows
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
    iqr_s: list[float] | None = None  # first and third quartiles of times_s


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

    def skip(self, prob: Problem, point: str, task: str, tool: str, why: str,
             status: str = "skipped") -> None:
        """A row for a tool not run: ``skipped`` (or ``failed``, ``unsupported``) and why."""
        self.add(prob, point, task, tool, status=status, note=why)
        shown = "FAILED" if status == "failed" else f"{status}:"
        print(f"  {task:10s} {tool:58s} {shown} {why}", flush=True)

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
            iqr_s=[round(x, 7) for x in t.iqr],
        )
        err = extra.get("rel_error", extra.get("max_rel_diff"))
        err_s = "" if err is None else f" err {err:.1e}"
        print(f"  {task:10s} {tool:58s} {t.median * 1e3:10.3f} ms{err_s}", flush=True)
        return t.value


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
        mem_total = meminfo_bytes()
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
    func, autograd = TorchFunc(risk), DoubleBackward(risk, theta)
    slow = {
        "torch.func.hessian": lambda: func.hessian(theta),
        "row-by-row double backward": lambda: autograd.kept().hessian(),
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
    func, autograd = TorchFunc(risk), DoubleBackward(risk, theta)
    cached = autograd.kept()
    tools: list[tuple[str, Callable[[], Any], str]] = [
        ("double backward (gradient graph built per call)", lambda: autograd.hvp(v),
         OURS["hvp"]),
        ("double backward (first backward cached)", lambda: cached.hvp(v), cached_ours),
        ("torch.func.jvp(grad) (forward over reverse)", lambda: func.hvp(theta, v),
         OURS["hvp"]),
        ("bound: one autograd gradient", autograd.gradient, OURS["hvp"]),
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
        row.iqr_s = [x / BATCH for x in row.iqr_s] if row.iqr_s else None
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
    for task in TASKS:
        which = "smallest" if task == "lambda_min" else "largest"
        rec.time(prob, point, task, OURS[task],
                 lambda which=which: sm.spectrum(net, data, k=1, which=which,
                                                 method="lanczos", seed=settings.seed),
                 repeats=reps, check=lambda s, task=task: {
                     **ref.assess(task, float(s.eigenvalues[0]), s.eigenvectors[:, 0]),
                     "matvecs": s.num_matvecs})
        variants = {
            "scipy eigsh on autograd HVP, tuned (tol=1e-12, ncv=30, same v0)":
                {"tol": LANCZOS_TOL, "ncv": min(P, LANCZOS_NCV),
                 "v0": start_vector(P, settings.seed)},
        }
        if with_defaults:
            variants["scipy eigsh on autograd HVP, defaults"] = {}
        for tool, kw in variants.items():
            rec.time(prob, point, task, tool,
                     lambda kw=kw, task=task: scipy_eigsh(autograd_operator(risk, theta),
                                                          which_end(task), **kw),
                     repeats=reps, ours=OURS[task],
                     check=lambda out, task=task: _assess_run(ref, task, out),
                     note="double-backward HVP, first backward cached in the operator")
    return ref


def _assess_run(ref: Reference, task: str, out: dict[str, Any]) -> dict[str, Any]:
    res = ref.assess(task, out["lam"], out.get("vec"))
    res["matvecs"] = out.get("matvecs")
    if out.get("note"):
        res["note"] = out["note"]
    if out.get("status"):
        res["status"] = out["status"]
    return res


# ------------------------------------------------------------------------ task 4: peers
def bench_peers(rec: Recorder, prob: Problem, point: str, net: sm.TwoLayerNet,
                ref: Reference, settings: Settings) -> None:
    """Each third-party eigensolver of ``_peers.EIGEN_PEERS``, at its defaults and tuned.

    A peer that is not installed gives ``skipped`` rows, one that fails to import or
    crashes ``failed`` rows; the run goes on.
    """
    problem = PeerProblem(net, prob.data.X, prob.data.targets, settings.seed)
    for peer in EIGEN_PEERS:
        missing = peer.missing()
        for task in TASKS:
            for tuned in (False, True):
                tool = peer.tool(tuned)
                if missing is not None:
                    rec.skip(prob, point, task, tool, missing[1], status=missing[0])
                    continue
                why = peer.unsupported(task)
                if why is not None:
                    rec.add(prob, point, task, tool, status="unsupported", ours=OURS[task],
                            note=why)
                    continue
                rec.time(prob, point, task, tool,
                         lambda peer=peer, task=task, tuned=tuned: peer.run(problem, task,
                                                                            tuned),
                         repeats=settings.eig_repeats, ours=OURS[task],
                         check=lambda out, task=task: _assess_run(ref, task, out))


# ---------------------------------------------------------------------------- output
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
        f"* peers: {peers}",
    ]
    load = load_summary(result.get("load"))  # results written before the harness have none
    out += [f"* load: {load}", ""] if load else [""]
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
        if r.problem != MAIN.label or not any(r.tool.startswith(p.label) for p in EIGEN_PEERS):
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
    with session() as harness:
        for spec in grid:
            print(f"[{time.perf_counter() - start:6.0f} s] {spec.label} "
                  f"(P = {spec.num_params})", flush=True)
            prob = problems[spec] = build_problem(spec, settings.seed)
            bench_hvp(rec, prob, settings.seed)
            if spec in axes:
                run_eigen(rec, prob, settings, spec in peer_specs)
            bench_hessian(rec, prob, costs)  # last: torch.func.hessian's GBs disturb the rest
    fill_ratios(rec.rows)
    return {
        "mode": "quick" if args.quick else "full", "seed": settings.seed,
        "settings": asdict(settings), "threads": harness.threads, "machine": harness.machine,
        "load": harness.load,
        "wall_s": time.perf_counter() - start,
        "problems": [{"problem": p.spec.label, "d": p.spec.d, "m": p.spec.m, "n": p.spec.n,
                      **p.info} for p in problems.values()],
        "results": [asdict(r) for r in rec.rows],
    }


def run_eigen(rec: Recorder, prob: Problem, settings: Settings, with_peers: bool) -> None:
    for point, net in prob.points.items():
        if net is None:
            for task in TASKS:
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
    stem = "core-quick" if args.quick else "core"
    write_results(stem, result, markdown(result, rows), out_dir=args.out_dir, indent=1,
                  echo=False)
    print(f"wrote {stem}.json and {stem}.md in {result['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
