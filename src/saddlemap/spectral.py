"""Hessian spectra: all eigenvalues (dense) or the extreme ones (Lanczos, matrix-free).

Every spectrum reports its evidence: eigen-residuals ‖Hv − λv‖, converged flags, the
number of Hessian-vector products, and the inertia (n₊, n₀, n₋) together with the zero
tolerance used, which is relative to the largest eigenvalue magnitude (docs/theory.md §10.5).

>>> from saddlemap import Dataset, TwoLayerNet
>>> net = TwoLayerNet([0.610515537972], [[1.433931221329]], activation="tanh")
>>> data = Dataset([[-2.0], [-1.0], [-0.5], [0.5], [1.0], [2.0]], [-1, -1, 0, 0.5, 0.5, 0])
>>> spec = spectrum(net, data)
>>> spec.inertia
Inertia(positive=2, zero=0, negative=0)
>>> [round(float(x), 9) for x in spec.eigenvalues]
[0.01597859, 0.729966637]
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import torch
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

from ._lanczos import thick_restart_lanczos
from .data import Dataset
from .derivatives import HessianOperator, hessian, hessian_operator
from .errors import OptionError
from .network import TwoLayerNet

__all__ = [
    "Inertia",
    "Spectrum",
    "dense_spectrum",
    "inertia",
    "lanczos_spectrum",
    "spectrum",
]

Which = Literal["both", "smallest", "largest"]

#: Above this many parameters ``spectrum(method="auto")`` goes matrix-free.
DENSE_LIMIT = 3000


class Inertia(NamedTuple):
    """Counts of positive, zero and negative eigenvalues."""

    positive: int
    zero: int
    negative: int


def default_zero_rtol(dtype: torch.dtype | np.dtype) -> float:
    """√ε of the dtype: eigenvalues below √ε · max|λ| count as zero."""
    eps = torch.finfo(dtype).eps if isinstance(dtype, torch.dtype) else np.finfo(dtype).eps
    return float(np.sqrt(eps))


def inertia(eigenvalues: np.ndarray, zero_tol: float) -> Inertia:
    """Inertia of a complete set of eigenvalues with an absolute zero tolerance.

    >>> inertia(np.array([-1.0, 1e-12, 2.0]), zero_tol=1e-9)
    Inertia(positive=1, zero=1, negative=1)
    """
    lam = np.asarray(eigenvalues)
    return Inertia(
        int((lam > zero_tol).sum()), int((np.abs(lam) <= zero_tol).sum()),
        int((lam < -zero_tol).sum()),
    )


@dataclass(frozen=True, eq=False)
class Spectrum:
    """Eigenvalues (ascending) with eigenvectors and their evidence.

    Attributes:
        eigenvalues: the computed eigenvalues, ascending, shape (k,).
        eigenvectors: unit eigenvectors as columns, shape (P, k), or None.
        residuals: ‖Hv − λv‖ for each returned pair (NaN where no vector was kept).
        converged: whether each pair met the tolerance.
        method: ``"dense"`` or ``"lanczos"``.
        num_params: P, the size of the Hessian.
        scale: max |λ| over all eigenvalues the method saw: the reference for "zero".
        zero_rtol: relative zero tolerance; ``zero_tol = zero_rtol * scale``.
        inertia: (n₊, n₀, n₋) when the whole spectrum was computed, else None.
        num_matvecs: Hessian-vector products used (0 for dense).
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray | None
    residuals: np.ndarray
    converged: np.ndarray
    method: str
    num_params: int
    scale: float
    zero_rtol: float
    inertia: Inertia | None
    num_matvecs: int = 0

    @property
    def zero_tol(self) -> float:
        """Absolute tolerance under which an eigenvalue counts as zero."""
        return self.zero_rtol * self.scale

    @property
    def min(self) -> float:
        """The smallest computed eigenvalue."""
        return float(self.eigenvalues[0])

    @property
    def max(self) -> float:
        """The largest computed eigenvalue."""
        return float(self.eigenvalues[-1])

    @property
    def complete(self) -> bool:
        """Whether the inertia is known (the whole spectrum was computed)."""
        return self.inertia is not None

    def summary(self) -> str:
        """One line: extremes, inertia and tolerance."""
        inert = (
            f"inertia (+{self.inertia.positive}, 0×{self.inertia.zero}, -{self.inertia.negative})"
            if self.inertia is not None else "inertia unknown (partial spectrum)"
        )
        return (
            f"{self.method} spectrum of P={self.num_params}: λ_min={self.min:.6g}, "
            f"λ_max={self.max:.6g}, {inert}, zero tol {self.zero_tol:.4g} "
            f"(= {self.zero_rtol:.4g} × {self.scale:.4g})"
        )


