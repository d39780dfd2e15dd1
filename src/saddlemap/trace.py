"""The Hessian's diagonal and trace: exact in closed form, or Hutch++ through products.

The trace needs only the diagonal of H = Jᵀ diag(h_i) J + ⊕_k B_k + λ diag(M)
(docs/theory.md §2), never the whole matrix.  With σ_ik, σ'_ik, σ''_ik at z_ik = w̃_kᵀx̃_i,
e_i = ∇ℓ_i / n, h_i = ∇²ℓ_i / n and C_ik = a_kᵀ h_i a_k:

* ∂²R/∂a_kc² = Σ_i (h_i)_cc σ_ik²,
* ∂²R/∂w̃_kj² = Σ_i (C_ik σ'_ik² + (a_kᵀe_i) σ''_ik) x̃_ij²   (Gauss–Newton + G_{a_k}(w̃_k)),
* ∂²R/∂c_c² = Σ_i (h_i)_cc,

plus λ M on the diagonal with a ``data.penalty``: one forward pass and two GEMMs of
n × m × (K + D) multiply–adds, less than one Hessian-vector product.  The B_k add nothing to
the a-diagonal (their top-left block is zero).

:func:`hessian_trace` sums that diagonal (``method="exact"``) or estimates tr H by Hutch++
(Meyer, Musco, Musco & Woodruff, *Hutch++: Optimal Stochastic Trace Estimation*, SOSA 2021)
through :meth:`HessianOperator.apply` (``method="hutch++"``), with its standard error.

>>> from saddlemap import Dataset, TwoLayerNet, hessian
>>> net = TwoLayerNet([0.6, -0.2], [[1.4], [0.3]], activation="tanh")
>>> data = Dataset([[-1.0], [0.5], [2.0]], [-1.0, 0.5, 0.0])
>>> tr = hessian_trace(net, data)
>>> tr.method, abs(tr.value - float(hessian(net, data).trace())) < 1e-14
('exact', True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator

from ._forward import Forward, batches
from .data import Dataset
from .derivatives import HessianOperator, hessian_operator
from .errors import OptionError
from .losses import Loss
from .network import TwoLayerNet

__all__ = ["Trace", "hessian_diagonal", "hessian_trace", "hutchpp"]

#: Entries of the temporaries (n × m × K or n × K × K) one chunk may allocate.
_CHUNK = 2**22
#: Without a ``batch_size``, blocks of samples whose n_b × m matrices (σ, σ', σ'', eaS2
#: and one temporary) and X̃ take about this much memory.
BLOCK_BYTES = 64 * 2**20
#: Memory the Hutch++ sketches (three P × n_matvecs/3 blocks) may take.
MAX_SKETCH_BYTES = 2 * 2**30
#: Products the default Hutch++ estimate spends (a third each on the sketch, the projection
#: and the Hutchinson residual).
HUTCHPP_MATVECS = 99


@dataclass(frozen=True)
class Trace:
    """tr ∇²L at a point, exact or estimated.

    Attributes:
        value: the trace (or its estimate).
        stderr: the estimate's standard error: the sample standard deviation of the
            Hutchinson terms of Hutch++'s residual part over √(their number); 0 for the
            exact trace (only rounding, a few ε·Σ|H_jj|).
        method: ``"exact"`` or ``"hutch++"``.
        n_matvecs: Hessian-vector products spent (0 for the exact trace).
    """

    value: float
    stderr: float
    method: str
    n_matvecs: int


def _loss_diagonal(fw: Forward) -> torch.Tensor:
    """The diagonals of ∇²_g ℓ_i / n per sample, shape (n_b, K), in chunks of samples."""
    loss, g, t = fw.data.loss, fw.g, fw.data.targets
    if loss.identity_curvature:
        return torch.full_like(g, 1.0 / fw.n_total)
    K = g.shape[1]
    step = max(1, _CHUNK // (K * K))
    parts = [torch.diagonal(loss.hess(g[s:s + step], t[s:s + step]), dim1=-2, dim2=-1)
             for s in range(0, g.shape[0], step)]
    return torch.cat(parts) / fw.n_total


def _output_curvature(fw: Forward) -> torch.Tensor:
    """C_ik = a_kᵀ h_i a_k, shape (n_b, m), in chunks of neurons."""
    a = fw.net.a  # (m, K)
    loss = fw.data.loss
    if loss.identity_curvature:
        return (a * a).sum(1).expand(fw.S.shape[0], -1) / fw.n_total
    factor = loss.hess_factor(fw.g, fw.data.targets)
    n, (m, K) = fw.S.shape[0], a.shape
    step = max(1, _CHUNK // max(1, n * K))
    parts = []
    for s in range(0, m, step):
        cols = a[s:s + step].T[:, :, None].expand(K, -1, n)  # (K, r, n): a_k per sample
        parts.append((loss.hess_columns(factor, cols) * cols).sum(0).T)  # (n, r)
    return torch.cat(parts, dim=1) / fw.n_total


def _diagonal_block(fw: Forward) -> torch.Tensor:
    """The data term's diagonal on one block of samples, in the flat layout (P,)."""
    hdiag = _loss_diagonal(fw)
    diag_a = (fw.S * fw.S).T @ hdiag  # (m, K)
    T = fw.S1 * fw.S1 * _output_curvature(fw) + fw.eaS2  # (n, m)
    diag_w = T.T @ (fw.X * fw.X)  # (m, D)
    diag_c = hdiag.sum(0) if fw.net.c is not None else hdiag.new_zeros(0)
    return fw.net.layout.join(diag_a, diag_w, diag_c)


