"""The zero set Z_f = {u : φ_f(u) = 0} of the residual function, and its singular part.

A null neuron (a_k = 0) of a critical point may sit anywhere on Z_f; a neuron with a_k ≠ 0
sits on Z'_f = {u ∈ Z_f : ∇φ_f(u) = 0} (docs/theory.md §2).  :class:`ZeroSet` owns every
question about Z_f, each decided by one tolerance of :class:`~saddlemap.Tolerances`:

* membership (``contains``): ‖φ(u)‖ ≤ ``zero_set`` · Σ_i ‖e_i‖₁ |σ(uᵀx̃_i)|, the size of
  φ's terms (a zero by cancellation), or a Newton distance ‖φ(u)‖/‖∇φ(u)‖₂ that small
  relative to 1 + ‖u‖ (at u = 0 with σ(0) = 0 every term vanishes, yet the zero is simple).
  Measuring against the terms' own size refuses the "zeros at infinity" of decaying or
  saturating activations, where φ and ∇φ fade together;
* regularity (``point``): u is singular when ‖∇φ(u)‖ ≤ ``singular`` times the size of ∇φ's
  terms, max(Σ_i ‖e_i‖₁ |σ'(uᵀx̃_i)| ‖x̃_i‖, Σ_i ‖e_i‖₁ ‖x̃_i‖);
* search: every zero on an interval for one-dimensional u (``zeros_1d``: sign changes
  bracketed and solved by Brent's method, local minima of ‖φ‖ refined by Gauss–Newton for
  the double zeros a critical neuron makes), and Gauss–Newton projection with minimum-norm
  steps u ← u − ∇φ(u)⁺ φ(u) in any dimension (``project``, ``sample``).

>>> from saddlemap import Dataset, TwoLayerNet, residual_function
>>> data = Dataset([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0], [-1.0, -1.0, 0.0, 0.5, 0.5, 0.0])
>>> zs = ZeroSet(residual_function(TwoLayerNet([0.610515537972], [[1.433931221329]]), data))
>>> [(round(p.u[0], 4) + 0.0, p.regular) for p in zs.zeros_1d((-12.0, 12.0))]
[(-1.4339, False), (0.0, True), (1.4339, False)]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import brentq

from .derivatives import ResidualFunction
from .errors import OptionError
from .tolerances import Tolerances

__all__ = ["ZeroSet", "ZeroSetPoint"]

#: Projection iterates until ‖φ‖ is this small against its terms: as precise as rounding allows.
_PROJECTION_TARGET = 1e-13


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


@dataclass(frozen=True, eq=False)
class ZeroSet:
    """Z_f of one residual function, with the tolerances that decide membership and regularity.

    Attributes:
        residual: the residual function φ_f.
        tolerances: ``zero_set`` (membership) and ``singular`` (regularity) are read.
    """

    residual: ResidualFunction
    tolerances: Tolerances = field(default_factory=Tolerances)

    @property
    def tolerance(self) -> float:
        """The resolved ``zero_set`` tolerance of membership, for this dtype."""
        return self.tolerances.resolved(self.residual.X.dtype).zero_set_value

    def _vector(self, u: torch.Tensor | tuple[float, ...]) -> torch.Tensor:
        X = self.residual.X
        return torch.as_tensor(u, dtype=X.dtype, device=X.device).reshape(-1)

    # ------------------------------------------------------------------ scales
    def phi_terms(self, u: torch.Tensor) -> float:
        """Σ_i ‖e_i‖₁ |σ(uᵀx̃_i)|: the size of φ(u)'s terms."""
        rf = self.residual
        return float(rf.e.abs().sum(1) @ rf.activation_fns[0](rf.X @ self._vector(u)).abs())

    def grad_terms(self, u: torch.Tensor) -> float:
        """max(Σ_i ‖e_i‖₁ |σ'(uᵀx̃_i)| ‖x̃_i‖, Σ_i ‖e_i‖₁ ‖x̃_i‖): the size of ∇φ(u)'s terms."""
        rf = self.residual
        e1x = rf.e.abs().sum(1) * torch.linalg.vector_norm(rf.X, dim=1)
        slope = float(e1x @ rf.activation_fns[1](rf.X @ self._vector(u)).abs())
        return max(slope, float(e1x.sum()))

    # -------------------------------------------------------------- membership
    def contains(self, u: torch.Tensor | tuple[float, ...]) -> bool:
        """Whether φ(u) = 0 to the ``zero_set`` tolerance (see the module docstring)."""
        u = self._vector(u)
        rf, tol = self.residual, self.tolerance
        phi = float(torch.linalg.vector_norm(rf.phi(u)))
        if phi <= tol * self.phi_terms(u):
            return True
        slope = float(torch.linalg.matrix_norm(rf.grad(u), ord=2))
        distance = phi / slope if slope > 0 else math.inf
        return distance <= tol * (1 + float(u.norm()))

    def is_singular(self, u: torch.Tensor | tuple[float, ...]) -> bool:
        """Whether ∇φ(u) = 0 to the ``singular`` tolerance (u need not be on Z_f)."""
        u = self._vector(u)
        grad = float(torch.linalg.matrix_norm(self.residual.grad(u)))
        return grad <= self.tolerances.singular * self.grad_terms(u)

    def point(self, u: torch.Tensor | tuple[float, ...]) -> ZeroSetPoint:
        """U with ‖φ(u)‖, ‖∇φ(u)‖ and its regularity (membership is not checked here)."""
        u = self._vector(u)
        phi = float(torch.linalg.vector_norm(self.residual.phi(u)))
        grad = float(torch.linalg.matrix_norm(self.residual.grad(u)))
        regular = grad > self.tolerances.singular * self.grad_terms(u)
        return ZeroSetPoint(tuple(u.tolist()), phi, grad, regular)

    # ------------------------------------------------------------------ search
    def project(self, u0: torch.Tensor, max_iter: int = 100) -> torch.Tensor | None:
        """Gauss–Newton projection of u0 onto Z_f with minimum-norm steps, or None.

        u ← u − ∇φ(u)⁺ φ(u): the smallest step that zeroes the linearisation, so a start near
        a smooth part of Z_f lands close to its orthogonal projection.  None when the end
        point is not on Z_f (:meth:`contains`).
        """
        rf = self.residual
        u = self._vector(u0).clone()
        for _ in range(max_iter):
            phi = rf.phi(u)
            if float(torch.linalg.vector_norm(phi)) <= _PROJECTION_TARGET * self.phi_terms(u):
                return u
            step = torch.linalg.lstsq(rf.grad(u), phi.unsqueeze(1), rcond=None).solution[:, 0]
            if not bool(torch.isfinite(step).all()) or float(step.norm()) == 0.0:
                break
            u = u - step
        return u if self.contains(u) else None

    def sample(
        self, num_starts: int = 64, radius: float = 2.0, seed: int = 0
    ) -> list[ZeroSetPoint]:
        """Points of Z_f projected from ``num_starts`` Gaussian starts of scale ``radius``.

        Duplicates (within 1e-8 relative) are merged.  On the smooth part of Z_f (dimension
        D − 1 for K = 1) the points are a sample; isolated singular points are found when a
        start falls in their basin.
        """
        X = self.residual.X
        gen = torch.Generator().manual_seed(seed)
        starts = radius * torch.randn(num_starts, X.shape[1], generator=gen, dtype=X.dtype)
        projected = (self.project(s.to(X.device)) for s in starts)
        found = [p for p in projected if p is not None]
        return [self.point(u) for u in _dedupe(found, 1e-8)]

    def origin(self) -> ZeroSetPoint | None:
        """U = 0 when it lies on Z_f (φ(0) = σ(0) Σ_i e_i: σ(0) = 0, or Σ_i e_i = 0)."""
        zero = self.residual.X.new_zeros(self.residual.X.shape[1])
        return self.point(zero) if self.contains(zero) else None

    def zeros_1d(
        self,
        interval: tuple[float, float] = (-12.0, 12.0),
        num: int = 4001,
        merge_tol: float = 1e-4,
    ) -> list[ZeroSetPoint]:
        """All zeros of φ on an interval, for one-dimensional u (d = 1, no hidden bias).

        Simple zeros of a scalar φ are bracketed on a grid of ``num`` points and solved by
        Brent's method; double zeros (where φ touches 0, as at a critical neuron) are found as
        local minima of ‖φ‖ refined by Gauss–Newton and kept when on Z_f.  Zeros within
        ``merge_tol`` (relative) are merged, keeping the smallest ‖∇φ‖: a double zero
        perturbed by rounding splits into two simple zeros about √δ apart.  Zeros closer than
        the grid spacing to each other can be missed.
        """
        rf = self.residual
        if rf.X.shape[1] != 1:
            raise OptionError(f"zeros_1d needs one-dimensional u, got D={rf.X.shape[1]}")
        lo, hi = interval
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi) or num < 3:
            raise OptionError(f"need a finite interval lo < hi and num ≥ 3, got {interval}, {num}")
        grid = torch.linspace(lo, hi, num, dtype=rf.X.dtype, device=rf.X.device)
        values = rf.phi(grid.unsqueeze(1))  # (num, K)
        candidates = _sign_changes(rf, grid, values)
        norms = torch.linalg.vector_norm(values, dim=1).cpu().numpy()
        interior = np.nonzero((norms[1:-1] <= norms[:-2]) & (norms[1:-1] <= norms[2:]))[0] + 1
        xs = grid.cpu().numpy()
        candidates += [_refine_double_zero(rf, float(xs[i])) for i in interior]
        points = [self.point((c,)) for c in candidates if lo <= c <= hi and self.contains((c,))]
        groups: list[list[ZeroSetPoint]] = []
        for point in sorted(points, key=lambda z: z.u[0]):
            if groups and point.u[0] - groups[-1][-1].u[0] <= merge_tol * (1 + abs(point.u[0])):
                groups[-1].append(point)
            else:
                groups.append([point])
        return [min(group, key=lambda z: z.grad_norm) for group in groups]

    def nearest_to_origin(self, seed: int = 0) -> ZeroSetPoint | None:
        """The regular point of Z_f of least norm found (a singular one if none is regular).

        Candidates: u = 0 when on Z_f, :meth:`zeros_1d` on [−12, 12] for D = 1, and
        :meth:`sample` (seeded) for D ≥ 2.
        """
        origin = self.origin()
        if origin is not None and origin.regular:
            return origin  # no regular point has a smaller norm
        found = self.zeros_1d() if self.residual.X.shape[1] == 1 else self.sample(seed=seed)
        points = [*found, *([origin] if origin is not None else [])]
        if not points:
            return None
        return min(points, key=lambda p: (p.singular, math.hypot(*p.u)))


def _sign_changes(rf: ResidualFunction, grid: torch.Tensor, values: torch.Tensor) -> list[float]:
    """Brent's roots of a scalar φ between grid points where it changes sign, and exact zeros."""
    if values.shape[1] != 1:
        return []
    v = values[:, 0].cpu().numpy()
    xs = grid.cpu().numpy()

    def f(x: float) -> float:
        return float(rf.phi(torch.tensor([x], dtype=rf.X.dtype, device=rf.X.device))[0])

    roots = [
        float(brentq(f, xs[i], xs[i + 1], xtol=1e-15, rtol=1e-15))
        for i in np.nonzero(np.sign(v[:-1]) * np.sign(v[1:]) < 0)[0]
    ]
    return roots + [float(x) for x in xs[v == 0]]


def _dedupe(points: list[torch.Tensor], tol: float) -> list[torch.Tensor]:
    kept: list[torch.Tensor] = []
    for p in sorted(points, key=lambda t: tuple(t.tolist())):
        if all(float(torch.linalg.vector_norm(p - q)) > tol * (1 + float(p.norm())) for q in kept):
            kept.append(p)
    return kept


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
