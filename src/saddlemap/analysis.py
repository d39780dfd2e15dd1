"""One analysis context per (network, data, tolerances): every expensive object made once.

Certifying, classifying, decomposing into the critical set and diagnosing all read the same
objects: the forward pass, R, ∇R, the Hessian (dense) or its matrix-free operator, the
spectrum, the residual function φ_f and its zero set.  :class:`Analysis` computes each on
first use and keeps it, and carries the resolved :class:`~saddlemap.Tolerances` that every
decision of the analysis reads.  Functions of the later layers (``certify``, ``classify``,
``CriticalSet``, ``diagnose``) accept an :class:`Analysis` in place of ``(net, data)`` and
store their own results in it with :meth:`Analysis.memo`, so nothing is computed twice.

>>> from saddlemap import Dataset, TwoLayerNet
>>> data = Dataset([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0], [-1.0, -1.0, 0.0, 0.5, 0.5, 0.0])
>>> an = Analysis(TwoLayerNet([0.610515537972], [[1.433931221329]]), data)
>>> an.grad_norm < an.grad_tol, an.spectrum is an.spectrum, an.dense
(True, True, True)
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any, TypeVar

import torch

from ._forward import checked_data, forward
from .data import Dataset
from .derivatives import (
    HessianOperator,
    ResidualFunction,
    dense_hessian_work,
    hessian,
    hessian_operator,
    loss,
    loss_and_gradient,
    residual_function,
)
from .errors import OptionError
from .network import TwoLayerNet
from .spectral import (
    DENSE_LIMIT,
    LANCZOS_TOL,
    Spectrum,
    dense_spectrum,
    matvec_budget,
    spectrum,
)
from .tolerances import Tolerances
from .zero_set import ZeroSet

__all__ = ["Analysis", "as_analysis", "grad_tolerance"]

T = TypeVar("T")

#: Losses whose infimum is approached at infinity (separable data): ‖∇R‖ is judged against R.
_RELATIVE_GRAD_LOSSES = ("cross_entropy", "binary_cross_entropy")
_TINY = float(torch.finfo(torch.float64).tiny)
#: Above this many multiply-adds (``derivatives.dense_hessian_work``) H is not formed: about
#: 0.5–1 s of one core; Lanczos on Hessian-vector products is cheaper beyond it.
DENSE_WORK = 1e10
#: Eigenpairs at each end of a Lanczos spectrum.
LANCZOS_PAIRS = 6
#: Scale of the output-layer ray test: R(RAY_SCALE · (a, c)) against R(a, c).
RAY_SCALE = 2.0


def grad_tolerance(net: TwoLayerNet, data: Dataset, tol: float = 1e-10) -> float:
    """‖∇R‖ tolerance: ``tol``, or the rounding floor of ∇R where that is larger.

    Each entry of ∇R is a sum of terms e_i σ(w̃_kᵀx̃_i), (a_kᵀe_i) σ'(·) x̃_i; rounding makes
    its error about ε times the sum of their magnitudes, so the floor is
    64 ε ‖|S|ᵀ|e|, (|e||a|ᵀ ⊙ |σ'|)ᵀ|X̃|‖ (large weights raise it).
    """
    fw = forward(net, checked_data(net, data), order=1)
    abs_a = fw.S.abs().T @ fw.e.abs()
    abs_w = ((fw.e.abs() @ net.a.abs().T) * fw.S1.abs()).T @ fw.X.abs()
    terms = torch.cat([abs_a.flatten(), abs_w.flatten(), fw.e.abs().sum(0)])
    eps = torch.finfo(net.dtype).eps
    return max(tol, 64 * eps * float(torch.linalg.vector_norm(terms)))


class Analysis:
    """The shared, lazily computed objects of one (network, data, tolerances).

    Args:
        net: the network analysed.
        data: its data (checked against the network once, here).
        tolerances: the tolerances of every decision (default :class:`Tolerances`),
            resolved for the network's dtype.
        dense_limit: up to this many parameters the Hessian is formed densely (when forming
            it costs at most :data:`DENSE_WORK` multiply-adds); above it only the
            matrix-free operator and Lanczos extremes are used.
        max_matvecs: the products a Lanczos spectrum may use (default: unlimited unless
            each product is expensive, see :attr:`matvec_budget`).
    """

    def __init__(
        self,
        net: TwoLayerNet,
        data: Dataset,
        tolerances: Tolerances | None = None,
        *,
        dense_limit: int = DENSE_LIMIT,
        max_matvecs: int | None = None,
    ) -> None:
        if not isinstance(net, TwoLayerNet):
            raise OptionError(f"Analysis needs a TwoLayerNet, got {type(net).__name__}")
        self.net = net
        self.data = checked_data(net, data)
        self.tolerances = (tolerances or Tolerances()).resolved(net.dtype)
        self.dense_limit = int(dense_limit)
        if max_matvecs is not None and not (isinstance(max_matvecs, int) and max_matvecs >= 2):
            raise OptionError(f"max_matvecs must be an integer ≥ 2 or None, got {max_matvecs!r}")
        self._max_matvecs = max_matvecs
        self._memo: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"Analysis({self.net!r}, n={self.data.n}, cached={sorted(self._cached())})"

    def _cached(self) -> list[str]:
        return [*self._memo, *(k for k in vars(self) if k in _LAZY)]

    @property
    def dense(self) -> bool:
        """Whether the Hessian is small and cheap enough to form densely."""
        work, _ = dense_hessian_work(self.net, self.data.n)
        return self.net.num_params <= self.dense_limit and work <= DENSE_WORK

    @property
    def matvec_budget(self) -> int | None:
        """Hessian-vector products a spectrum may use; None unless each one is expensive.

        Above it (MNIST-sized inputs) the spectrum is a budgeted Lanczos run whose
        unconverged pairs are flagged, and diagnose skips the refinements.
        """
        if self._max_matvecs is not None:
            return self._max_matvecs
        return matvec_budget(self.net, self.data.n)

    # ------------------------------------------------------------- first order
    @cached_property
    def _loss_and_gradient(self) -> tuple[float, torch.Tensor]:
        return loss_and_gradient(self.net, self.data)

    @property
    def loss(self) -> float:
        """R(θ)."""
        return self._loss_and_gradient[0]

    @property
    def gradient(self) -> torch.Tensor:
        """∇R(θ), flat."""
        return self._loss_and_gradient[1]

    @cached_property
    def grad_norm(self) -> float:
        """‖∇R‖."""
        return float(torch.linalg.vector_norm(self.gradient))

    @cached_property
    def grad_tol(self) -> float:
        """The ‖∇R‖ tolerance: ``tolerances.grad`` or the rounding floor of ∇R if larger.

        For cross-entropy losses, whose infimum lies at infinity on separable data, the
        tolerance is ``tolerances.grad`` · min(1, R): a point where R and ‖∇R‖ shrink
        together is not critical however small both are.
        """
        tol = self.tolerances.grad_value
        if self.data.loss.name in _RELATIVE_GRAD_LOSSES:
            tol *= min(1.0, self.loss)
        return grad_tolerance(self.net, self.data, tol)

    @cached_property
    def ray_drop(self) -> float:
        """R(θ) − R(θ with the output layer (a, c) scaled by :data:`RAY_SCALE`), relative to R.

        R is convex in the output layer, so a positive drop proves ⟨∇R, (a, c)⟩ < 0: the
        loss falls along the ray s ↦ s(a, c), and the point is not critical however small
        ‖∇R‖ is (it is heading to a critical point at infinity, as on separable data).
        """
        scaled = self.net.replace(
            a=RAY_SCALE * self.net.a, c=None if self.net.c is None else RAY_SCALE * self.net.c
        )
        before = self.loss
        after = loss(scaled, self.data)
        return (before - after) / before if before > 0 else 0.0

    @property
    def heads_to_infinity(self) -> bool:
        """R falls along the output ray where that means a critical point at infinity.

        For cross-entropy losses (infimum at infinity) whenever R falls along the ray; for
        other losses only when ‖∇R‖ is within tolerance, so that the point would otherwise
        pass for critical (a plainly non-critical point is simply still training).
        """
        if not self.falls_along_ray:
            return False
        return self.data.loss.name in _RELATIVE_GRAD_LOSSES or self.grad_norm <= self.grad_tol

    @property
    def falls_along_ray(self) -> bool:
        """Whether :attr:`ray_drop` is beyond rounding (1e3 ε relative).

        A cross-entropy loss that has underflowed to 0 counts too: it is positive at every
        finite point, so the iterate has run off towards infinity.
        """
        if self.data.loss.name in _RELATIVE_GRAD_LOSSES and self.loss <= _TINY:
            return True
        return self.ray_drop > 1e3 * torch.finfo(self.net.dtype).eps

    # ------------------------------------------------------------ second order
    @cached_property
    def hessian(self) -> torch.Tensor:
        """The dense Hessian (up to ``dense_limit`` parameters; a clear error above)."""
        if self.net.num_params > self.dense_limit:
            raise OptionError(
                f"the network has {self.net.num_params} parameters, above the dense limit "
                f"{self.dense_limit}: use the matrix-free operator"
            )
        return hessian(self.net, self.data)

    @cached_property
    def operator(self) -> HessianOperator:
        """The matrix-free Hessian at θ (its residual blocks formed once)."""
        return hessian_operator(self.net, self.data)

    def hvp(self, v: torch.Tensor) -> torch.Tensor:
        """H v for one vector (dense product when the Hessian is at hand)."""
        if "hessian" in vars(self):
            return self.hessian @ v
        return self.operator.apply(v[:, None])[:, 0]

    def block(self, sl: slice) -> torch.Tensor:
        """The diagonal block H[sl, sl] (one batched product when matrix-free)."""
        if "hessian" in vars(self) or self.dense:
            return self.hessian[sl, sl]
        P = self.net.num_params
        E = torch.eye(P, dtype=self.net.dtype, device=self.net.device)[:, sl]
        return self.operator.apply(E)[sl]

    def curvature(self, v: torch.Tensor) -> float:
        """vᵀ H v."""
        return float(v @ self.hvp(v))

    @cached_property
    def spectrum(self) -> Spectrum:
        """All eigenvalues (dense) or the 6 extreme pairs at each end (Lanczos).

        Lanczos stops at residuals ‖Hv − λv‖ ≤ zero_eig/10 · λ_max: each eigenvalue is then
        within a tenth of the zero tolerance, all the verdicts need; tighter runs stall on
        the clusters of near-zero eigenvalues that real models have.
        """
        zero = self.tolerances.zero_eig_value
        if self.dense or self.net.num_params <= 2 * LANCZOS_PAIRS:  # Lanczos needs 2k < P
            return dense_spectrum(self.hessian, zero_rtol=zero)
        return spectrum(self.net, self.data, k=LANCZOS_PAIRS, method="lanczos", zero_rtol=zero,
                        tol=max(zero / 10, LANCZOS_TOL), max_matvecs=self.matvec_budget)

    # ------------------------------------------------------------- the output
    @cached_property
    def residual_function(self) -> ResidualFunction:
        """φ_f, ∇φ_f and G of the network's output function."""
        return residual_function(self.net, self.data)

    @cached_property
    def zero_set(self) -> ZeroSet:
        """Z_f with this analysis's tolerances."""
        return ZeroSet(self.residual_function, self.tolerances)

    @cached_property
    def is_global(self) -> bool:
        """Whether every residual vanishes (φ ≡ 0: every representation of f is a minimum)."""
        e = self.residual_function.e
        scale = max(1.0, float(self.data.targets.abs().max())) if self.data.n else 1.0
        return float(e.abs().max()) * self.data.n <= 1e-12 * scale

    # ------------------------------------------------------- later layers' results
    def memo(self, key: str, compute: Callable[[], T]) -> T:
        """The result stored under ``key``, computed by ``compute()`` on first use."""
        if key not in self._memo:
            self._memo[key] = compute()
        value: T = self._memo[key]
        return value


_LAZY = {
    "_loss_and_gradient", "grad_norm", "grad_tol", "ray_drop", "hessian", "operator", "spectrum",
    "residual_function", "zero_set", "is_global",
}


def as_analysis(
    net: TwoLayerNet | Analysis, data: Dataset | None = None, tolerances: Tolerances | None = None
) -> Analysis:
    """``net`` itself when it is an :class:`Analysis`, else a new one of (net, data, tolerances).

    Passing an Analysis together with other data or tolerances is an error: the context
    already fixes them.
    """
    if isinstance(net, Analysis):
        if (data is not None and data is not net.data) or tolerances is not None:
            raise OptionError("pass either an Analysis or (net, data, tolerances), not both")
        return net
    if data is None:
        raise OptionError("data is required with a network (or pass an Analysis)")
    return Analysis(net, data, tolerances)
