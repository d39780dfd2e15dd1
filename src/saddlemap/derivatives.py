"""Exact derivatives of R(θ) = (1/n) Σ ℓ(g(θ, x_i), y_i) for two-layer networks.

All closed forms follow docs/theory.md §2 (Zhang, Zhang & Luo, arXiv:2405.17501, §2), written on
augmented inputs x̃ and weights w̃ (hidden biases absorbed).  With residuals
e_i = ∇_g ℓ / n and curvatures h_i = ∇²_g ℓ / n:

* residual function φ(u) = Σ_i e_i σ(uᵀx̃_i) ∈ R^K, its Jacobian ∇φ(u) ∈ R^{K×D} and
  G_a(u) = Σ_i (aᵀe_i) σ''(uᵀx̃_i) x̃_i x̃_iᵀ;
* gradient ∂R/∂a_k = φ(w̃_k), ∇_{w̃_k} R = ∇φ(w̃_k)ᵀ a_k, ∂R/∂c = Σ_i e_i;
* Hessian H = Jᵀ diag(h_i) J + ⊕_k B_k, B_k = [[0, ∇φ(w̃_k)], [∇φ(w̃_k)ᵀ, G_{a_k}(w̃_k)]].

The Gauss–Newton part is one matrix product and the residual part is block diagonal, which
is why these are far cheaper than generic autodiff.  Every function accepts
``batch_size`` to stream over the data in blocks for large n.

**Weight decay.**  When the data carry a :class:`~saddlemap.losses.Penalty`
(``data.penalty``), the objective is L(θ) = R(θ) + P(θ) with P(θ) = (λ/2)‖Mθ‖², M the 0/1
mask of the parameters in its scope.  :func:`loss`, :func:`loss_and_gradient`,
:func:`gradient`, :func:`hvp`, :func:`hessian` and :class:`HessianOperator` then give L,
∇L = ∇R + λMθ and ∇²L = ∇²R + λ diag(M): the penalty is added once, after the (possibly
streamed) data term, as one axpy.  :func:`jacobian`, :func:`residuals` and
:func:`residual_function` are the data term's only: the residual function φ and the theory
of critical sets built on it concern R without the penalty.

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
from ._hvp import CachedHessian, cached_kernel, product_at_point, residual_blocks
from ._workspace import scratch
from .data import Dataset
from .errors import OptionError
from .losses import Penalty
from .network import ParamLayout, TwoLayerNet

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


def _active(penalty: Penalty | None) -> Penalty | None:
    """The penalty when it adds anything (λ > 0), else None."""
    return penalty if penalty is not None and penalty.weight_decay > 0.0 else None


def _penalty_value(net: TwoLayerNet, penalty: Penalty | None) -> float:
    """P(θ) = (λ/2)‖Mθ‖², 0 without a penalty."""
    penalty = _active(penalty)
    return 0.0 if penalty is None else float(penalty.value(net.flatten(), net.layout))


def _add_penalty(
    out: torch.Tensor, penalty: Penalty | None, layout: ParamLayout, v: torch.Tensor
) -> torch.Tensor:
    """Add λ M v to ``out`` in place (both of shape (P,) or (P, r)) and return ``out``.

    With v = θ this is ∇P, with a direction v the product ∇²P v.
    """
    penalty = _active(penalty)
    if penalty is None:
        return out
    if penalty.scope == "all":
        return out.add_(v, alpha=penalty.weight_decay)
    mask = penalty.mask(layout, v.dtype, v.device)
    return out.addcmul_(v, mask if v.ndim == 1 else mask[:, None], value=penalty.weight_decay)


def loss(net: TwoLayerNet, data: Dataset, batch_size: int | None = None) -> float:
    """The objective R(θ) + P(θ): the empirical risk R(θ) = (1/n) Σ_i ℓ(g(θ, x_i), y_i).

    P(θ) = (λ/2)‖Mθ‖² when ``data.penalty`` is set, else 0 (see the module docstring).
    """
    total = 0.0
    for fw in batches(net, data, batch_size, in_scratch=True, order=0):
        total += float(fw.data.loss.value(fw.g, fw.data.targets).sum())
    return total / checked_data(net, data).n + _penalty_value(net, data.penalty)


def loss_and_gradient(
    net: TwoLayerNet, data: Dataset, batch_size: int | None = None
) -> tuple[float, torch.Tensor]:
    """R + P and ∇R + λMθ from one forward pass (what a training step needs)."""
    total, grad = 0.0, None
    for fw in batches(net, data, batch_size, in_scratch=True, order=1):
        total += float(fw.data.loss.value(fw.g, fw.data.targets).sum())
        block = _gradient_block(fw)
        grad = block if grad is None else grad + block
    assert grad is not None  # batches yields at least one block
    value = total / fw.n_total + _penalty_value(net, data.penalty)
    if _active(data.penalty) is not None:
        grad = _add_penalty(grad, data.penalty, net.layout, net.flatten())
    return value, grad


def residuals(net: TwoLayerNet, data: Dataset) -> torch.Tensor:
    """Per-sample residuals e_i = ∇_g ℓ(g(θ, x_i), y_i) / n, shape (n, K).

    Those of the data term R only: a penalty has no residuals.
    """
    return forward(net, checked_data(net, data), order=0).e


def _gradient_block(fw: Forward) -> torch.Tensor:
    grad_a = fw.S.T @ fw.e
    if fw.net.output_dim == 1:  # ∇_{w̃_k} R = ∇φ(w̃_k)ᵀ a_k: no n × m write
        grad_w = fw.grad_phi[:, 0, :] * fw.net.a
    else:  # with K outputs ∇φ costs K·D GEMM rows: one n × m pass is cheaper
        eaS1 = torch.matmul(fw.e, fw.net.a.T, out=scratch("grad_eaS1", tuple(fw.S.shape), fw.S))
        grad_w = (fw.Xt @ eaS1.mul_(fw.S1)).T
    grad_c = fw.e.sum(0) if fw.net.c is not None else fw.e.new_zeros(0)
    return fw.net.layout.join(grad_a, grad_w, grad_c)


def gradient(net: TwoLayerNet, data: Dataset, batch_size: int | None = None) -> torch.Tensor:
    """∇R(θ) + λMθ in the flat layout, shape (P,) (λ = 0 without ``data.penalty``)."""
    blocks = batches(net, data, batch_size, in_scratch=True, order=1)
    grad: torch.Tensor = sum(_gradient_block(fw) for fw in blocks)  # type: ignore[assignment]
    if _active(data.penalty) is not None:
        grad = _add_penalty(grad, data.penalty, net.layout, net.flatten())
    return grad


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
    """Jacobian of the outputs, ∂g(θ, x_i)_c / ∂θ, shape (n, K, P) (no penalty term)."""
    return _jacobian_block(forward(net, checked_data(net, data), order=1))


def hvp(
    net: TwoLayerNet, data: Dataset, v: torch.Tensor, batch_size: int | None = None
) -> torch.Tensor:
    """Hessian-vector product H v for v of shape (P,), or H V for V of shape (P, r).

    H = ∇²R + λ diag(M) with ``data.penalty``, so the penalty adds λ M v.  Costs a few
    matrix products of size n × m × (d + K): no Hessian is formed.  Several vectors share
    one forward pass and the residual blocks B_k (see :class:`HessianOperator`, which keeps
    them for later products too).
    """
    # Detached like the network and data: these closed forms are not for autograd.
    v = torch.as_tensor(v, dtype=net.dtype, device=net.device).detach()
    if v.ndim == 2 and v.shape[1] > 1:
        return HessianOperator(net, data, batch_size).apply(v)
    out = _streamed_product(net, data, batch_size, v.reshape(-1))
    return _add_penalty(out.reshape(v.shape), data.penalty, net.layout, v)


def _streamed_product(
    net: TwoLayerNet, data: Dataset, batch_size: int | None, v: torch.Tensor
) -> torch.Tensor:
    """∇²R v summed over blocks of samples, each block's forward pass made and dropped."""
    out: torch.Tensor | None = None
    for fw in batches(net, data, batch_size, in_scratch=True):
        block = product_at_point(fw, v)
        out = block if out is None else out.add_(block)
    assert out is not None  # batches yields at least one block
    return out


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
    neuron_part.diagonal(dim1=0, dim2=2).add_(residual_blocks(fw).permute(1, 2, 0))
    return H


