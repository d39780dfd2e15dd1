"""Minibatch gradient noise along a direction, and against the curvature there.

A minibatch of B samples drawn uniformly without replacement from the n training samples
gives the gradient ∇R_B(θ) = (1/B) Σ_{i∈B} ∇ℓ_i(θ) (plus the penalty, which is the same for
every batch).  Its covariance is Σ_B = (n − B) / (B (n − 1)) · Σ₁, with
Σ₁ = (1/n) Σ_i (∇ℓ_i − ∇R)(∇ℓ_i − ∇R)ᵀ the covariance of one sample's gradient (the finite
population correction of sampling without replacement; Σ_B = 0 at B = n).  Along a unit
direction v only the scalars s_i = vᵀ∇ℓ_i(θ) are needed:

    vᵀ Σ_B v = (n − B) / (B (n − 1)) · (1/n) Σ_i (s_i − s̄)²,

and s_i = ∇_g ℓ(g(θ, x_i), y_i)ᵀ (J_i v), J_i v the directional derivative of the outputs
(one forward pass, no per-sample gradient is formed).

At a saddle the escape direction is the eigenvector v of the most negative Hessian
eigenvalue λ_min: :func:`escape_noise` measures how hard minibatch noise pushes along v,
vᵀΣ_B v, against |λ_min|.  Their ratio √(vᵀΣ_B v) / |λ_min| is a length: the distance along
v at which the curvature's pull |λ_min| δ equals one standard deviation of the noise.

>>> import saddlemap as sm
>>> prob = sm.teacher_student(1, 2, d=2, n=13, activation="tanh")
>>> v = torch.zeros(prob.student.num_params, dtype=torch.float64); v[0] = 1.0
>>> minibatch_noise(prob.student, prob.data, v, batch_size=13)
0.0
>>> minibatch_noise(prob.student, prob.data, v, batch_size=4) > 0
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ._forward import checked_data, forward
from .data import Dataset
from .derivatives import hessian
from .errors import OptionError
from .network import TwoLayerNet
from .spectral import DENSE_LIMIT, spectrum

__all__ = ["EscapeNoise", "directional_sample_gradients", "escape_noise", "minibatch_noise"]


def _direction(net: TwoLayerNet, v: torch.Tensor | np.ndarray) -> torch.Tensor:
    v = torch.as_tensor(v, dtype=net.dtype, device=net.device)
    if v.shape != (net.num_params,):
        raise OptionError(f"direction: expected shape ({net.num_params},), got {tuple(v.shape)}")
    if not bool(torch.isfinite(v).all()):
        raise OptionError("direction: not finite")
    return v


def directional_sample_gradients(
    net: TwoLayerNet, data: Dataset, v: torch.Tensor | np.ndarray
) -> torch.Tensor:
    """The per-sample directional derivatives s_i = vᵀ∇_θ ℓ(g(θ, x_i), y_i), shape (n,).

    s_i = ∇_g ℓ_iᵀ (J_i v) with J_i v = σ(W̃x̃_i)ᵀ v_a + Σ_k a_k σ'(w̃_kᵀx̃_i) x̃_iᵀ v_w̃_k + v_c:
    the data term only (a penalty adds the same to every sample and no variance).

    Args:
        net: the network θ.
        data: the samples.
        v: the direction, shape (P,), in the flat layout.

    Returns:
        s, shape (n,); their mean is vᵀ∇R.

    Raises:
        OptionError: a direction of the wrong shape or not finite.
        DataError: data that do not fit the network.
    """
    v = _direction(net, v)
    fw = forward(net, checked_data(net, data), order=1)
    va, vw, vc = net.layout.split(v)
    jv = fw.S @ va + (fw.S1 * (fw.X @ vw.T)) @ net.a
    if net.c is not None:
        jv = jv + vc
    return (fw.e * fw.n_total * jv).sum(dim=1)


def _batch_factor(n: int, batch_size: int) -> float:
    """(n − B) / (B (n − 1)): Var of a B-sample mean without replacement, per unit Var₁."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or \
            batch_size < 1:
        raise OptionError(f"batch_size must be an integer ≥ 1, got {batch_size!r}")
    if batch_size >= n:
        return 0.0
    return (n - batch_size) / (batch_size * (n - 1))


