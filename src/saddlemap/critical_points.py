"""Find critical points of R — minima and saddles alike — and certify what they are.

Refinement solves ∇R(θ) = 0 by Levenberg–Marquardt on F = ∇R with Jacobian H:

    s = −(H² + μI)⁻¹ H ∇R,   μ = c · ‖∇R‖²,

accepting a step when ½‖∇R‖² decreases as the linear model predicts (trust-region ratio) and
adapting c.  With μ proportional to ‖F‖² the iteration converges quadratically even at the
exactly singular Hessians of embedded critical points, under a local error bound (Fan & Yuan,
Computing 74, 2005; Yamashita & Fukushima, 2001), and it is attracted to saddles as much as
to minima, because it minimises ‖∇R‖², not R.  Its fixed points that are not critical are
*gradient-flat* points, H∇R = 0 with ∇R ≠ 0 (Frye et al. 2020, docs/theory.md §9): the certificate
reports ‖H∇R‖/‖∇R‖ and never calls such a point critical.

>>> import torch
>>> from saddlemap import Dataset, TwoLayerNet
>>> data = Dataset([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0], [-1.0, -1.0, 0.0, 0.5, 0.5, 0.0])
>>> cp = find_critical_point(TwoLayerNet([0.6], [[1.4]]), data)
>>> cp.verdict.value, cp.grad_norm < 1e-12
('strict local minimum', True)
>>> round(float(cp.net.W[0, 0]), 9)
1.433931221
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, cg
from tqdm.auto import tqdm

from ._forward import forward
from .analysis import Analysis, as_analysis
from .data import Dataset
from .errors import OptionError
from .network import TwoLayerNet
from .spectral import Inertia, Spectrum
from .tolerances import Tolerances
from .verdicts import Note, NoteCode, Verdict

__all__ = [
    "CriticalPoint",
    "certify",
    "convergence_order",
    "find_critical_point",
]


@dataclass(frozen=True, eq=False)
class CriticalPoint:
    """A point with the evidence of what it is.

    Attributes:
        net: the network at the point.
        loss: R at the point.
        grad_norm: ‖∇R‖.
        grad_tol: the tolerance ‖∇R‖ was held to (see :func:`~saddlemap.grad_tolerance`).
        hgrad_ratio: ‖H∇R‖ / ‖∇R‖, the gradient-flat guard (0 when ∇R = 0).
        spectrum: the Hessian spectrum (its inertia and zero tolerance included).
        verdict: the :class:`Verdict`.
        iterations: refinement iterations taken (0 for :func:`certify`).
        converged: ‖∇R‖ ≤ grad_tol and R does not fall along the output-layer ray (a point
            where it does is heading to a critical point at infinity, never critical).
        history: ‖∇R‖ at the start and after every accepted iteration.
        warnings: :class:`~saddlemap.Note` s: saturated or dead neurons, diverging weights,
            channels to infinity, non-analytic activations, a refinement that slowed down.
        method: how the point was reached.
        tolerances: the tolerances every decision above was made with.
        moved: ‖θ − θ₀‖ / max(‖θ₀‖, 1), how far refinement moved from where it started
            (0 for :func:`certify`).
    """

    net: TwoLayerNet
    loss: float
    grad_norm: float
    grad_tol: float
    hgrad_ratio: float
    spectrum: Spectrum
    verdict: Verdict
    iterations: int = 0
    converged: bool = False
    history: np.ndarray = field(default_factory=lambda: np.zeros(0))
    warnings: tuple[Note, ...] = ()
    method: str = "certify"
    tolerances: Tolerances = field(default_factory=Tolerances)
    moved: float = 0.0

    @property
    def at_infinity(self) -> bool:
        """Whether R still falls along the output-layer ray (``Verdict.AT_INFINITY``)."""
        return self.verdict is Verdict.AT_INFINITY

    def has(self, code: NoteCode) -> bool:
        """Whether a warning with ``code`` was raised."""
        return any(w.code is code for w in self.warnings)

    @property
    def inertia(self) -> Inertia | None:
        """(n₊, n₀, n₋) of the Hessian, or None for a partial spectrum."""
        return self.spectrum.inertia

    def summary(self) -> str:
        """A few lines a person can read."""
        lines = [
            f"{self.verdict.value}: R = {self.loss:.10g}, ‖∇R‖ = {self.grad_norm:.2e} "
            f"(tol {self.grad_tol:.1e}), ‖H∇R‖/‖∇R‖ = {self.hgrad_ratio:.2e}",
            self.spectrum.summary(),
        ]
        if self.iterations:
            lines.append(f"{self.iterations} iterations ({self.method})")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


# ------------------------------------------------------------------------- warnings
def _neuron_warnings(an: Analysis) -> list[Note]:
    net = an.net
    limit = an.tolerances.weight_limit
    S1 = forward(net, an.data, order=1).S1
    out = []
    if not net.activation.analytic:
        out.append(Note(NoteCode.NOT_ANALYTIC,
            f"{net.activation.name} is not analytic: the Hessian misses the curvature at the "
            "kinks, so second-order verdicts hold only off them"
        ))
    elif not net.activation.in_theory:
        out.append(Note(NoteCode.POLYNOMIAL,
                        f"{net.activation.name} is a polynomial: outside the theory"))
    dead = (S1.abs().amax(0) < 1e-8).nonzero().flatten().tolist() if an.data.n else []
    if dead:
        out.append(Note(NoteCode.DEAD_NEURONS,
                        f"neurons {dead} are saturated or dead: σ' < 1e-8 on every sample"))
    a_norm = torch.linalg.vector_norm(net.a, dim=1)
    w_norm = torch.linalg.vector_norm(net.W_aug, dim=1)
    big = ((a_norm > limit) | (w_norm > limit)).nonzero().flatten().tolist()
    if big:
        out.append(Note(NoteCode.LARGE_WEIGHTS,
                        f"neurons {big} have weights above {limit:g}: diverging"))
    out += _channel_warnings(net, a_norm, limit)
    return out


def _channel_warnings(net: TwoLayerNet, a_norm: torch.Tensor, limit: float) -> list[Note]:
    # Channel to infinity (docs/theory.md §9): two neurons with nearly equal input weights and
    # large output weights of opposite sign, whose sum stays moderate.
    big = (a_norm > 0.1 * limit).nonzero().flatten().tolist()
    out = []
    for i, k in enumerate(big):
        for j in big[i + 1 :]:
            close = torch.linalg.vector_norm(net.W_aug[k] - net.W_aug[j]) <= 1e-2 * (
                1 + torch.linalg.vector_norm(net.W_aug[k])
            )
            cancel = torch.linalg.vector_norm(net.a[k] + net.a[j]) < 0.1 * a_norm[k]
            if bool(close) and bool(cancel):
                out.append(Note(NoteCode.CHANNEL_PAIR,
                                f"neurons {k} and {j} look like a channel to infinity"))
    return out


# -------------------------------------------------------------------------- certify
def _verdict(grad_ok: bool, flat: bool, spec: Spectrum, at_infinity: bool) -> Verdict:
    if at_infinity:
        return Verdict.AT_INFINITY
    if not grad_ok:
        return Verdict.GRADIENT_FLAT if flat else Verdict.NOT_CRITICAL
    if spec.min < -spec.zero_tol:
        return Verdict.STRICT_SADDLE
    if spec.min > spec.zero_tol:
        return Verdict.STRICT_MINIMUM
    return Verdict.DEGENERATE


def certify(
    net: TwoLayerNet | Analysis,
    data: Dataset | None = None,
    *,
    tolerances: Tolerances | None = None,
) -> CriticalPoint:
    """Certify a point as it stands: gradient, gradient-flat guard, spectrum, verdict.

    The point is critical when ‖∇R‖ ≤ :func:`~saddlemap.grad_tolerance` (``tolerances.grad``
    or the rounding floor).  Otherwise it is gradient-flat when
    ‖H∇R‖/‖∇R‖ ≤ ``tolerances.flat`` · max|λ(H)|, else not critical.  ``net`` may be an
    :class:`~saddlemap.Analysis`, whose cached objects are used and which keeps the result.
    """
    an = as_analysis(net, data, tolerances)
    return an.memo("certificate", lambda: _certificate(an))


def _certificate(
    an: Analysis, iterations: int = 0, history: np.ndarray | None = None, method: str = "certify"
) -> CriticalPoint:
    g, grad_norm = an.gradient, an.grad_norm
    ratio = float(torch.linalg.vector_norm(an.hvp(g))) / grad_norm if grad_norm else 0.0
    spec = an.spectrum
    at_infinity = an.heads_to_infinity
    ok = grad_norm <= an.grad_tol and not at_infinity
    flat = not ok and ratio <= an.tolerances.flat * spec.scale
    warnings = _neuron_warnings(an)
    if at_infinity:
        why = (f"R falls by {an.ray_drop:.2e} (relative) when the output layer is doubled"
               if an.ray_drop > 0 else f"R = {an.loss:.1e} has underflowed")
        warnings.append(Note(NoteCode.AT_INFINITY,
            f"{why}: the point is heading to a critical point at infinity (separable data or "
            "a diverging pair), not at a critical point"))
    return CriticalPoint(
        net=an.net,
        loss=an.loss,
        grad_norm=grad_norm,
        grad_tol=an.grad_tol,
        hgrad_ratio=ratio,
        spectrum=spec,
        verdict=_verdict(ok, flat, spec, at_infinity),
        iterations=iterations,
        converged=ok,
        history=np.array([grad_norm]) if history is None else history,
        warnings=tuple(warnings),
        method=method,
        tolerances=an.tolerances,
    )


# ------------------------------------------------------------------------ LM steps
#: Patience of the bounded refinements diagnose runs (see ``find_critical_point``).
REFINE_PATIENCE = 5
#: Conjugate-gradient iterations of one matrix-free LM step, at most.
CG_ITERATIONS = 300

StepFn = Callable[[float], tuple[torch.Tensor, float]]


def _dense_step(an: Analysis, g: torch.Tensor) -> StepFn:
    """s(μ) and the predicted ½‖∇R + Hs‖², from one eigendecomposition of H."""
    lam, V = torch.linalg.eigh(an.hessian)
    gh = V.T @ g

    def step(mu: float) -> tuple[torch.Tensor, float]:
        s = -V @ (lam / (lam * lam + mu) * gh)
        residual = gh * mu / (lam * lam + mu)
        return s, 0.5 * float(residual @ residual)

    return step


def _matrix_free_step(an: Analysis, g: torch.Tensor) -> StepFn:
    """s(μ) by conjugate gradients on (H² + μI) s = −H∇R, two HVPs per CG iteration."""
    net = an.net
    P = net.num_params
    H = an.operator  # every product below is at this one point

    def Hv(v: torch.Tensor) -> torch.Tensor:
        return H.apply(v[:, None])[:, 0]

    Hg = Hv(g)

    def step(mu: float) -> tuple[torch.Tensor, float]:
        def normal(x: np.ndarray) -> np.ndarray:
            v = torch.as_tensor(x, dtype=net.dtype, device=net.device)
            return (Hv(Hv(v)) + mu * v).cpu().numpy()

        op = LinearOperator((P, P), matvec=normal, dtype=np.float64)
        # An inexact step is fine (the trust-region test accepts or damps it); capping CG
        # keeps one LM step at a few hundred products where H²+μI is ill-conditioned.
        x, _ = cg(op, -Hg.cpu().numpy(), rtol=1e-10, maxiter=min(10 * P, CG_ITERATIONS))
        s = torch.as_tensor(x, dtype=net.dtype, device=net.device)
        r = g + Hv(s)
        return s, 0.5 * float(r @ r)

    return step


@dataclass
class _Iterate:
    analysis: Analysis  # of the iterate: its gradient, Hessian and certificate are kept
    merit: float  # ½‖∇R‖²

    @classmethod
    def at(cls, an: Analysis) -> _Iterate:
        return cls(an, 0.5 * an.grad_norm**2)

    @property
    def grad_norm(self) -> float:
        return math.sqrt(2 * self.merit)


def _lm_iteration(
    it: _Iterate, make_step: Callable[..., StepFn], c: float, shrink: float
) -> tuple[_Iterate | None, float]:
    """One accepted LM step (or None) and the new damping factor c.

    A step is accepted when ½‖∇R‖² falls below ``shrink`` times its value and by at least
    1e-4 of what the linear model predicts; otherwise μ grows and the step is retried.
    """
    an = it.analysis
    step = make_step(an, an.gradient)
    theta = an.net.flatten()
    # Each retry of a matrix-free step is a CG solve: fewer retries there (μ grows 4x each).
    for _ in range(60 if make_step is _dense_step else 12):
        s, predicted = step(c * it.grad_norm**2)  # μ = c‖∇R‖²
        if not bool(torch.isfinite(s).all()):
            break
        trial = Analysis(an.net.unflatten(theta + s), an.data, an.tolerances)
        merit = 0.5 * trial.grad_norm**2
        rho = (it.merit - merit) / max(it.merit - predicted, 1e-300)
        if merit < shrink * it.merit and rho > 1e-4:
            c = c / 4 if rho > 0.75 else c * 4 if rho < 0.25 else c
            return _Iterate(trial, merit), min(max(c, 1e-12), 1e12)
        c *= 4
    return None, c


def find_critical_point(
    net: TwoLayerNet,
    data: Dataset,
    *,
    tolerances: Tolerances | None = None,
    max_iter: int = 200,
    method: Literal["auto", "dense", "matrix_free"] = "auto",
    polish: int = 2,
    progress: bool = False,
    max_move: float | None = None,
    patience: int | None = None,
) -> CriticalPoint:
    """Refine ``net`` to a nearby critical point by Levenberg–Marquardt on ∇R = 0.

    ``method``: ``"dense"`` (one eigendecomposition of H per iteration, exact steps),
    ``"matrix_free"`` (CG on the normal equations with Hessian-vector products), or
    ``"auto"`` (dense up to 3000 parameters).  Iterates until ‖∇R‖ ≤ the gradient tolerance
    (``tolerances.grad`` or the rounding floor), then takes up to ``polish`` more steps while
    each still cuts ‖∇R‖ fourfold (near the point convergence is quadratic, so this reaches
    the rounding floor).  Stops early when no step reduces ‖∇R‖ (a gradient-flat point or the
    rounding floor) or ∇R is exactly zero; the returned :class:`CriticalPoint` says which.
    With ``max_move``, it also stops before the iterate moves farther than
    ``max_move`` · max(‖θ₀‖, 1) from the start: a critical point beyond that describes
    another network, not this one.  With ``patience`` = p, it stops once ‖∇R‖ has not halved
    over the last p iterations: linear convergence, which on real models means a long flat
    valley whose end is not worth the time.
    """
    if method == "auto":
        method = "dense" if Analysis(net, data, tolerances).dense else "matrix_free"
    make_step = {"dense": _dense_step, "matrix_free": _matrix_free_step}.get(method)
    if make_step is None:
        raise OptionError(f"unknown method {method!r}; use 'auto', 'dense' or 'matrix_free'")
    if not (isinstance(max_iter, int) and max_iter >= 0 and polish >= 0):
        raise OptionError(f"max_iter and polish must be integers ≥ 0, got {max_iter}, {polish}")
    if max_move is not None and not (isinstance(max_move, (int, float)) and max_move > 0):
        raise OptionError(f"max_move must be a number > 0, got {max_move!r}")
    if patience is not None and not (isinstance(patience, int) and patience >= 1):
        raise OptionError(f"patience must be an integer ≥ 1 or None, got {patience!r}")
    theta0 = net.flatten()
    radius = math.inf if max_move is None else max_move * max(float(theta0.norm()), 1.0)
    current = _Iterate.at(Analysis(net, data, tolerances))
    history = [current.grad_norm]
    c = 1.0  # μ = c‖∇R‖²; c adapts like a trust-region radius
    polished = it = 0
    with tqdm(total=max_iter, desc="refine", unit="it", disable=not progress) as bar:
        # A cross-entropy iterate whose loss falls along the output ray will not stop at a
        # finite critical point: say so at once instead of following it.
        runaway = current.analysis.heads_to_infinity and _infimum_at_infinity(current.analysis)
        while it < max_iter and polished <= polish and current.merit > 0 and not runaway:
            done = current.grad_norm <= current.analysis.grad_tol
            polished += done
            if done and polished > polish:
                break
            new, c = _lm_iteration(current, make_step, c, 1 / 16 if done else 1.0)
            if new is None:
                break  # no descent for ½‖∇R‖²: gradient-flat point or rounding floor
            theta = new.analysis.net.flatten()
            if float((theta - theta0).norm()) > radius:
                break  # the next critical point is another network's
            if new.analysis.heads_to_infinity and (
                _infimum_at_infinity(new.analysis)
                or float(theta.norm()) > 1.5 * max(float(theta0.norm()), 1.0)
            ):
                current, it = new, it + 1  # keep the evidence: it runs off to infinity
                history.append(current.grad_norm)
                break
            current, it = new, it + 1
            history.append(current.grad_norm)
            bar.update(1)
            bar.set_postfix(grad=f"{current.grad_norm:.2e}")
            if patience and not done and it > patience and (
                    history[-1] > 0.5 * history[-1 - patience]):
                break  # linear convergence: a flat valley
    cp = _certificate(
        current.analysis, iterations=it, history=np.array(history),
        method=f"levenberg-marquardt ({method})",
    )
    moved = float((cp.net.flatten() - theta0).norm()) / max(float(theta0.norm()), 1.0)
    return _with_drift_warning(dataclasses.replace(cp, moved=moved), net)


def _infimum_at_infinity(an: Analysis) -> bool:
    """Whether the loss is one whose infimum lies at infinity (cross-entropy)."""
    return an.data.loss.name in ("cross_entropy", "binary_cross_entropy")


def _with_drift_warning(cp: CriticalPoint, start: TwoLayerNet) -> CriticalPoint:
    """Add what a refinement that stopped short says about where the critical point is."""
    if cp.converged:
        return cp
    notes = []
    ratios = cp.history[1:][-5:] / cp.history[:-1][-5:]
    if cp.iterations >= 10 and ratios.size and float(ratios.min()) > 0.5:
        notes.append(Note(NoteCode.LINEAR_CONVERGENCE,
            f"refinement slowed to linear convergence (‖∇R‖ ratio {float(ratios.mean()):.3f} per "
            "step): the nearest critical point lies far along a flat valley or at infinity"
        ))
    # Critical points at infinity (docs/theory.md §9, §10.4): ‖∇R‖ decays slowly while the
    # weights grow.
    before = float(start.flatten().norm())
    after = float(cp.net.flatten().norm())
    if after > 1.5 * max(before, 1.0):
        notes.append(Note(NoteCode.PARAMETERS_GREW,
            f"the parameters grew from norm {before:.3g} to {after:.3g}: the iterates may be "
            "heading to a critical point at infinity"
        ))
    return dataclasses.replace(cp, warnings=(*cp.warnings, *notes))


def convergence_order(errors: np.ndarray, last: int = 3, floor: float = 1e-14) -> float:
    """Fitted order p of e_{k+1} ≈ C e_kᵖ over the last ``last`` steps above ``floor``.

    p ≈ 1 is linear, p ≈ 2 quadratic convergence.  Errors at the rounding floor are left out
    because they no longer follow the iteration.

    >>> round(convergence_order(np.array([1e-1, 1e-2, 1e-4, 1e-8])), 6)
    2.0
    """
    e = np.asarray(errors, dtype=float)
    e = e[e > floor]
    if e.size < 3:
        raise OptionError("need at least 3 errors above the floor to fit an order")
    x, y = np.log(e[:-1])[-last:], np.log(e[1:])[-last:]
    return float(np.polyfit(x, y, 1)[0])
