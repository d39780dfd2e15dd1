"""Exact derivatives of R(θ) = (1/n) Σ_i ℓ(g(θ, x_i), y_i) for an :class:`MLP` of any depth.

With the pass of :mod:`saddlemap.deep._forward` (δ_j = ∂R/∂z_j, back_j = δ_{j+1} W_j):

* gradient (backpropagation): ∂R/∂W_j = δ_{j+1}ᵀ h_j, ∂R/∂b_j = Σ_i δ_{j+1,i};
* Hessian-vector product H v (Pearlmutter's R-operator, forward tangents then backward):
  ż_{j+1} = ḣ_j W_jᵀ + h_j Ẇ_jᵀ + ḃ_j, ḣ_j = σ'(z_j) ∘ ż_j, δ̇_L = ∇²ℓ ż_L / n,
  δ̇_j = (δ̇_{j+1} W_j + δ_{j+1} Ẇ_j) ∘ σ'(z_j) + back_j ∘ σ''(z_j) ∘ ż_j, and
  (Hv)_{W_j} = δ̇_{j+1}ᵀ h_j + δ_{j+1}ᵀ ḣ_j, (Hv)_{b_j} = Σ_i δ̇_{j+1,i}.
  That is the Gauss–Newton part Jᵀ diag(∇²ℓ/n) J v plus every second-order term, six
  matrix products per layer (two on the first), all r vectors of a batch in each.

:class:`MLPHessianOperator` keeps the pass (σ', δ, back ∘ σ'') so that each product is
only the tangent sweep; :func:`mlp_hessian` forms H from batches of products up to
:data:`DENSE_LIMIT` parameters; :func:`mlp_spectrum` is dense there and Lanczos above
(:func:`~saddlemap.lanczos_spectrum`, the same run as for two-layer networks).  With a
``data.penalty`` every function adds P(θ) = (λ/2)‖Mθ‖² once (M: every parameter, or the
weights W_j only for scope ``"weights"``).  All of them equal ``torch.func`` autodiff
(:mod:`saddlemap.deep.autodiff`) to rtol 1e-10 in float64.

>>> import torch
>>> from saddlemap import Dataset
>>> from saddlemap.deep import MLP
>>> mlp = MLP([[[0.6, -0.4]], [[1.2]], [[0.7]]], activation="tanh")
>>> data = Dataset([[-1.0, 0.5], [0.5, 2.0], [2.0, 0.1]], [-1.0, 0.5, 0.0])
>>> H = mlp_hessian(mlp, data)
>>> tuple(H.shape), bool(torch.equal(H, H.T))
((4, 4), True)
>>> v = torch.tensor([1.0, 0.0, -2.0, 0.5], dtype=torch.float64)
>>> bool(torch.allclose(mlp_hvp(mlp, data, v), H @ v, rtol=1e-12, atol=0))
True
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator

from ..data import Dataset
from ..errors import OptionError
from ..losses import Penalty
from ..spectral import (
    DENSE_LIMIT,
    LANCZOS_TOL,
    MIN_MATVECS,
    SPECTRUM_WORK,
    UNLIMITED_MATVECS,
    Spectrum,
    Which,
    dense_spectrum,
    lanczos_spectrum,
)
from ._forward import DeepForward, checked_data, deep_forward
from .mlp import MLP, MLPLayout

__all__ = [
    "DENSE_LIMIT",
    "MLPHessianOperator",
    "mlp_gradient",
    "mlp_hessian",
    "mlp_hessian_operator",
    "mlp_hvp",
    "mlp_loss",
    "mlp_loss_and_gradient",
    "mlp_matvec_budget",
    "mlp_spectrum",
    "penalty_mask",
]

#: Entries of the n × r × width tangents one batch of products may hold (2 MiB): wider
#: batches run slower per vector (memory traffic; 1.5× at r = 41, n = 1000, width 100).
_TANGENT_ENTRIES = 2**18


# ------------------------------------------------------------------------------ penalty
def penalty_mask(layout: MLPLayout, penalty: Penalty, like: torch.Tensor) -> torch.Tensor:
    """The diagonal of M: 1 on every parameter (scope ``"all"``) or on the W_j only."""
    mask = like.new_ones(layout.num_params)
    if penalty.scope == "weights":
        for j in range(layout.depth):
            mask[layout.bias_slice(j)] = 0.0
    return mask


def _active(penalty: Penalty | None) -> Penalty | None:
    return penalty if penalty is not None and penalty.weight_decay > 0.0 else None


def _penalty_value(net: MLP, penalty: Penalty | None) -> float:
    penalty = _active(penalty)
    if penalty is None:
        return 0.0
    theta = net.flatten()
    masked = theta * penalty_mask(net.layout, penalty, theta)
    return 0.5 * penalty.weight_decay * float(masked @ masked)


def _add_penalty(
    out: torch.Tensor, penalty: Penalty | None, layout: MLPLayout, v: torch.Tensor
) -> torch.Tensor:
    """Add λ M v to ``out`` (v of shape (P,) or (P, r)); with v = θ that is ∇P."""
    penalty = _active(penalty)
    if penalty is None:
        return out
    mask = penalty_mask(layout, penalty, v)
    return out.addcmul_(v, mask if v.ndim == 1 else mask[:, None], value=penalty.weight_decay)


# ------------------------------------------------------------------- loss and gradient
def mlp_loss(net: MLP, data: Dataset) -> float:
    """R(θ) + P(θ), the empirical risk (1/n) Σ_i ℓ(g(θ, x_i), y_i) plus the penalty."""
    fw = deep_forward(net, data, order=0)
    return float(fw.data.loss.value(fw.g, fw.data.targets).mean()) + _penalty_value(
        net, data.penalty
    )


def _gradient(fw: DeepForward) -> torch.Tensor:
    net, parts = fw.net, []
    for j in range(net.depth):
        d = fw.delta[j + 1]
        assert d is not None  # a pass of order ≥ 1 has every δ
        parts.append(d.T @ fw.h[j])
        if net.biases[j] is not None:
            parts.append(d.sum(0))
    return torch.cat([p.reshape(-1) for p in parts])


def mlp_loss_and_gradient(net: MLP, data: Dataset) -> tuple[float, torch.Tensor]:
    """R + P and ∇R + λMθ in the flat layout, from one pass."""
    fw = deep_forward(net, data, order=1)
    value = float(fw.data.loss.value(fw.g, fw.data.targets).mean())
    grad = _add_penalty(_gradient(fw), data.penalty, net.layout, net.flatten())
    return value + _penalty_value(net, data.penalty), grad


def mlp_gradient(net: MLP, data: Dataset) -> torch.Tensor:
    """∇R(θ) + λMθ by backpropagation, shape (P,) (∂R/∂W_j = δ_{j+1}ᵀ h_j)."""
    return mlp_loss_and_gradient(net, data)[1]


# ----------------------------------------------------------------- Hessian products
def _tangent_weights(V: torch.Tensor, layout: MLPLayout, j: int) -> tuple[
    torch.Tensor, torch.Tensor, torch.Tensor | None
]:
    """Ẇ_j of r vectors V (P, r) in two layouts, (n_j, r·n_{j+1}) and (n_{j+1}, r·n_j), and ḃ_j."""
    r = V.shape[1]
    n_in, n_out = layout.sizes[j], layout.sizes[j + 1]
    Wd = V[layout.weight_slice(j)].reshape(n_out, n_in, r)
    for_forward = Wd.permute(1, 2, 0).reshape(n_in, r * n_out)
    for_back = Wd.permute(0, 2, 1).reshape(n_out, r * n_in)
    bd = V[layout.bias_slice(j)].T if layout.bias[j] else None
    return for_forward, for_back, bd


def product(fw: DeepForward, V: torch.Tensor) -> torch.Tensor:
    """∇²R V for V of shape (P, r) at the pass ``fw`` (no penalty), by the R-operator."""
    net, layout = fw.net, fw.net.layout
    L, n, r = net.depth, fw.n, V.shape[1]
    tangents = [_tangent_weights(V, layout, j) for j in range(L)]
    zdot: list[torch.Tensor | None] = [None] * (L + 1)
    hdot: list[torch.Tensor | None] = [None] * (L + 1)
    for j in range(L):
        n_out = layout.sizes[j + 1]
        z = (fw.h[j] @ tangents[j][0]).view(n, r, n_out)
        if hdot[j] is not None:
            z += (hdot[j].view(n * r, -1) @ net.weights[j].T).view(n, r, n_out)  # type: ignore[union-attr]
        bias_dot = tangents[j][2]
        if bias_dot is not None:
            z += bias_dot
        zdot[j + 1] = z
        if j + 1 < L:
            hdot[j + 1] = z * fw.S1[j + 1][:, None, :]  # type: ignore[index]
    ddot = fw.curvature_apply(zdot[L].transpose(0, 1)).transpose(0, 1)  # type: ignore[union-attr]
    out = V.new_empty(layout.num_params, r)
    for j in range(L - 1, -1, -1):
        n_in, n_out = layout.sizes[j], layout.sizes[j + 1]
        delta = fw.delta[j + 1]
        assert delta is not None
        flat = ddot.reshape(n, r * n_out)
        gW = (flat.T @ fw.h[j]).view(r, n_out, n_in).permute(1, 2, 0)
        if hdot[j] is not None:
            gW = gW + (delta.T @ hdot[j].reshape(n, r * n_in)).view(n_out, r, n_in).permute(0, 2, 1)  # type: ignore[union-attr]
        out[layout.weight_slice(j)] = gW.reshape(n_out * n_in, r)
        if layout.bias[j]:
            out[layout.bias_slice(j)] = ddot.sum(0).T
        if j == 0:
            break
        nxt = (ddot.reshape(n * r, n_out) @ net.weights[j]).view(n, r, n_in)
        nxt += (delta @ tangents[j][1]).view(n, r, n_in)
        nxt *= fw.S1[j][:, None, :]  # type: ignore[index]
        nxt += fw.bS2[j][:, None, :] * zdot[j]  # type: ignore[index,operator]
        ddot = nxt
    return out


class MLPHessianOperator(LinearOperator):
    """The Hessian of R (+ P) at an :class:`MLP` as a matrix-free ``LinearOperator``.

    The pass (h, σ', δ, back ∘ σ'') is made once; each product is the tangent sweep of
    the module docstring (several vectors share each matrix product).  ``num_matvecs``
    counts vectors multiplied.  Memory: about five n × Σ n_j numbers for the pass and
    n × r × max n_j per batch of r vectors (batches are cut to 2 MiB of tangents).
    """

    def __init__(self, net: MLP, data: Dataset) -> None:
        self.net = net
        self.penalty = _active(data.penalty)
        self._fw = deep_forward(net, data, order=2)
        self.num_matvecs = 0
        P = net.num_params
        super().__init__(dtype=np.dtype(str(net.dtype).removeprefix("torch.")), shape=(P, P))

    @property
    def chunk(self) -> int:
        """Vectors per batch of products (bounded by :data:`_TANGENT_ENTRIES`)."""
        widest = max(self.net.layout.sizes)
        return max(1, _TANGENT_ENTRIES // max(1, self._fw.n * widest))

    def apply(self, V: torch.Tensor) -> torch.Tensor:
        """H V for a tensor V of shape (P, r) on the network's device."""
        V = V.to(dtype=self.net.dtype, device=self.net.device)
        self.num_matvecs += V.shape[1]
        step = self.chunk
        if V.shape[1] <= step:
            out = product(self._fw, V)
        else:
            out = torch.cat([product(self._fw, V[:, s:s + step])
                             for s in range(0, V.shape[1], step)], dim=1)
        return _add_penalty(out, self.penalty, self.net.layout, V)

    def _matmat(self, X: np.ndarray) -> np.ndarray:
        V = torch.as_tensor(np.ascontiguousarray(X), dtype=self.net.dtype, device=self.net.device)
        return self.apply(V).cpu().numpy()

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        return self._matmat(x.reshape(-1, 1)).reshape(x.shape)

    def _adjoint(self) -> MLPHessianOperator:
        return self


def mlp_hessian_operator(net: MLP, data: Dataset) -> MLPHessianOperator:
    """The Hessian as a matrix-free :class:`MLPHessianOperator` for Krylov solvers."""
    return MLPHessianOperator(net, data)


def mlp_hvp(net: MLP, data: Dataset, v: torch.Tensor) -> torch.Tensor:
    """H v for v of shape (P,), or H V for V of shape (P, r), by the R-operator."""
    v = torch.as_tensor(v, dtype=net.dtype, device=net.device).detach()
    if v.ndim not in (1, 2) or v.shape[0] != net.num_params:
        raise OptionError(
            f"v must have shape ({net.num_params},) or ({net.num_params}, r), got "
            f"{tuple(v.shape)}"
        )
    V = v.reshape(net.num_params, -1)
    return MLPHessianOperator(net, data).apply(V).reshape(v.shape)


def mlp_hessian(net: MLP, data: Dataset, limit: int = 10_000) -> torch.Tensor:
    """The full Hessian ∇²R + λ diag(M), shape (P, P), from batches of products H e_j.

    Symmetrised (products are symmetric only to rounding).

    Raises:
        OptionError: P above ``limit`` (a dense Hessian of P² numbers).
    """
    P = net.num_params
    if P > limit:
        raise OptionError(f"a dense Hessian of P = {P} parameters is above the limit {limit}; "
                          "use mlp_hessian_operator or mlp_spectrum")
    op = MLPHessianOperator(net, data)
    eye = torch.eye(P, dtype=net.dtype, device=net.device)
    H = op.apply(eye)
    return 0.5 * (H + H.T)


def mlp_matvec_budget(net: MLP, n: int) -> int | None:
    """Products a Lanczos spectrum may use at ``net`` on n samples; None: no limit.

    The two-layer allowance (:data:`saddlemap.spectral.SPECTRUM_WORK`) in units of one
    product's work, about 3 n P multiply–adds.

    >>> mlp_matvec_budget(MLP([[[1.0]], [[2.0]]]), 100) is None
    True
    """
    budget = int(SPECTRUM_WORK / max(3.0 * n * net.num_params, 1.0))
    return None if budget >= UNLIMITED_MATVECS else max(budget, MIN_MATVECS)


def mlp_spectrum(
    net: MLP,
    data: Dataset,
    k: int | None = None,
    which: Which = "both",
    method: Literal["auto", "dense", "lanczos"] = "auto",
    zero_rtol: float | None = None,
    tol: float = LANCZOS_TOL,
    seed: int = 0,
    max_matvecs: int | Literal["auto"] | None = "auto",
) -> Spectrum:
    """The Hessian spectrum of R (+ P) at ``net``: a :class:`~saddlemap.Spectrum`.

    ``method="auto"`` is dense (every eigenvalue and the inertia) up to
    :data:`DENSE_LIMIT` parameters and Lanczos on :class:`MLPHessianOperator` above, with
    ``k`` extreme pairs per end (6 by default) within ``max_matvecs`` products (``"auto"``:
    :func:`mlp_matvec_budget`).
    """
    checked_data(net, data)
    if method == "auto":
        method = "dense" if net.num_params <= DENSE_LIMIT else "lanczos"
    if method == "dense":
        return dense_spectrum(mlp_hessian(net, data), k, which, zero_rtol)
    if method == "lanczos":
        op = MLPHessianOperator(net, data)
        budget = mlp_matvec_budget(net, data.n) if max_matvecs == "auto" else max_matvecs
        return lanczos_spectrum(op, k or 6, which, tol, zero_rtol, seed=seed,
                                max_matvecs=budget)
    raise OptionError(f"unknown method {method!r}; use 'auto', 'dense' or 'lanczos'")