#: Measured speeds (one core, float64) of the two ways to form H, in the units of
#: :func:`dense_hessian_work`: Jᵀ(hJ) runs at about 3.3 times the rate of the products.
_PRODUCT_COST = 3.3
#: Entries of the n × m × r temporaries one chunk of products may allocate.
_PRODUCT_CHUNK = 2**23


def dense_hessian_work(net: TwoLayerNet, n: int) -> tuple[float, bool]:
    """Multiply-adds to form H, and whether Hessian-vector products form it more cheaply.

    The Gauss–Newton product Jᵀ(hJ) costs n K P²; P products H e_j cost about
    n m (D + K) each, at a third of the rate: with many outputs (K ≳ 4) they win.
    """
    P, K, m = net.num_params, net.output_dim, net.width
    closed = float(n) * K * P * P
    products = _PRODUCT_COST * float(n) * m * (net.layout.neuron_size) * P
    return min(closed, products), products < closed


def hessian(net: TwoLayerNet, data: Dataset, batch_size: int | None = None) -> torch.Tensor:
    """The full Hessian ∇²R(θ) + λ diag(M), shape (P, P), in the flat layout.

    Gauss–Newton part Jᵀ diag(h_i) J as one matrix product per block of samples, plus the
    block-diagonal residual part ⊕_k B_k (docs/theory.md §2), plus λ on the diagonal entries
    of the parameters a ``data.penalty`` covers.  With many outputs the columns H e_j come
    from the cached Hessian-vector products instead (see :func:`dense_hessian_work`).
    """
    if dense_hessian_work(net, data.n)[1]:
        return _hessian_by_products(net, data, batch_size)
    return _hessian_closed(net, data, batch_size)


