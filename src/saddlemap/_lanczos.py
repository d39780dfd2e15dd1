"""Thick-restart Lanczos with a budget of products: both ends of the spectrum, bounded memory.

ARPACK (``eigsh``) restarts until every wanted pair converges and returns nothing when it
runs out of iterations.  Where one Hessian-vector product costs a noticeable fraction of a
second (MNIST-sized inputs) the analysis affords a few hundred products in all.  This run
stops at that budget (or earlier, once the k extreme pairs at both ends meet the tolerance)
and returns every Ritz pair it has with its residual ‖Hy − θy‖ = |β sⱼ|.  A Ritz value is a
Rayleigh quotient, θ = yᵀHy, so an unconverged θ < 0 still proves a direction of negative
curvature; the converged flags say which pairs are accurate.

The basis V holds at most ``ncv`` vectors (memory ncv · P floats, ``MAX_BASIS_BYTES`` at
most).  Each new vector is orthogonalised against all of V twice, and the projected matrix
T = VᵀHV is filled from the same inner products.  When V is full, the Ritz vectors at both
ends are kept, with the last residual direction, and the run goes on (thick restart, Wu and
Simon 2000): HY = YΘ + r sᵀ keeps T an arrowhead matrix and the residual formula exact.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse.linalg import LinearOperator

__all__ = ["MAX_BASIS_BYTES", "MAX_NCV", "thick_restart_lanczos"]

#: Memory for the Lanczos basis, at most (ncv ≤ MAX_BASIS_BYTES / 8P).
MAX_BASIS_BYTES = 256 * 2**20
#: Basis vectors at most: enough for both ends of a clustered spectrum; T stays tiny.
MAX_NCV = 120


def _ends(size: int, keep: int) -> np.ndarray:
    """Indices of the ``keep`` smallest and ``keep`` largest of ``size`` sorted values."""
    return np.unique(np.concatenate([np.arange(min(keep, size)),
                                     np.arange(max(size - keep, 0), size)]))


def thick_restart_lanczos(
    op: LinearOperator, k: int, max_matvecs: int, tol: float, v0: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The k smallest and k largest Ritz pairs after at most ``max_matvecs`` products.

    Returns (values ascending, unit vectors as columns, residuals, products used).  Stops
    early when every returned pair has residual ≤ tol · max|θ|.
    """
    P = op.shape[0]
    ncv = int(min(P, MAX_NCV, max(2 * k + 2, MAX_BASIS_BYTES // (8 * P) - 1)))
    keep = max(k, (ncv - 1) // 4)  # Ritz vectors kept per end at a restart
    V = np.empty((ncv + 1, P))
    T = np.zeros((ncv, ncv))
    V[0] = v0 / np.linalg.norm(v0)
    size, used = 1, 0
    while True:
        j = size - 1
        w = np.asarray(op @ V[j], dtype=np.float64).reshape(-1)
        used += 1
        h = V[:size] @ w  # column j of T = VᵀHV
        T[:size, j] = h
        T[j, :size] = h
        w -= V[:size].T @ h
        w -= V[:size].T @ (V[:size] @ w)  # "twice is enough"
        beta = float(np.linalg.norm(w))
        theta, S = np.linalg.eigh(T[:size, :size])
        res = np.abs(beta * S[-1, :])
        scale = max(float(np.abs(theta).max()), 1e-300)
        wanted = _ends(size, k)
        done = bool((res[wanted] <= tol * scale).all()) and size >= min(2 * k, P)
        if done or used >= max_matvecs or beta <= 1e-14 * scale or size >= P:
            vectors = V[:size].T @ S[:, wanted]
            return theta[wanted], vectors, res[wanted], used
        if size < ncv:
            V[size] = w / beta
            size += 1
            continue
        # thick restart: keep the Ritz vectors at both ends and the residual direction
        kept = _ends(size, keep)
        V[: kept.size] = S[:, kept].T @ V[:size]
        T[:] = 0.0
        T[np.arange(kept.size), np.arange(kept.size)] = theta[kept]
        V[kept.size] = w / beta
        size = kept.size + 1
