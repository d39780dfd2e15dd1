"""The Hessian's eigenvalue density by stochastic Lanczos quadrature (SLQ).

For a unit probe v, k Lanczos steps on H from v give a tridiagonal T_k = U diag(θ) Uᵀ, and
the k-point Gauss quadrature vᵀ f(H) v ≈ Σ_i τ_i f(θ_i), τ_i = U_{1i}² (Golub & Meurant,
*Matrices, Moments and Quadrature*).  With Rademacher probes scaled to unit length,
E[vᵀ f(H) v] = (1/P) Σ_j f(λ_j), so averaging over n_v probes estimates the spectral measure
μ = (1/P) Σ_j δ_{λ_j} by the discrete measure (1/n_v) Σ_{probes} Σ_i τ_i δ_{θ_i} (Lin, Saad
& Yang, *Approximating spectral densities of large matrices*, SIAM Review 2016; Ghorbani,
Krishnan & Xiao, ICML 2019, and PyHessian, Yao et al. 2020, for neural networks).  Its
Gaussian broadening

    ρ(t) = (1/n_v) Σ_probes Σ_i τ_i exp(−(t − θ_i)² / 2s²) / (s√(2π))

is the density on a grid (integral 1; P·ρ counts eigenvalues per unit λ).

The implied number of negative eigenvalues weighs each node by where its eigenvalues can
be.  A Ritz pair (θ_i, y_i) with residual r_i = ‖Hy_i − θ_iy_i‖ has an eigenvalue within r_i
of θ_i, so node i counts τ_i Φ((t − θ_i)/r_i) below t, its weight spread as a Gaussian of
width r_i: a step for a converged node (a node at an exact zero eigenvalue counts as zero,
an isolated negative one in full), a spread for an unconverged node standing for a crowd of
eigenvalues.  P times that, averaged over the probes, is the count, with its standard
error.  Gauss quadrature also brackets it (the Chebyshev–Markov–Stieltjes inequalities):
for each probe, with J nodes below t, Σ_{i<J} τ_i ≤ vᵀ 1(H < t) v ≤ Σ_{i≤J+1} τ_i, so the
true count lies between the probe means of the two sums up to the probes' sampling error.
The bracket is wide where many eigenvalues crowd −tol, as they do around 0 at a point that
is not critical.

All probes advance together: each Lanczos step is one :meth:`HessianOperator.apply` on a
P × n_v block, and every new vector is orthogonalised twice against its own probe's basis
(full reorthogonalisation, so no ghost copies of converged Ritz values).

>>> import torch
>>> from saddlemap import Dataset, TwoLayerNet
>>> net = TwoLayerNet([0.6, -0.2], [[1.4], [0.3]], activation="tanh")
>>> data = Dataset([[-1.0], [0.5], [2.0]], [-1.0, 0.5, 0.0])
>>> dens = spectral_density(net, data, n_probes=3, lanczos_steps=4)
>>> dens.n_matvecs, round(float(dens.weights.sum()), 12)    # P = 4 steps per probe
(12, 3.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal
from scipy.special import ndtr
from tqdm.auto import tqdm

from .data import Dataset
from .derivatives import HessianOperator, hessian_operator
from .errors import OptionError
from .network import TwoLayerNet

__all__ = ["SpectralDensity", "probes", "slq", "spectral_density"]

#: Memory for the Lanczos bases of the probes run together (one probe's basis at least).
MAX_BASIS_BYTES = 256 * 2**20
#: Upper limits of the counts (a typo such as 10**9 probes is refused before any work).
MAX_PROBES = 10_000
MAX_STEPS = 10_000
MAX_GRID = 10_000_000
#: Default Gaussian width, relative to the spread of the Ritz values.
SIGMA_RATIO = 0.01
#: Default zero tolerance relative to max |θ|: Ritz values below −tol count as negative.
#: Looser than a dense spectrum's √ε: a Ritz value is a Rayleigh quotient on a Krylov space
#: and sits near, not at, a cluster of eigenvalues at 0.
ZERO_RTOL = 1e-6


@dataclass(frozen=True, eq=False)
class SpectralDensity:
    """An SLQ estimate of the Hessian's eigenvalue density.

    Attributes:
        nodes: Ritz values θ per probe, shape (n_probes, k); NaN past a probe's Krylov
            dimension (when P or an invariant subspace ends it early).
        weights: their Gauss weights τ (each probe's row sums to 1; 0 where nodes are NaN).
        residuals: their residuals ‖Hy − θy‖ (0 where nodes are NaN).
        grid: the λ values of the density.
        density: ρ on the grid (integral 1 over the real line; P·ρ counts eigenvalues).
        sigma: the Gaussian width s.
        num_params: P.
        n_matvecs: Hessian-vector products spent.
        zero_tol: nodes below −zero_tol count as negative.
        negative_count: P · Σ τ Φ((−zero_tol − θ)/r) over the nodes, averaged over the probes.
        negative_count_stderr: the standard error of that mean (inf with one probe).
        negative_count_bounds: the Chebyshev–Markov–Stieltjes bracket (P times the probe
            means), which holds for the true count up to the probes' sampling error.
    """

    nodes: np.ndarray
    weights: np.ndarray
    residuals: np.ndarray
    grid: np.ndarray
    density: np.ndarray
    sigma: float
    num_params: int
    n_matvecs: int
    zero_tol: float
    negative_count: float
    negative_count_stderr: float
    negative_count_bounds: tuple[float, float]

    @property
    def n_probes(self) -> int:
        """The number of probe vectors."""
        return int(self.nodes.shape[0])

    def measure(self) -> tuple[np.ndarray, np.ndarray]:
        """The discrete spectral measure: nodes and weights over all probes (weights sum to 1)."""
        keep = np.isfinite(self.nodes)
        return self.nodes[keep], self.weights[keep] / self.n_probes

    def count_below(self, t: float) -> float:
        """The estimated number of eigenvalues below t (each node spread over its residual)."""
        return self.num_params * float(_count_below(self.nodes, self.weights, self.residuals,
                                                    t)[0].mean())

    def summary(self) -> str:
        """One line: range, negative count, probes, steps and products."""
        nodes, _ = self.measure()
        return (
            f"SLQ density of P={self.num_params}: Ritz values in [{nodes.min():.6g}, "
            f"{nodes.max():.6g}], ≈ {self.negative_count:.1f} ± {self.negative_count_stderr:.1f}"
            f" negative eigenvalue(s) (below −{self.zero_tol:.2g}); {self.n_probes} probes × "
            f"{self.nodes.shape[1]} steps, {self.n_matvecs} products, σ = {self.sigma:.3g}"
        )


def _check_count(value: object, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise OptionError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return value


def _lanczos_block(
    op: HessianOperator, V0: torch.Tensor, steps: int, bar: tqdm
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lanczos on each column of V0 (unit columns), all columns per product together.

    Returns α (steps, r), β (steps, r) (β_j couples steps j and j + 1; the last one is
    the norm of the final residual, 0 where the Krylov space ended) and each column's
    Krylov dimension (steps, or fewer where β vanished).  The bases are stored probe by
    probe, (r, steps, P), so each reorthogonalisation is one batched GEMV per pass.
    """
    P, r = V0.shape
    basis = V0.new_zeros(r, steps, P)
    alpha, beta = V0.new_zeros(steps, r), V0.new_zeros(steps, r)
    size = np.full(r, steps)
    active = torch.ones(r, dtype=torch.bool, device=V0.device)
    basis[:, 0] = V0.T
    eps = torch.finfo(V0.dtype).eps
    scale = V0.new_zeros(r)
    for j in range(steps):
        W = op.apply(basis[:, j].T).T.contiguous()  # (r, P)
        alpha[j] = (basis[:, j] * W).sum(1)
        scale = torch.maximum(scale, alpha[j].abs())
        done = basis[:, : j + 1]  # (r, j + 1, P)
        for _ in range(2):  # full reorthogonalisation against this probe's basis, twice
            coef = torch.bmm(done, W[:, :, None])  # (r, j + 1, 1)
            W -= torch.bmm(coef.transpose(1, 2), done)[:, 0]
        bar.update(1)
        norm = torch.linalg.vector_norm(W, dim=1)
        scale = torch.maximum(scale, norm)
        ended = active & (norm <= P * eps * scale.clamp_min(torch.finfo(V0.dtype).tiny))
        for col in torch.nonzero(ended).flatten().tolist():
            size[col] = j + 1
        active &= ~ended
        norm = torch.where(active, norm, torch.ones_like(norm))
        beta[j] = torch.where(active, norm, torch.zeros_like(norm))
        if j + 1 == steps:
            break
        basis[:, j + 1] = torch.where(active[:, None], W / norm[:, None], torch.zeros_like(W))
        if not bool(active.any()):
            break
    return alpha.cpu().numpy(), beta.cpu().numpy(), size


def probes(P: int, n_probes: int, seed: int = 0) -> np.ndarray:
    """Rademacher probes scaled to unit length, as columns (P, n_probes): E[vvᵀ] = I/P."""
    gen = np.random.default_rng(seed)
    return (gen.integers(0, 2, size=(P, n_probes)) * 2.0 - 1.0) / math.sqrt(P)


def slq(
    op: HessianOperator,
    n_probes: int,
    steps: int,
    seed: int = 0,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ritz values, Gauss weights and residuals of ``steps`` Lanczos steps from each probe.

    Returns (nodes, weights, residuals), each (n_probes, steps'), steps' = min(steps, P);
    NaN nodes (weight 0) past a probe's Krylov dimension.  The residual of Ritz pair
    (θ_i, y_i) is ‖Hy_i − θ_iy_i‖ = |β_k u_{ki}|: an eigenvalue lies within it of θ_i.
    The probes run in groups whose bases fit in :data:`MAX_BASIS_BYTES` (at least one
    probe per group).
    """
    P = op.shape[0]
    steps = min(steps, P)
    net = op.net
    V = torch.as_tensor(probes(P, n_probes, seed), dtype=net.dtype, device=net.device)
    group = max(1, MAX_BASIS_BYTES // (steps * P * V.element_size()))
    nodes = np.full((n_probes, steps), np.nan)
    weights = np.zeros((n_probes, steps))
    residuals = np.zeros((n_probes, steps))
    with tqdm(total=steps * math.ceil(n_probes / group), desc="slq", unit="step",
              disable=not progress) as bar:
        for start in range(0, n_probes, group):
            alpha, beta, size = _lanczos_block(op, V[:, start:start + group], steps, bar)
            for col, k in enumerate(size):
                theta, U = eigh_tridiagonal(alpha[:k, col], beta[: k - 1, col])
                nodes[start + col, :k] = theta
                weights[start + col, :k] = U[0] ** 2
                residuals[start + col, :k] = np.abs(beta[k - 1, col] * U[k - 1])
    return nodes, weights, residuals


def _broaden(nodes: np.ndarray, weights: np.ndarray, grid: np.ndarray, sigma: float) -> np.ndarray:
    """(1/n_v) Σ τ N(t; θ, s²) on the grid, over finite nodes."""
    keep = np.isfinite(nodes)
    theta, tau = nodes[keep], weights[keep] / nodes.shape[0]
    out = np.zeros_like(grid)
    for lo in range(0, theta.size, 4096):  # a grid × nodes temporary of bounded size
        z = (grid[:, None] - theta[None, lo:lo + 4096]) / sigma
        out += np.exp(-0.5 * z * z) @ tau[lo:lo + 4096]
    return out / (sigma * math.sqrt(2.0 * math.pi))


def _grid(grid: int | np.ndarray | torch.Tensor, lo: float, hi: float) -> np.ndarray:
    if isinstance(grid, int) and not isinstance(grid, bool):
        return np.linspace(lo, hi, _check_count(grid, "grid", 2, MAX_GRID))
    values = np.asarray(grid, dtype=np.float64)
    if (values.ndim != 1 or not 2 <= values.size <= MAX_GRID
            or not np.isfinite(values).all()):
        raise OptionError(f"grid must be a point count in [2, {MAX_GRID}] or a 1-d array of "
                          "that many finite values")
    return values


def spectral_density(
    net: TwoLayerNet,
    data: Dataset,
    n_probes: int = 10,
    lanczos_steps: int = 80,
    sigma: float | None = None,
    grid: int | np.ndarray | torch.Tensor = 1000,
    zero_rtol: float = ZERO_RTOL,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool = False,
) -> SpectralDensity:
    """The Hessian's eigenvalue density at ``net`` by stochastic Lanczos quadrature.

    Costs n_probes · min(lanczos_steps, P) products (see the module docstring for the
    estimate).  ``sigma`` defaults to :data:`SIGMA_RATIO` of the Ritz values' spread; an
    integer ``grid`` is that many points over the Ritz values' range widened by 5σ each
    side, an array is used as given.  ``zero_rtol`` · max|θ| is the zero tolerance of the
    negative count.

    Raises:
        OptionError: a count below 1 or above its limit (:data:`MAX_PROBES`,
            :data:`MAX_STEPS`, :data:`MAX_GRID`), a sigma that is not finite and > 0, a
            ``zero_rtol`` outside [0, 1), a bad grid.
    """
    _check_count(n_probes, "n_probes", 1, MAX_PROBES)
    _check_count(lanczos_steps, "lanczos_steps", 1, MAX_STEPS)
    if sigma is not None and not (isinstance(sigma, (int, float)) and 0 < sigma < math.inf):
        raise OptionError(f"sigma must be a finite number > 0 or None, got {sigma!r}")
    if not (isinstance(zero_rtol, (int, float)) and 0 <= zero_rtol < 1):
        raise OptionError(f"zero_rtol must be a number in [0, 1), got {zero_rtol!r}")
    if not isinstance(grid, int):
        _grid(grid, 0.0, 1.0)  # check an explicit grid before the work
    op = hessian_operator(net, data, batch_size)
    nodes, weights, residuals = slq(op, n_probes, lanczos_steps, seed, progress)
    finite = nodes[np.isfinite(nodes)]
    lo, hi = float(finite.min()), float(finite.max())
    scale = max(abs(lo), abs(hi))
    s = float(sigma) if sigma is not None else SIGMA_RATIO * max(hi - lo, scale, 1e-300)
    points = _grid(grid, lo - 5 * s, hi + 5 * s)
    tol = zero_rtol * scale
    P = net.num_params
    point, lower, upper = _count_below(nodes, weights, residuals, -tol)
    stderr = P * float(point.std(ddof=1)) / math.sqrt(n_probes) if n_probes > 1 else math.inf
    return SpectralDensity(
        nodes, weights, residuals, points, _broaden(nodes, weights, points, s), s, P,
        op.num_matvecs, tol, P * float(point.mean()), stderr,
        (P * float(lower.mean()), P * float(upper.mean())),
    )


def _count_below(
    nodes: np.ndarray, weights: np.ndarray, residuals: np.ndarray, t: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per probe: Σ τ Φ((t − θ)/r), and the bracket Σ_{i<J} τ_i, Σ_{i≤J+1} τ_i.

    Nodes are ascending per probe (NaN, weight 0, at the end); J of them lie below t.
    """
    finite = np.where(np.isfinite(nodes), nodes, np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(residuals > 0, (t - finite) / residuals, np.where(finite < t, np.inf, -np.inf))
    spread = (weights * ndtr(z)).sum(1)
    below = finite < t
    J = below.sum(1)
    cumulative = np.concatenate([np.zeros((nodes.shape[0], 1)), np.cumsum(weights, 1)], 1)
    rows = np.arange(nodes.shape[0])
    k = nodes.shape[1]
    return (spread, cumulative[rows, np.maximum(J - 1, 0)],
            cumulative[rows, np.minimum(J + 1, k)])
