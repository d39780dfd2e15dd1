"""Exact derivatives of R(θ) = (1/n) Σ ℓ(g(θ, x_i), y_i) for two-layer networks.

All closed forms follow THEORY §2 (Zhang, Zhang & Luo, arXiv:2405.17501, §2), written on
augmented inputs x̃ and weights w̃ (hidden biases absorbed).  With residuals
e_i = ∇_g ℓ / n and curvatures h_i = ∇²_g ℓ / n:

* residual function φ(u) = Σ_i e_i σ(uᵀx̃_i) ∈ R^K, its Jacobian ∇φ(u) ∈ R^{K×D} and
  G_a(u) = Σ_i (aᵀe_i) σ''(uᵀx̃_i) x̃_i x̃_iᵀ;
* gradient ∂R/∂a_k = φ(w̃_k), ∇_{w̃_k} R = ∇φ(w̃_k)ᵀ a_k, ∂R/∂c = Σ_i e_i;
* Hessian H = Jᵀ diag(h_i) J + ⊕_k B_k, B_k = [[0, ∇φ(w̃_k)], [∇φ(w̃_k)ᵀ, G_{a_k}(w̃_k)]].

The Gauss–Newton part is one matrix product and the residual part is block diagonal, which
is why these are far cheaper than generic autodiff.  Every function accepts
``batch_size`` to stream over the data in blocks for large n.

>>> import torch
>>> from saddlemap import Dataset, TwoLayerNet
>>> net = TwoLayerNet([0.6], [[1.4]], activation="tanh")
>>> data = Dataset([[-1.0], [0.5], [2.0]], [-1.0, 0.5, 0.0])
>>> H = hessian(net, data)
>>> bool(torch.allclose(H, H.T)), tuple(H.shape)
(True, (2, 2))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator

from ._forward import Forward, batches, checked_data, forward
from .data import Dataset
from .network import TwoLayerNet

__all__ = [
    "HessianOperator",
    "ResidualFunction",
    "gradient",
    "hessian",
    "hessian_operator",
    "hvp",
    "jacobian",
    "loss",
    "loss_and_gradient",
    "residual_function",
    "residuals",
]


def loss(net: TwoLayerNet, data: Dataset, batch_size: int | None = None) -> float:
    """The empirical risk R(θ) = (1/n) Σ_i ℓ(g(θ, x_i), y_i)."""
    total = 0.0
    for fw in batches(net, data, batch_size):
        total += float(fw.data.loss.value(fw.g, fw.data.targets).sum())
    return total / checked_data(net, data).n


def loss_and_gradient(
    net: TwoLayerNet, data: Dataset, batch_size: int | None = None
) -> tuple[float, torch.Tensor]:
    """R(θ) and ∇R(θ) from one forward pass (what a training step needs)."""
    total, grad = 0.0, None
    for fw in batches(net, data, batch_size):
        total += float(fw.data.loss.value(fw.g, fw.data.targets).sum())
        block = _gradient_block(fw)
        grad = block if grad is None else grad + block
    assert grad is not None  # batches yields at least one block
    return total / fw.n_total, grad


def residuals(net: TwoLayerNet, data: Dataset) -> torch.Tensor:
    """Per-sample residuals e_i = ∇_g ℓ(g(θ, x_i), y_i) / n, shape (n, K)."""
    return forward(net, checked_data(net, data)).e


def _gradient_block(fw: Forward) -> torch.Tensor:
    grad_a = fw.S.T @ fw.e
    grad_w = (fw.ea * fw.S1).T @ fw.X
    grad_c = fw.e.sum(0) if fw.net.c is not None else fw.e.new_zeros(0)
    return fw.net.layout.join(grad_a, grad_w, grad_c)


def gradient(net: TwoLayerNet, data: Dataset, batch_size: int | None = None) -> torch.Tensor:
    """∇R(θ) in the flat layout, shape (P,)."""
    return sum(_gradient_block(fw) for fw in batches(net, data, batch_size))  # type: ignore[return-value]


def _jacobian_block(fw: Forward) -> torch.Tensor:
    net = fw.net
    n, k = fw.S.shape[0], net.output_dim
    eye = torch.eye(k, dtype=net.dtype, device=net.device)
    # d g_{ic} / d a_{k c'} = δ_{cc'} σ(w̃_kᵀx̃_i);  d g_{ic} / d w̃_k = a_{kc} σ'(w̃_kᵀx̃_i) x̃_i
    part_a = fw.S[:, None, :, None] * eye[None, :, None, :]
    part_w = (net.a.T[None, :, :, None] * fw.S1[:, None, :, None]) * fw.X[:, None, None, :]
    blocks = torch.cat([part_a, part_w], dim=-1).reshape(n, k, -1)
    if net.c is None:
        return blocks
    return torch.cat([blocks, eye.expand(n, k, k)], dim=-1)


def jacobian(net: TwoLayerNet, data: Dataset) -> torch.Tensor:
    """Jacobian of the outputs, ∂g(θ, x_i)_c / ∂θ, shape (n, K, P)."""
    return _jacobian_block(forward(net, checked_data(net, data)))


def _hvp_block(fw: Forward, V: torch.Tensor) -> torch.Tensor:
    """H V for vectors V of shape (r, P) on one block of samples, one vector at a time.

    Two-dimensional products run as plain GEMMs; batching the vectors into (r, n, m)
    temporaries measured slower per vector than this loop.
    """
    return torch.stack([_hvp_single(fw, v) for v in V])


def _hvp_single(fw: Forward, v: torch.Tensor) -> torch.Tensor:
    """H v on one block: Gauss–Newton part Jᵀ h J v plus the residual blocks B_k v.

    The w-part's terms σ'·(u aᵀ) and σ'·(e δaᵀ) are contracted as S1ᵀ(u ⊗ X̃) and δa·∇φ,
    so only two elementwise passes over the n × m matrices remain.
    """
    net = fw.net
    n, K, D = fw.X.shape[0], net.output_dim, fw.X.shape[1]
    dA, dW, dc = net.layout.split(v)
    XdW = fw.X @ dW.T  # x̃_iᵀ δw̃_k, (n, m)
    S1XdW = fw.S1 * XdW
    Jv = fw.S @ dA + S1XdW @ net.a
    if net.c is not None:
        Jv = Jv + dc
    u = fw.curvature_apply(Jv)  # h_i (J v)_i, (n, K)
    ux = (u.unsqueeze(-1) * fw.X.unsqueeze(1)).reshape(n, K * D)
    s1ux = (fw.S1.T @ ux).reshape(-1, K, D)
    out_w = torch.addmm(
        (net.a.unsqueeze(-1) * s1ux + dA.unsqueeze(-1) * fw.grad_phi).sum(1),
        (fw.eaS2 * XdW).T, fw.X,
    )
    out_a = torch.addmm(fw.S.T @ u, S1XdW.T, fw.e)
    out_c = u.sum(0) if net.c is not None else dc
    return net.layout.join(out_a, out_w, out_c)


def hvp(
    net: TwoLayerNet, data: Dataset, v: torch.Tensor, batch_size: int | None = None
) -> torch.Tensor:
    """Hessian-vector product H v for v of shape (P,), or H V for V of shape (P, r).

    Costs a few matrix products of size n × m × (d + K): no Hessian is formed.
    """
    v = torch.as_tensor(v, dtype=net.dtype, device=net.device)
    V = v.reshape(-1, 1) if v.ndim == 1 else v
    out = sum(_hvp_block(fw, V.T) for fw in batches(net, data, batch_size))
    return out.T.reshape(v.shape)  # type: ignore[union-attr]


def _residual_blocks(fw: Forward) -> torch.Tensor:
    """The blocks B_k of THEORY §2 on one block of samples, shape (m, K + D, K + D)."""
    net = fw.net
    n, m, k = fw.S.shape[0], net.width, net.output_dim
    D = fw.X.shape[1]
    # ∇φ(w̃_k)_{c,:} = Σ_i e_ic σ'_ik x̃_i ;  G_{a_k}(w̃_k) = Σ_i (a_kᵀe_i) σ''_ik x̃_i x̃_iᵀ
    cx = (fw.eaS2[:, :, None] * fw.X[:, None, :]).reshape(n, m * D)
    G = (cx.T @ fw.X).reshape(m, D, D)
    grad_phi = fw.grad_phi  # (m, K, D)
    top = torch.cat([torch.zeros(m, k, k, dtype=net.dtype, device=net.device), grad_phi], dim=2)
    bottom = torch.cat([grad_phi.transpose(1, 2), G], dim=2)
    return torch.cat([top, bottom], dim=1)


def _hessian_block(fw: Forward) -> torch.Tensor:
    net = fw.net
    J = _jacobian_block(fw)
    Jf = J.reshape(-1, J.shape[-1])
    if fw.data.loss.identity_curvature:
        H = (Jf.T @ Jf) / fw.n_total
    else:
        hJ = fw.curvature_apply(J.permute(2, 0, 1)).permute(1, 2, 0).reshape(Jf.shape)
        H = Jf.T @ hJ
    m, q = net.width, net.layout.neuron_size
    neuron_part = H[: m * q, : m * q].view(m, q, m, q)
    neuron_part.diagonal(dim1=0, dim2=2).add_(_residual_blocks(fw).permute(1, 2, 0))
    return H


def hessian(net: TwoLayerNet, data: Dataset, batch_size: int | None = None) -> torch.Tensor:
    """The full Hessian ∇²R(θ), shape (P, P), in the flat layout.

    Gauss–Newton part Jᵀ diag(h_i) J as one matrix product per block of samples, plus the
    block-diagonal residual part ⊕_k B_k (THEORY §2).
    """
    blocks = batches(net, data, batch_size)
    H = _hessian_block(next(blocks))
    for fw in blocks:
        H += _hessian_block(fw)
    # Rounding leaves Jᵀ(hJ) asymmetric in the last bit; analysis wants an exactly symmetric H.
    return 0.5 * (H + H.T)


class HessianOperator(LinearOperator):
    """The Hessian as a ``scipy.sparse.linalg.LinearOperator``, matrix-free.

    The forward pass is computed once (per block of ``batch_size`` samples) and cached; each
    product then costs a few matrix products.  ``num_matvecs`` counts vectors multiplied.
    """

    def __init__(self, net: TwoLayerNet, data: Dataset, batch_size: int | None = None) -> None:
        self.net = net
        self._blocks = list(batches(net, data, batch_size))
        self.num_matvecs = 0
        P = net.num_params
        super().__init__(dtype=np.dtype(str(net.dtype).removeprefix("torch.")), shape=(P, P))

    def apply(self, V: torch.Tensor) -> torch.Tensor:
        """H V for a torch tensor V of shape (P, r), on the network's device."""
        self.num_matvecs += V.shape[1]
        out = sum(_hvp_block(fw, V.T) for fw in self._blocks)
        return out.T  # type: ignore[union-attr]

    def _matmat(self, X: np.ndarray) -> np.ndarray:
        V = torch.as_tensor(np.ascontiguousarray(X), dtype=self.net.dtype, device=self.net.device)
        return self.apply(V).cpu().numpy()

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        return self._matmat(x.reshape(-1, 1)).reshape(x.shape)

    def _adjoint(self) -> HessianOperator:
        return self