def minibatch_noise(
    net: TwoLayerNet, data: Dataset, v: torch.Tensor | np.ndarray, batch_size: int
) -> float:
    """vᵀΣ_B v: the variance along v of the gradient of a uniform B-subset without replacement.

    vᵀΣ_B v = (n − B)/(B (n − 1)) · (1/n) Σ_i (s_i − s̄)² (module docstring); 0 at B ≥ n.

    Args:
        net: the network θ.
        data: the training samples (n of them).
        v: the direction, shape (P,) (not normalised here).
        batch_size: B.

    Returns:
        The variance, ≥ 0.

    Raises:
        OptionError: a batch size that is not an integer ≥ 1, or a bad direction.
    """
    factor = _batch_factor(data.n, batch_size)
    s = directional_sample_gradients(net, data, v)
    return factor * float(((s - s.mean()) ** 2).mean())


@dataclass(frozen=True, eq=False)
class EscapeNoise:
    """Minibatch noise along the escape direction against the curvature there.

    Attributes:
        lambda_min: the most negative (smallest) Hessian eigenvalue of the trained block.
        direction: its unit eigenvector v in the flat layout (zero on frozen coordinates).
        noise: vᵀΣ_B v, the minibatch-gradient variance along v.
        batch_size: B.
    """

    lambda_min: float
    direction: torch.Tensor
    noise: float
    batch_size: int

    @property
    def noise_length(self) -> float:
        """√(vᵀΣ_B v) / |λ_min|: where the curvature's pull along v equals the noise (∞ at 0)."""
        if self.lambda_min == 0.0:
            return math.inf
        return math.sqrt(self.noise) / abs(self.lambda_min)


def _smallest_pair(
    net: TwoLayerNet, data: Dataset, free: torch.Tensor | None, seed: int
) -> tuple[float, torch.Tensor] | None:
    """(λ_min, v) of the Hessian's trained block; None if no pair could be computed."""
    P = net.num_params
    if free is None:
        spec = spectrum(net, data, k=1, which="smallest", seed=seed)
        if not spec.eigenvalues.size or spec.eigenvectors is None:
            return None
        v = torch.as_tensor(spec.eigenvectors[:, 0], dtype=net.dtype, device=net.device)
        return spec.min, v
    if free.numel() > DENSE_LIMIT:
        return None
    lam, vecs = torch.linalg.eigh(hessian(net, data)[free][:, free])
    v = torch.zeros(P, dtype=net.dtype, device=net.device)
    v[free] = vecs[:, 0]
    return float(lam[0]), v


def escape_noise(
    net: TwoLayerNet,
    data: Dataset,
    batch_size: int,
    *,
    free: torch.Tensor | None = None,
    seed: int = 0,
) -> EscapeNoise | None:
    """The minibatch noise along the most negative curvature direction at ``net``.

    v is the unit eigenvector of λ_min of ∇²R (of its trained block when ``free`` is given);
    the noise is vᵀΣ_B v (:func:`minibatch_noise`).

    Args:
        net: the network θ (typically a saddle, or a point on a plateau).
        data: the training samples.
        batch_size: B.
        free: indices of the trained coordinates (None: all of them).
        seed: Lanczos start vector, above 3000 parameters.

    Returns:
        The :class:`EscapeNoise`, or None when no eigenpair could be computed (Lanczos did
        not converge, or more than 3000 trained coordinates with frozen ones).

    Raises:
        OptionError: a batch size that is not an integer ≥ 1.

    >>> import saddlemap as sm
    >>> prob = sm.teacher_student(1, 2, d=2, n=13, activation="tanh")
    >>> found = escape_noise(prob.student, prob.data, batch_size=4)
    >>> bool(abs(float(found.direction.norm()) - 1) < 1e-12 and found.noise >= 0)
    True
    """
    _batch_factor(data.n, batch_size)
    data = checked_data(net, data)
    pair = _smallest_pair(net, data, free, seed)
    if pair is None:
        return None
    lam, v = pair
    return EscapeNoise(lam, v, minibatch_noise(net, data, v, batch_size), int(batch_size))