def _select(n: int, k: int | None, which: Which) -> np.ndarray:
    if k is None or (2 * k >= n and which == "both") or k >= n:
        return np.arange(n)
    if which == "smallest":
        return np.arange(k)
    if which == "largest":
        return np.arange(n - k, n)
    return np.concatenate([np.arange(k), np.arange(n - k, n)])


def dense_spectrum(
    H: torch.Tensor | np.ndarray,
    k: int | None = None,
    which: Which = "both",
    zero_rtol: float | None = None,
) -> Spectrum:
    """All eigenvalues of a symmetric matrix by ``eigh``; keep the k extreme pairs if asked.

    The inertia always comes from the whole spectrum.
    """
    Ht = torch.as_tensor(H)
    lam, vecs = torch.linalg.eigh(Ht)
    rtol = default_zero_rtol(Ht.dtype) if zero_rtol is None else zero_rtol
    scale = float(lam.abs().max()) if lam.numel() else 0.0
    keep = torch.as_tensor(_select(lam.numel(), k, which), device=lam.device)
    lam_k, vecs_k = lam[keep], vecs[:, keep]
    res = torch.linalg.vector_norm(Ht @ vecs_k - vecs_k * lam_k, dim=0)
    lam_np = lam.cpu().numpy()
    res_np = res.cpu().numpy()
    # eigh is backward stable: residuals are a few ε‖H‖; more means a broken input.
    ok = res_np <= 1e3 * np.sqrt(lam_np.size) * np.finfo(lam_np.dtype).eps * max(scale, 1e-300)
    return Spectrum(
        lam_k.cpu().numpy(), vecs_k.cpu().numpy(), res_np, ok, "dense", int(Ht.shape[0]),
        scale, rtol, inertia(lam_np, rtol * scale),
    )


#: A Lanczos spectrum's allowance, in units of one product's work n·m·(D + K): about 120
#: products at d = 784, m = 256, n = 10⁴ and 320 at m = 1,000, n = 1,000 (under a minute of
#: one core each); small problems never reach it.
SPECTRUM_WORK = 2.5e11
#: Products above which the allowance is no limit (ARPACK runs to convergence) ...
UNLIMITED_MATVECS = 3000
#: ... and below which it is not cut further.
MIN_MATVECS = 60


def matvec_budget(net: TwoLayerNet, n: int) -> int | None:
    """Hessian-vector products a spectrum may use at ``net`` on n samples; None: no limit.

    >>> matvec_budget(TwoLayerNet([1.0], [[2.0]]), 100) is None
    True
    """
    work = float(n) * net.width * net.layout.neuron_size
    budget = int(SPECTRUM_WORK / max(work, 1.0))
    return None if budget >= UNLIMITED_MATVECS else max(budget, MIN_MATVECS)


#: Default Lanczos tolerance: residuals ‖Hv − λv‖ ≤ tol · max|λ|.
LANCZOS_TOL = 1e-12
#: ARPACK restarts per end, at most (each costs about ncv − k products): the library default,
#: 10·P restarts, lets a clustered end run for minutes.
MAX_RESTARTS = 100
#: Products of the thick-restart run that replaces an ARPACK end that did not converge.
FALLBACK_MATVECS = 1000


