"""Lanczos with a fixed budget of products: both ends of the spectrum from one Krylov space.

ARPACK (``eigsh``) restarts until every wanted pair converges and returns nothing when it
runs out of iterations.  Where one Hessian-vector product costs a noticeable fraction of a
second (MNIST-sized inputs) the analysis affords a few hundred products in all; this plain
Lanczos run, with full reorthogonalisation, stops at that budget (or earlier, once the k
extreme pairs at both ends meet the tolerance) and returns every Ritz pair with its
residual estimate |β_j s_{j,i}|.  A Ritz value is a Rayleigh quotient, θ = vᵀHv, so an
unconverged θ < 0 still proves a direction of negative curvature; the converged flags say
which pairs are accurate.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import eigh_tridiagonal
from scipy.sparse.linalg import LinearOperator

__all__ = ["MAX_BASIS_BYTES", "budgeted_lanczos"]

#: Memory for the Lanczos basis, at most: its steps are capped at this over 8 P bytes.
MAX_BASIS_BYTES = 512 * 2**20
#: How often (in steps) the Ritz residuals are checked for an early stop.
_CHECK_EVERY = 10


def _ritz(
    alpha: list[float], beta: list[float], k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ritz values, the tridiagonal's eigenvectors and residuals at the 2k extremes."""
    theta, S = eigh_tridiagonal(np.array(alpha), np.array(beta[: len(alpha) - 1]))
    j = theta.size
    ends = np.unique(np.concatenate([np.arange(min(k, j)), np.arange(max(j - k, 0), j)]))
    return theta[ends], S[:, ends], np.abs(beta[j - 1] * S[-1, ends])


def budgeted_lanczos(
    op: LinearOperator, k: int, max_matvecs: int, tol: float, v0: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The k smallest and k largest Ritz pairs after at most ``max_matvecs`` products.

    Returns (values ascending, vectors as columns, residual estimates, products used).
    Stops early when every returned pair has residual ≤ tol · max|θ|.
    """
    P = op.shape[0]
    steps = int(max(2, min(max_matvecs, P, MAX_BASIS_BYTES // (8 * P) - 1)))
    Q = np.empty((steps + 1, P))
    Q[0] = v0 / np.linalg.norm(v0)
    alpha: list[float] = []
    beta: list[float] = []
    for j in range(steps):
        w = np.asarray(op @ Q[j], dtype=np.float64).reshape(-1)
        alpha.append(float(Q[j] @ w))
        basis = Q[: j + 1]
        for _ in range(2):  # full reorthogonalisation, twice ("twice is enough")
            w -= basis.T @ (basis @ w)
        b = float(np.linalg.norm(w))
        beta.append(b)
        if b <= 1e-14 * max(abs(a) for a in alpha):
            break  # an invariant subspace: the Ritz pairs are exact
        Q[j + 1] = w / b
        if (j + 1) % _CHECK_EVERY == 0 and j + 1 >= 2 * k:
            theta, _, res = _ritz(alpha, beta, k)
            if (res <= tol * max(float(np.abs(theta).max()), 1e-300)).all():
                break
    theta, S, res = _ritz(alpha, beta, k)
    vectors = Q[: len(alpha)].T @ S
    return theta, vectors, res, len(alpha)