def hessian_operator(
    net: TwoLayerNet, data: Dataset, batch_size: int | None = None
) -> HessianOperator:
    """The Hessian as a matrix-free :class:`HessianOperator` for scipy's Krylov solvers."""
    return HessianOperator(net, data, batch_size)


@dataclass(frozen=True, eq=False)
class ResidualFunction:
    """φ_f, ∇φ_f and G for the output function of ``net`` on ``data`` (THEORY §2).

    Points u are augmented input weights (length D = d + 1 with a hidden bias), one per row
    of ``U`` (shape (p, D)) or a single vector (D,).  φ depends on θ only through the outputs,
    so every network with the same outputs on the data shares it.
    """

    X: torch.Tensor
    e: torch.Tensor
    activation_fns: tuple[
        Callable[[torch.Tensor], torch.Tensor],
        Callable[[torch.Tensor], torch.Tensor],
        Callable[[torch.Tensor], torch.Tensor],
    ]

    def _z(self, U: torch.Tensor) -> tuple[torch.Tensor, bool]:
        U = torch.as_tensor(U, dtype=self.X.dtype, device=self.X.device)
        single = U.ndim == 1
        U2 = U.reshape(1, -1) if single else U
        if U2.shape[-1] != self.X.shape[1]:
            raise ValueError(f"points must have length D={self.X.shape[1]}, got {U2.shape[-1]}")
        return self.X @ U2.T, single

    def phi(self, U: torch.Tensor) -> torch.Tensor:
        """φ(u) = Σ_i e_i σ(uᵀx̃_i): shape (K,) for one point, (p, K) for p points."""
        Z, single = self._z(U)
        out = self.activation_fns[0](Z).T @ self.e
        return out[0] if single else out

    def grad(self, U: torch.Tensor) -> torch.Tensor:
        """∇φ(u) with rows Σ_i e_ic σ'(uᵀx̃_i) x̃_iᵀ: shape (K, D) or (p, K, D)."""
        Z, single = self._z(U)
        out = torch.einsum("nc,np,nd->pcd", self.e, self.activation_fns[1](Z), self.X)
        return out[0] if single else out

    def G(self, U: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """G_a(u) = Σ_i (aᵀe_i) σ''(uᵀx̃_i) x̃_i x̃_iᵀ: shape (D, D) or (p, D, D).

        ``a`` is one output-weight vector (K,) or one per point (p, K).
        """
        Z, single = self._z(U)
        a_t = torch.as_tensor(a, dtype=self.X.dtype, device=self.X.device)
        a_t = a_t.reshape(-1, self.e.shape[1])
        coef = (self.e @ a_t.T) * self.activation_fns[2](Z)  # (n, p)
        out = torch.einsum("np,nd,nf->pdf", coef, self.X, self.X)
        return out[0] if single else out


def residual_function(net: TwoLayerNet, data: Dataset) -> ResidualFunction:
    """The residual function of the output function of ``net`` on ``data``.

    >>> import torch
    >>> from saddlemap import Dataset, TwoLayerNet, gradient
    >>> net = TwoLayerNet([0.6, -0.2], [[1.4], [0.3]], activation="tanh")
    >>> data = Dataset([[-1.0], [0.5], [2.0]], [-1.0, 0.5, 0.0])
    >>> rf = residual_function(net, data)
    >>> grad_a = gradient(net, data).reshape(2, 2)[:, 0]   # ∂R/∂a_k = φ(w_k)
    >>> bool(torch.allclose(rf.phi(net.W_aug)[:, 0], grad_a))
    True
    """
    fw = forward(net, checked_data(net, data))
    act = net.activation
    return ResidualFunction(fw.X, fw.e, (act.fn, act.d1, act.d2))
