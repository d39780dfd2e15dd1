"""Hessian-vector product kernels (private): one product at a fresh point, or many at one.

H = Jᵀ diag(h_i) J + ⊕_k B_k (docs/theory.md §2).  Write A = (a_kc) (m × K), W̃ (m × D),
S, S1, S2 = σ, σ', σ'' of X̃W̃ᵀ (n × m), and v = (δA, δW̃, δc).  The Gauss–Newton part has two
contraction orders, and which is cheaper depends on the shape:

* **coordinate order**: rows of the work matrices run over (vector, output c, input
  coordinate j), columns over samples::

      (J v)_ic = Σ_k σ_ik δa_kc + Σ_j x̃_ij Y_cj,i,   Y_cj,i = Σ_k σ'_ik a_kc δw̃_kj
      ∂/∂A = Sᵀu,   ∂/∂w̃_kj = Σ_c a_kc Σ_i σ'_ik (u_ic x̃_ij)

  two GEMMs (K·D × m)(m × n) and (K·D × n)(n × m) with σ' as the big operand: 2·K·D·n·m
  multiply–adds and K·D·n temporaries (Y, X̃ ∘ u) per vector, and no n × m write.  Best for
  K = 1 and small D, where K·D·n is far below n·m.
* **per-sample order**: one row per sample (stored transposed, see
  :meth:`CachedHessian._per_sample`)::

      (J v)_i = S_i δA + ((S1 ∘ (X̃ δW̃ᵀ)) A)_i          X̃δW̃ᵀ: (n × D)(D × m)
      u_i = h_i (J v)_i                                 per-sample curvature, n × K
      ∂/∂A = Sᵀu,  ∂/∂W̃ = (S1 ∘ (u Aᵀ))ᵀ X̃,  ∂/∂c = Σ_i u_i

  2·n·D·m + 4·n·m·K multiply–adds and a few n × m passes per vector, nothing of size K·D·n.
  Best for K > 1 (the coordinate order pays K times the GEMM work) and for D large.

The residual part ⊕_k B_k is either formed once (m (K+D)² numbers) and applied as m small
products, or, where that is the larger cost ((K+D)² ≳ 4n), computed in the per-sample order:
G_{a_k}(w̃_k) δw̃_k = (X̃ᵀ((e Aᵀ) ∘ S2 ∘ X̃δW̃ᵀ))_{:,k} joins the last GEMM, and only the
∇φ(w̃_k) (m K D numbers) are kept.  :func:`cached_kernel` chooses by the cost model there.

* :func:`product_at_point` is for one product at a point never seen before.  Forming the
  blocks B_k would cost about as much as the product, so everything runs per sample through
  n × m temporaries in scratch buffers; for K = 1 and small D, :func:`_scalar_output_product`
  moves the n × m scalings into small GEMM operands instead (:func:`fresh_kernel`).
* :class:`CachedHessian` is for many products at one point (Lanczos, CG): the forward pass,
  and ⊕_k B_k or ∇φ, formed once.  Several vectors share each GEMM.

Both give the data term ∇²R only; :mod:`saddlemap.derivatives` adds a weight-decay penalty's
λ M v once, after summing the blocks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ._forward import Forward
from ._workspace import MAX_BYTES, scratch
from .errors import OptionError

__all__ = [
    "CACHED_KERNELS",
    "FRESH_KERNELS",
    "CachedHessian",
    "cached_kernel",
    "forced",
    "fresh_kernel",
    "product_at_point",
    "residual_blocks",
]

#: The kernels of :class:`CachedHessian`: the coordinate order with the blocks B_k, the
#: per-sample order with B_k, and the per-sample order with G fused and ∇φ kept.
CACHED_KERNELS = ("coordinate", "sample", "sample_fused")
#: The kernels of :func:`product_at_point`: the K = 1 kernel and the general one.
FRESH_KERNELS = ("scalar", "general")

# The cost model, in GEMM multiply–adds (see :func:`cached_costs`): one float of a temporary
# streamed by an elementwise pass (memory-bound), or one entry of the blocks B_k read by the
# batched GEMV, costs _TOUCH multiply–adds; the thin GEMMs of the coordinate order (K·D rows
# against n columns) run _THIN times slower per multiply–add than the per-sample ones.
# Fitted on one AMD EPYC core (float64, MKL; a multiply–add ≈ 0.1 ns) over K ∈ {1, 2, 3, 10},
# D ∈ {2, …, 150}, m ∈ {20, 100, 300}, n ∈ {300, 1000, 3000}: the kernel it picks is on
# average 2 % and at worst 22 % slower than the fastest measured (near-ties), where a fixed
# choice loses up to 5× (the coordinate order at K = 10, D = 30; 20–40× at D = 785) or 1.5×
# (the per-sample order at K = 1, D = 2, m = 300).
_TOUCH = 4.0
_THIN = 1.75
# Up to this many numbers (r m (K + D)²), the coordinate order applies ⊕_k B_k by one
# broadcast product and sum, 5–10 % faster overall than the batched GEMV at the headline
# size of docs/performance.md; above, the temporary costs more than the GEMV.
_BROADCAST_MAX = 2**16
# The per-sample order multiplies this many bytes of n × r m temporaries at a time.
_CHUNK_BYTES = MAX_BYTES // 4
# A forced kernel for tests and benchmarks (see :func:`forced`); None lets the model choose.
_FORCED: dict[str, str | None] = {"cached": None, "fresh": None}


@contextlib.contextmanager
def forced(cached: str | None = None, fresh: str | None = None) -> Iterator[None]:
    """Within the block, make :class:`CachedHessian` and :func:`product_at_point` use these.

    For tests and benchmarks; a kernel is fixed when the CachedHessian is made.
    """
    if cached is not None and cached not in CACHED_KERNELS:
        raise OptionError(f"unknown cached kernel {cached!r}")
    if fresh is not None and fresh not in FRESH_KERNELS:
        raise OptionError(f"unknown fresh kernel {fresh!r}")
    before = dict(_FORCED)
    _FORCED.update(cached=cached, fresh=fresh)
    try:
        yield
    finally:
        _FORCED.update(before)


def cached_costs(n: int, m: int, K: int, D: int) -> dict[str, float]:
    """Modelled cost of one product by each :data:`CACHED_KERNELS` entry, in multiply–adds.

    Per vector, over n samples (the touches count reads and writes of temporaries, and of
    the operands the GEMMs stream from memory):

    * coordinate: GEMMs 2KDnm + 2Knm (× _THIN); touches 8KDn (Y written, ∘X̃, summed;
      X̃ ∘ u written and read) + 4nm (σ, σ' read by four GEMMs);
    * per-sample: GEMMs 2nDm + 4nmK; touches 12nm (X̃δW̃ᵀ written, ∘σ', read; u Aᵀ
      written, ∘σ', read; σ read twice) + 2nD (X̃ read twice);
    * the blocks B_k: m(K+D)² entries, each read once per product by one batched GEMV;
    * G fused instead: 4nm touches ((eAᵀ)∘σ'' ∘ X̃δW̃ᵀ written, read, and one more operand
      of the last pass) + 2mKD (∇φ read twice).
    """
    q = K + D
    blocks = _TOUCH * m * q * q
    coordinate = _THIN * (2 * K * D * n * m + 2 * K * n * m) + _TOUCH * (8 * K * D * n + 4 * n * m)
    sample = 2 * n * D * m + 4 * n * m * K + _TOUCH * (12 * n * m + 2 * n * D)
    fused_g = _TOUCH * (4 * n * m + 2 * m * K * D)
    return {
        "coordinate": coordinate + blocks,
        "sample": sample + blocks,
        "sample_fused": sample + fused_g,
    }


def cached_kernel(n: int, m: int, K: int, D: int) -> str:
    """The :class:`CachedHessian` kernel for n samples: forced, else the cheapest modelled."""
    forced_kernel = _FORCED["cached"]
    if forced_kernel is not None:
        return forced_kernel
    costs = cached_costs(n, m, K, D)
    return min(costs, key=costs.__getitem__)


def fresh_kernel(n: int, m: int, K: int, D: int) -> str:
    """The :func:`product_at_point` kernel: forced, else by a cost model like the above.

    For K = 1 the scalar kernel does 5nDm multiply–adds and touches 8nD + 4nm floats; the
    general one 2nDm + 6nm multiply–adds and 15nm touches (eaᵀ ∘ σ'', the G-term, σ' ∘ X̃δW̃ᵀ,
    the rank-2K outer product and its pass).  Measured at n = 1000, m ∈ {20, 100, 300},
    D ∈ {2, …, 300}: the pick is within 13 % of the faster; the scalar kernel wins by up to
    15 % at D ≤ 10, the general one by 1.3–2× from D = 30 up.  With K > 1 only the general
    one applies.
    """
    if K > 1:
        return "general"
    forced_kernel = _FORCED["fresh"]
    if forced_kernel is not None:
        return forced_kernel
    scalar = 5 * n * D * m + _TOUCH * (8 * n * D + 4 * n * m)
    general = 2 * n * D * m + 6 * n * m + _TOUCH * 15 * n * m
    return "scalar" if scalar <= general else "general"


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
    """H v on one block of samples, for one vector v (P,), in the per-sample order.

    With U = X̃ δW̃ᵀ, the w-part is X̃ᵀT for T = (e aᵀ) ∘ σ'' ∘ U + σ' ∘ (u aᵀ + e δaᵀ),
    u = h J v: the G, Gauss–Newton and ∇φ terms in one product.  A scalar output with small
    D goes through :func:`_scalar_output_product`, which never forms T.
    """
    net = fw.net
    shape = tuple(fw.S.shape)
    if fresh_kernel(shape[0], shape[1], net.output_dim, fw.X.shape[1]) == "scalar":
        return _scalar_output_product(fw, v)
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
    T.addcmul_(outer, fw.S1)
    # Tᵀ X̃ (m × n)(n × D) while D ≥ m: MKL runs it 1.2–2.5× faster than X̃ᵀ T there.
    out_w = T.T @ fw.X if shape[1] <= fw.X.shape[1] else (fw.Xt @ T).T
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
    where the general kernel takes six, but n × D temporaries and 5nDm multiply–adds
    against 2nDm: it wins only while D is small beside m.
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
    """What products need from one block of samples.

    X̃, X̃ᵀ, σ, σ'ᵀ and the curvature; σ' for the coordinate order, and (e Aᵀ) ∘ σ''
    transposed for the per-sample order with G fused.
    """

    X: torch.Tensor
    Xt: torch.Tensor
    S: torch.Tensor
    S1: torch.Tensor | None
    S1t: torch.Tensor
    eaS2t: torch.Tensor | None
    curvature: Any  # the loss's hess_factor at these outputs (None for the squared loss)
    n_total: int

    @classmethod
    def of(cls, fw: Forward, kernel: str) -> _Block:
        S1 = fw.S1 if kernel == "coordinate" else None
        eaS2t = fw.eaS2.T.contiguous() if kernel == "sample_fused" else None
        S1t = fw.S1.T.contiguous()
        loss = fw.data.loss
        curvature = None if loss.identity_curvature else loss.hess_factor(fw.g, fw.data.targets)
        return cls(fw.X, fw.Xt, fw.S, S1, S1t, eaS2t, curvature, fw.n_total)


class CachedHessian:
    """Products H V at one point: the forward passes, and ⊕_k B_k or ∇φ, formed once.

    The kernel (:data:`CACHED_KERNELS`) is chosen here by :func:`cached_kernel`.  It holds
    σ and σ'ᵀ per block of samples, and σ' for the coordinate order (σ'ᵀ makes its first GEMM
    about a third faster) or ((e Aᵀ) ∘ σ'')ᵀ for the per-sample order with G fused; then the
    blocks B_k (m (K + D)² numbers) or ∇φ (m K D numbers).
    """

    def __init__(self, blocks: list[Forward], kernel: str | None = None) -> None:
        self.net = net = blocks[0].net
        self.loss = blocks[0].data.loss
        m, K, q, P = net.width, net.output_dim, net.layout.neuron_size, net.num_params
        n = sum(fw.S.shape[0] for fw in blocks)
        self.kernel = kernel if kernel is not None else cached_kernel(n, m, K, q - K)
        if self.kernel not in CACHED_KERNELS:
            raise OptionError(f"unknown cached kernel {self.kernel!r}")
        self._B: torch.Tensor | None = None
        self._grad_phi: torch.Tensor | None = None
        if self.kernel == "sample_fused":
            grad_phi = blocks[0].grad_phi.clone()
            for fw in blocks[1:]:
                grad_phi += fw.grad_phi
            self._grad_phi = grad_phi  # (m, K, D)
            self._grad_phi_t = grad_phi.transpose(1, 2).contiguous()  # (m, D, K)
        else:
            B = residual_blocks(blocks[0])
            for fw in blocks[1:]:
                B += residual_blocks(fw)
            self._B = B  # (m, q, q): applied by one batched product
        self._B_cm: torch.Tensor | None = None
        if self.kernel == "coordinate" and self._B is not None and m * q * q <= _BROADCAST_MAX:
            self._B_cm = self._B.permute(1, 2, 0).contiguous()  # (q, q, m): B[p, p', k]
        self._blocks = [_Block.of(fw, self.kernel) for fw in blocks]
        self._aT = net.a.T.contiguous()  # (K, m)
        # Vectors per pass of the per-sample order: r side by side widen its GEMMs, which pays
        # until the n × r m temporaries reach a few MiB, and costs beyond (time per vector at
        # the r chosen here against r = 1: 0.57× on digits, 0.7× at K = 3, D = 31, m = 100,
        # 0.78× at d = 784).
        n_block = max(blk.S.shape[0] for blk in self._blocks)
        per_vector = n_block * m * net.a.element_size()
        self._chunk = max(1, _CHUNK_BYTES // max(per_vector, 1))
        if self.kernel == "coordinate":
            # flat index of coordinate p of neuron k is k q + p; coordinate-major puts it
            # at p m + k
            neuron_major = torch.arange(m * q, device=net.device).view(m, q).T.reshape(-1)
            tail = torch.arange(m * q, P, device=net.device)
            self._to_cm = torch.cat([neuron_major, tail])
            self._from_cm = torch.empty_like(self._to_cm)
            self._from_cm[self._to_cm] = torch.arange(P, device=net.device)
            self._a_rows = net.a.T[None, :, None, :]  # (1, K, 1, m): a_kc by (output, neuron)

    def apply(self, V: torch.Tensor) -> torch.Tensor:
        """H V for V of shape (r, P), returned as (r, P)."""
        if self.kernel == "coordinate":
            return self._coordinate(V)
        V = V.contiguous()
        r, chunk = V.shape[0], self._chunk
        if r <= chunk:
            return self._per_sample(V)
        return torch.cat([self._per_sample(V[s : s + chunk]) for s in range(0, r, chunk)])

    # ------------------------------------------------------------------ coordinate order
    def _jt_u(self, blk: _Block, JvT: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows of u = h J v by (vector, output), and of X̃ ∘ u by (vector, output, j)."""
        if self.loss.identity_curvature:
            uT = JvT.div_(blk.n_total)
        else:
            K, n = self.net.output_dim, JvT.shape[1]
            u = self.loss.hess_columns(blk.curvature, JvT.view(r, K, n).transpose(0, 1))
            uT = u.transpose(0, 1).reshape(r * K, n).div_(blk.n_total)
        D, n = blk.Xt.shape
        uX = torch.mul(uT[:, None, :], blk.Xt, out=scratch("hvp_uX", (uT.shape[0], D, n), uT))
        return uT, uX.view(-1, n)

    def _coordinate(self, V: torch.Tensor) -> torch.Tensor:
        """H V in the coordinate order.

        Rows of the work matrices run over (vector, output, input coordinate) and columns
        over samples, so every product is a wide GEMM with σ or σ' as the big operand.
        Products run in a coordinate-major order of the parameters, (δa_c,k)_{c,k} then
        (δw̃_j,k)_{j,k}, where every operand is a plain view; one gather enters and one
        leaves it.
        """
        net = self.net
        assert self._B is not None
        r, m, K, q = V.shape[0], net.width, net.output_dim, net.layout.neuron_size
        D, rK = q - K, r * K
        Vc = V[:, self._to_cm]
        neurons = Vc[:, : q * m].view(r, q, m)
        dA_rows = neurons[:, :K].reshape(rK, m)  # δa_vkc, rows (v, c)
        aW = (self._a_rows * neurons[:, None, K:]).reshape(rK * D, m)  # a_kc δw̃_vkj
        out_a: torch.Tensor | None = None
        R = out_c = dA_rows  # placeholders, set by the first block
        for blk in self._blocks:
            assert blk.S1 is not None
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
        # B_k (δa_k, δw̃_k): one broadcast product while it is small (the headline problems),
        # else m products (q × q)(q × r), whose operand comes from V's neuron-major order
        # (strided by coordinate, bmm runs ~10x slower).
        if self._B_cm is not None and r * self._B_cm.numel() <= _BROADCAST_MAX:
            out = (self._B_cm * neurons[:, None]).sum(2)  # (r, q, m)
        else:
            by_neuron = V[:, : q * m].reshape(r, m, q).permute(1, 2, 0)  # (m, q, r)
            out = torch.bmm(self._B, by_neuron).permute(2, 1, 0)  # (r, q, m)
        out[:, :K] += out_a.view(r, K, m)
        out[:, K:] += (R.view(r, K, D, m) * self._a_rows).sum(1)
        tail = out_c.view(r, K) if net.c is not None else Vc[:, q * m :]
        return torch.cat([out.reshape(r, q * m), tail], dim=1)[:, self._from_cm]

    # ------------------------------------------------------------------ per-sample order
    def _per_sample(self, V: torch.Tensor) -> torch.Tensor:
        """H V in the per-sample order, for V (r, P) contiguous; see the module docstring.

        Stored transposed, samples in the columns (MKL runs these GEMMs 1.2–1.8× faster with
        the long side n there): Uᵀ = δW̃ X̃ᵀ, rows (neuron, vector), is one (m r × D)(D × n)
        GEMM; (J v)ᵀ = Aᵀ(σ'ᵀ ∘ Uᵀ) + δAᵀσᵀ, rows (output, vector); ∂/∂A = uᵀσ;
        ∂/∂W̃ = (σ'ᵀ ∘ A uᵀ) X̃.  Every step is one GEMM or one elementwise pass over all r.
        """
        net = self.net
        r, m, K, q = V.shape[0], net.width, net.output_dim, net.layout.neuron_size
        D = q - K
        neurons = V[:, : m * q].view(r, m, q)
        dA, dW = neurons[..., :K], neurons[..., K:]
        dW_kv = dW.transpose(0, 1).reshape(m * r, D)  # δw̃_vk, rows (k, v)
        dA_cv = dA.permute(2, 0, 1).reshape(K * r, m)  # δa_vkc, rows (c, v)
        fused = self._B is None
        out_a = out_w = out_c = V  # placeholders, set by the first block
        for i, blk in enumerate(self._blocks):
            n = blk.S.shape[0]
            shape = (m, r, n)
            Ut = torch.matmul(dW_kv, blk.Xt, out=scratch("hvpc_U", (m * r, n), V)).view(shape)
            T = Ut  # placeholder
            if fused:
                assert blk.eaS2t is not None  # G δw̃ goes into the last GEMM
                T = torch.mul(blk.eaS2t[:, None], Ut, out=scratch("hvpc_T", shape, V))
            Y = Ut.mul_(blk.S1t[:, None])  # σ' ∘ X̃δW̃ᵀ, transposed
            Jv = torch.mm(self._aT, Y.view(m, r * n))  # (output, vector, sample)
            Jv.view(K * r, n).addmm_(dA_cv, blk.S.T)
            if net.c is not None:
                Jv.view(K, r, n).add_(V[:, m * q :].T[:, :, None])
            if self.loss.identity_curvature:
                u = Jv.div_(blk.n_total)
            else:
                hJv = self.loss.hess_columns(blk.curvature, Jv.view(K, r, n))
                u = hJv.view(K * r, n).div_(blk.n_total)
            # Y is spent: its buffer takes A uᵀ, then σ' ∘ A uᵀ (+ the G-term when fused).
            Au = torch.mm(net.a, u.view(K, r * n), out=Y.view(m, r * n)).view(shape)
            T = T.addcmul_(Au, blk.S1t[:, None]) if fused else Au.mul_(blk.S1t[:, None])
            # ∂/∂W̃ = (σ'ᵀ ∘ A uᵀ) X̃ as (m r × n)(n × D), or transposed while D < m r: MKL
            # runs the GEMM up to 2× faster with the larger of m r and D as its rows.
            Tt = T.view(m * r, n)
            if i == 0:
                out_a, out_c = u.view(K * r, n) @ blk.S, u.view(K, r, n).sum(2)
                out_w = blk.Xt @ Tt.T if D < m * r else Tt @ blk.Xt.T
            else:
                out_a.addmm_(u.view(K * r, n), blk.S)
                out_c += u.view(K, r, n).sum(2)
                if D < m * r:
                    out_w.addmm_(blk.Xt, Tt.T)
                else:
                    out_w.addmm_(Tt, blk.Xt.T)
        out = torch.empty_like(V)
        blocks = out[:, : m * q].view(r, m, q)
        blocks[..., :K] = out_a.view(K, r, m).permute(1, 2, 0)
        out_w = out_w.T if D < m * r else out_w  # (m r, D)
        blocks[..., K:] = out_w.reshape(m, r, D).transpose(0, 1)
        if self._B is not None:  # B_k (δa_k, δw̃_k): m products (q × q)(q × r)
            blocks += torch.bmm(self._B, neurons.permute(1, 2, 0)).permute(2, 0, 1)
        else:  # ∇φ(w̃_k) δw̃_k and ∇φ(w̃_k)ᵀ δa_k; G went into out_w
            assert self._grad_phi is not None
            blocks[..., :K] += torch.bmm(self._grad_phi, dW.permute(1, 2, 0)).permute(2, 0, 1)
            blocks[..., K:] += torch.bmm(self._grad_phi_t, dA.permute(1, 2, 0)).permute(2, 0, 1)
        out[:, m * q :] = out_c.T if net.c is not None else V[:, m * q :]
        return out