def _hessian_closed(
    net: TwoLayerNet, data: Dataset, batch_size: int | None = None
) -> torch.Tensor:
    blocks = batches(net, data, batch_size)
    H = _hessian_block(next(blocks))
    for fw in blocks:
        H += _hessian_block(fw)
    # Rounding leaves Jᵀ(hJ) asymmetric in the last bit; analysis wants an exactly symmetric H.
    H = 0.5 * (H + H.T)
    penalty = _active(data.penalty)
    if penalty is not None:
        H.diagonal().add_(penalty.mask(net.layout, H.dtype, H.device), alpha=penalty.weight_decay)
    return H


def _hessian_by_products(
    net: TwoLayerNet, data: Dataset, batch_size: int | None = None
) -> torch.Tensor:
    op = HessianOperator(net, data, batch_size)
    P = net.num_params
    rows = min(data.n, batch_size or data.n)
    chunk = max(8, min(P, _PRODUCT_CHUNK // max(1, rows * net.width)))
    H = torch.empty(P, P, dtype=net.dtype, device=net.device)
    eye = torch.eye(P, dtype=net.dtype, device=net.device)
    for start in range(0, P, chunk):
        H[:, start:start + chunk] = op.apply(eye[:, start:start + chunk])
    return 0.5 * (H + H.T)  # products are symmetric only to rounding


#: Memory the cached operator may hold (forward pass, σ-matrices, B_k or ∇φ); above it the
#: operator streams: each product makes and drops the forward pass block by block.
CACHE_BYTES = 512 * 2**20
#: Memory of one streamed block's n_b × (D + 4m) matrices.
_STREAM_BLOCK_BYTES = 64 * 2**20


def cache_bytes(n: int, m: int, K: int, D: int) -> int:
    """Bytes a cached operator keeps: X̃ and X̃ᵀ, three n × m matrices, B_k or ∇φ.

    >>> cache_bytes(1000, 100, 1, 11) < CACHE_BYTES < cache_bytes(60_000, 1000, 1, 785)
    True
    """
    blocks = m * K * D if cached_kernel(n, m, K, D) == "sample_fused" else m * (K + D) ** 2
    return 8 * (2 * n * D + 3 * n * m + blocks)


class HessianOperator(LinearOperator):
    """The Hessian as a ``scipy.sparse.linalg.LinearOperator``, matrix-free.

    The forward pass (per block of ``batch_size`` samples) and the residual blocks B_k (for
    wide inputs only ∇φ) are formed once; each product is then the Gauss–Newton part, in the
    contraction order a cost model finds cheaper for the shape: by input coordinate (four
    matrix products that read σ or σ' and write no n × m matrix; one output, few inputs) or
    by sample (n × m temporaries, nothing of size K·d·n; many outputs or wide inputs), plus
    the B_k.  With ``data.penalty`` each product adds λ M V once.  Several vectors share
    each product.  ``num_matvecs`` counts vectors multiplied.

    Where that cache would pass :data:`CACHE_BYTES` (n = 60,000 MNIST images at m = 1,000:
    about 2 GB) or with ``cache=False``, the operator streams instead: each product runs the
    fresh-point kernel over blocks of samples (three GEMMs per block instead of two), so
    its memory is that of one block (``batch_size`` rows, or what fits in 64 MiB).
    """

    def __init__(
        self,
        net: TwoLayerNet,
        data: Dataset,
        batch_size: int | None = None,
        cache: bool | None = None,
    ) -> None:
        self.net = net
        self.penalty = _active(data.penalty)
        D = net.layout.neuron_size - net.output_dim
        if cache is None:
            cache = cache_bytes(data.n, net.width, net.output_dim, D) <= CACHE_BYTES
        self.cached = cache
        self._cached: CachedHessian | None = None
        self._stream: tuple[Dataset, int] | None = None
        if cache:
            self._cached = CachedHessian(list(batches(net, data, batch_size)))
        else:
            rows = max(1, _STREAM_BLOCK_BYTES // (8 * (D + 4 * net.width)))
            self._stream = (data, min(batch_size or rows, rows))
        self.num_matvecs = 0
        P = net.num_params
        super().__init__(dtype=np.dtype(str(net.dtype).removeprefix("torch.")), shape=(P, P))

    def apply(self, V: torch.Tensor) -> torch.Tensor:
        """H V for a torch tensor V of shape (P, r), on the network's device."""
        self.num_matvecs += V.shape[1]
        if self._cached is not None:
            out = self._cached.apply(V.T).T
        else:
            assert self._stream is not None
            data, rows = self._stream
            out = torch.stack([_streamed_product(self.net, data, rows, v) for v in V.T], dim=1)
        return _add_penalty(out, self.penalty, self.net.layout, V)

    def _matmat(self, X: np.ndarray) -> np.ndarray:
        V = torch.as_tensor(np.ascontiguousarray(X), dtype=self.net.dtype, device=self.net.device)
        return self.apply(V).cpu().numpy()

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        return self._matmat(x.reshape(-1, 1)).reshape(x.shape)

    def _adjoint(self) -> HessianOperator:
        return self


def hessian_operator(
    net: TwoLayerNet, data: Dataset, batch_size: int | None = None, cache: bool | None = None
) -> HessianOperator:
    """The Hessian as a matrix-free :class:`HessianOperator` for scipy's Krylov solvers.

    ``cache``: keep the forward pass (True), stream it per product (False), or decide by
    its size (None, :data:`CACHE_BYTES`).
    """
    return HessianOperator(net, data, batch_size, cache)


@dataclass(frozen=True, eq=False)
class ResidualFunction:
    """φ_f, ∇φ_f and G for the output function of ``net`` on ``data`` (docs/theory.md §2).

    Points u are augmented input weights (length D = d + 1 with a hidden bias), one per row
    of ``U`` (shape (p, D)) or a single vector (D,).  φ depends on θ only through the outputs,
    so every network with the same outputs on the data shares it.  It is φ of the data term
    R: a ``data.penalty`` does not enter it (with one, ∂L/∂a_k = φ(w̃_k) + λ a_k).
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
            raise OptionError(f"points must have length D={self.X.shape[1]}, got {U2.shape[-1]}")
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
    """The residual function of the output function of ``net`` on ``data`` (R's, no penalty).

    >>> import torch
    >>> from saddlemap import Dataset, TwoLayerNet, gradient
    >>> net = TwoLayerNet([0.6, -0.2], [[1.4], [0.3]], activation="tanh")
    >>> data = Dataset([[-1.0], [0.5], [2.0]], [-1.0, 0.5, 0.0])
    >>> rf = residual_function(net, data)
    >>> grad_a = gradient(net, data).reshape(2, 2)[:, 0]   # ∂R/∂a_k = φ(w_k)
    >>> bool(torch.allclose(rf.phi(net.W_aug)[:, 0], grad_a))
    True
    """
    fw = forward(net, checked_data(net, data), order=0)
    act = net.activation
    return ResidualFunction(fw.X, fw.e, (act.fn, act.d1, act.d2))