def _eigsh_end(
    op: LinearOperator, k: int, which: str, tol: float, v0: np.ndarray, maxiter: int | None,
    shift: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    P = op.shape[0]
    ncv = min(P, max(2 * k + 1, 30))
    if shift:
        # ARPACK stops at ‖r‖ ≤ tol·|θ| for each Ritz value θ: near-zero eigenvalues of H
        # would need ‖r‖ ≈ 0.  On H + sI (same Krylov space, same vectors) the test becomes
        # ‖r‖ ≤ tol·(θ + s), an absolute tolerance on the scale s of the spectrum.
        shifted = LinearOperator(op.shape, dtype=op.dtype,
                                 matvec=lambda v: op @ v + shift * v,
                                 matmat=lambda V: op @ V + shift * V)
    try:
        lam, vec = eigsh(shifted if shift else op, k=k, which=which, tol=tol, v0=v0, ncv=ncv,
                         maxiter=MAX_RESTARTS if maxiter is None else maxiter)
    except ArpackNoConvergence as exc:
        warnings.warn(
            f"Lanczos ({which}) converged {len(exc.eigenvalues)} of {k} eigenpairs",
            RuntimeWarning, stacklevel=3,
        )
        lam, vec = exc.eigenvalues, exc.eigenvectors
    return lam - shift, vec


def lanczos_spectrum(
    op: HessianOperator | LinearOperator,
    k: int = 6,
    which: Which = "both",
    tol: float = LANCZOS_TOL,
    zero_rtol: float | None = None,
    maxiter: int | None = None,
    seed: int = 0,
    max_matvecs: int | None = None,
) -> Spectrum:
    """The k smallest and/or largest eigenpairs by implicitly restarted Lanczos (``eigsh``).

    Each end is computed in its own run ("LA", then "SA"), which converges far better on the
    indefinite, nearly singular Hessians of embedded critical points than one "BE" run.  The
    smallest end runs on H + λ_max·I, so its stopping test ‖r‖ ≤ tol·λ_max is relative to
    the spectrum's scale rather than to each (possibly near-zero) eigenvalue.  ``maxiter``
    caps the restarts per end (:data:`MAX_RESTARTS` by default).  Where an end does not
    converge within them (ARPACK then returns only the pairs that did), both ends come from
    a thick-restart run of :data:`FALLBACK_MATVECS` products instead.

    With ``max_matvecs`` (for operators whose products are expensive) one thick-restart
    Lanczos run (:mod:`saddlemap._lanczos`, full reorthogonalisation, bounded memory) gives
    both ends within that many products, with every Ritz pair it has, converged or not:
    pairs that do not meet the tolerance are flagged in ``converged``.
    """
    P = op.shape[0]
    if k < 1 or k * (2 if which == "both" else 1) >= P:
        raise OptionError(
            f"Lanczos needs 1 ≤ k and k per end below P = {P}, got k={k}; "
            "use the dense spectrum"
        )
    if max_matvecs is not None and not (isinstance(max_matvecs, int) and max_matvecs >= 2):
        raise OptionError(f"max_matvecs must be an integer ≥ 2 or None, got {max_matvecs!r}")
    v0 = np.random.default_rng(seed).standard_normal(P)
    if max_matvecs is not None:
        return _budgeted(op, k, which, tol, zero_rtol, v0, max_matvecs)
    start = getattr(op, "num_matvecs", 0)
    lams, vecs, shift = [], [], 0.0
    if which in ("both", "largest"):
        lam, vec = _eigsh_end(op, k, "LA", tol, v0, maxiter)
        lams.append(lam)
        vecs.append(vec)
    if which in ("both", "smallest"):
        # the scale of the spectrum: λ_max from the run above, or a rough one-pair estimate
        top = lams[0] if lams else _eigsh_end(op, 1, "LA", 1e-3, v0, maxiter)[0]
        shift = float(np.abs(top).max()) if np.size(top) else 0.0
        lam, vec = _eigsh_end(op, k, "SA", tol, v0, maxiter, shift=shift)
        lams.append(lam)
        vecs.append(vec)
    if any(np.size(x) < k for x in lams):  # an end did not converge: ARPACK returned less
        return _budgeted(op, k, which, tol, zero_rtol, v0, FALLBACK_MATVECS)
    lam = np.concatenate(lams)
    vec = np.concatenate(vecs, axis=1)
    order = np.argsort(lam)
    lam, vec = lam[order], vec[:, order]
    res = np.linalg.norm(op @ vec - vec * lam, axis=0)
    scale = max(float(np.abs(lam).max()) if lam.size else 0.0, shift)
    dtype = np.dtype(op.dtype)
    rtol = default_zero_rtol(dtype) if zero_rtol is None else zero_rtol
    # ARPACK stops at ‖r‖ ≤ tol·max(|λ|, scale); recomputing r adds rounding of a few ε·scale.
    res_tol = 10 * max(tol, 100 * np.finfo(dtype).eps) * max(scale, 1e-300)
    converged = res <= res_tol
    matvecs = getattr(op, "num_matvecs", start) - start
    return Spectrum(lam, vec, res, converged, "lanczos", P, scale, rtol, None, matvecs)


def _budgeted(
    op: LinearOperator, k: int, which: Which, tol: float, zero_rtol: float | None,
    v0: np.ndarray, max_matvecs: int,
) -> Spectrum:
    lam, vec, res, used = thick_restart_lanczos(op, k, max_matvecs, tol, v0)
    scale = float(np.abs(lam).max()) if lam.size else 0.0
    keep = {"both": slice(None), "smallest": slice(0, min(k, lam.size)),
            "largest": slice(max(lam.size - k, 0), None)}[which]
    lam, vec, res = lam[keep], vec[:, keep], res[keep]
    converged = res <= 10 * max(tol, 100 * np.finfo(np.float64).eps) * max(scale, 1e-300)
    if not converged.all():
        warnings.warn(f"Lanczos: {int(converged.sum())} of {lam.size} Ritz pairs converged "
                      f"within {max_matvecs} products", RuntimeWarning, stacklevel=3)
    rtol = default_zero_rtol(np.dtype(op.dtype)) if zero_rtol is None else zero_rtol
    return Spectrum(lam, vec, res, converged, "lanczos", op.shape[0], scale, rtol, None, used)


def spectrum(
    net: TwoLayerNet,
    data: Dataset,
    k: int | None = None,
    which: Which = "both",
    method: Literal["auto", "dense", "lanczos"] = "auto",
    zero_rtol: float | None = None,
    tol: float = LANCZOS_TOL,
    batch_size: int | None = None,
    seed: int = 0,
    max_matvecs: int | Literal["auto"] | None = "auto",
) -> Spectrum:
    """The Hessian spectrum of R at ``net``.

    ``method="auto"`` is dense (all eigenvalues and the inertia) up to 3000 parameters and
    Lanczos on the matrix-free :class:`~saddlemap.HessianOperator` above (``k`` extreme
    pairs at each requested end, 6 by default).  Lanczos uses at most ``max_matvecs``
    products: ``"auto"`` is :func:`matvec_budget` (no limit unless products are expensive),
    None no limit (see :func:`lanczos_spectrum`).
    """
    P = net.num_params
    if method == "auto":
        method = "dense" if P <= DENSE_LIMIT else "lanczos"
    if method == "dense":
        return dense_spectrum(hessian(net, data, batch_size), k, which, zero_rtol)
    if method == "lanczos":
        op = hessian_operator(net, data, batch_size)
        budget = matvec_budget(net, data.n) if max_matvecs == "auto" else max_matvecs
        return lanczos_spectrum(op, k or 6, which, tol, zero_rtol, seed=seed,
                                max_matvecs=budget)
    raise OptionError(f"unknown method {method!r}; use 'auto', 'dense' or 'lanczos'")
