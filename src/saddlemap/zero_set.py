"""The zero set Z_f = {u : φ_f(u) = 0} of the residual function, and its singular part.

A null neuron (a_k = 0) of a critical point may sit anywhere on Z_f; a neuron with a_k ≠ 0
sits on Z'_f = {u ∈ Z_f : ∇φ_f(u) = 0} (THEORY §2).  This module finds points of Z_f:

* in one dimension (D = 1), all zeros on an interval: sign changes are bracketed and
  solved by Brent's method, and the local minima of ‖φ‖ on a fine grid are refined by
  Gauss–Newton to catch the double zeros that a critical neuron makes;
* in any dimension, Gauss–Newton projection with minimum-norm steps
  u ← u − ∇φ(u)⁺ φ(u) from many starts, deduplicated.

Each point is classified as regular (∇φ(u) ≠ 0: Z_f is a smooth hypersurface there) or
singular (∇φ(u) = 0).

>>> import torch
>>> from saddlemap import Dataset, TwoLayerNet, residual_function
>>> data = Dataset([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0], [-1.0, -1.0, 0.0, 0.5, 0.5, 0.0])
>>> rf = residual_function(TwoLayerNet([0.610515537972], [[1.433931221329]]), data)
>>> [(round(p.u[0], 4) + 0.0, p.regular) for p in zeros_1d(rf, (-12.0, 12.0))]
[(-1.4339, False), (0.0, True), (1.4339, False)]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import brentq

from .derivatives import ResidualFunction

__all__ = ["ZeroSetPoint", "project_to_zero_set", "zero_set_points", "zeros_1d"]


@dataclass(frozen=True)
class ZeroSetPoint:
    """A point u on Z_f with its evidence.

    Attributes:
        u: the point (augmented input weights, length D).
        phi_norm: ‖φ(u)‖, the distance from exactly zero.
        grad_norm: ‖∇φ(u)‖ (Frobenius).
        regular: whether ∇φ(u) ≠ 0 beyond the tolerance.
    """

    u: tuple[float, ...]
    phi_norm: float
    grad_norm: float
    regular: bool

    @property
    def singular(self) -> bool:
        """Whether ∇φ(u) = 0: u is on Z'_f, where neurons of critical points sit."""
        return not self.regular


def _scale(rf: ResidualFunction) -> float:
    # φ is a sum of e_i σ(·); its natural size is Σ‖e_i‖ (σ = O(1) on the data's range).
    return float(rf.e.abs().sum())


def _on_zero_set(rf: ResidualFunction, u: torch.Tensor, tol: float) -> bool:
    """Whether φ(u) = 0 to ``tol``, by cancellation or by a negligible Newton distance.

    ‖φ(u)‖ ≤ tol · Σ_i ‖e_i‖ |σ(uᵀx̃_i)| (zero by cancellation of its terms), or the
    Newton distance ‖φ(u)‖/‖∇φ(u)‖₂ ≤ tol · (1 + ‖u‖) (at u = 0 with σ(0) = 0 every
    term vanishes, yet the zero is simple).  Measuring against the terms' own size refuses the
    "zeros at infinity" of decaying or saturating activations, where ∇φ fades with φ.
    """
    u = u.reshape(-1)
    phi = rf.phi(u)
    terms = rf.e.abs().sum(1) @ rf.activation_fns[0](rf.X @ u).abs()
    if float(torch.linalg.vector_norm(phi)) <= tol * float(terms):
        return True
    slope = float(torch.linalg.matrix_norm(rf.grad(u), ord=2))
    distance = float(torch.linalg.vector_norm(phi)) / slope if slope > 0 else float("inf")
    return distance <= tol * (1 + float(u.norm()))


def _point(rf: ResidualFunction, u: torch.Tensor, grad_rtol: float) -> ZeroSetPoint:
    phi = float(torch.linalg.vector_norm(rf.phi(u)))
    grad = float(torch.linalg.matrix_norm(rf.grad(u)))
    regular = grad > grad_rtol * max(_scale(rf), 1e-300)
    return ZeroSetPoint(tuple(u.tolist()), phi, grad, regular)


def project_to_zero_set(
    rf: ResidualFunction, u0: torch.Tensor, tol: float = 1e-13, max_iter: int = 100
) -> torch.Tensor | None:
    """Gauss–Newton projection of u0 onto Z_f with minimum-norm steps, or None.

    u ← u − ∇φ(u)⁺ φ(u): the smallest step that zeroes the linearisation, so a start near a
    smooth part of Z_f lands close to its orthogonal projection.  Returns None when
    ‖φ‖ does not fall to ``tol`` times the size of its terms (see :func:`_on_zero_set`).
    """
    u = torch.as_tensor(u0, dtype=rf.X.dtype, device=rf.X.device).clone()
    for _ in range(max_iter):
        phi = rf.phi(u)
        terms = rf.e.abs().sum(1) @ rf.activation_fns[0](rf.X @ u).abs()
        if float(torch.linalg.vector_norm(phi)) <= tol * float(terms):
            return u  # zero by cancellation: as precise as φ's terms allow
        step = torch.linalg.lstsq(rf.grad(u), phi.unsqueeze(1), rcond=None).solution[:, 0]
        if not bool(torch.isfinite(step).all()) or float(step.norm()) == 0.0:
            break
        u = u - step
    return u if _on_zero_set(rf, u, tol) else None