def hessian_diagonal(
    net: TwoLayerNet, data: Dataset, batch_size: int | None = None
) -> torch.Tensor:
    """The diagonal of ∇²R(θ) + λ diag(M) in the flat layout, shape (P,), in closed form.

    See the module docstring for the formulas; ``batch_size`` streams over the data, and
    without one the samples go in blocks of about :data:`BLOCK_BYTES` of matrices.

    >>> from saddlemap import Dataset, TwoLayerNet, hessian
    >>> net = TwoLayerNet([[0.6, 1.0]], [[1.4]], b=[0.3], activation="erf")
    >>> data = Dataset([[-1.0], [2.0]], [[0.0, 1.0], [1.0, -1.0]])
    >>> bool(torch.allclose(hessian_diagonal(net, data), hessian(net, data).diagonal()))
    True
    """
    if batch_size is None:
        row_bytes = 8 * (2 * net.layout.aug_dim + 5 * net.width)
        batch_size = max(1, BLOCK_BYTES // row_bytes)
    diag: torch.Tensor | None = None
    for fw in batches(net, data, batch_size):
        block = _diagonal_block(fw)
        diag = block if diag is None else diag.add_(block)
    assert diag is not None  # batches yields at least one block
    penalty = data.penalty
    if penalty is not None and penalty.weight_decay > 0.0:
        diag += penalty.weight_decay * penalty.mask(net.layout, diag.dtype, diag.device)
    return diag


def _apply(op: HessianOperator | LinearOperator, V: torch.Tensor) -> torch.Tensor:
    if isinstance(op, HessianOperator):
        return op.apply(V)
    return torch.as_tensor(op @ V.cpu().numpy(), dtype=V.dtype, device=V.device)


def _check_matvecs(n_matvecs: object, P: int) -> None:
    if isinstance(n_matvecs, bool) or not isinstance(n_matvecs, int) or n_matvecs < 3:
        raise OptionError(f"n_matvecs must be an integer ≥ 3, got {n_matvecs!r}")
    if 8 * P * n_matvecs > MAX_SKETCH_BYTES:
        raise OptionError(
            f"n_matvecs={n_matvecs} needs {8 * P * n_matvecs / 2**30:.1f} GiB of sketches at "
            f"P = {P}; at most {MAX_SKETCH_BYTES // 2**30} GiB"
        )


def hutchpp(
    op: HessianOperator | LinearOperator, n_matvecs: int = HUTCHPP_MATVECS, seed: int = 0
) -> Trace:
    """Hutch++ estimate of tr A for a symmetric operator A (Meyer et al. 2021, Algorithm 1).

    With s = ⌊n_matvecs / 3⌋ Rademacher columns S and G: Q = orth(A S), and

        tr A ≈ tr(QᵀAQ) + (1/s) Σ_j g_jᵀ (I − QQᵀ) A (I − QQᵀ) g_j.

    The first term is exact on the range of Q; the standard error is that of the Hutchinson
    mean over the s terms.  Products go through ``op.apply`` in three batches.

    >>> import numpy as np
    >>> A = np.diag(np.arange(1.0, 11.0))
    >>> est = hutchpp(LinearOperator((10, 10), matvec=lambda v: A @ v, matmat=lambda V: A @ V,
    ...                              dtype=np.float64), n_matvecs=30)
    >>> abs(est.value - 55.0) < 1e-9, est.n_matvecs   # s = 10 ≥ P: Q spans everything
    (True, 30)
    """
    _check_matvecs(n_matvecs, op.shape[0])
    P = op.shape[0]
    s = n_matvecs // 3
    net = getattr(op, "net", None)
    dtype = net.dtype if net is not None else torch.float64
    device = net.device if net is not None else None
    gen = np.random.default_rng(seed)

    def rademacher(cols: int) -> torch.Tensor:
        signs = gen.integers(0, 2, size=(P, cols)) * 2.0 - 1.0
        return torch.as_tensor(signs, dtype=dtype, device=device)

    S, G = rademacher(s), rademacher(s)
    Q, _ = torch.linalg.qr(_apply(op, S))
    low_rank = float((Q * _apply(op, Q)).sum())
    G = G - Q @ (Q.T @ G)
    terms = (G * _apply(op, G)).sum(0)
    residual = float(terms.mean())
    stderr = float(terms.std()) / math.sqrt(s) if s > 1 else math.inf
    return Trace(low_rank + residual, stderr, "hutch++", 3 * s)


def hessian_trace(
    net: TwoLayerNet,
    data: Dataset,
    method: Literal["auto", "exact", "hutch++"] = "auto",
    n_matvecs: int = HUTCHPP_MATVECS,
    seed: int = 0,
    batch_size: int | None = None,
) -> Trace:
    """tr(∇²R(θ) + λ diag(M)): exact from the closed-form diagonal, or by Hutch++.

    ``"exact"`` sums :func:`hessian_diagonal` (one forward pass and two GEMMs, less work
    than one product).  ``"hutch++"`` spends ``n_matvecs`` products of the
    :class:`~saddlemap.HessianOperator` (:func:`hutchpp`) and reports a standard error.
    ``"auto"`` is exact, except for a loss without a closed-form curvature product
    (:meth:`Loss.hess_columns` not overridden) whose n·m·K² diagonal work passes the
    estimate's n_matvecs · n·m·(K + D): K² > n_matvecs · (K + D).

    Raises:
        OptionError: an unknown method, ``n_matvecs`` < 3, or sketches above
            :data:`MAX_SKETCH_BYTES`.
    """
    if method not in ("auto", "exact", "hutch++"):
        raise OptionError(f"unknown method {method!r}; use 'auto', 'exact' or 'hutch++'")
    _check_matvecs(n_matvecs, net.num_params)
    if method == "auto":
        K, q = net.output_dim, net.layout.neuron_size
        loss = data.loss
        generic = not loss.identity_curvature and type(loss).hess_columns is Loss.hess_columns
        method = "hutch++" if generic and K * K > n_matvecs * q else "exact"
    if method == "exact":
        return Trace(float(hessian_diagonal(net, data, batch_size).sum()), 0.0, "exact", 0)
    return hutchpp(hessian_operator(net, data, batch_size), n_matvecs, seed)
