"""Hessian-vector product kernels (private): one product at a fresh point, or many at one.

H = Jᵀ diag(h_i) J + ⊕_k B_k (docs/theory.md §2).  Both kernels are organised around memory traffic
over the n × m matrices σ, σ', which is what bounds them on a CPU.

* :func:`product_at_point` is for one product at a point never seen before.  Forming the
  blocks B_k would cost about as much as the product, so the G-term runs through an n × m
  temporary, in a scratch buffer.
* :class:`CachedHessian` is for many products at one point (Lanczos, CG).  It forms ⊕_k B_k
  once (m small (K+D) × (K+D) blocks), after which each product is only the Gauss–Newton part:
  Jv = σ δa + rowsum(X̃ ∘ (σ' (a ⊙ δW̃))) and Jᵀu = (σᵀu, a ⊙ ((X̃ ∘ u)ᵀσ')ᵀ), four reads of
  σ or σ' by GEMM and no n × m write.  Several vectors share each GEMM.

Both give the data term ∇²R only; :mod:`saddlemap.derivatives` adds a weight-decay penalty's
λ M v once, after summing the blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._forward import Forward
from ._workspace import scratch

__all__ = ["CachedHessian", "product_at_point", "residual_blocks"]


def residual_blocks(fw: Forward) -> torch.Tensor:
    """The blocks B_k of docs/theory.md §2 on one block of samples, shape (m, K + D, K + D).

    B_k = [[0, ∇φ(w̃_k)], [∇φ(w̃_k)ᵀ, G_{a_k}(w̃_k)]] with ∇φ(w̃_k)_{c,:} = Σ_i e_ic σ'_ik x̃_i
    and G_{a_k}(w̃_k) = Σ_i (a_kᵀe_i) σ''_ik x̃_i x̃_iᵀ.
    """
    net = fw.net
    n, m, K, D = fw.S.shape[0], net.width, net.output_dim, fw.X.shape[1]
    if D <= m:  # G = (eaS2)ᵀ (x̃_i ⊗ x̃_i): an n × D² temporary
        XX = (fw.X[:, :, None] * fw.X[:, None, :]).reshape(n, D * D)
        G = (fw.eaS2.T @ XX).reshape(m, D, D)
    else:  # wide inputs: an n × mD temporary is the smaller one
        cx = (fw.eaS2[:, :, None] * fw.X[:, None, :]).reshape(n, m * D)
        G = (cx.T @ fw.X).reshape(m, D, D)
    grad_phi = fw.grad_phi  # (m, K, D)
    top = torch.cat([grad_phi.new_zeros(m, K, K), grad_phi], dim=2)
    bottom = torch.cat([grad_phi.transpose(1, 2), G], dim=2)
    return torch.cat([top, bottom], dim=1)


def product_at_point(fw: Forward, v: torch.Tensor) -> torch.Tensor:
    """H v on one block of samples, for one vector v (P,).

    With U = X̃ δW̃ᵀ, the w-part is X̃ᵀT for T = (e aᵀ) ∘ σ'' ∘ U + σ' ∘ (u aᵀ + e δaᵀ),
    u = h J v: the G, Gauss–Newton and ∇φ terms in one product.  A scalar output goes
    through :func:`_scalar_output_product`, which never forms T.
    """
    if fw.net.output_dim == 1:
        return _scalar_output_product(fw, v)
    net = fw.net
    shape = tuple(fw.S.shape)
    dA, dW, dc = net.layout.split(v)
    dA = dA.contiguous()  # a strided GEMV operand costs a third more than the copy
    U = torch.matmul(fw.X, dW.T, out=scratch("hvp_U", shape, fw.S))
    T = torch.mul(fw.eaS2, U, out=scratch("hvp_T", shape, fw.S))
    V = U.mul_(fw.S1)
    Jv = torch.addmm(fw.S @ dA, V, net.a)
    if net.c is not None:
        Jv = Jv + dc
    u = fw.curvature_apply(Jv)  # h_i (J v)_i, (n, K)
    out_a = torch.addmm(fw.S.T @ u, V.T, fw.e)
    # V is spent: reuse its buffer for u aᵀ + e δaᵀ, one GEMM of inner size 2K.
    outer = torch.matmul(torch.cat([u, fw.e], 1), torch.cat([net.a, dA], 1).T, out=V)
    out_w = (fw.Xt @ T.addcmul_(outer, fw.S1)).T
    out_c = u.sum(0) if net.c is not None else dc
    return net.layout.join(out_a, out_w, out_c)


def _scalar_output_product(fw: Forward, v: torch.Tensor) -> torch.Tensor:
    """:func:`product_at_point` for K = 1, where e aᵀ and u aᵀ have rank one.

    Then every n × m scaling moves into a small GEMM operand:

    * (J v)_i = σ_i·δa + x̃_i·(σ'ᵀ_i (a ⊙ δW̃)), through σ' (a ⊙ δW̃), an n × D product;
    * ∇φ and the Gauss–Newton term come from one GEMM, [X̃ ∘ e, X̃ ∘ u]ᵀ σ', rows scaled
      by δa and a afterwards;
    * the G-term is ((X̃ ∘ e)ᵀ (σ'' ∘ U)) diag(a), one elementwise pass.

    That is two n × m passes (U, then σ'' ∘ U in place) besides GEMM reads of σ and σ',
    where the general kernel takes six.
    """
    net = fw.net
    (n, m), D = fw.S.shape, fw.X.shape[1]
    dA, dW, dc = net.layout.split(v)
    a = net.a[:, 0]
    Jv = torch.addmv((fw.S1 @ (dW * a[:, None])).mul_(fw.X).sum(1), fw.S, dA[:, 0])
    if net.c is not None:
        Jv += dc
    u = fw.curvature_apply(Jv[:, None])[:, 0]  # h_i (J v)_i
    eu = torch.stack([fw.e[:, 0], u])  # (2, n)
    L = torch.mul(eu[:, None, :], fw.Xt, out=scratch("hvp_L", (2, D, n), fw.S))
    R = (L.view(2 * D, n) @ fw.S1).view(2, D, m)  # R[0] = ∇φ(w̃_k)ᵀ by column k
    U = torch.matmul(fw.X, dW.T, out=scratch("hvp_U", (n, m), fw.S)).mul_(fw.S2)
    out_w = (L[0] @ U).mul_(a)  # G-term
    out_w.addcmul_(R[0], dA[:, 0]).addcmul_(R[1], a)
    out_a = torch.addmv((R[0] * dW.T).sum(0), fw.S.T, u)
    out_c = u.sum(0, keepdim=True) if net.c is not None else dc
    return net.layout.join(out_a[:, None], out_w.T, out_c)


@dataclass(frozen=True)
class _Block:
    """What products need from one block of samples: X̃ᵀ, σ, σ', σ'ᵀ and the curvature."""

    Xt: torch.Tensor
    S: torch.Tensor
    S1: torch.Tensor
    S1t: torch.Tensor
    g: torch.Tensor
    targets: torch.Tensor
    n_total: int

    @classmethod
    def of(cls, fw: Forward) -> _Block:
        return cls(fw.Xt, fw.S, fw.S1, fw.S1.T.contiguous(), fw.g, fw.data.targets, fw.n_total)


class CachedHessian:
    """Products H V at one point: the forward passes and ⊕_k B_k formed once.

    Holds σ, σ' and σ'ᵀ per block of samples (3 n m numbers; the transposed copy makes
    the first product about a third faster) and the blocks B_k (m (K + D)² numbers).
    Products run in a coordinate-major order of the parameters, (δa_c,k)_{c,k} then
    (δw̃_j,k)_{j,k}, where every operand is a plain view; one gather enters and one leaves it.
    """

    def __init__(self, blocks: list[Forward]) -> None:
        self.net = net = blocks[0].net
        self.loss = blocks[0].data.loss
        B = residual_blocks(blocks[0])
        for fw in blocks[1:]:
            B += residual_blocks(fw)
        self._B = B.permute(1, 2, 0).contiguous()  # (q, q, m): B[p, p', k]
        self._blocks = [_Block.of(fw) for fw in blocks]  # σ'' and eaS2 go with the Forwards
        m, q, P = net.width, net.layout.neuron_size, net.num_params
        # flat index of coordinate p of neuron k is k q + p; coordinate-major puts it at p m + k
        neuron_major = torch.arange(m * q, device=net.device).view(m, q).T.reshape(-1)
        tail = torch.arange(m * q, P, device=net.device)
        self._to_cm = torch.cat([neuron_major, tail])
        self._from_cm = torch.empty_like(self._to_cm)
        self._from_cm[self._to_cm] = torch.arange(P, device=net.device)
        self._a_rows = net.a.T[None, :, None, :]  # (1, K, 1, m): a_kc by (output, neuron)

    def _jt_u(self, blk: _Block, JvT: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows of u = h J v by (vector, output), and of X̃ ∘ u by (vector, output, j)."""
        if self.loss.identity_curvature:
            uT = JvT.div_(blk.n_total)
        else:
            K, n = self.net.output_dim, JvT.shape[1]
            u = self.loss.hess_apply(blk.g, blk.targets, JvT.view(r, K, n).transpose(1, 2))
            uT = u.transpose(1, 2).reshape(r * K, n).div_(blk.n_total)
        D, n = blk.Xt.shape
        uX = torch.mul(uT[:, None, :], blk.Xt, out=scratch("hvp_uX", (uT.shape[0], D, n), uT))
        return uT, uX.view(-1, n)

    def apply(self, V: torch.Tensor) -> torch.Tensor:
        """H V for V of shape (r, P), returned as (r, P).

        Rows of the work matrices run over (vector, output, input coordinate) and columns
        over samples, so every product is a wide GEMM with σ or σ' as the big operand.
        """
        net = self.net
        r, m, K, q = V.shape[0], net.width, net.output_dim, net.layout.neuron_size
        D, rK = q - K, r * K
        Vc = V[:, self._to_cm]
        neurons = Vc[:, : q * m].view(r, q, m)
        dA_rows = neurons[:, :K].reshape(rK, m)  # δa_vkc, rows (v, c)
        aW = (self._a_rows * neurons[:, None, K:]).reshape(rK * D, m)  # a_kc δw̃_vkj
        out_a: torch.Tensor | None = None
        R = out_c = dA_rows  # placeholders, set by the first block
        for blk in self._blocks:
            n = blk.Xt.shape[1]
            Yt = (aW @ blk.S1t).view(rK, D, n)  # Σ_k σ'_ik a_kc δw̃_vk
            JvT = torch.addmm(Yt.mul_(blk.Xt).sum(1), dA_rows, blk.S.T)  # (J v)_ic, rows (v, c)
            if net.c is not None:
                JvT += Vc[:, q * m :].reshape(rK, 1)
            uT, uX = self._jt_u(blk, JvT, r)
            if out_a is None:
                out_a, R, out_c = uT @ blk.S, uX @ blk.S1, uT.sum(1)
            else:
                out_a.addmm_(uT, blk.S)
                R.addmm_(uX, blk.S1)
                out_c += uT.sum(1)
        assert out_a is not None  # there is at least one block
        out = (self._B * neurons[:, None]).sum(2)  # B_k (δa_k, δw̃_k): (r, q, m)
        out[:, :K] += out_a.view(r, K, m)
        out[:, K:] += (R.view(r, K, D, m) * self._a_rows).sum(1)
        tail = out_c.view(r, K) if net.c is not None else Vc[:, q * m :]
        return torch.cat([out.view(r, q * m), tail], dim=1)[:, self._from_cm]