def _dedupe(points: list[torch.Tensor], tol: float) -> list[torch.Tensor]:
    kept: list[torch.Tensor] = []
    for p in sorted(points, key=lambda t: tuple(t.tolist())):
        if all(float(torch.linalg.vector_norm(p - q)) > tol * (1 + float(p.norm())) for q in kept):
            kept.append(p)
    return kept


def zero_set_points(
    rf: ResidualFunction,
    num_starts: int = 64,
    radius: float = 2.0,
    seed: int = 0,
    tol: float = 1e-13,
    grad_rtol: float = 1e-6,
) -> list[ZeroSetPoint]:
    """Points of Z_f found by projection from ``num_starts`` Gaussian starts of scale ``radius``.

    Duplicates (within 1e-8 relative) are merged.  On the smooth part of Z_f (dimension
    D − 1 for K = 1) the points are a sample; isolated singular points are found when a
    start falls in their basin.
    """
    gen = torch.Generator().manual_seed(seed)
    D = rf.X.shape[1]
    starts = radius * torch.randn(num_starts, D, generator=gen, dtype=rf.X.dtype)
    projected = (project_to_zero_set(rf, s.to(rf.X.device), tol) for s in starts)
    found = [p for p in projected if p is not None]
    return [_point(rf, u, grad_rtol) for u in _dedupe(found, 1e-8)]


def _refine_double_zero(rf: ResidualFunction, u: float, max_iter: int = 50) -> float:
    """Gauss–Newton on ‖φ(u)‖² from u, keeping the best point (double zeros converge slowly)."""
    x = torch.tensor([u], dtype=rf.X.dtype, device=rf.X.device)
    best, best_val = x.clone(), float(torch.linalg.vector_norm(rf.phi(x)))
    for _ in range(max_iter):
        J = rf.grad(x)  # (K, 1)
        denom = float((J * J).sum())
        if denom == 0.0:
            break
        x = x - (J[:, 0] @ rf.phi(x)) / denom
        val = float(torch.linalg.vector_norm(rf.phi(x)))
        if val < best_val:
            best, best_val = x.clone(), val
    return float(best[0])


def zeros_1d(
    rf: ResidualFunction,
    interval: tuple[float, float] = (-12.0, 12.0),
    num: int = 4001,
    tol: float = 1e-9,
    grad_rtol: float = 1e-6,
    merge_tol: float = 1e-4,
) -> list[ZeroSetPoint]:
    """All zeros of φ on an interval, for one-dimensional u (d = 1, no hidden bias).

    Simple zeros of a scalar φ are bracketed on a grid of ``num`` points and solved by Brent's
    method; double zeros (where φ touches 0, as at a critical neuron) are found as local
    minima of ‖φ‖ refined by Gauss–Newton and kept when ‖φ‖ ≤ ``tol`` times the size of
    its terms.  Zeros
    within ``merge_tol`` (relative) are merged; zeros closer than the grid spacing to each
    other can be missed.  A zero is singular when ‖∇φ‖ ≤ ``grad_rtol`` · Σ‖e_i‖: a double
    zero known to δ leaves ‖∇φ‖ ≈ √δ, hence the default 1e-6.
    """
    if rf.X.shape[1] != 1:
        raise ValueError(f"zeros_1d needs one-dimensional u, got D={rf.X.shape[1]}")
    grid = torch.linspace(*interval, num, dtype=rf.X.dtype, device=rf.X.device)
    values = rf.phi(grid.unsqueeze(1))  # (num, K)
    norms = torch.linalg.vector_norm(values, dim=1).cpu().numpy()
    xs = grid.cpu().numpy()
    candidates: list[float] = []
    if values.shape[1] == 1:
        v = values[:, 0].cpu().numpy()

        def f(x: float) -> float:
            return float(rf.phi(torch.tensor([x], dtype=rf.X.dtype, device=rf.X.device))[0])

        for i in np.nonzero(np.sign(v[:-1]) * np.sign(v[1:]) < 0)[0]:
            candidates.append(brentq(f, xs[i], xs[i + 1], xtol=1e-15, rtol=1e-15))
        candidates += [float(x) for x in xs[v == 0]]
    interior = np.nonzero((norms[1:-1] <= norms[:-2]) & (norms[1:-1] <= norms[2:]))[0] + 1
    candidates += [_refine_double_zero(rf, float(xs[i])) for i in interior]
    points = [
        torch.tensor([c], dtype=rf.X.dtype, device=rf.X.device)
        for c in candidates
        if interval[0] <= c <= interval[1]
    ]
    points = [p for p in points if _on_zero_set(rf, p, tol)]
    # A double zero perturbed by rounding splits into two simple zeros ~√δ apart, or none:
    # merge zeros within ``merge_tol`` and keep the one with the smallest ‖∇φ‖.
    groups: list[list[ZeroSetPoint]] = []
    for point in sorted((_point(rf, p, grad_rtol) for p in points), key=lambda z: z.u[0]):
        if groups and point.u[0] - groups[-1][-1].u[0] <= merge_tol * (1 + abs(point.u[0])):
            groups[-1].append(point)
        else:
            groups.append([point])
    return [min(group, key=lambda z: z.grad_norm) for group in groups]
